"""Finding the chorus: the clip-long window of a track that repeats most elsewhere in it.

Why a module of its own: the search is the featuriser's costliest step on a full track (it runs on
at most chorus_search_seconds decoded at ANALYSIS_SR) and is tested on synthetic repeated sections.
"""

from __future__ import annotations

import librosa
import numpy as np

# The automatic chorus finder analyses audio at this rate: chroma and MFCC need nothing above
# ~5 kHz, and a quarter of 44.1 kHz keeps 240 s of analysis audio near 10 MB.
ANALYSIS_SR = 11025
_ANALYSIS_N_FFT = 2048
_CHORUS_POOL_FRAMES = 4  # chroma/MFCC frames (hop 1024 at ANALYSIS_SR) averaged into one chorus-analysis frame


def _fallback_window(duration_s: float, clip_seconds: float) -> tuple[float, float]:
    """The window used when no repetition is found: centred on the first third of the track, kept inside it."""
    if duration_s <= clip_seconds:
        return 0.0, duration_s
    start = min(max(0.0, duration_s / 3.0 - clip_seconds / 2.0), duration_s - clip_seconds)
    return start, start + clip_seconds


def annotated_window(start_s: float, duration_s: float | None, clip_seconds: float) -> tuple[float, float]:
    """clip_seconds from an annotated chorus start, moved earlier to stay inside the track when it can."""
    if duration_s is not None and start_s + clip_seconds > duration_s:
        start_s = max(0.0, duration_s - clip_seconds)
    end_s = start_s + clip_seconds
    return start_s, end_s if duration_s is None else min(end_s, duration_s)


def recurrence_affinity(features: np.ndarray, width: int) -> np.ndarray:
    """Dense (t, t) mutual k-nearest-neighbour affinity recurrence matrix of `features` (d, t) under the
    cosine distance: librosa.segment.recurrence_matrix(mode="affinity", sym=True, width=width,
    metric="cosine") with its defaults (k = 2 ceil(sqrt(t - 2 width + 1)), bandwidth "med_k_scalar"),
    computed with dense numpy arrays instead of librosa's per-row sparse edits.

    Each frame links to the k nearest of its k + 2 width nearest other frames that lie at least `width`
    frames away; a link is kept when both ends choose it and its distance is not 0; its affinity is
    exp(-distance / bandwidth), bandwidth the median over frames of their farthest kept link. Equal to
    librosa's up to float rounding of the distances (and so, at exact ties, the choice of neighbour).
    Raises ValueError unless 1 <= width < (t - 1) // 2.
    """
    data = np.asarray(features, dtype=np.float64).T
    t = data.shape[0]
    if not 1 <= width < (t - 1) // 2:
        raise ValueError(f"width={width} must be at least 1 and below (t - 1) // 2 = {(t - 1) // 2}")
    k = int(2 * np.ceil(np.sqrt(t - 2 * width + 1)))
    norms = np.linalg.norm(data, axis=1, keepdims=True)
    unit = data / np.where(norms == 0, 1.0, norms)
    dist = np.clip(1.0 - unit @ unit.T, 0.0, 2.0)
    np.fill_diagonal(dist, np.inf)
    candidates = np.argsort(dist, axis=1, kind="stable")[:, :min(t - 1, k + 2 * width)]
    rows = np.arange(t)[:, None]
    kept = np.abs(candidates - rows) >= width
    kept &= np.cumsum(kept, axis=1) <= k  # the k nearest candidates outside the band
    links = np.zeros((t, t), dtype=bool)
    links[np.broadcast_to(rows, candidates.shape)[kept], candidates[kept]] = True
    np.fill_diagonal(dist, 0.0)
    links &= links.T
    links &= dist > 0
    if not links.any():
        return np.zeros((t, t))
    farthest = np.where(links.any(axis=1), np.where(links, dist, -np.inf).max(axis=1), np.nan)
    bandwidth = float(np.nanmedian(farthest))
    return np.where(links, np.exp(-dist / bandwidth), 0.0)


