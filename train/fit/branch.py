"""One branch (audio, lyrics or fusion) over the cross-validation folds: fold configs, trials, finalising.

For each fold the training part's class counts (class weights) and descriptor statistics are read
from the feature cache, and the fold's loop config is built: a dict holding the typed `TrainPreset`
itself (Ray pickles it to the trials and workers), the branch's epoch count and the model config
(fusion also points at its branches' fold bundles, whose descriptor statistics it reuses). The folds
then train as Tune trials (`train.fit.trial`); the trial with the best *validation* macro-F1 per fold is
finalised (`train.select.finalise`), and `<output>/<branch>/run.json` records the settings (the preset as
JSON, `TrainPreset.to_dict`) and the selection for people and tools; no later run reads it back.
"""

from __future__ import annotations

import json

import numpy as np

from labeler.contracts.labels import num_classes
from labeler.io import storage
from train.fit.configs import model_config
from train.fit.presets import TrainPreset
from train.fit.trial import SEARCH_KEYS, run_trials
from train.select.finalise import choose_fusion, finalise_fold


def _split_stats(cache_uri: str, scalars, train_folds: list[int], require: str | None, mode: str,
                 descriptors: bool, n_classes: int) -> tuple[int, np.ndarray, dict | None]:
    """(rows, class counts, descriptor mean/std) of a training part (descriptors streamed from the cache)."""
    from train.cache.feature_cache import iter_numpy, target_column  # noqa: PLC0415
    from train.fit.loop import targets_for_mode  # noqa: PLC0415

    fold = scalars.column("fold").to_numpy()
    keep = np.isin(fold, train_folds)
    if require:
        keep &= scalars.column(f"has_{require}").to_numpy(zero_copy_only=False)
    y = targets_for_mode(scalars.column(target_column(mode)).to_numpy()[keep], mode)
    counts = np.bincount(y, minlength=n_classes)
    stats = None
    if descriptors:
        total, sq, n_desc = 0.0, 0.0, 0
        for batch in iter_numpy(cache_uri, train_folds, ["descriptors"], "audio"):
            d = batch["descriptors"].astype(np.float64)
            d = np.where(np.isfinite(d), d, 0.0)
            total, sq, n_desc = total + d.sum(0), sq + (d ** 2).sum(0), n_desc + len(d)
        if n_desc:
            mean = total / n_desc
            stats = {"mean": mean.tolist(), "std": np.sqrt(np.maximum(sq / n_desc - mean ** 2, 0.0)).tolist()}
    return int(counts.sum()), counts, stats


def train_branch(branch: str, run: dict, preset: TrainPreset, folds: list[int], k: int, mode: str,
                 search: dict[str, list], num_samples: int, branch_runs: dict) -> dict:
    """Train `branch` on `folds` as Tune trials; finalise each fold; return its report entry + bundles."""
    from train.cache.feature_cache import branch_requirement, caches_lyrics_vectors, split_folds  # noqa: PLC0415

    out_dir = storage.join(run["output_uri"], branch)
    from train.cache.feature_cache import scalar_columns  # noqa: PLC0415

    scalars = scalar_columns(run["cache_uri"], mode)
    classes = run.get("classes")
    n_classes = num_classes(mode, classes)
    # A frozen lyrics encoder's window vectors are in the cache (train.fit.run builds them): epochs read those, not text.
    lyrics_vectors = branch == "lyrics" and preset.freeze_lyrics_encoder and caches_lyrics_vectors(run["cache_uri"])
    fold_configs: dict[int, dict] = {}
    for fold in folds:
        split = split_folds(fold, k)
        n_train, counts, desc = _split_stats(run["cache_uri"], scalars, split["train"], branch_requirement(branch), mode,
                                             descriptors=branch != "lyrics" and preset.uses_descriptors,
                                             n_classes=n_classes)
        if n_train == 0:
            raise ValueError(f"{branch} fold {fold}: the training part has no rows with the needed modality")
        cfg = {
            "fold": fold, "k": k, "branch": branch, "mode": mode, "n_classes": n_classes, "split": split,
            "model": model_config(preset, branch, mode, classes), "preset": preset, "epochs": preset.epochs_for(branch),
            "featurizer": run["featurizer"], "lyrics": run["lyrics"], "tokenizer_dir": run["tokenizer_dir"],
            "n_train": n_train, "class_counts": counts.tolist(), "descriptor_stats": desc,
            "class_weights": _weights(counts) if preset.class_weights else None,
            "model_id": run["model_id"] + f"-{branch}", "lyrics_vectors": lyrics_vectors,
        }
        if branch == "fusion":
            cfg["audio_bundle"] = storage.join(branch_runs["audio"], f"fold{fold}", "bundle")
            cfg["lyrics_bundle"] = storage.join(branch_runs["lyrics"], f"fold{fold}", "bundle")
            for key in ("audio_bundle", "lyrics_bundle"):
                if not storage.exists(storage.join(cfg[key], "config.json")):
                    raise ValueError(f"fusion fold {fold}: no branch bundle at {storage.describe(cfg[key])} "
                                     "(train that branch on the same folds first, or pass --audio-run/--lyrics-run)")
            from labeler.bundle.store import read_bundle_config  # noqa: PLC0415

            audio_stats = read_bundle_config(cfg["audio_bundle"]).get("descriptor_stats")
            cfg["descriptor_stats"] = audio_stats or cfg["descriptor_stats"]
        fold_configs[fold] = cfg

    grid = run_trials(branch, fold_configs, run, preset, folds, search, num_samples)

    entry: dict = {"folds": {}, "curves": {}, "calibration": {}, "bundles": {}, "selection": {}}
    for fold in folds:
        trials = [r for r in grid if int(r.metrics["fold"]) == fold]
        chosen = max(trials, key=lambda r: r.metrics["val_macro_f1"])  # validation only
        cfg = {**fold_configs[fold], "val_macro_f1": float(chosen.metrics["val_macro_f1"])}
        bundle_uri = storage.join(out_dir, f"fold{fold}", "bundle")
        done = finalise_fold(chosen.metrics["checkpoint_uri"], cfg, run, bundle_uri)
        entry["folds"][fold] = done["metrics"]
        entry["calibration"][fold] = done["calibration"]
        entry["bundles"][fold] = bundle_uri
        history = json.loads(chosen.metrics.get("history") or "[]")
        entry["curves"][fold] = {key: [h[key] for h in history] for key in ("epoch", "train_loss", "val_macro_f1")}
        entry["selection"][fold] = {
            "val_macro_f1": cfg["val_macro_f1"], "best_epoch": int(chosen.metrics["best_epoch"]),
            "epochs_run": int(chosen.metrics["epochs_run"]), "resumed_from_epoch": int(chosen.metrics["resumed_from_epoch"]),
            "hparams": {k: chosen.config[k] for k in SEARCH_KEYS if k in chosen.config},
            "trials": len(trials),
        }
        if branch == "fusion":
            choose_fusion(entry, fold, cfg, run, done, bundle_uri)
    storage.write_text(storage.join(out_dir, "run.json"), json.dumps({
        "branch": branch, "mode": mode, "preset": preset.to_dict(), "featurizer": run["featurizer"],
        "lyrics": run["lyrics"], "tokenizer_dir": run["tokenizer_dir"], "folds": folds, "k": k,
        "selection": {str(f): s for f, s in entry["selection"].items()},
    }, indent=2))
    return entry


def _weights(counts: np.ndarray) -> list[float]:
    from train.fit.loop import class_weights_from_counts  # noqa: PLC0415

    return class_weights_from_counts(counts).tolist()
