"""One training trial: a fold's `TorchTrainer` run as a Ray Tune trial, and its progress lines.

Folds (x an optional hyperparameter grid, `--search`) are Ray Tune trials, run concurrently when the
cluster has room (`run_trials`). Ray Train V2 (the default in Ray 2.60) does not take a trainer as a
Tune trainable: each trial is a small driver function (`fold_trial`) that builds and fits the fold's
`TorchTrainer` (`train.fit.loop.train_loop_per_worker`) and reports its best checkpoint by validation
macro-F1, the pattern Ray documents for V2. `epoch_lines` turns each epoch's report into one console
line, from the trial's controller. What happens to the chosen checkpoint is `train.select.finalise`.
"""

from __future__ import annotations

import json

import numpy as np

from labeler.io import storage
from train.fit.presets import TrainPreset

SEARCH_KEYS = ("lr_scale", "batch_size", "dropout")


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
    """A Ray checkpoint's path (inside the storage filesystem) as a URI labeler.io.storage opens."""
    if storage.is_s3(storage_uri):
        return "s3://" + checkpoint_path.lstrip("/")
    return checkpoint_path


def fold_trial(config: dict, fold_configs: dict, run: dict) -> None:
    """Tune trial: fit one fold's TorchTrainer (with this trial's hyperparameters); report its best checkpoint."""
    from ray import tune  # noqa: PLC0415
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig  # noqa: PLC0415
    from ray.train.torch import TorchTrainer  # noqa: PLC0415

    from train.cache.feature_cache import branch_columns, branch_requirement, caches_embeddings, read_split  # noqa: PLC0415
    from train.fit.loop import train_loop_per_worker  # noqa: PLC0415

    fold = int(config["fold"])
    loop_config = dict(fold_configs[fold])
    loop_config["hparams"] = {k: config[k] for k in SEARCH_KEYS if k in config}
    preset: TrainPreset = loop_config["preset"]
    branch = loop_config["branch"]
    columns = branch_columns(branch, descriptors=bool(loop_config.get("descriptor_stats")), mode=loop_config["mode"],
                             embeddings=caches_embeddings(loop_config["featurizer"]),
                             lyrics_vectors=bool(loop_config.get("lyrics_vectors")))
    require = branch_requirement(branch)
    # A cache under materialize_mb is read once per trial, in memory; a larger one streams every epoch.
    datasets = {role: read_split(run["cache_uri"], loop_config["split"][role], columns, require,
                                 limit_mb=preset.materialize_mb) for role in ("train", "val")}
    fs, path = storage.filesystem(run["storage_uri"])
    trial_id = tune.get_context().get_trial_id() or "local"
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=preset.num_workers, use_gpu=preset.use_gpu,
                                     resources_per_worker={"CPU": float(preset.cpus_per_worker),
                                                           **({"GPU": 1.0} if preset.use_gpu else {})}),
        run_config=RunConfig(
            name=f"{run['run_name']}-{branch}-fold{fold}-{trial_id}",
            storage_path=path, storage_filesystem=fs if storage.is_remote(run["storage_uri"]) else None,
            checkpoint_config=CheckpointConfig(num_to_keep=preset.num_to_keep,
                                               checkpoint_score_attribute="val_selection",
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=preset.max_failures),
            callbacks=[epoch_lines(run.get("progress_sink"), branch, fold, int(loop_config["epochs"]))],
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    result = trainer.fit()
    if not result.best_checkpoints:
        raise RuntimeError(f"{branch} fold {fold}: training reported no checkpoint")
    # One pair, so the exported checkpoint and the epoch the report names are the same (train.fit.step.selection_score).
    best, best_metrics = max(result.best_checkpoints, key=lambda pair: pair[1]["val_selection"])
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

    from labeler.runtime.console import report, report_event  # noqa: PLC0415

    class EpochLines(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):  # noqa: ARG002 - the callback's signature
            m = metrics[0] if metrics else {}
            if "epoch" not in m:
                return
            best = " (best)" if m.get("improved") else ""
            report_event(sink, f"  {branch} fold {fold} epoch {m['epoch']}/{epochs}: train loss {m['train_loss']:.3f}, "
                               f"val macro-F1 {m['val_macro_f1']:.3f}{best}, {m.get('epoch_seconds', 0):.0f} s")
            report(sink, 1)

    return EpochLines()


def run_trials(branch: str, fold_configs: dict, run: dict, preset: TrainPreset, folds: list[int],
               search: dict[str, list], num_samples: int):
    """Every fold (x the search grid x num_samples) as one Tune trial; the grid of results, or the first error."""
    from ray import tune  # noqa: PLC0415

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
    return grid
