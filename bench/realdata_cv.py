"""Shared k-fold cross-validation for the real-data benchmarks (bench_real_lyrics.py, bench_real_audio.py).

Why an in-process loop instead of `train.fit.run` (Ray Train): on two shared CPU cores the benchmarks
must finish in minutes, and Ray Train's per-trial start-up and the feature cache would dominate a
160-clip run. The parts that decide what is learnt are the training code's own: the preset
(`train.fit.presets`), folds (`train.data.folds.assign_folds`, `split_for`: val = fold (test+1) % k), parameter
groups and learning rates, AdamW, warmup + cosine schedule, encoder freezing, balanced class weights
(`train.fit.loop`), the training step itself (`train.fit.step`: batches and step count, clipping, the
epoch of training and of validation, early stopping), temperature scaling on the validation fold
(`train.select.calibration`), scoring and fold summaries (`train.score.metrics`). What is left here is only the
data: in-memory arrays instead of feature-cache shards. Checkpoint selection and early stopping use the validation fold
only; the test fold is scored once, with the selected weights.

Baselines are fitted on the same training rows as the networks (the validation fold is not used:
they select nothing).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from train.data.folds import split_for
from train.fit.loop import class_weights_from_counts, freeze_lyrics_layers, make_optimizer, make_scheduler, param_groups
from train.fit.presets import TrainPreset
from train.fit.step import EarlyStopping, plan_batches, predict, train_epoch, validate_epoch
from train.score.metrics import classification_metrics, summarise_folds
from train.select.calibration import apply_temperature, fit_temperature

TENSOR_DTYPES = {"log_mel": torch.float32, "patch_features": torch.float32, "descriptors": torch.float32,
                 "input_ids": torch.long, "attention_mask": torch.long}


@dataclass
class ModelResult:
    """One model's cross-validation: per-fold test metrics, curves, summary and wall time."""

    name: str
    kind: str  # "branch" | "baseline"
    folds: dict[str, dict] = field(default_factory=dict)
    curves: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0      # wall clock
    cpu_seconds: float = 0.0  # process CPU time (all threads): comparable across loaded and idle machines
    note: str = ""
    pooled_ece: dict | None = None  # {"ece", "floor"} over every fold's out-of-fold test predictions

    @property
    def summary(self) -> dict:
        return summarise_folds(list(self.folds.values()))


def splits(folds: np.ndarray, k: int) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """(test_fold, train_idx, val_idx, test_idx) for every test fold."""
    for test_fold in range(k):
        role = split_for(folds, test_fold, k)
        yield test_fold, np.flatnonzero(role == "train"), np.flatnonzero(role == "val"), np.flatnonzero(role == "test")


def _tensors(inputs: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.asarray(v[idx]), dtype=TENSOR_DTYPES[k]) for k, v in inputs.items()}


def _batches(inputs: dict[str, np.ndarray], y: np.ndarray | None, rows: np.ndarray, batch_size: int,
             drop_last: bool = False):
    """In-memory rows as the (forward kwargs, targets) pairs `train.fit.step` takes (y None: prediction only)."""
    stop = len(rows) - len(rows) % batch_size if drop_last else len(rows)
    for start in range(0, stop, batch_size):
        part = rows[start:start + batch_size]
        targets = y[part] if y is not None else np.zeros(len(part), dtype=np.int64)
        yield _tensors(inputs, part), torch.as_tensor(targets, dtype=torch.long)


