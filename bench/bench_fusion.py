"""Fusion benchmark: 5-fold CV on the 200 MIREX development songs (audio + lyrics, 5 mood clusters).

Data: ../shared/data/mirex, read by the project's adapter (train.datasets.mirex, mode `classes`),
folds by train.folds.assign_folds (k=5, seed 8848, stratified by cluster). Each test fold is scored
once; the next fold is the validation fold (early stopping, checkpoint choice, temperatures, and the
fitting and choice of late/gated fusion); the other three (120 songs) train.

Rows (all on the same splits):

* branches, trained as `cpu-small` does (bench/realdata_cv.py's loop): audio = Hybrid (quarter-width
  Cnn6 + descriptors, 8-s automatic chorus), lyrics = MiniLM-L6 fine-tuned (128 tokens, lower 4 layers
  frozen); each calibrated by its validation-fold temperature;
* fusion over those branches: the fusion head (concatenated embeddings, modality dropout, trained on the
  training folds from the two branch models), late fusion (weighted average, logistic regression) and
  gated fusion (train.fusion, fitted on the validation fold), and `fusion (chosen)`: per fold the one
  of the four with the best validation score (train.fusion.choose), which is what `labeler train` keeps;
* late fusion over two baselines (descriptors + LR, TF-IDF + LR), the same way (cheap branches);
* baselines fitted on the training folds: log-mel statistics + LR, descriptors + LR, TF-IDF + LR,
  frozen MiniLM embeddings + LR.

Features, token ids, frozen embeddings and every branch's per-fold logits are cached under --cache
(default /tmp/fusion), so a second run only re-scores. 200 songs are a development slice: the spread
over folds is wide and the figures are not the models' accuracy on real catalogues.

    MOOD_LABELER_DATA=../shared/data .venv/bin/python bench/bench_fusion.py
    .venv/bin/python bench/bench_fusion.py --data ../shared/data --skip-networks     # baselines + their fusion only
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

from bench.realdata_cv import ModelResult, cv_baseline, logits_of, markdown_table, splits, train_network  # noqa: E402


def branch_logits(name: str, cache: Path, build, inputs, y, folds, k, preset, classes, prepare=None) -> dict:
    """Per test fold: validation and test logits of a network trained on the training folds, and T.

    Cached in `cache/<name>.npz` (one run trains each network once).
    """
    path = cache / f"{name}.npz"
    if path.exists():
        with np.load(path) as z:
            print(f"{name}: logits reused from {path}")
            return {"val": {f: z[f"val{f}"] for f in range(k)}, "test": {f: z[f"test{f}"] for f in range(k)},
                    "temperature": z["temperature"].tolist(), "cpu": float(z["cpu"]), "wall": float(z["wall"]),
                    "models": None}
    out: dict = {"val": {}, "test": {}, "temperature": [], "models": {}}
    started, cpu0 = time.perf_counter(), time.process_time()
    for test_fold, train_idx, val_idx, test_idx in splits(folds, k):
        print(f"  {name} fold {test_fold}: train {len(train_idx)}, val {len(val_idx)}, test {len(test_idx)}")

        def built(train_idx=train_idx, test_fold=test_fold):
            model = build(test_fold)
            if prepare is not None:
                prepare(model, train_idx)
            return model

        model, _, temperature = train_network(built, inputs, y, train_idx, val_idx, preset, classes, seed=preset.seed + test_fold)
        out["val"][test_fold] = logits_of(model, inputs, val_idx)
        out["test"][test_fold] = logits_of(model, inputs, test_idx)
        out["temperature"].append(temperature)
        out["models"][test_fold] = model
    out["wall"], out["cpu"] = time.perf_counter() - started, time.process_time() - cpu0
    np.savez(path, temperature=np.asarray(out["temperature"]), cpu=out["cpu"], wall=out["wall"],
             **{f"val{f}": v for f, v in out["val"].items()}, **{f"test{f}": v for f, v in out["test"].items()})
    return out


def scored(name: str, kind: str, per_fold_probs: dict, y, folds, k, classes, wall: float, cpu: float, note: str = "") -> ModelResult:
    from train.metrics import classification_metrics

    result = ModelResult(name, kind, seconds=wall, cpu_seconds=cpu, note=note)
    for test_fold, _, _, test_idx in splits(folds, k):
        result.folds[str(test_fold)] = classification_metrics(y[test_idx], per_fold_probs[test_fold], classes)
    return result


def fusion_rows(prefix: str, audio: dict, lyrics: dict, y, folds, k, classes, head: dict | None = None) -> list[ModelResult]:
    """Late/gated fusion (and the chosen fusion) of two branches' calibrated logits, per fold."""
    from train import fusion

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
            head_val = fusion.macro_f1(y[val_idx], head["val"][test_fold], n)
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
    rows = [scored(f"{prefix} late: weighted average", "fusion", probs["average"], y, folds, k, classes, wall, cpu,
                   "w on a 0..1 grid by validation NLL"),
            scored(f"{prefix} late: logistic regression", "fusion", probs["logreg"], y, folds, k, classes, wall, cpu,
                   "on [log p_audio, log p_lyrics], fitted on validation"),
            scored(f"{prefix} gated", "fusion", probs["gated"], y, folds, k, classes, wall, cpu,
                   "entropy gate fitted on validation")]
    rows.append(scored(f"{prefix} fusion (chosen on validation)", "fusion", probs["chosen"], y, folds, k, classes,
                       base_wall + wall, base_cpu + cpu, "per fold: " + ", ".join(chosen_names)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("MOOD_LABELER_DATA", "../shared/data"))
    parser.add_argument("--cache", default="/tmp/fusion", help="folder for cached features and per-fold logits")
    parser.add_argument("--audio-epochs", type=int, default=12)
    parser.add_argument("--lyrics-epochs", type=int, default=3)
    parser.add_argument("--fusion-epochs", type=int, default=3)
    parser.add_argument("--clip-seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-networks", action="store_true", help="baselines and their late fusion only")
    parser.add_argument("--json", default=None, help="write every row's summary here")
    args = parser.parse_args(argv)

    from bench.bench_real_audio import cached_features, featurizer_config
    from bench.bench_real_lyrics import frozen_embeddings
    from labeler.audio import DESCRIPTOR_DIM
    from labeler.lyrics import LyricsConfig, clean_lyrics, tokenize
    from labeler.models import AudioCnnConfig, EmotionModel, LyricsEncoderConfig, ModelConfig
    from labeler.pretrained import load_tokenizer
    from train.baselines import audio_baseline, lyrics_baseline, vector_baseline
    from train.calibration import fit_temperature
    from train.datasets.mirex import prepare_mirex
    from train.folds import assign_folds
    from train.manifest import label_kind
    from train.presets import get_preset

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

    tokenizer = load_tokenizer(preset.lyrics_encoder)
    ids, mask = tokenize(tokenizer, [clean_lyrics(t) for t in texts], LyricsConfig(max_tokens=preset.max_tokens,
                                                                                 long_policy=preset.long_policy))
    lyrics_model_cfg = LyricsEncoderConfig(name_or_path=preset.lyrics_encoder, dropout=preset.lyrics_dropout)
    frozen_path = cache / "mirex_minilm_frozen.npy"
    if frozen_path.exists():
        frozen = np.load(frozen_path)
    else:
        frozen = frozen_embeddings(ModelConfig(branch="lyrics", mode="classes", classes=classes, audio=None,
                                               lyrics=lyrics_model_cfg), ids, mask)
        np.save(frozen_path, frozen)

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

    if not args.skip_networks:
        audio_preset = get_preset("cpu-small", clip_seconds=args.clip_seconds, epochs=args.audio_epochs, patience=4)
        lyrics_preset = get_preset("cpu-small", epochs=args.lyrics_epochs, patience=2)
        fusion_preset = get_preset("cpu-small", epochs=args.fusion_epochs, patience=2)
        cnn = AudioCnnConfig(arch="Cnn6", n_mels=preset.n_mels, width=preset.audio_width,
                             embedding_dim=preset.audio_embedding_dim, dropout=preset.audio_dropout,
                             spec_augment=preset.spec_augment, descriptor_dim=DESCRIPTOR_DIM)
        audio_cfg = ModelConfig(branch="audio", mode="classes", classes=classes, audio=cnn, lyrics=None,
                                dropout=preset.head_dropout)
        lyrics_cfg = ModelConfig(branch="lyrics", mode="classes", classes=classes, audio=None, lyrics=lyrics_model_cfg,
                                 dropout=preset.head_dropout)

        def descriptor_stats(model, train_idx):
            d = descriptors[train_idx]
            model.audio_encoder.set_descriptor_stats(d.mean(axis=0), d.std(axis=0))

        audio = branch_logits("audio_hybrid", cache, lambda f: EmotionModel(audio_cfg),
                              {"log_mel": log_mel, "descriptors": descriptors}, y, folds, k, audio_preset, classes,
                              prepare=descriptor_stats)
        lyrics = branch_logits("lyrics_minilm", cache, lambda f: EmotionModel.from_pretrained_branches(lyrics_cfg),
                               {"input_ids": ids, "attention_mask": mask}, y, folds, k, lyrics_preset, classes)
        head = None
        if audio["models"] is not None and lyrics["models"] is not None or (cache / "fusion_head.npz").exists():
            fusion_cfg = ModelConfig(branch="fusion", mode="classes", classes=classes, audio=cnn, lyrics=lyrics_model_cfg,
                                     hidden_dim=preset.hidden_dim, dropout=preset.head_dropout,
                                     modality_dropout=preset.modality_dropout)
            head = branch_logits(
                "fusion_head", cache,
                lambda f: EmotionModel.fusion_from_branches(audio["models"][f], lyrics["models"][f], fusion_cfg),
                {"log_mel": log_mel, "descriptors": descriptors, "input_ids": ids, "attention_mask": mask},
                y, folds, k, fusion_preset, classes)
        for name, branch, note in (("audio: Hybrid", audio, f"<= {args.audio_epochs} epochs"),
                                   ("lyrics: MiniLM fine-tuned", lyrics, f"<= {args.lyrics_epochs} epochs, 128 tokens")):
            probs = {f: np.exp(log_softmax(branch["test"][f] / branch["temperature"][f], axis=1)) for f in range(k)}
            results.append(scored(name, "branch", probs, y, folds, k, classes, branch["wall"], branch["cpu"], note))
        if head is not None:
            probs = {f: np.exp(log_softmax(head["test"][f] / head["temperature"][f], axis=1)) for f in range(k)}
            results.append(scored("fusion head", "fusion", probs, y, folds, k, classes, head["wall"], head["cpu"],
                                  f"from the fold's branches, <= {args.fusion_epochs} epochs"))
        results += fusion_rows("branches", audio, lyrics, y, folds, k, classes, head)

    total = time.perf_counter() - started
    print()
    print(f"## MIREX development slice, {k}-fold CV ({len(y)} songs, torch threads {args.threads}, total {total:.0f} s)")
    print()
    print(markdown_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({r.name: {"kind": r.kind, "summary": r.summary, "wall": r.seconds,
                                                         "cpu": r.cpu_seconds, "note": r.note} for r in results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
