"""Fusion benchmark: 5-fold CV on the 200 MIREX development songs (audio + lyrics, 5 mood clusters).

Data: ../shared/data/mirex, read by the project's adapter (train.data.datasets.mirex, mode `classes`),
folds by train.data.folds.assign_folds (k=5, seed 8848, stratified by cluster). Each test fold is scored
once; the next fold is the validation fold (early stopping, checkpoint choice, temperatures, and the
fitting and choice of late/gated fusion); the other three (120 songs) train.

Rows (all on the same splits):

* the product's own trained models (`--run R`): a run of the production training on the same
  manifest, made with

      labeler prepare --dataset mirex=../shared/data/mirex --folds 5 --cv ALL --output M
      labeler train --manifest M --branch all --mode classes --preset cpu-small --folds all --output R

  read back from `R/report.json`: the audio branch (frozen MusiCNN + head), the stacked lyrics branch,
  the fusion head and the late and gated fusions fitted on validation (`train.select.fusion`), the fusion the
  run kept (the simplest within one standard error of the best validation score) and, for comparison,
  the fusion the plain best validation score would have kept, each scored on the test folds (a run
  of `--branch fusion` alone over `--audio-run R --lyrics-run R` works too: the branches' test
  figures are then read from their fold bundles);
* late fusion over two baselines (descriptors + LR, TF-IDF + LR or frozen MiniLM + LR), the same way;
* baselines fitted on the training folds: log-mel statistics + LR, descriptors + LR, TF-IDF + LR,
  frozen MiniLM embeddings + LR.

Features and frozen embeddings are cached under --cache (default /tmp/fusion), so a second run only
re-scores. 200 songs are a development slice: the spread over folds is wide and the figures are not
the models' accuracy on real catalogues.

    MOOD_LABELER_DATA=../shared/data .venv/bin/python bench/bench_fusion.py --run R
    .venv/bin/python bench/bench_fusion.py --data ../shared/data     # baselines + their fusion only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.special import log_softmax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere in the checkout

from bench.realdata_cv import ModelResult, cv_baseline, results_table, splits  # noqa: E402


def scored(name: str, kind: str, per_fold_probs: dict, y, folds, k, classes, wall: float, cpu: float, note: str = "") -> ModelResult:
    from train.score.metrics import classification_metrics

    result = ModelResult(name, kind, seconds=wall, cpu_seconds=cpu, note=note)
    for test_fold, _, _, test_idx in splits(folds, k):
        result.folds[str(test_fold)] = classification_metrics(y[test_idx], per_fold_probs[test_fold], classes)
    return result


def fusion_rows(prefix: str, audio: dict, lyrics: dict, y, folds, k, classes, head: dict | None = None) -> list[ModelResult]:
    """Late/gated fusion (and the chosen fusion) of two branches' calibrated logits, per fold."""
    from train.score.metrics import macro_f1
    from train.select import fusion

    n = len(classes)
    probs: dict[str, dict] = {kind: {} for kind in (*fusion.LATE_KINDS, "chosen")}
    chosen_names = []
    cpu0, t0 = time.process_time(), time.perf_counter()
    for test_fold, _, val_idx, _ in splits(folds, k):
        la_val = fusion.calibrated_logprobs(audio["val"][test_fold], audio["temperature"][test_fold])
        ll_val = fusion.calibrated_logprobs(lyrics["val"][test_fold], lyrics["temperature"][test_fold])
        la_test = fusion.calibrated_logprobs(audio["test"][test_fold], audio["temperature"][test_fold])
        ll_test = fusion.calibrated_logprobs(lyrics["test"][test_fold], lyrics["temperature"][test_fold])
        head_val = None
        if head is not None:
            head_val = macro_f1(y[val_idx], head["val"][test_fold], n)
        choice = fusion.choose(la_val, ll_val, y[val_idx], n, head_val)
        for kind in fusion.LATE_KINDS:
            probs[kind][test_fold] = np.exp(log_softmax(fusion.combine(kind, choice["params"][kind], la_test, ll_test), axis=1))
        winner = choice["winner"]
        chosen_names.append(winner)
        probs["chosen"][test_fold] = (probs[winner][test_fold] if winner != "head" else
                                      np.exp(log_softmax(head["test"][test_fold] / head["temperature"][test_fold], axis=1)))
        print(f"  {prefix} fold {test_fold}: validation {({kk: round(v, 3) for kk, v in choice['val_macro_f1'].items()})} "
              f"-> {winner}")
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    base_wall = audio["wall"] + lyrics["wall"] + (head["wall"] if head else 0.0)
    base_cpu = audio["cpu"] + lyrics["cpu"] + (head["cpu"] if head else 0.0)
    rows = [scored(f"{prefix} late: equal experts", "fusion", probs["equal"], y, folds, k, classes, wall, cpu,
                   "calibrated log-probabilities averaged, nothing fitted"),
            scored(f"{prefix} late: weighted average", "fusion", probs["average"], y, folds, k, classes, wall, cpu,
                   "w on a 0..1 grid by validation NLL"),
            scored(f"{prefix} late: logistic regression", "fusion", probs["logreg"], y, folds, k, classes, wall, cpu,
                   "on [log p_audio, log p_lyrics], fitted on validation"),
            scored(f"{prefix} gated", "fusion", probs["gated"], y, folds, k, classes, wall, cpu,
                   "entropy gate fitted on validation")]
    rows.append(scored(f"{prefix} fusion (chosen on validation)", "fusion", probs["chosen"], y, folds, k, classes,
                       base_wall + wall, base_cpu + cpu, "per fold: " + ", ".join(chosen_names)))
    return rows


