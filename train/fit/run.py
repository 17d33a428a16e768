"""`labeler train`: cross-validated training of the audio, lyrics and fusion models with Ray Train + Tune.

One run, for each requested branch (audio, then lyrics, then fusion for `--branch all`):

1. The manifest is featurised once into the feature cache (`train.cache.feature_cache`), reused by every
   fold, branch and epoch (and by later runs with the same featuriser, tokenizer and manifest); the
   preset becomes the library's configs in `train.fit.configs`.
2. Each branch over the folds (`train.fit.branch`): every fold is one `TorchTrainer`
   (`train.fit.loop.train_loop_per_worker`: DDP, bf16 on GPU, class weights from the training part,
   warmup + cosine, early stopping and checkpoint selection on the validation fold's macro-F1,
   resumable checkpoints), run as a Ray Tune trial (`train.fit.trial`; folds x an optional
   hyperparameter grid, `--search`, concurrently when the cluster has room).
3. After training, for each fold (`train.select.finalise`): temperature scaling and the `ambiguous`
   threshold fitted on the validation split (`train.select.calibration`), then the first and only look at
   the test fold: metrics and calibration (ECE before/after). With `--search`, the setting kept per
   fold is the one with the best validation macro-F1; the test fold never takes part in any choice.
   Fusion: after the head is trained, `train.select.fusion` fits late fusion (weighted average, logistic
   regression) and gated fusion over the fold's calibrated branch probabilities on the validation
   fold, and keeps whichever of the four scores best there (the report lists all four on test).
4. Baselines (`train.score.baselines.run_baselines`: log-mel statistics + logistic regression; TF-IDF +
   logistic regression) are fitted on the same training folds and scored on the same test folds.
5. `finish`: export first (`train.select.finalise.export_best`: `<output>/bundle` is the last branch's fold
   model with the best *validation* macro-F1), then `train.score.report.write_report` writes report.json,
   report.md and PNG plots (confusion matrices, per-fold bars, training curves), so nothing in the
   report can cost a trained run its bundle; a plot that cannot be drawn is left out with a warning.

Output layout: `<output>/<branch>/fold<k>/bundle` (calibrated per-fold bundles; a fusion run reads
its branches from `--audio-run/--lyrics-run`, i.e. `<run>/<branch>`, and takes their featuriser,
lyrics and encoder settings from those fold bundles' configs, `train.fit.configs.branch_fields`),
`<output>/<branch>/run.json` (a record of the settings and the selection),
`<output>/report.{json,md}` + PNGs, `<output>/bundle`, `<output>/train_result.json`; Ray Train
checkpoints under `--storage` (default `<output>/checkpoints`), the cache under `--cache`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from labeler.contracts.labels import class_names
from labeler.io import storage
from train.fit.branch import train_branch
from train.fit.configs import branch_fields, featurizer_config, lyrics_config, model_config, parse_folds, parse_search
from train.fit.presets import check_branch_mode, get_preset
from train.score.baselines import run_baselines
from train.select.finalise import export_best

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where a run wrote its results, and the report dict it wrote (see train.score.report's docstring)."""

    output_uri: str
    bundle_uri: str
    report: dict
    fold_bundles: dict = field(default_factory=dict)  # {branch: {fold: bundle uri}}
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------ helpers


def _manifest_folds(manifest_uri: str) -> tuple[np.ndarray, int]:
    """The manifest's fold column (one small int column; nothing else is read) and k."""
    from train.data.folds import check_k  # noqa: PLC0415

    folds = storage.read_parquet(manifest_uri, columns=["fold"]).column("fold").to_numpy()
    if len(folds) == 0 or folds.min() < 0:
        raise ValueError(f"{storage.describe(manifest_uri)}: folds are not assigned (run `labeler prepare` first)")
    return folds, check_k(int(folds.max()) + 1)


# ------------------------------------------------------------------------------------------ the run


def _check_label_kind(manifest_uri: str, mode: str) -> list[str] | None:
    """The manifest's classes in mode `classes` (None otherwise); a ValueError when mode and labels disagree."""
    from train.cache.feature_cache import manifest_classes  # noqa: PLC0415

    classes = manifest_classes(manifest_uri)
    if mode == "classes" and classes is None:
        raise ValueError(f"--mode classes needs a classes manifest (a `label` column, e.g. from mirex); "
                         f"{storage.describe(manifest_uri)} has quadrant labels: use --mode 4Q, Ar or Va")
    if mode != "classes" and classes is not None:
        raise ValueError(f"{storage.describe(manifest_uri)} labels its songs with its own classes "
                         f"({', '.join(classes)}), not quadrants: train it with --mode classes")
    return classes


