"""Temperature scaling and expected calibration error.

Class-weighted cross-entropy and early stopping on macro-F1 give good rankings but over- or
under-confident probabilities, while the recommender reads the labels' per-quadrant probabilities as
probabilities. One scalar temperature T, fitted on the *validation* split after
training (Guo et al. 2017), rescales logits (softmax(z / T)) without changing any argmax, so accuracy
and F1 are untouched. T is stored in the bundle and applied by the Predictor.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

T_MIN, T_MAX = 0.05, 20.0


def _check(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(y):
        raise ValueError(f"logits must be (n, classes) with n == len(y); got {logits.shape} and {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= logits.shape[1]):
        raise ValueError(f"labels must lie in 0..{logits.shape[1] - 1}, got {y.min()}..{y.max()}")
    return logits, y


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / temperature)."""
    logits, y = _check(logits, y)
    logp = log_softmax(logits / temperature, axis=1)
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T in [0.05, 20] minimising validation NLL of softmax(logits / T) (bounded 1-D search on log T).

    Returns 1.0 (no change) for an empty split, where there is nothing to fit.
    """
    logits, y = _check(logits, y)
    if len(y) == 0:
        return 1.0
    result = minimize_scalar(
        lambda log_t: nll(logits, y, float(np.exp(log_t))),
        bounds=(np.log(T_MIN), np.log(T_MAX)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities softmax(logits / T)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """ECE: sum over equal-width confidence bins of |accuracy - confidence| weighted by bin size."""
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if probs.ndim != 2 or len(probs) != len(y):
        raise ValueError(f"probs must be (n, classes) with n == len(y); got {probs.shape} and {y.shape}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if len(y) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    # Bin i holds confidences in (i/n, (i+1)/n]; confidence 0 joins the first bin.
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def calibration_summary(val_logits, val_y, test_logits, test_y, n_bins: int = 15) -> dict:
    """Fit T on validation, then report accuracy and ECE on the test split before and after scaling."""
    temperature = fit_temperature(val_logits, val_y)
    test_logits, test_y = _check(test_logits, test_y)
    before = apply_temperature(test_logits, 1.0)
    after = apply_temperature(test_logits, temperature)
    return {
        "temperature": temperature,
        "accuracy": float((before.argmax(1) == test_y).mean()) if len(test_y) else float("nan"),
        "ece_before": expected_calibration_error(before, test_y, n_bins),
        "ece_after": expected_calibration_error(after, test_y, n_bins),
        "nll_before": nll(test_logits, test_y, 1.0) if len(test_y) else float("nan"),
        "nll_after": nll(test_logits, test_y, temperature) if len(test_y) else float("nan"),
    }


# ------------------------------------------------------------------------------------------ ambiguous

AMBIGUOUS_TARGET = 0.5  # a label is "ambiguous" where its top class is estimated right less often than this


def ambiguity_threshold(probs: np.ndarray, y: np.ndarray, target: float = AMBIGUOUS_TARGET) -> float:
    """The top-probability threshold below which the top class is right less than `target` of the time.

    A fitted curve, not the probability itself: even after temperature scaling, the top
    probability is an estimate of P(correct) only on average. Here P(correct | top probability) is
    estimated on the *validation* fold by isotonic regression (non-decreasing in the top
    probability), and the threshold is the smallest top probability at which that estimate reaches
    `target`. Songs below it are flagged `ambiguous`: a recommender can treat them as "no class
    fits" instead of trusting a forced label. Returns 0.0 (nothing ambiguous) when the estimate is
    at or above `target` everywhere or the split is empty, and 1.0 (everything ambiguous) when it
    never reaches `target`.
    """
    from sklearn.isotonic import IsotonicRegression  # noqa: PLC0415

    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if probs.ndim != 2 or len(probs) != len(y):
        raise ValueError(f"probs must be (n, classes) with n == len(y); got {probs.shape} and {y.shape}")
    if not 0.0 < target < 1.0:
        raise ValueError(f"target must be in (0, 1), got {target!r}")
    if len(y) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    order = np.argsort(confidence, kind="stable")
    fitted = IsotonicRegression(increasing=True, out_of_bounds="clip").fit_transform(confidence[order], correct[order])
    reached = np.flatnonzero(fitted >= target)
    if len(reached) == 0:
        return 1.0
    if reached[0] == 0:
        return 0.0
    return float(confidence[order][reached[0]])


def ambiguity_summary(probs: np.ndarray, y: np.ndarray, threshold: float) -> dict:
    """Test-fold figures for a threshold chosen elsewhere: coverage and accuracy with and without ambiguous songs."""
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    ambiguous = probs.max(axis=1) < threshold if len(y) else np.zeros(0, dtype=bool)
    correct = probs.argmax(axis=1) == y if len(y) else np.zeros(0, dtype=bool)

    def accuracy(mask: np.ndarray) -> float | None:
        return float(correct[mask].mean()) if mask.any() else None  # None, not NaN: bundle metrics are JSON

    return {
        "ambiguous_threshold": float(threshold),
        "ambiguous_fraction": float(ambiguous.mean()) if len(y) else None,
        "accuracy_all": accuracy(np.ones(len(y), dtype=bool)),
        "accuracy_confident": accuracy(~ambiguous),
        "accuracy_ambiguous": accuracy(ambiguous),
    }
