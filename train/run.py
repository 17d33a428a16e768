"""`labeler train`: cross-validated training of the audio, lyrics and fusion models with Ray Train + Tune.

One run, for each requested branch (audio, then lyrics, then fusion for `--branch all`):

1. The manifest is featurised once into the feature cache (`train.feature_cache`), reused by every
   fold, branch and epoch (and by later runs with the same featuriser, tokenizer and manifest).
2. Every fold is one `TorchTrainer` (`train.loop.train_loop_per_worker`: DDP, bf16 on GPU, class
   weights from the training part, warmup + cosine, early stopping and checkpoint selection on the
   validation fold's macro-F1, resumable checkpoints). Folds (x an optional hyperparameter grid,
   `--search`) are Ray Tune trials, run concurrently when the cluster has room. Ray Train V2 (the
   default in Ray 2.60) does not take a trainer as a Tune trainable: each trial is a small driver
   function that builds and fits the fold's `TorchTrainer`, the pattern Ray documents for V2.
3. After training, for each fold: temperature scaling and the `ambiguous` threshold fitted on the
   validation split (`train.calibration`), then the first and only look at the test fold: metrics and calibration
   (ECE before/after). With `--search`, the setting kept per fold is the one with the best
   validation macro-F1; the test fold never takes part in any choice.
4. Baselines (log-mel statistics + logistic regression; TF-IDF + logistic regression) are fitted on
   the same training folds and scored on the same test folds; `train.evaluate.write_report` writes
   report.json, report.md and PNG plots (confusion matrices, per-fold bars, training curves).
   Fusion: after the head is trained, `train.fusion` fits late fusion (weighted average, logistic
   regression) and gated fusion over the fold's calibrated branch probabilities on the validation
   fold, and keeps whichever of the four scores best there (the report lists all four on test).
5. Export: `<output>/bundle` is the last branch's fold model with the best *validation* macro-F1.
   Choosing by test score would make the reported test metrics optimistic; the cross-validated test
   summary is stored beside it in the bundle's metrics.

Output layout: `<output>/<branch>/fold<k>/bundle` (calibrated per-fold bundles; a fusion run reads
its branches from `--audio-run/--lyrics-run`, i.e. `<run>/<branch>`), `<output>/<branch>/run.json`,
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

from labeler import storage
from labeler.labels import class_names, num_classes
from train.presets import TrainPreset, check_branch_mode, get_preset

log = logging.getLogger(__name__)

SEARCH_KEYS = ("lr_scale", "batch_size", "dropout")


@dataclass
class TrainResult:
    """Where a run wrote its results, and the report dict it wrote (see train.evaluate's docstring)."""

    output_uri: str
    bundle_uri: str
    report: dict
    fold_bundles: dict = field(default_factory=dict)  # {branch: {fold: bundle uri}}
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------ configs


def featurizer_config(preset: TrainPreset):
    from labeler.audio import FeaturizerConfig  # noqa: PLC0415

    if preset.uses_musicnn:  # musicnn's own fixed front end (the pretrained encoder's input)
        return FeaturizerConfig.musicnn(clip_seconds=preset.musicnn_clip_seconds, descriptors=preset.uses_descriptors)
    return FeaturizerConfig(sample_rate=preset.sample_rate, clip_seconds=preset.clip_seconds,
                            window_size=preset.window_size, hop_size=preset.hop_size, n_mels=preset.n_mels,
                            fmin=preset.fmin, fmax=min(preset.fmax, preset.sample_rate / 2),
                            descriptors=preset.uses_descriptors)


def lyrics_config(preset: TrainPreset):
    from labeler.lyrics import LyricsConfig  # noqa: PLC0415

    return LyricsConfig(max_tokens=preset.max_tokens, long_policy=preset.long_policy, max_windows=preset.lyrics_windows,
                        window_overlap=preset.lyrics_window_overlap)


_AUDIO_ARCH = {"Hybrid": "Cnn6", "MusiCNN-Hybrid": "MusiCNN"}  # --model -> AudioCnnConfig.arch (+ descriptors)


def model_config(preset: TrainPreset, branch: str, mode: str, classes: list[str] | None = None) -> dict:
    """ModelConfig (as a dict) of one branch under `preset` (`classes`: mode classes' names)."""
    from labeler.audio import DESCRIPTOR_DIM  # noqa: PLC0415
    from labeler.models import AudioCnnConfig, LyricsEncoderConfig, ModelConfig  # noqa: PLC0415

    featurizer = featurizer_config(preset)
    audio = AudioCnnConfig(
        arch=_AUDIO_ARCH.get(preset.audio_arch, preset.audio_arch), n_mels=featurizer.n_mels,
        width=preset.audio_width, embedding_dim=preset.audio_embedding_dim, dropout=preset.audio_dropout,
        spec_augment=preset.spec_augment, descriptor_dim=DESCRIPTOR_DIM if preset.uses_descriptors else 0,
        time_mask_frames=min(64, max(8, featurizer.n_frames // 8)), encoder=preset.musicnn_encoder,
    )
    lyrics = LyricsEncoderConfig(name_or_path=preset.lyrics_encoder, dropout=preset.lyrics_dropout,
                                 window_tokens=preset.max_tokens if preset.lyrics_windows > 1 else 0)
    cfg = ModelConfig(branch=branch, mode=mode, audio=audio if branch != "lyrics" else None,
                      lyrics=lyrics if branch != "audio" else None, hidden_dim=preset.hidden_dim,
                      dropout=preset.head_dropout, modality_dropout=preset.modality_dropout,
                      freeze_branches=(preset.freeze_branches and branch == "fusion")
                      or (preset.freeze_lyrics_encoder and branch == "lyrics"), classes=classes)
    return cfg.to_dict()


def parse_folds(value, k: int, preset: TrainPreset) -> list[int]:
    """'all' | '0,2' | [0, 2] | None (= the preset's folds, else all) -> sorted fold ids, checked against k."""
    if value is None:
        folds = list(preset.folds) if preset.folds is not None else list(range(k))
    elif isinstance(value, str):
        folds = list(range(k)) if value.strip().lower() == "all" else [int(v) for v in value.split(",") if v.strip()]
    else:
        folds = [int(v) for v in value]
    bad = [f for f in folds if not 0 <= f < k]
    if bad or not folds:
        raise ValueError(f"folds {bad or value!r} are not in 0..{k - 1} (the manifest has {k} folds)")
    return sorted(set(folds))


def parse_search(spec: str | None) -> dict[str, list]:
    """'lr_scale=0.5,1,2;batch_size=8,16;dropout=0.1,0.3' -> {key: values}; unknown keys raise ValueError."""
    if not spec:
        return {}
    out: dict[str, list] = {}
    for part in spec.split(";"):
        if not part.strip():
            continue
        key, _, values = part.partition("=")
        key = key.strip()
        if key not in SEARCH_KEYS or not values:
            raise ValueError(f"bad --search item {part!r}: expected KEY=V1,V2 with KEY in {', '.join(SEARCH_KEYS)}")
        cast = int if key == "batch_size" else float
        out[key] = [cast(v) for v in values.split(",")]
    return out


# ------------------------------------------------------------------------------------------ helpers


def _manifest_folds(manifest_uri: str) -> tuple[np.ndarray, int]:
    """The manifest's fold column (one small int column; nothing else is read) and k."""
    from train.folds import check_k  # noqa: PLC0415

    folds = storage.read_parquet(manifest_uri, columns=["fold"]).column("fold").to_numpy()
    if len(folds) == 0 or folds.min() < 0:
        raise ValueError(f"{storage.describe(manifest_uri)}: folds are not assigned (run `labeler prepare` first)")
    return folds, check_k(int(folds.max()) + 1)


def _split_stats(cache_uri: str, scalars, train_folds: list[int], require: str | None, mode: str,
                 descriptors: bool, n_classes: int) -> tuple[int, np.ndarray, dict | None]:
    """(rows, class counts, descriptor mean/std) of a training part (descriptors streamed from the cache)."""
    from train.feature_cache import iter_numpy, target_column  # noqa: PLC0415
    from train.loop import targets_for_mode  # noqa: PLC0415

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


def _concurrency(preset: TrainPreset, n_trials: int) -> int:
    """Trials the cluster can run at once, leaving one CPU for Ray Data's read tasks."""
    import ray  # noqa: PLC0415

    if preset.max_concurrent_folds > 0:
        return min(n_trials, preset.max_concurrent_folds)
    resources = ray.cluster_resources()
    if preset.use_gpu:
        fit = int(resources.get("GPU", 0) // preset.num_workers)
    else:
        # Leave one CPU to Ray Data (its file listing asks for a whole CPU).
        fit = int((resources.get("CPU", 1) - 1) // (preset.num_workers * preset.cpus_per_worker + 0.01))
    return max(1, min(n_trials, fit))


def _checkpoint_uri(storage_uri: str, checkpoint_path: str) -> str:
    """A Ray checkpoint's path (inside the storage filesystem) as a URI labeler.storage opens."""
    if storage.is_s3(storage_uri):
        return "s3://" + checkpoint_path.lstrip("/")
    return checkpoint_path


# ------------------------------------------------------------------------------------------ one trial


def fold_trial(config: dict, fold_configs: dict, run: dict) -> None:
    """Tune trial: fit one fold's TorchTrainer (with this trial's hyperparameters); report its best checkpoint."""
    import ray.train  # noqa: PLC0415
    from ray import tune  # noqa: PLC0415
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig  # noqa: PLC0415
    from ray.train.torch import TorchTrainer  # noqa: PLC0415

    from train.feature_cache import branch_columns, branch_requirement, read_split  # noqa: PLC0415
    from train.loop import train_loop_per_worker  # noqa: PLC0415

    fold = int(config["fold"])
    loop_config = dict(fold_configs[fold])
    loop_config["hparams"] = {k: config[k] for k in SEARCH_KEYS if k in config}
    preset = loop_config["preset"]
    branch = loop_config["branch"]
    columns = branch_columns(branch, descriptors=bool(loop_config.get("descriptor_stats")), mode=loop_config["mode"],
                             embeddings=loop_config["featurizer"].get("frontend") == "musicnn")
    require = branch_requirement(branch)
    datasets = {
        "train": read_split(run["cache_uri"], loop_config["split"]["train"], columns, require),
        "val": read_split(run["cache_uri"], loop_config["split"]["val"], columns, require),
    }
    fs, path = storage.filesystem(run["storage_uri"])
    trial_id = tune.get_context().get_trial_id() or "local"
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=int(preset["num_workers"]), use_gpu=bool(preset["use_gpu"]),
                                     resources_per_worker={"CPU": float(preset["cpus_per_worker"]),
                                                           **({"GPU": 1.0} if preset["use_gpu"] else {})}),
        run_config=RunConfig(
            name=f"{run['run_name']}-{branch}-fold{fold}-{trial_id}",
            storage_path=path, storage_filesystem=fs if storage.is_remote(run["storage_uri"]) else None,
            checkpoint_config=CheckpointConfig(num_to_keep=int(preset["num_to_keep"]),
                                               checkpoint_score_attribute="val_macro_f1",
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=int(preset["max_failures"])),
            callbacks=[epoch_lines(run.get("progress_sink"), branch, fold, int(preset["epochs"]))],
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    result = trainer.fit()
    best = result.get_best_checkpoint(metric="val_macro_f1", mode="max")
    if best is None:
        raise RuntimeError(f"{branch} fold {fold}: training reported no checkpoint")
    best_metrics = max((m for _, m in result.best_checkpoints), key=lambda m: m["val_macro_f1"])
    last = result.metrics or {}
    tune.report({
        "fold": fold, "val_macro_f1": float(best_metrics["val_macro_f1"]), "best_epoch": int(best_metrics["epoch"]),
        "checkpoint_uri": _checkpoint_uri(run["storage_uri"], best.path),
        "history": json.dumps(last.get("history", [])), "resumed_from_epoch": int(last.get("resumed_from_epoch", 0)),
        "epochs_run": int(last.get("epoch", 0)),
    })


def epoch_lines(sink, branch: str, fold: int, epochs: int):
    """A Ray Train callback (it runs in the trial's controller) that reports one line per epoch to `sink`."""
    from ray.train import UserCallback  # noqa: PLC0415

    from labeler.console import report, report_event  # noqa: PLC0415

    class EpochLines(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):  # noqa: ARG002 - the callback's signature
            m = metrics[0] if metrics else {}
            if "epoch" not in m:
                return
            best = " (best)" if m.get("val_macro_f1") == m.get("best_val_macro_f1") else ""
            report_event(sink, f"  {branch} fold {fold} epoch {m['epoch']}/{epochs}: train loss {m['train_loss']:.3f}, "
                               f"val macro-F1 {m['val_macro_f1']:.3f}{best}, {m.get('epoch_seconds', 0):.0f} s")
            report(sink, 1)

    return EpochLines()


# ------------------------------------------------------------------------------------------ finalise


def _predict_folds(bundle, cache_uri: str, folds: list[int], branch: str, mode: str, descriptors: bool,
                   texts: bool = False):
    """{fold: (logits, targets, lyrics texts or None)} for `folds`, in one streamed pass through the model."""
    import torch  # noqa: PLC0415

    from train.feature_cache import branch_columns, branch_requirement, read_split  # noqa: PLC0415
    from train.loop import predict_logits  # noqa: PLC0415

    extra = ["fold"] + (["lyrics_text"] if texts else [])
    embeddings = getattr(bundle.featurizer, "frontend", "panns") == "musicnn"
    ds = read_split(cache_uri, folds, branch_columns(branch, descriptors, mode, embeddings) + extra,
                    branch_requirement(branch))
    seen: list[np.ndarray] = []
    seen_texts: list[str] = []

    def batches():
        for batch in ds.iter_batches(batch_size=64, batch_format="numpy"):
            seen.append(batch.pop("fold"))
            if texts:
                seen_texts.extend(str(t) for t in batch.pop("lyrics_text"))
            yield {name: torch.as_tensor(np.asarray(v)) for name, v in batch.items()}

    logits, y = predict_logits(bundle.model, batches(), branch, mode, torch.device("cpu"), amp=False)
    fold_of = np.concatenate(seen) if seen else np.zeros(0, dtype=np.int64)
    all_texts = np.array(seen_texts, dtype=object) if texts else None
    return {f: (logits[fold_of == f], y[fold_of == f], list(all_texts[fold_of == f]) if texts else None) for f in folds}


def finalise_fold(checkpoint_uri: str, fold_config: dict, run: dict, out_uri: str) -> dict:
    """Calibrate on validation, score the untouched test fold, write the fold's calibrated bundle."""
    from labeler.bundle import load_bundle, save_bundle  # noqa: PLC0415
    from train.stacking import lexical_for_fold, stack_and_calibrate  # noqa: PLC0415

    branch, mode, split = fold_config["branch"], fold_config["mode"], fold_config["split"]
    descriptors = bool(fold_config.get("descriptor_stats"))
    bundle = load_bundle(storage.join(checkpoint_uri, "bundle"))
    (val_fold,), (test_fold,) = split["val"], split["test"]
    lexical = lexical_for_fold(fold_config, run)
    predicted = _predict_folds(bundle, run["cache_uri"], [val_fold, test_fold], branch, mode, descriptors,
                               texts=lexical is not None)
    done = stack_and_calibrate(lexical, predicted[val_fold], predicted[test_fold], bundle.model.config.class_names())
    metrics, calibration, temperature, threshold = (done[k] for k in ("metrics", "calibration", "temperature", "threshold"))
    save_bundle(out_uri, bundle.model, bundle.featurizer, bundle.lyrics, tokenizer=bundle.tokenizer,
                model_id=bundle.model_id,
                provenance={**run["provenance"], "branch": branch, "fold": fold_config["fold"], "split": split,
                            "checkpoint": checkpoint_uri},
                metrics={"val_macro_f1": fold_config.get("val_macro_f1"), "test": metrics, "calibration": calibration},
                temperature=temperature, descriptor_stats=fold_config.get("descriptor_stats"),
                ambiguous_threshold=threshold, lexical=lexical)
    return {"metrics": metrics, "calibration": calibration}


# ------------------------------------------------------------------------------------------ baselines


def run_baselines(manifest_uri: str, cache_uri: str, folds: list[int], k: int, mode: str, which: set[str],
                  classes: list[str] | None = None) -> dict:
    """Audio and lyrics baselines on the same train/test folds (fitted on the training part only)."""
    import pyarrow.compute as pc  # noqa: PLC0415

    from train.baselines import lyrics_baseline, make_audio_baseline  # noqa: PLC0415
    from train.evaluate import classification_metrics  # noqa: PLC0415
    from labeler.labels import class_index  # noqa: PLC0415
    from train.feature_cache import iter_numpy, split_folds, target_column  # noqa: PLC0415
    from train.loop import targets_for_mode  # noqa: PLC0415

    names = class_names(mode, classes)
    n_classes = len(names)
    target = target_column(mode)
    out: dict = {}
    texts = None
    if "lyrics" in which:
        # Lyrics text is small beside audio; only four columns of the manifest are read.
        texts = storage.read_parquet(manifest_uri, columns=["song_id", "lyrics", "fold",
                                                            "label" if mode == "classes" else "quadrant"])
    if "audio" in which:
        # Log-mel statistics (3 x n_mels floats a song) of every fold involved, in one streamed pass.
        involved = sorted({f for fold in folds for role in ("train", "test") for f in split_folds(fold, k)[role]})
        parts = [(b["mel_stats"], targets_for_mode(b[target], mode), b["fold"])
                 for b in iter_numpy(cache_uri, involved, ["mel_stats", target, "fold"], "audio")]
        all_x, all_y, all_f = (np.concatenate([p[i] for p in parts]) for i in range(3))
    for fold in folds:
        split = split_folds(fold, k)
        if "audio" in which:
            tr, te = np.isin(all_f, split["train"]), np.isin(all_f, split["test"])
            x_tr, y_tr, x_te, y_te = all_x[tr], all_y[tr], all_x[te], all_y[te]
            model = make_audio_baseline()[1:].fit(x_tr, y_tr)  # stats are precomputed in the cache
            proba = np.zeros((len(x_te), n_classes))
            proba[:, model.classes_.astype(int)] = model.predict_proba(x_te)
            out.setdefault("audio_logmel_logreg", {"folds": {}})["folds"][fold] = classification_metrics(y_te, proba, names)
        if texts is not None:
            def rows(fs):
                t = texts.filter(pc.is_in(texts.column("fold"), value_set=__import__("pyarrow").array(fs, type=texts.column("fold").type)))
                lyr = t.column("lyrics").to_pylist()
                keep = [i for i, v in enumerate(lyr) if v and str(v).strip()]  # same rows as the lyrics branch
                if mode == "classes":
                    labels = t.column("label").to_pylist()
                    return [lyr[i] for i in keep], np.array([class_index(labels[i], names) for i in keep], dtype=np.int64)
                return [lyr[i] for i in keep], targets_for_mode(t.column("quadrant").to_numpy()[keep], mode)
            tr_x, tr_y = rows(split["train"])
            te_x, te_y = rows(split["test"])
            proba = lyrics_baseline(tr_x, tr_y, te_x, n_classes=n_classes)
            out.setdefault("lyrics_tfidf_logreg", {"folds": {}})["folds"][fold] = classification_metrics(te_y, proba, names)
    return out


# ------------------------------------------------------------------------------------------ a branch


def train_branch(branch: str, run: dict, preset: TrainPreset, folds: list[int], k: int, mode: str,
                 search: dict[str, list], num_samples: int, extra_config: dict, branch_runs: dict) -> dict:
    """Train `branch` on `folds` as Tune trials; finalise each fold; return its report entry + bundles."""
    from ray import tune  # noqa: PLC0415

    from train.feature_cache import branch_requirement, split_folds  # noqa: PLC0415

    out_dir = storage.join(run["output_uri"], branch)
    from train.feature_cache import scalar_columns  # noqa: PLC0415

    scalars = scalar_columns(run["cache_uri"], mode)
    classes = run.get("classes")
    n_classes = num_classes(mode, classes)
    preset_dict = preset.to_dict()
    preset_dict["epochs"] = preset.epochs_for(branch)
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
            "model": model_config(preset, branch, mode, classes), "preset": preset_dict,
            "featurizer": run["featurizer"], "lyrics": run["lyrics"], "tokenizer_dir": run["tokenizer_dir"],
            "n_train": n_train, "class_counts": counts.tolist(), "descriptor_stats": desc,
            "class_weights": _weights(counts) if preset.class_weights else None,
            "model_id": run["model_id"] + f"-{branch}", **extra_config,
        }
        if branch == "fusion":
            cfg["audio_bundle"] = storage.join(branch_runs["audio"], f"fold{fold}", "bundle")
            cfg["lyrics_bundle"] = storage.join(branch_runs["lyrics"], f"fold{fold}", "bundle")
            for key in ("audio_bundle", "lyrics_bundle"):
                if not storage.exists(storage.join(cfg[key], "config.json")):
                    raise ValueError(f"fusion fold {fold}: no branch bundle at {storage.describe(cfg[key])} "
                                     "(train that branch on the same folds first, or pass --audio-run/--lyrics-run)")
            from labeler.bundle import read_bundle_config  # noqa: PLC0415

            audio_stats = read_bundle_config(cfg["audio_bundle"]).get("descriptor_stats")
            cfg["descriptor_stats"] = audio_stats or cfg["descriptor_stats"]
        fold_configs[fold] = cfg

    param_space: dict = {"fold": tune.grid_search(folds)}
    for key, values in search.items():
        param_space[key] = tune.grid_search(values)
    n_trials = len(folds) * max(1, int(np.prod([len(v) for v in search.values()]))) * num_samples
    trainable = tune.with_resources(tune.with_parameters(fold_trial, fold_configs=fold_configs, run=run), {"cpu": 0.01})
    fs, path = storage.filesystem(run["storage_uri"])
    tuner = tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=_concurrency(preset, n_trials), num_samples=num_samples,
                                    metric="val_macro_f1", mode="max"),
        run_config=tune.RunConfig(name=f"{run['run_name']}-{branch}-tune", storage_path=path,
                                  storage_filesystem=fs if storage.is_remote(run["storage_uri"]) else None,
                                  verbose=0),
    )
    grid = tuner.fit()
    errors = [r.error for r in grid if r.error is not None]
    if errors:
        raise RuntimeError(f"{branch}: {len(errors)} trial(s) failed; first: {errors[0]}")

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
            _choose_fusion(entry, fold, cfg, run, done, bundle_uri)
    storage.write_text(storage.join(out_dir, "run.json"), json.dumps({
        "branch": branch, "mode": mode, "preset": preset.to_dict(), "featurizer": run["featurizer"],
        "lyrics": run["lyrics"], "tokenizer_dir": run["tokenizer_dir"], "folds": folds, "k": k,
        "selection": {str(f): s for f, s in entry["selection"].items()},
    }, indent=2))
    return entry


def _choose_fusion(entry: dict, fold: int, cfg: dict, run: dict, done: dict, bundle_uri: str) -> None:
    """Head vs late vs gated fusion on the validation fold (train.fusion); the winner becomes the fold's bundle."""
    from train.fusion import finalise_fusion_fold  # noqa: PLC0415

    fused = finalise_fusion_fold(cfg, run, done["metrics"], cfg["val_macro_f1"], bundle_uri)
    winner = fused["winner"]
    entry["folds"][fold] = fused["metrics"]
    entry["selection"][fold]["val_macro_f1"] = fused["selection"]["val_macro_f1"][winner]
    entry["selection"][fold]["fusion"] = {"winner": winner, **fused["selection"]}
    for name, metrics in fused["variants"].items():
        entry.setdefault("variants", {}).setdefault(name, {})[fold] = metrics
    if fused["calibration"] is not None:  # a late winner: its own temperature and threshold (train.fusion)
        entry["calibration"][fold] = fused["calibration"]


def _weights(counts: np.ndarray) -> list[float]:
    from train.loop import class_weights_from_counts  # noqa: PLC0415

    return class_weights_from_counts(counts).tolist()


# ------------------------------------------------------------------------------------------ the run


def _check_label_kind(manifest_uri: str, mode: str) -> list[str] | None:
    """The manifest's classes in mode `classes` (None otherwise); a ValueError when mode and labels disagree."""
    from train.feature_cache import manifest_classes  # noqa: PLC0415

    classes = manifest_classes(manifest_uri)
    if mode == "classes" and classes is None:
        raise ValueError(f"--mode classes needs a classes manifest (a `label` column, e.g. from mirex); "
                         f"{storage.describe(manifest_uri)} has quadrant labels: use --mode 4Q, Ar or Va")
    if mode != "classes" and classes is not None:
        raise ValueError(f"{storage.describe(manifest_uri)} labels its songs with its own classes "
                         f"({', '.join(classes)}), not quadrants: train it with --mode classes")
    return classes


def _branch_run_config(run_uri: str, branch: str) -> dict:
    uri = storage.join(run_uri, "run.json")
    if not storage.exists(uri):
        raise ValueError(f"--{branch}-run {storage.describe(run_uri)} has no run.json (expected a `labeler train "
                         f"--branch {branch}` output's {branch}/ folder, or the run folder holding it)")
    return json.loads(storage.read_text(uri))


def _resolve_branch_run(uri: str | None, branch: str) -> str | None:
    """Accept either the run output (holding <branch>/run.json) or the branch folder itself."""
    if uri is None:
        return None
    uri = storage.absolute_uri(uri)
    nested = storage.join(uri, branch)
    return nested if storage.exists(storage.join(nested, "run.json")) else uri


def train(manifest_uri: str, output_uri: str, branch: str = "all", mode: str = "4Q", preset: str = "cpu-small",
          folds="all", audio_model: str | None = None, lyrics_model: str | None = None,
          audio_run: str | None = None, lyrics_run: str | None = None, storage_uri: str | None = None,
          cache_uri: str | None = None, search: str | dict | None = None, num_samples: int = 1,
          extra_config: dict | None = None, console=None, **overrides) -> TrainResult:
    """Train `branch` (audio | lyrics | fusion | all) over `folds`; write bundles, report and export. See module doc.

    With a `console` (labeler.console.Console), featurising and training each show a progress line,
    and every epoch of every fold one line of metrics.
    """
    from labeler.console import Console, ensure_ray  # noqa: PLC0415

    from labeler.pretrained import resolve_encoder  # noqa: PLC0415
    from train.evaluate import write_report  # noqa: PLC0415
    from train.feature_cache import build_feature_cache  # noqa: PLC0415

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
        audio_cfg = _branch_run_config(branch_runs["audio"], "audio")
        lyrics_cfg = _branch_run_config(branch_runs["lyrics"], "lyrics")
        # The fused model must see the features its branches were trained on.
        p = dataclasses.replace(p, **{k: audio_cfg["preset"][k] for k in (
            "sample_rate", "clip_seconds", "window_size", "hop_size", "n_mels", "fmin", "fmax", "audio_arch",
            "musicnn_encoder", "musicnn_clip_seconds") if k in audio_cfg["preset"]},
            lyrics_encoder=lyrics_cfg["preset"]["lyrics_encoder"], max_tokens=lyrics_cfg["preset"]["max_tokens"],
            long_policy=lyrics_cfg["preset"]["long_policy"],
            **{key: lyrics_cfg["preset"][key] for key in ("lyrics_windows", "lyrics_window_overlap") if key in lyrics_cfg["preset"]})
    elif "fusion" in branches:
        branch_runs = {"audio": storage.join(output_uri, "audio"), "lyrics": storage.join(output_uri, "lyrics")}

    _, k = _manifest_folds(manifest_uri)
    classes = _check_label_kind(manifest_uri, mode)
    fold_list = parse_folds(folds if folds not in (None, "") else None, k, p)
    ensure_ray()
    console = console or Console.silent()
    featurizer, lyrics = featurizer_config(p), lyrics_config(p)
    needs_text = any(b in ("lyrics", "fusion") for b in branches)
    tokenizer_dir = resolve_encoder(p.lyrics_encoder) if needs_text else None
    cache_root = storage.absolute_uri(cache_uri) if cache_uri else storage.join(output_uri, "feature_cache")
    cache = build_feature_cache(manifest_uri, cache_root, featurizer, tokenizer_dir, lyrics,
                                concurrency=p.featurise_concurrency, console=console,
                                audio_encoder=p.musicnn_encoder if p.uses_musicnn and branch != "lyrics" else None)
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    provenance = {"manifest": storage.describe(manifest_uri), "preset": p.name, "preset_values": p.to_dict(),
                  "mode": mode, "folds": fold_list, "k": k, "created_at": created, "feature_cache": storage.describe(cache),
                  "selection": "checkpoint and exported fold chosen on validation macro-F1 (val = fold (test+1) % k)"}
    run = {
        "output_uri": output_uri, "cache_uri": cache, "run_name": f"train-{created.replace(':', '').replace('+', 'Z')[:17]}",
        "storage_uri": storage.absolute_uri(storage_uri) if storage_uri else storage.join(output_uri, "checkpoints"),
        "featurizer": featurizer.to_dict(), "lyrics": lyrics.to_dict(), "tokenizer_dir": tokenizer_dir,
        "model_id": f"mood-{mode.lower()}", "provenance": provenance, "classes": classes,
    }
    search_space = parse_search(search) if isinstance(search, (str, type(None))) else dict(search)
    extra = dict(extra_config or {})
    extra.update(p.extra)

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
            entry = train_branch(b, run, p, fold_list, k, mode, search_space, max(1, int(num_samples)), extra, branch_runs)
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
    write_report(output_uri, results)

    final = branches[-1]
    bundle_uri = export_best(entries[final], final, storage.join(output_uri, "bundle"), provenance, results)
    seconds = time.perf_counter() - started
    result = TrainResult(output_uri=output_uri, bundle_uri=bundle_uri, report=results, fold_bundles=fold_bundles,
                         seconds=seconds)
    storage.write_text(storage.join(output_uri, "train_result.json"), json.dumps({
        "output_uri": output_uri, "bundle_uri": bundle_uri, "seconds": round(seconds, 1),
        "fold_bundles": {b: {str(f): u for f, u in v.items()} for b, v in fold_bundles.items()},
    }, indent=2))
    return result


def export_best(entry: dict, branch: str, bundle_uri: str, provenance: dict, results: dict) -> str:
    """Copy the fold bundle with the best validation macro-F1 to `bundle_uri`, with provenance and CV metrics."""
    from labeler.bundle import load_bundle, save_bundle  # noqa: PLC0415
    from train.evaluate import summarise_folds  # noqa: PLC0415

    fold = max(entry["selection"], key=lambda f: entry["selection"][f]["val_macro_f1"])
    source = load_bundle(entry["bundles"][fold])
    summary = {name: summarise_folds(list(e["folds"].values())) for name, e in results["branches"].items()}
    save_bundle(
        bundle_uri, source.model, source.featurizer, source.lyrics, tokenizer=source.tokenizer,
        model_id=source.model_id,
        provenance={**provenance, "branch": branch, "exported_fold": fold, "source_bundle": entry["bundles"][fold]},
        metrics={"val_macro_f1": entry["selection"][fold]["val_macro_f1"], "test": entry["folds"][fold],
                 "calibration": entry["calibration"][fold], "cv_test_summary": summary},
        temperature=float(entry["calibration"][fold]["temperature"]),
        descriptor_stats=source.descriptor_stats, lexical=source.lexical,
        ambiguous_threshold=source.config.get("ambiguous_threshold"),
    )
    return bundle_uri