def _branch_bundle_config(branch_run: str, branch: str, fold: int) -> dict:
    """config.json of a branch run's fold bundle (checked by labeler.bundle.verified.read_config)."""
    from labeler.bundle.verified import read_config  # noqa: PLC0415

    uri = storage.join(branch_run, f"fold{fold}", "bundle")
    if not storage.exists(storage.join(uri, "config.json")):
        raise ValueError(f"--{branch}-run {storage.describe(branch_run)} has no fold {fold} bundle (expected a `labeler "
                         f"train --branch {branch}` output trained on the same folds, or its {branch}/ folder)")
    return read_config(uri)


def _resolve_branch_run(uri: str | None, branch: str) -> str | None:
    """Accept either the run output (holding <branch>/run.json) or the branch folder itself."""
    if uri is None:
        return None
    uri = storage.absolute_uri(uri)
    nested = storage.join(uri, branch)
    return nested if storage.exists(storage.join(nested, "run.json")) else uri


def _lexical_source(p, branches: list[str], manifest_uri: str):
    """The run's `--lexical-source` corpus, read and checked before any work (None without one)."""
    from train.data.lexical_source import load_source  # noqa: PLC0415

    if not p.lexical_source:
        return None
    if "lyrics" not in branches:
        raise ValueError("--lexical-source trains the lyrics branch's lexical model: give it to a lyrics or all run "
                         "(a fusion run reuses its lyrics run's)")
    if not p.lexical:
        raise ValueError(f"--lexical-source needs a stacked lyrics branch (preset {p.name} has lexical=false; "
                         "--set lexical=true)")
    return load_source(p.lexical_source, manifest_uri)


