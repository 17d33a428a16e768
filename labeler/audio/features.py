"""The model's audio input of one clip: the log-mel of the config's front end, and the descriptor vector.

Log-mel follows PANNs (Kong et al. 2020; torchlibrosa's Spectrogram + LogmelFilterBank): Hann
window, centred STFT with reflect padding, power spectrum, librosa's (Slaney) mel filterbank,
10*log10(max(mel, 1e-10)) with ref 1.0 and no top_db clipping. The musicnn front end takes the same
power mel through musicnn's own compression. Plain functions of samples and a config, testable
without decoding or Ray.

The clip's path (fit_clip, mel_basis, power_spectrogram's torch backend, log_mel_from_power) uses numpy
only, never librosa: importing librosa.core compiles its numba gufuncs in every fresh process (they
cannot be cached), which a worker that never searches for a chorus should not pay. mel_basis equals
librosa.filters.mel(norm="slaney") and float16_round equals a float16 round trip, both bit for bit
(tests/test_audio_fastpath.py). The descriptors and the librosa STFT backend still use librosa.
"""

from __future__ import annotations

import functools

import librosa
import numpy as np

from labeler.audio.config import (
    DEFAULT_STFT_BACKEND,
    DESCRIPTOR_BANDS,
    DESCRIPTOR_DIM,
    N_MFCC,
    STFT_BACKENDS,
    FeaturizerConfig,
)

_MEL_F_SP = 200.0 / 3  # Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above
_MEL_MIN_LOG_HZ = 1000.0
_MEL_MIN_LOG_MEL = _MEL_MIN_LOG_HZ / _MEL_F_SP
_MEL_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _MEL_F_SP
    log_part = hz >= _MEL_MIN_LOG_HZ
    mel[log_part] = _MEL_MIN_LOG_MEL + np.log(hz[log_part] / _MEL_MIN_LOG_HZ) / _MEL_LOGSTEP
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    hz = _MEL_F_SP * mel
    log_part = mel >= _MEL_MIN_LOG_MEL
    hz[log_part] = _MEL_MIN_LOG_HZ * np.exp(_MEL_LOGSTEP * (mel[log_part] - _MEL_MIN_LOG_MEL))
    return hz


@functools.lru_cache(maxsize=8)
def mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """The Slaney mel filterbank, float32 (n_mels, 1 + n_fft // 2): librosa.filters.mel's default
    (norm="slaney", htk=False), as PANNs builds it, computed the same way in float64, so equal bit for bit.

    Triangles between n_mels + 2 points evenly spaced on the mel scale from fmin to fmax, each scaled to
    unit area (2 / its width in Hz). Read-only: the cached array is shared by every caller.
    """
    fft_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_min, mel_max = _hz_to_mel(np.array([fmin, fmax]))
    edges = _mel_to_hz(np.linspace(mel_min, mel_max, n_mels + 2))
    widths = np.diff(edges)
    ramps = np.subtract.outer(edges, fft_hz)
    weights = np.zeros((n_mels, len(fft_hz)), dtype=np.float32)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / widths[i], ramps[i + 2] / widths[i + 1]))
    weights *= (2.0 / (edges[2:n_mels + 2] - edges[:n_mels]))[:, np.newaxis]
    weights.flags.writeable = False
    return weights


