"""The featuriser's numpy-only clip path (labeler.audio.features) equals the librosa formulation bit for bit.

The clip path (fit_clip, mel_basis, float16_round, log_mel_from_power) replaced librosa calls so that a
worker never imports librosa.core when it does not search for a chorus; models trained on the old
features must see the same numbers, so every comparison here is exact (tolerance 0), on real clips
from the development data and on synthetic audio.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from labeler.audio import FeaturizerConfig, decode_window, fit_clip, power_spectrogram
from labeler.audio.features import float16_round, log_mel_from_power, mel_basis, mel_to_db

MUSICNN = FeaturizerConfig.musicnn()
PANNS = FeaturizerConfig()


def _old_log_mel(power: np.ndarray, cfg: FeaturizerConfig) -> np.ndarray:
    """The features as computed through librosa's filterbank and numpy's float16 cast."""
    mel = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.window_size, n_mels=cfg.n_mels, fmin=cfg.fmin,
                              fmax=cfg.fmax).astype(np.float32) @ power
    if cfg.frontend == "musicnn":
        return np.log10(10000.0 * mel.T[:cfg.n_frames].astype(np.float16).astype(np.float32) + 1.0).astype(np.float32)
    return mel_to_db(mel)


@pytest.mark.parametrize("geometry", [(16000, 512, 96, 0.0, 8000.0), (32000, 1024, 64, 50.0, 14000.0),
                                      (22050, 2048, 128, 0.0, 11025.0), (44100, 2048, 40, 20.0, 20000.0)])
def test_mel_basis_is_librosas_slaney_filterbank(geometry):
    sr, n_fft, n_mels, fmin, fmax = geometry
    ours = mel_basis(sr, n_fft, n_mels, fmin, fmax)
    assert ours.dtype == np.float32 and not ours.flags.writeable
    np.testing.assert_array_equal(ours, librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax))


def test_float16_round_is_a_float16_round_trip():
    codes = np.arange(0x7C00, dtype=np.uint16)  # every finite non-negative float16
    lo, hi = codes[:-1].view(np.float16).astype(np.float32), codes[1:].view(np.float16).astype(np.float32)
    ties = (lo + hi) / 2  # exactly halfway: ties go to the even neighbour
    rng = np.random.default_rng(0)
    patterns = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = np.concatenate([
        ties, -ties, np.nextafter(ties, np.float32(0)), np.nextafter(ties, np.float32(np.inf)),
        patterns[np.isfinite(patterns)],
        np.float32([0.0, -0.0, 2**-24, 2**-25, 3 * 2**-25, 2**-14, 65504, 65519.99, 65520, 1e30, -1e30]),
    ])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy warns on the overflow to inf
        expected = values.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(float16_round(values), expected)


def test_fit_clip_pads_at_the_end_and_crops():
    x = np.arange(1, 11, dtype=np.float64)
    cfg = FeaturizerConfig(sample_rate=2, clip_seconds=3.0, window_size=2, hop_size=1, fmin=0.0, fmax=1.0, n_mels=1,
                           min_seconds=1.0, chorus_search_seconds=3.0)
    for n, expected in ((0, [0] * 6), (3, [1, 2, 3, 0, 0, 0]), (6, [1, 2, 3, 4, 5, 6]), (10, [1, 2, 3, 4, 5, 6])):
        ours = fit_clip(x[:n], cfg)
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, np.float32(expected))


def _synthetic_clip() -> np.ndarray:
    rng = np.random.default_rng(1)
    t = np.arange(30 * 16000) / 16000
    fade = np.minimum(1.0, t / 10.0)  # a long quiet start: float16 subnormals in the mel
    return (fade * (0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(len(t)))).astype(np.float32)


def _assert_same_features(clip: np.ndarray, cfg: FeaturizerConfig) -> None:
    if cfg.sample_rate != 16000:
        clip = np.repeat(clip, cfg.sample_rate // 16000)
    power = power_spectrogram(fit_clip(clip, cfg), cfg)
    np.testing.assert_array_equal(log_mel_from_power(power, cfg), _old_log_mel(power, cfg))


@pytest.mark.parametrize("cfg", [MUSICNN, PANNS], ids=["musicnn", "panns"])
def test_log_mel_equals_the_librosa_formulation(cfg):
    _assert_same_features(_synthetic_clip(), cfg)


@pytest.mark.parametrize("cfg", [MUSICNN, PANNS], ids=["musicnn", "panns"])
def test_log_mel_of_real_clips_equals_the_librosa_formulation(cfg, shared_data):
    for path in sorted(shared_data.glob("4q/Q*/*.mp3"))[::40][:4]:
        _assert_same_features(decode_window(str(path), 0.0, 30.0, 16000), cfg)


def test_clip_path_never_imports_librosa_core(tmp_path):
    """A track that needs no chorus search is featurised without librosa.core (whose import compiles numba code)."""
    wav = tmp_path / "preview.wav"
    t = np.arange(int(30 * 22050)) / 22050
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 22050)
    code = (
        "import sys\n"
        "from labeler.audio import FeaturizerConfig, featurise_track\n"
        f"f = featurise_track({str(wav)!r}, None, None, FeaturizerConfig.musicnn())\n"
        "assert f.log_mel.shape == (1870, 96), f.log_mel.shape\n"
        "print(sorted(m for m in sys.modules if m.startswith(('librosa.core', 'librosa.util', 'librosa.filters'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]", out.stdout


def _chorus_features(samples: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """The (features, width) find_chorus passes to its recurrence matrix, captured from a real call."""
    from labeler.audio import chorus  # noqa: PLC0415

    captured = []
    real = chorus.recurrence_affinity

    def capture(features, width):
        captured.append((features, width))
        return real(features, width)

    chorus.recurrence_affinity = capture
    try:
        chorus.find_chorus(samples, chorus.ANALYSIS_SR, 30.0)
    finally:
        chorus.recurrence_affinity = real
    return captured


def _assert_same_recurrence(features: np.ndarray, width: int) -> None:
    from labeler.audio.chorus import recurrence_affinity  # noqa: PLC0415

    ours = recurrence_affinity(features, width)
    ref = librosa.segment.recurrence_matrix(features, mode="affinity", sym=True, width=width, metric="cosine")
    np.testing.assert_array_equal(ours > 0, ref > 0)  # the same links
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_recurrence_affinity_equals_librosas_on_synthetic_songs():
    rng = np.random.default_rng(2)
    sr = 11025
    t = np.arange(90 * sr) / sr
    sections = np.floor(t / 10).astype(int) % 3  # A B C A B C ...: repetition to find
    song = 0.3 * np.sin(2 * np.pi * np.array([220.0, 330.0, 262.0])[sections] * t) + 0.02 * rng.standard_normal(len(t))
    captured = _chorus_features(song.astype(np.float32))
    assert captured
    for features, width in captured:
        _assert_same_recurrence(features, width)
    noise = rng.standard_normal((24, 150))
    _assert_same_recurrence(noise, 5)


def test_recurrence_affinity_equals_librosas_on_real_recordings(shared_data):
    for path in sorted(shared_data.glob("pmemo/chorus/*.mp3"))[:2]:
        for features, width in _chorus_features(decode_window(str(path), 0.0, 240.0, 11025)):
            _assert_same_recurrence(features, width)
