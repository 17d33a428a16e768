"""Temperature scaling: recovers a known temperature, lowers ECE, leaves the argmax alone."""

from __future__ import annotations

import numpy as np
import pytest

from train.select.calibration import (
    apply_temperature,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
)


def _calibrated_logits(n: int, true_t: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits z/true_t are perfectly calibrated (labels drawn from softmax(z/true_t)); return z and y."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 3.0, size=(n, 4))
    p = apply_temperature(z, true_t)
    y = np.array([rng.choice(4, p=row) for row in p])
    return z, y


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fit_temperature_recovers_known_temperature(true_t):
    z, y = _calibrated_logits(6000, true_t)
    assert fit_temperature(z, y) == pytest.approx(true_t, rel=0.1)


def test_scaling_lowers_ece_and_keeps_predictions():
    z, y = _calibrated_logits(4000, 3.0, seed=1)  # raw logits are over-confident
    t = fit_temperature(z[:2000], y[:2000])
    before = apply_temperature(z[2000:], 1.0)
    after = apply_temperature(z[2000:], t)
    assert expected_calibration_error(after, y[2000:]) < 0.5 * expected_calibration_error(before, y[2000:])
    assert (before.argmax(1) == after.argmax(1)).all()
    summary = calibration_summary(z[:2000], y[:2000], z[2000:], y[2000:])
    assert summary["ece_after"] < summary["ece_before"] and summary["nll_after"] < summary["nll_before"]


def test_ece_of_perfect_and_worst_predictions():
    y = np.array([0, 1, 2, 3])
    assert expected_calibration_error(np.eye(4), y) == pytest.approx(0.0)
    assert expected_calibration_error(np.eye(4)[[1, 2, 3, 0]], y) == pytest.approx(1.0)


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="labels must lie"):
        fit_temperature(np.zeros((2, 4)), np.array([0, 7]))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        apply_temperature(np.zeros((2, 4)), 0.0)
    assert fit_temperature(np.zeros((0, 4)), np.zeros(0)) == 1.0


# ------------------------------------------------------------------------------------------ ambiguous


def test_ambiguity_threshold_is_where_the_top_class_becomes_right_half_the_time():
    from train.select.calibration import ambiguity_summary, ambiguity_threshold

    rng = np.random.default_rng(0)
    n = 4000
    confidence = rng.uniform(0.25, 1.0, n)
    # the top class is right with probability 2*conf - 0.5: that is 0.5 at conf = 0.5
    right = rng.uniform(size=n) < np.clip(2 * confidence - 0.5, 0, 1)
    y = np.where(right, 0, 1)
    probs = np.column_stack([confidence, 1 - confidence - 0.0, np.zeros(n), np.zeros(n)])
    probs[:, 1] = np.minimum(probs[:, 1], confidence - 1e-6)  # class 0 stays the top class
    probs[:, 2] = 1 - probs[:, 0] - probs[:, 1]
    threshold = ambiguity_threshold(probs, y)
    assert threshold == pytest.approx(0.5, abs=0.05)
    summary = ambiguity_summary(probs, y, threshold)
    assert summary["accuracy_confident"] > summary["accuracy_all"] > summary["accuracy_ambiguous"]
    assert summary["accuracy_ambiguous"] < 0.5 and 0.2 < summary["ambiguous_fraction"] < 0.45


def test_ambiguity_threshold_edges():
    from train.select.calibration import ambiguity_summary, ambiguity_threshold

    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2]])
    assert ambiguity_threshold(probs, np.array([0, 0, 0])) == 0.0  # always right: nothing ambiguous
    assert ambiguity_threshold(probs, np.array([1, 1, 1])) == 1.0  # never right: everything ambiguous
    assert ambiguity_threshold(np.zeros((0, 2)), np.zeros(0)) == 0.0
    with pytest.raises(ValueError):
        ambiguity_threshold(probs, np.array([0, 1]))
    summary = ambiguity_summary(probs, np.array([0, 1, 0]), 0.0)
    assert summary["accuracy_ambiguous"] is None and summary["ambiguous_fraction"] == 0.0  # JSON: None, never NaN