def run_rows(run: Path, folds: np.ndarray, k: int, branch_runs: dict[str, Path] | None = None) -> list[ModelResult]:
    """The production run's branches and fusions on the test folds, read from its report.json.

    The run must have trained every fold on this slice's folds (checked: the same test songs per fold).
    `branch_runs`: where a `--branch fusion` run's audio and lyrics runs are (default: inside `run`).
    """
    from train.select import fusion

    report = json.loads((run / "report.json").read_text())
    branches, selection = report["branches"], report["selection"]["fusion"]
    for branch in ("audio", "lyrics"):  # a `--branch fusion` run's report holds the fusion only: read its bundles
        if branch not in branches:
            where = (branch_runs or {}).get(branch, run / branch)
            branches[branch] = {"folds": {str(f): json.loads((where / f"fold{f}" / "bundle" / "config.json")
                                                             .read_text())["metrics"]["test"] for f in range(k)}}
    sizes = {str(f): int((folds == f).sum()) for f in range(k)}
    have = {f: m["n"] for f, m in branches["audio"]["folds"].items()}
    if have != sizes:
        raise SystemExit(f"{run} was not trained on every fold of this slice: test fold sizes {have}, expected {sizes}")
    rows = []  # the run's report keeps no per-branch times: the note and bench/README give the run's wall time
    for name, key, note in (("audio branch (cpu-small)", "audio", "the run's audio bundles"),
                            ("lyrics branch (cpu-small)", "lyrics", "frozen MiniLM windows + head, stacked with TF-IDF"),
                            ("fusion head", "fusion_head", "concatenated embeddings, modality dropout"),
                            ("branches late: equal experts", "fusion_equal", "own temperatures, lexical a third expert"),
                            ("branches late: weighted average", "fusion_average", "fitted on validation"),
                            ("branches late: logistic regression", "fusion_logreg", "fitted on validation"),
                            ("branches gated", "fusion_gated", "fitted on validation")):
        if key not in branches:  # a run from before that candidate existed
            continue
        rows.append(ModelResult(name, "branch" if key in ("audio", "lyrics") else "fusion",
                                folds=dict(branches[key]["folds"]), note=note))
    kept = ModelResult("fusion kept by the run (one-SE rule)", "fusion", folds=dict(branches["fusion"]["folds"]))
    argmax = ModelResult("fusion the best validation score would keep", "fusion")
    for fold, s in selection.items():
        scores = s["fusion"]["val_macro_f1"]
        best = fusion.simplest_within(scores, 0.0)  # no tolerance: the plain best score, ties to the simpler
        argmax.folds[fold] = branches[f"fusion_{best}"]["folds"][fold]
        kept.note += f"{fold}: {s['fusion']['winner']} ({', '.join(f'{c} {v:.2f}' for c, v in scores.items())}; " \
                     f"SE {s['fusion']['tolerance']:.3f}); "
        argmax.note += f"{fold}: {best}; "
    return rows + [kept, argmax]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("MOOD_LABELER_DATA", "../shared/data"))
    parser.add_argument("--cache", default="bench/results/fusion", help="folder for cached features and per-fold logits")
    parser.add_argument("--clip-seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--run", default=None,
                        help="a `labeler train --folds all` run on the same manifest: its models' rows beside the baselines")
    parser.add_argument("--audio-run", default=None, help="with a `--branch fusion` --run: its audio run")
    parser.add_argument("--lyrics-run", default=None, help="with a `--branch fusion` --run: its lyrics run")
    parser.add_argument("--json", default=None, help="write every row's summary here")
    args = parser.parse_args(argv)

    from bench.bench_real_audio import cached_features, featurizer_config
    from bench.bench_real_lyrics import head_tail_vectors
    from labeler.lyrics.text import clean_lyrics
    from train.data.datasets.mirex import prepare_mirex
    from train.data.folds import assign_folds
    from train.data.manifest import label_kind
    from train.fit.presets import get_preset
    from train.score.baselines import audio_baseline, lyrics_baseline, vector_baseline
    from train.select.calibration import fit_temperature

    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    preset = get_preset("cpu-small", clip_seconds=args.clip_seconds, patience=4)
    k = 5
    started = time.perf_counter()
    table = assign_folds(prepare_mirex(Path(args.data) / "mirex"), k=k, seed=preset.seed)
    _, classes = label_kind(table)
    labels = table.column("label").to_pylist()
    y = np.asarray([classes.index(v) for v in labels], dtype=np.int64)
    folds = np.asarray(table.column("fold").to_pylist(), dtype=np.int64)
    texts = [t or "" for t in table.column("lyrics").to_pylist()]
    print(f"mirex: {len(y)} songs, per class {np.bincount(y).tolist()} ({', '.join(classes)}), k={k}")

    config = featurizer_config(preset, args.clip_seconds)
    t0 = time.perf_counter()
    feats = cached_features(str(cache / "mirex_audio.npz"), table, config, workers=args.threads)
    errors = [e for e in feats["audio_error"] if e]
    if errors:
        raise SystemExit(f"{len(errors)} clips failed to featurise, e.g. {errors[:3]}: every development song has audio")
    log_mel, descriptors = feats["log_mel"].astype(np.float32), feats["descriptors"].astype(np.float32)
    print(f"audio features in {time.perf_counter() - t0:.0f} s")

    # the frozen-encoder baseline: all-MiniLM-L6-v2 mean-pooled over the head+tail 128 tokens
    frozen = head_tail_vectors([clean_lyrics(t) for t in texts], cache / "mirex_minilm", 128)

    results: list[ModelResult] = [
        cv_baseline("log-mel statistics + LR", audio_baseline, log_mel, y, folds, k, classes),
        cv_baseline("descriptors + LR", vector_baseline, descriptors, y, folds, k, classes),
        cv_baseline("TF-IDF + LR", lyrics_baseline, texts, y, folds, k, classes),
        cv_baseline("frozen MiniLM + LR", vector_baseline, frozen, y, folds, k, classes),
    ]
    for r in results:
        r.kind = "baseline"

    def baseline_branch(fit_predict, features) -> dict:
        """A baseline as a branch: fitted on the training folds, log-probabilities on val and test, T on val."""
        take = (lambda idx: [features[i] for i in idx]) if isinstance(features, list) else (lambda idx: features[idx])
        out: dict = {"val": {}, "test": {}, "temperature": [], "wall": 0.0, "cpu": 0.0}
        t, c = time.perf_counter(), time.process_time()
        for test_fold, train_idx, val_idx, test_idx in splits(folds, k):
            for role, idx in (("val", val_idx), ("test", test_idx)):
                probs = fit_predict(take(train_idx), y[train_idx], take(idx), n_classes=len(classes))
                out[role][test_fold] = np.log(np.clip(probs, 1e-9, 1.0))
            out["temperature"].append(fit_temperature(out["val"][test_fold], y[val_idx]))
        out["wall"], out["cpu"] = time.perf_counter() - t, time.process_time() - c
        return out

    descriptor_branch = baseline_branch(vector_baseline, descriptors)
    results += fusion_rows("baselines (descriptors LR + TF-IDF LR)", descriptor_branch,
                           baseline_branch(lyrics_baseline, texts), y, folds, k, classes)
    results += fusion_rows("baselines (descriptors LR + frozen MiniLM LR)", descriptor_branch,
                           baseline_branch(vector_baseline, frozen), y, folds, k, classes)

    if args.run:
        branch_runs = {b: Path(r) / b for b, r in (("audio", args.audio_run), ("lyrics", args.lyrics_run)) if r}
        results += run_rows(Path(args.run), folds, k, branch_runs)

    total = time.perf_counter() - started
    print()
    print(f"## MIREX development slice, {k}-fold CV ({len(y)} songs, torch threads {args.threads}, total {total:.0f} s)")
    print()
    print(results_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({r.name: {"kind": r.kind, "summary": r.summary, "wall": r.seconds,
                                                         "cpu": r.cpu_seconds, "note": r.note} for r in results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