def logits_of(model, inputs: dict[str, np.ndarray], idx: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The model's logits for rows `idx` (eval mode, no gradients)."""
    return predict(model, _batches(inputs, None, idx, batch_size))[0]


def train_network(build: Callable[[], torch.nn.Module], inputs: dict[str, np.ndarray], y: np.ndarray,
                  train_idx: np.ndarray, val_idx: np.ndarray, preset: TrainPreset, classes: list[str],
                  seed: int, log: Callable[[str], None] = print) -> tuple[torch.nn.Module, dict, float]:
    """Train on train_idx, keep the epoch with the best validation macro-F1 (early stopping on it).

    Returns (model with the best weights, curves {epoch, train_loss, val_macro_f1}, temperature fitted
    on the validation fold's logits).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build()
    freeze_lyrics_layers(model, preset)
    batch = preset.batch_size
    drop_last, steps_per_epoch = plan_batches(len(train_idx), batch)
    optimizer = make_optimizer(param_groups(model, preset, {}), preset)
    scheduler = make_scheduler(optimizer, preset.epochs * steps_per_epoch, preset.warmup_fraction)
    weights = None
    if preset.class_weights:
        weights = torch.tensor(class_weights_from_counts(np.bincount(y[train_idx], minlength=len(classes))), dtype=torch.float32)
    curves: dict[str, list] = {"epoch": [], "train_loss": [], "val_macro_f1": []}
    stopping, best_state = EarlyStopping(preset.patience), None
    for epoch in range(1, preset.epochs + 1):
        if stopping.stop:
            break
        started = time.perf_counter()
        train_loss, _ = train_epoch(model, _batches(inputs, y, rng.permutation(train_idx), batch, drop_last), optimizer,
                                    scheduler, class_weights=weights, grad_clip=float(preset.grad_clip or 0.0))
        val_f1, _, _ = validate_epoch(model, _batches(inputs, y, val_idx, 64), len(classes))
        curves["epoch"].append(epoch)
        curves["train_loss"].append(train_loss)
        curves["val_macro_f1"].append(val_f1)
        log(f"    epoch {epoch}: train loss {train_loss:.3f}, val macro-F1 {val_f1:.3f} "
            f"({time.perf_counter() - started:.0f} s)")
        if stopping.update(val_f1):
            best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    temperature = fit_temperature(logits_of(model, inputs, val_idx), y[val_idx])
    return model, curves, temperature


def cv_network(name: str, build: Callable[[], torch.nn.Module], inputs: dict[str, np.ndarray], y: np.ndarray,
               folds: np.ndarray, k: int, preset: TrainPreset, classes: list[str],
               prepare: Callable[[torch.nn.Module, np.ndarray], None] | None = None,
               log: Callable[[str], None] = print, seeds: int = 1) -> ModelResult:
    """k-fold CV of one network; `prepare(model, train_idx)` runs before training (e.g. descriptor stats).

    `seeds` > 1 trains every fold that many times from different initialisations and batch orders
    (seed + 1000 r): on 96 training clips the seed alone moves a model's mean macro-F1 by a few
    hundredths, as much as the gaps between variants. The result then holds k x seeds entries
    ('<fold>/s<r>'): the mean is over all of them, the std over folds and seeds together.
    """
    result = ModelResult(name, "branch")
    started, cpu_started = time.perf_counter(), time.process_time()
    for test_fold, train_idx, val_idx, test_idx in splits(folds, k):
        log(f"  {name} fold {test_fold}: train {len(train_idx)}, val {len(val_idx)}, test {len(test_idx)}")

        def built(train_idx=train_idx):
            model = build()
            if prepare is not None:
                prepare(model, train_idx)
            return model

        for r in range(seeds):
            model, curves, temperature = train_network(built, inputs, y, train_idx, val_idx, preset, classes,
                                                       seed=preset.seed + test_fold + 1000 * r, log=log)
            probs = apply_temperature(logits_of(model, inputs, test_idx), temperature)
            metrics = classification_metrics(y[test_idx], probs, classes)
            metrics["temperature"] = temperature
            key = str(test_fold) if seeds == 1 else f"{test_fold}/s{r}"
            result.folds[key] = metrics
            result.curves[key] = curves
            log(f"  {name} fold {key}: test macro-F1 {metrics['macro_f1']:.3f} (T={temperature:.2f})")
    result.seconds = time.perf_counter() - started
    result.cpu_seconds = time.process_time() - cpu_started
    return result


def cv_baseline(name: str, fit_predict: Callable, features, y: np.ndarray, folds: np.ndarray, k: int,
                classes: list[str], log: Callable[[str], None] = print) -> ModelResult:
    """k-fold CV of a baseline `fit_predict(train_X, y_train, test_X, n_classes=...) -> probs`."""
    result = ModelResult(name, "baseline")
    started, cpu_started = time.perf_counter(), time.process_time()
    take = (lambda idx: [features[i] for i in idx]) if isinstance(features, list) else (lambda idx: features[idx])
    for test_fold, train_idx, _val_idx, test_idx in splits(folds, k):
        probs = fit_predict(take(train_idx), y[train_idx], take(test_idx), n_classes=len(classes))
        result.folds[str(test_fold)] = classification_metrics(y[test_idx], probs, classes)
        log(f"  {name} fold {test_fold}: test macro-F1 {result.folds[str(test_fold)]['macro_f1']:.3f}")
    result.seconds = time.perf_counter() - started
    result.cpu_seconds = time.process_time() - cpu_started
    return result


def ece_floor(probs: np.ndarray, draws: int = 200, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model with these probabilities would show on this many songs.

    Labels are drawn from `probs` themselves (so the model is calibrated by construction) and the
    ECE of each draw is averaged: what finite-sample noise alone adds, the floor under any measured
    ECE on a test fold of this size (about 0.05 on 271 songs of four classes at ~0.57 accuracy).
    """
    from train.select.calibration import expected_calibration_error

    probs = np.asarray(probs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    cumulative = probs.cumsum(axis=1)
    out = []
    for _ in range(draws):
        y = (rng.random((len(probs), 1)) > cumulative).sum(axis=1).clip(0, probs.shape[1] - 1)
        out.append(expected_calibration_error(probs, y))
    return float(np.mean(out))


def _pm(stat: dict) -> str:
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}" if stat.get("std") is not None else f"{stat['mean']:.3f}"


def results_table(results: list[ModelResult]) -> str:
    """One Markdown row per model: its cross-validated scores and costs."""
    from labeler.runtime.display import markdown_table

    return markdown_table(
        ["model", "kind", "folds", "macro-F1 (mean ± std)", "accuracy", "ECE", "wall (s)", "CPU (s)", "notes"],
        [[r.name, r.kind, r.summary["n_folds"], _pm(r.summary["macro_f1"]), _pm(r.summary["accuracy"]),
          _pm(r.summary["ece"]), f"{r.seconds:.0f}", f"{r.cpu_seconds:.0f}", r.note] for r in results])


def report_results(results: list[ModelResult], classes: list[str], provenance: dict) -> dict:
    """The `results` dict train.score.report.write_report takes (see its docstring)."""
    def entry(r: ModelResult) -> dict:
        return {"folds": r.folds, "summary": r.summary, "curves": r.curves}

    return {
        "mode": "4Q",
        "classes": classes,
        "branches": {r.name: entry(r) for r in results if r.kind == "branch"},
        "baselines": {r.name: entry(r) for r in results if r.kind == "baseline"},
        "calibration": {r.name: {f: {"temperature": m["temperature"], "ece_after": m["ece"]} for f, m in r.folds.items()}
                        for r in results if r.kind == "branch"},
        "provenance": provenance,
    }


def preset_summary(preset: TrainPreset, keys: tuple[str, ...]) -> dict:
    d = dataclasses.asdict(preset)
    return {k: d[k] for k in keys}