def train(manifest_uri: str, output_uri: str, branch: str = "all", mode: str = "4Q", preset: str = "cpu-small",
          folds="all", audio_model: str | None = None, lyrics_model: str | None = None,
          audio_run: str | None = None, lyrics_run: str | None = None, storage_uri: str | None = None,
          cache_uri: str | None = None, search: str | dict | None = None, num_samples: int = 1,
          console=None, **overrides) -> TrainResult:
    """Train `branch` (audio | lyrics | fusion | all) over `folds`; write bundles, report and export. See module doc.

    With a `console` (labeler.runtime.console.Console), featurising and training each show a progress line,
    and every epoch of every fold one line of metrics.
    """
    from labeler.lyrics.pretrained import resolve_encoder  # noqa: PLC0415
    from labeler.runtime.console import Console  # noqa: PLC0415
    from labeler.runtime.session import ensure_ray  # noqa: PLC0415
    from train.cache.feature_cache import build_feature_cache  # noqa: PLC0415

    started = time.perf_counter()
    check_branch_mode(branch, mode)
    if audio_model:
        overrides["audio_arch"] = audio_model
    if lyrics_model:
        overrides["lyrics_encoder"] = lyrics_model
    p = get_preset(preset, **overrides)
    output_uri = storage.absolute_uri(output_uri)
    manifest_uri = storage.absolute_uri(manifest_uri)
    branches = ["audio", "lyrics", "fusion"] if branch == "all" else [branch]
    branch_runs: dict[str, str] = {}
    if "fusion" in branches and branch == "fusion":
        if not audio_run or not lyrics_run:
            raise ValueError("--branch fusion needs --audio-run and --lyrics-run (outputs of the branch runs)")
        branch_runs = {"audio": _resolve_branch_run(audio_run, "audio"), "lyrics": _resolve_branch_run(lyrics_run, "lyrics")}
    elif "fusion" in branches:
        branch_runs = {"audio": storage.join(output_uri, "audio"), "lyrics": storage.join(output_uri, "lyrics")}

    _, k = _manifest_folds(manifest_uri)
    classes = _check_label_kind(manifest_uri, mode)
    source = _lexical_source(p, branches, manifest_uri)
    fold_list = parse_folds(folds if folds not in (None, "") else None, k, p)
    if branch == "fusion":  # the fused model sees the features and tokens its branches were trained on
        p = dataclasses.replace(p, **branch_fields(*(_branch_bundle_config(branch_runs[b], b, fold_list[0])
                                                     for b in ("audio", "lyrics"))))
    ensure_ray()
    console = console or Console.silent()
    featurizer, lyrics = featurizer_config(p), lyrics_config(p)
    needs_text = any(b in ("lyrics", "fusion") for b in branches)
    tokenizer_dir = resolve_encoder(p.lyrics_encoder) if needs_text else None
    cache_root = storage.absolute_uri(cache_uri) if cache_uri else storage.join(output_uri, "feature_cache")
    frozen_lyrics = model_config(p, "lyrics", mode, classes)["lyrics"] if (
        "lyrics" in branches and p.freeze_lyrics_encoder) else None  # its window vectors are cached once per song
    cache = build_feature_cache(manifest_uri, cache_root, featurizer, tokenizer_dir, lyrics,
                                concurrency=p.featurise_concurrency, console=console,
                                audio_encoder=p.musicnn_encoder if p.uses_musicnn and branch != "lyrics" else None,
                                lyrics_encoder=frozen_lyrics)
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    provenance = {"manifest": storage.describe(manifest_uri), "preset": p.name, "preset_values": p.to_dict(),
                  "mode": mode, "folds": fold_list, "k": k, "created_at": created, "feature_cache": storage.describe(cache),
                  "selection": "checkpoint and exported fold chosen on validation macro-F1 (val = fold (test+1) % k)"}
    if source is not None:
        provenance["lexical_source"] = source.describe()
    run = {
        "output_uri": output_uri, "cache_uri": cache, "run_name": f"train-{created.replace(':', '').replace('+', 'Z')[:17]}",
        "storage_uri": storage.absolute_uri(storage_uri) if storage_uri else storage.join(output_uri, "checkpoints"),
        "featurizer": featurizer.to_dict(), "lyrics": lyrics.to_dict(), "tokenizer_dir": tokenizer_dir,
        "model_id": f"mood-{mode.lower()}", "provenance": provenance, "classes": classes,
        "lexical_source": source,
    }
    search_space = parse_search(search) if isinstance(search, (str, type(None))) else dict(search)

    results: dict = {"mode": mode, "classes": class_names(mode, classes), "branches": {}, "baselines": {}, "calibration": {},
                     "provenance": provenance}
    fold_bundles: dict = {}
    entries: dict = {}
    n_settings = max(1, int(np.prod([len(v) for v in search_space.values()]))) * max(1, int(num_samples))
    for b in branches:
        log.info("training %s on folds %s (preset %s)", b, fold_list, p.name)
        total = len(fold_list) * n_settings * p.epochs_for(b)
        with console.stage(f"train {b}", total=total, unit="epochs", remote=True) as stage:
            epochs = p.epochs_for(b)
            stage.event(f"  training {b} on fold(s) {', '.join(map(str, fold_list))}, up to {epochs} "
                        f"epoch{'s' if epochs != 1 else ''} each (stops early when validation macro-F1 stops improving)")
            run["progress_sink"] = stage.sink
            entry = train_branch(b, run, p, fold_list, k, mode, search_space, max(1, int(num_samples)), branch_runs)
            run.pop("progress_sink", None)
        for fold, metrics in entry["folds"].items():
            console.print(f"  {b} fold {fold}: test macro-F1 {metrics['macro_f1']:.3f} "
                          f"(checkpoint chosen on validation: {entry['selection'][fold]['val_macro_f1']:.3f})")
        entries[b] = entry
        fold_bundles[b] = entry["bundles"]
        results["branches"][b] = {"folds": entry["folds"], "curves": entry["curves"]}
        for name, per_fold in entry.get("variants", {}).items():  # every fusion candidate's test scores
            results["branches"][f"fusion_{name}"] = {"folds": per_fold}
        results["calibration"][b] = entry["calibration"]
    which = {m for b in branches for m in ({"audio", "lyrics"} if b == "fusion" else {b})}
    results["baselines"] = run_baselines(manifest_uri, cache, fold_list, k, mode, which, classes)
    results["selection"] = {b: e["selection"] for b, e in entries.items()}
    return finish(output_uri, entries[branches[-1]], branches[-1], provenance, results, fold_bundles, started)


def finish(output_uri: str, entry: dict, branch: str, provenance: dict, results: dict, fold_bundles: dict,
           started: float) -> TrainResult:
    """The end of a trained run, in this order: `<output>/bundle`, then the report, then train_result.json.

    The bundle is the run's product and depends on nothing the report draws, so it is exported first:
    whatever the report meets (a class name matplotlib cannot draw, a full disk), the trained model is
    already saved. A plot that fails does not fail the report (train.score.report); anything else that fails
    in the report fails the run after the bundle exists.
    """
    from train.score.report import write_report  # noqa: PLC0415

    bundle_uri = export_best(entry, branch, storage.join(output_uri, "bundle"), provenance, results)
    write_report(output_uri, results)
    seconds = time.perf_counter() - started
    result = TrainResult(output_uri=output_uri, bundle_uri=bundle_uri, report=results, fold_bundles=fold_bundles,
                         seconds=seconds)
    storage.write_text(storage.join(output_uri, "train_result.json"), json.dumps({
        "output_uri": output_uri, "bundle_uri": bundle_uri, "seconds": round(seconds, 1),
        "fold_bundles": {b: {str(f): u for f, u in v.items()} for b, v in fold_bundles.items()},
    }, indent=2))
    return result


