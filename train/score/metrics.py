"""Scoring a fold and summarising folds: plain dicts, never logged.

The seed logged to wandb from inside its scoring; here scoring functions only return dicts, and the
metrics are reported in one place, by whoever calls (`train.score.report` for a run, `labeler evaluate`
for a bundle). Training, evaluation, fusion, stacking and the benchmarks all score with these, so a
number means the same everywhere.

<metrics> (one fold, from `classification_metrics`):
`{"n", "accuracy", "macro_f1", "weighted_f1", "ece", "per_class": {name: {"precision", "recall",
"f1", "support"}}, "confusion": [[...]] (rows = true class, columns = predicted)}`.

<summary> (from `summarise_folds`): `{"n_folds", "accuracy", "macro_f1", "weighted_f1", "ece":
{"mean", "std"}, "per_class_f1": {name: {"mean", "std"}}}`; std is the sample std (ddof=1), and
None with a single fold (a spread of one number is undefined, not zero).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from train.select.calibration import expected_calibration_error  # one ECE definition, shared with calibration

ECE_BINS = 15


SUMMARY_METRICS = ("accuracy", "macro_f1", "weighted_f1", "ece")


def macro_f1(y: np.ndarray, logits: np.ndarray, n_classes: int) -> float:
    """Macro-F1 of the argmax of `logits` (n, n_classes; scores, log-probabilities or probabilities) against the
    integer targets `y`, over all `n_classes` classes (a class never predicted nor present scores 0); 0.0 for
    an empty split. Arguments in scikit-learn's order: targets first."""
    if len(y) == 0:
        return 0.0
    return float(f1_score(y, np.asarray(logits).argmax(1), labels=list(range(n_classes)), average="macro",
                          zero_division=0))


def _check_probs(y_true: np.ndarray, y_prob: np.ndarray, n_classes: int | None = None) -> None:
    if y_prob.ndim != 2:
        raise ValueError(f"y_prob must be 2-D (n, n_classes), got shape {y_prob.shape}")
    if y_true.ndim != 1 or len(y_true) != len(y_prob):
        raise ValueError(f"y_true must be 1-D with one entry per row of y_prob: shapes {y_true.shape} and {y_prob.shape}")
    if n_classes is not None and y_prob.shape[1] != n_classes:
        raise ValueError(f"y_prob has {y_prob.shape[1]} columns but there are {n_classes} classes")
    if len(y_true) and (y_true.min() < 0 or y_true.max() >= y_prob.shape[1]):
        bad = y_true[(y_true < 0) | (y_true >= y_prob.shape[1])][0]
        raise ValueError(f"class index {bad} out of range 0..{y_prob.shape[1] - 1}")


def classification_metrics(y_true: Sequence[int] | np.ndarray, y_prob: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, macro/weighted F1, per-class P/R/F1/support, confusion matrix and ECE of one test set.

    `y_true` holds class indices into `classes`, `y_prob` the (n, n_classes) probabilities; the
    prediction is the arg-max. Classes absent from both truth and prediction score 0 (zero_division=0),
    as in the seed's classification report, so a fold that never predicts a class is not flattered.
    """
    classes = [str(c) for c in classes]
    y_true = np.asarray(y_true).astype(np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    _check_probs(y_true, y_prob, len(classes))
    if len(y_true) == 0:
        raise ValueError("cannot score an empty test set (0 rows)")
    labels = list(range(len(classes)))
    y_pred = y_prob.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "ece": expected_calibration_error(y_prob, y_true),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).astype(int).tolist(),
    }


def _mean_std(values: Iterable[float]) -> dict:
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "std": None}
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else None}


def summarise_folds(fold_metrics: Sequence[dict]) -> dict:
    """Mean and sample std (ddof=1) over folds of accuracy, macro/weighted F1, ECE and per-class F1."""
    if not fold_metrics:
        raise ValueError("summarise_folds needs at least one fold's metrics, got none")
    summary: dict[str, Any] = {"n_folds": len(fold_metrics)}
    for key in SUMMARY_METRICS:
        summary[key] = _mean_std(m.get(key) for m in fold_metrics)
    names = list(fold_metrics[0].get("per_class", {}))
    summary["per_class_f1"] = {
        name: _mean_std(m["per_class"][name]["f1"] for m in fold_metrics if name in m.get("per_class", {}))
        for name in names
    }
    return summary


def pooled_per_class(confusion: np.ndarray, classes: Sequence[str]) -> dict:
    """Per-class precision/recall/F1 of a (summed) confusion matrix: every song scored once across folds."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(actual[i])}
        for i, name in enumerate(classes)
    }