def float16_round(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest float16 (ties to even; beyond float16's range: inf), as float32:
    exactly `x.astype(np.float16).astype(np.float32)` for finite input, without numpy's slow float16 cast of
    subnormals. Normal float16 range: the float32 mantissa rounded to 10 bits on the bit pattern; below
    2**-14, float16's subnormals are the multiples of 2**-24 (np.round rounds ties to even).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    normal = ((bits + np.uint32(0x0FFF) + ((bits >> np.uint32(13)) & np.uint32(1))) & np.uint32(0xFFFFE000)).view(np.float32)
    normal = np.where(np.abs(normal) > np.float32(65504.0), np.copysign(np.float32(np.inf), x), normal)
    small = np.abs(x) < np.float32(2.0**-14)
    if small.any():
        normal[small] = np.round(x[small] * np.float32(2.0**24)) * np.float32(2.0**-24)
    return normal


def power_spectrogram(samples: np.ndarray, cfg: FeaturizerConfig, backend: str = DEFAULT_STFT_BACKEND) -> np.ndarray:
    """|STFT|^2, float32 (1 + window_size/2, frames): Hann window, centred, reflect padding."""
    if backend == "librosa":
        stft = librosa.stft(samples, n_fft=cfg.window_size, hop_length=cfg.hop_size, win_length=cfg.window_size,
                            window="hann", center=True, pad_mode="reflect")
        return (stft.real ** 2 + stft.imag ** 2).astype(np.float32, copy=False)
    if backend == "torch":
        import torch  # noqa: PLC0415 - optional backend; workers that use librosa never import torch

        with torch.inference_mode():
            window = torch.hann_window(cfg.window_size, periodic=True)
            spec = torch.stft(torch.from_numpy(samples), cfg.window_size, cfg.hop_size, win_length=cfg.window_size,
                              window=window, center=True, pad_mode="reflect", return_complex=True)
            return (spec.real ** 2 + spec.imag ** 2).numpy()
    raise ValueError(f"unknown STFT backend {backend!r}; expected one of {STFT_BACKENDS}")


def mel_to_db(mel: np.ndarray) -> np.ndarray:
    return (10.0 * np.log10(np.maximum(mel, 1e-10))).T.astype(np.float32, copy=False)


def log_mel_from_power(power: np.ndarray, cfg: FeaturizerConfig) -> np.ndarray:
    """(frames, n_mels) features of the config's front end, from the power spectrogram."""
    mel = mel_basis(cfg.sample_rate, cfg.window_size, cfg.n_mels, cfg.fmin, cfg.fmax) @ power
    if cfg.frontend == "musicnn":
        return np.log10(np.float32(10000.0) * float16_round(mel.T[:cfg.n_frames]) + np.float32(1.0))
    return mel_to_db(mel)


def fit_clip(samples: np.ndarray, cfg: FeaturizerConfig) -> np.ndarray:
    """Zero-pad at the end or crop to exactly clip_seconds (float32), so every clip has cfg.n_frames frames."""
    samples = np.asarray(samples, dtype=np.float32)
    if len(samples) >= cfg.clip_samples:
        return samples[:cfg.clip_samples]
    return np.pad(samples, (0, cfg.clip_samples - len(samples)))


def _check_samples(samples: np.ndarray, sr: int, cfg: FeaturizerConfig) -> np.ndarray:
    if sr != cfg.sample_rate:
        raise ValueError(f"sr={sr} does not match the featurizer's sample_rate={cfg.sample_rate}; resample first")
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"samples must be mono (1-D), got shape {samples.shape}")
    if not np.all(np.isfinite(samples)):
        raise ValueError("samples contain NaN or infinite values")
    return fit_clip(samples, cfg)


def check_frames(features: np.ndarray, cfg: FeaturizerConfig) -> np.ndarray:
    if features.shape != (cfg.n_frames, cfg.n_mels):
        raise ValueError(f"log-mel shape {features.shape} differs from the promised ({cfg.n_frames}, {cfg.n_mels})")
    return features


def log_mel(samples: np.ndarray, sr: int, cfg: FeaturizerConfig, *, backend: str = DEFAULT_STFT_BACKEND) -> np.ndarray:
    """PANNs log-mel of one clip: float32 (cfg.n_frames, cfg.n_mels), in dB (ref 1.0, amin 1e-10), or
    the musicnn input (whole 187-frame patches, concatenated) when cfg.frontend is "musicnn".

    The clip is zero-padded or cropped to clip_seconds first; raises ValueError when `sr` is not
    cfg.sample_rate, the input is not finite mono audio, or the output shape is off.
    """
    clip = _check_samples(samples, sr, cfg)
    return check_frames(log_mel_from_power(power_spectrogram(clip, cfg, backend), cfg), cfg)


# --------------------------------------------------------------------------- descriptors


def _mean_std(x: np.ndarray) -> list[np.ndarray]:
    x = np.atleast_2d(x)
    return [x.mean(axis=1), x.std(axis=1)]


def descriptors_from(samples: np.ndarray, power: np.ndarray, mel_db: np.ndarray, cfg: FeaturizerConfig) -> np.ndarray:
    """The handcrafted descriptor vector of one clip, reusing its power spectrogram and log-mel.

    Summary statistics of classic MER features (timbre, harmony, rhythm, loudness, brightness), so
    the Hybrid model can use what a small CNN may miss. Order and names: `descriptor_names()`.
    """
    sr, n_fft, hop = cfg.sample_rate, cfg.window_size, cfg.hop_size
    magnitude = np.sqrt(power)
    bands = np.stack([b.mean(axis=1) for b in np.array_split(mel_db.T, DESCRIPTOR_BANDS, axis=0)])
    mfcc = librosa.feature.mfcc(S=mel_db.T, n_mfcc=N_MFCC)
    chroma = librosa.feature.chroma_stft(S=power, sr=sr, n_fft=n_fft)
    contrast = librosa.feature.spectral_contrast(S=magnitude, sr=sr, n_fft=n_fft, fmin=min(200.0, cfg.fmax / 64))
    onset = librosa.onset.onset_strength(S=mel_db.T, sr=sr, hop_length=hop)
    tempo = librosa.feature.tempo(onset_envelope=onset, sr=sr, hop_length=hop)
    rms = librosa.feature.rms(S=magnitude, frame_length=n_fft)
    centroid = librosa.feature.spectral_centroid(S=magnitude, sr=sr, n_fft=n_fft)
    rolloff = librosa.feature.spectral_rolloff(S=magnitude, sr=sr, n_fft=n_fft)
    zcr = librosa.feature.zero_crossing_rate(samples, frame_length=n_fft, hop_length=hop)
    parts = [
        *_mean_std(bands), *_mean_std(mfcc), *_mean_std(chroma), *_mean_std(contrast), *_mean_std(onset),
        np.atleast_1d(tempo).astype(np.float32)[:1], *_mean_std(rms), *_mean_std(centroid), *_mean_std(rolloff), *_mean_std(zcr),
    ]
    vector = np.concatenate([np.ravel(p) for p in parts]).astype(np.float32)
    if vector.shape != (DESCRIPTOR_DIM,):
        raise ValueError(f"descriptor vector has {vector.shape[0]} entries, expected {DESCRIPTOR_DIM}")
    return np.nan_to_num(vector, nan=0.0, posinf=0.0, neginf=0.0)


DELTA_WIDTH = 9  # librosa's default delta window (frames)


def logmel_stats(log_mel: np.ndarray) -> np.ndarray:
    """(n, n_frames, n_mels) log-mel clips -> (n, 3 * n_mels): band means, band stds, band delta stds.

    A single clip (n_frames, n_mels) gives a (1, 3 * n_mels) row.
    """
    x = np.asarray(log_mel, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"log_mel must be (n, n_frames, n_mels) or (n_frames, n_mels), got shape {x.shape}")
    n_frames = x.shape[1]
    if n_frames < 3:
        raise ValueError(f"log_mel needs at least 3 frames for deltas, got {n_frames}")
    width = min(DELTA_WIDTH, n_frames if n_frames % 2 else n_frames - 1)
    delta = librosa.feature.delta(x, width=width, axis=1)
    return np.concatenate([x.mean(axis=1), x.std(axis=1), delta.std(axis=1)], axis=1)
