"""The baselines learn separable synthetic data, return aligned probabilities and reject bad input."""

from __future__ import annotations

import numpy as np
import pytest

from labeler.audio.features import logmel_stats
from train.score.baselines import audio_baseline, lyrics_baseline, vector_baseline
from train.score.metrics import classification_metrics

CLASSES = ["Q1", "Q2", "Q3", "Q4"]


def _logmels(n_per_class: int, rng: np.random.Generator, frames: int = 40, mels: int = 16):
    """Noisy log-mel clips whose band means differ by class: class c is loud in bands 4c..4c+3."""
    x, y = [], []
    for c in range(4):
        for _ in range(n_per_class):
            clip = rng.normal(-5.0, 1.0, size=(frames, mels))
            clip[:, 4 * c: 4 * c + 4] += 1.5
            x.append(clip)
            y.append(c)
    return np.asarray(x, dtype=np.float16), np.asarray(y)


def test_logmel_stats_shape_and_values():
    clip = np.zeros((20, 8), dtype=np.float32)
    clip[:, 3] = 2.0
    clip[::2, 5] = 1.0  # alternating band: std 0.5 and a moving delta
    stats = logmel_stats(clip)
    assert stats.shape == (1, 24)
    means, stds, delta_stds = stats[0, :8], stats[0, 8:16], stats[0, 16:]
    assert means[3] == pytest.approx(2.0) and means[5] == pytest.approx(0.5)
    assert stds[3] == pytest.approx(0.0) and stds[5] == pytest.approx(0.5)
    assert delta_stds[3] == pytest.approx(0.0, abs=1e-6) and delta_stds[5] > 0
    assert logmel_stats(np.zeros((3, 5, 8))).shape == (3, 24)  # short clips use a narrower delta window
    with pytest.raises(ValueError, match="at least 3 frames"):
        logmel_stats(np.zeros((2, 2, 8)))
    with pytest.raises(ValueError, match="shape"):
        logmel_stats(np.zeros(8))


def test_audio_baseline_beats_chance_on_separable_logmels():
    rng = np.random.default_rng(0)
    x_train, y_train = _logmels(15, rng)
    x_test, y_test = _logmels(10, rng)
    probs = audio_baseline(x_train, y_train, x_test)
    assert probs.shape == (40, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    metrics = classification_metrics(y_test, probs, CLASSES)
    assert metrics["macro_f1"] > 0.8  # chance is 0.25


_WORDS = {
    0: "sunshine dance happy joy party smile",
    1: "rage fight scream burn hate anger",
    2: "tears alone cry lost cold sorrow",
    3: "calm gentle breeze quiet peace soft",
}


def _texts(n_per_class: int, rng: np.random.Generator):
    filler = "the and you we in on my your is it be oh yeah".split()
    texts, y = [], []
    for c, words in _WORDS.items():
        for _ in range(n_per_class):
            chosen = list(rng.choice(words.split(), 3)) + list(rng.choice(filler, 8))
            rng.shuffle(chosen)
            texts.append("[Chorus]\n" + " ".join(chosen))
            y.append(c)
    return texts, np.asarray(y)


def test_lyrics_baseline_beats_chance_on_class_words():
    rng = np.random.default_rng(1)
    train_texts, y_train = _texts(12, rng)
    test_texts, y_test = _texts(6, rng)
    test_texts[0] = None  # a song without lyrics still gets probabilities (from the intercepts)
    probs = lyrics_baseline(train_texts, y_train, test_texts)
    assert probs.shape == (24, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert classification_metrics(y_test, probs, CLASSES)["macro_f1"] > 0.8


def test_vector_baseline_learns_and_survives_non_finite_values():
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(4), 20)
    x = rng.normal(0.0, 1.0, size=(80, 12)) * 100.0  # unscaled, as raw descriptors are
    x[np.arange(80), y] += 500.0  # descriptor c is high for class c
    x[3, 5], x[7, 0] = np.nan, np.inf  # e.g. a tempo estimate on a silent clip
    train, test = np.arange(80) % 2 == 0, np.arange(80) % 2 == 1
    probs = vector_baseline(x[train], y[train], x[test], n_classes=4)
    assert probs.shape == (40, 4) and np.isfinite(probs).all()
    assert classification_metrics(y[test], probs, CLASSES)["macro_f1"] > 0.8


def test_probabilities_keep_a_column_for_a_class_missing_from_training():
    rng = np.random.default_rng(2)
    train_texts, y_train = _texts(6, rng)
    keep = y_train != 2  # no Q3 song in this training fold
    probs = lyrics_baseline([t for t, k in zip(train_texts, keep) if k], y_train[keep], train_texts[:3], n_classes=4)
    assert probs.shape == (3, 4)
    assert np.all(probs[:, 2] == 0.0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_bad_labels_are_rejected():
    x = np.zeros((4, 10, 8))
    with pytest.raises(ValueError, match="one label per training row"):
        audio_baseline(x, [0, 1, 0], x)
    with pytest.raises(ValueError, match="at least 2 classes"):
        audio_baseline(x, [1, 1, 1, 1], x)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        lyrics_baseline(["a b", "c d", "a b", "c d"], [0, 1, 0, 3], ["a"], n_classes=2)