def find_chorus(samples: np.ndarray, sr: int, clip_seconds: float) -> tuple[float, float]:
    """(start_s, end_s) of the clip_seconds window that repeats most elsewhere in the track.

    Why repetition: the chorus is the section a song comes back to. Frames are described by chroma
    (harmony) and MFCC (timbre), stacked with their recent past (so sequences, not single chords,
    must match), and linked by a mutual k-nearest-neighbour affinity recurrence matrix that ignores
    frames within clip_seconds/2 of each other (a section resembling itself is not repetition). Each
    frame scores the affinity mass of its links; the window with the highest mean score wins.

    Fallbacks: a track no longer than the clip gives (0, duration); a track with no repetition to
    find (features constant over time as for a steady tone, an empty recurrence matrix, or the same
    score everywhere) gives a window centred on the first third of the track, clamped inside it.

    `samples` is mono audio at `sr`; pass ANALYSIS_SR-rate audio to keep this cheap.
    """
    if clip_seconds <= 0:
        raise ValueError(f"clip_seconds={clip_seconds} must be > 0")
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"samples must be mono (1-D), got shape {samples.shape}")
    duration = len(samples) / sr
    if duration <= clip_seconds:
        return 0.0, duration
    n_fft = _ANALYSIS_N_FFT * max(1, int(round(sr / ANALYSIS_SR)))
    hop = n_fft // 2
    power = np.abs(librosa.stft(samples, n_fft=n_fft, hop_length=hop)) ** 2
    # tuning=0.0: comparing frames of one song with each other needs no tuning estimate, and skipping it
    # skips librosa's piptrack (the costliest numba code here; bench/bench_featurise.py --chorus).
    chroma = librosa.feature.chroma_stft(S=power, sr=sr, n_fft=n_fft, tuning=0.0)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(librosa.feature.melspectrogram(S=power, sr=sr, n_fft=n_fft)), n_mfcc=13)
    # Standardise MFCCs, but never amplify near-constant coefficients (< 0.1 dB-like units) into noise.
    mfcc = (mfcc - mfcc.mean(axis=1, keepdims=True)) / np.maximum(mfcc.std(axis=1, keepdims=True), 0.1)
    features = np.vstack([librosa.util.normalize(chroma, axis=0), mfcc[1:] / np.sqrt(12)])
    # Median absolute deviation over time: ignores the zero-padded edge frames of the STFT.
    variation = np.median(np.abs(features - np.median(features, axis=1, keepdims=True)), axis=1).mean()
    if float(variation) < 1e-3:
        return _fallback_window(duration, clip_seconds)  # no structure at all (a steady tone, hum)
    # Pool to ~0.37 s frames: boundaries stay precise enough for a clip, and a dense recurrence
    # matrix of 240 s is ~650 x 650 (librosa's sparse path with a wide band is much slower).
    pool = _CHORUS_POOL_FRAMES
    usable = features.shape[1] // pool * pool
    if usable == 0:
        return _fallback_window(duration, clip_seconds)
    features = features[:, :usable].reshape(features.shape[0], -1, pool).mean(axis=2)
    frames_per_s = sr / (hop * pool)
    clip_frames = max(1, int(round(clip_seconds * frames_per_s)))
    features = librosa.feature.stack_memory(features, n_steps=max(1, min(4, clip_frames // 4)), delay=1)

    width = max(1, clip_frames // 2)
    n = features.shape[1]
    if (n - 1) // 2 <= width or n < clip_frames:
        return _fallback_window(duration, clip_seconds)
    rec = recurrence_affinity(features, width)
    if not np.any(rec):
        return _fallback_window(duration, clip_seconds)
    score = rec.sum(axis=1)
    window_score = np.convolve(score, np.ones(clip_frames) / clip_frames, mode="valid")
    if window_score.max() - window_score.min() <= 1e-6 * max(window_score.max(), 1e-12):
        return _fallback_window(duration, clip_seconds)
    start = float(np.argmax(window_score)) / frames_per_s
    start = min(start, duration - clip_seconds)
    return start, start + clip_seconds

