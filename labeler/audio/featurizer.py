"""One track -> its features (`featurise_track`), and `Featurizer`, the Ray Data callable over a batch.

Why these two together: `Featurizer` is featurise_track applied per row, turning each track's
AudioError into that row's `audio_error`; tests' crash injection (tests/poison) patches
featurise_track in this module, which is where both the callable and the isolation child
(labeler.runtime.isolate) look it up.
"""

from __future__ import annotations

import io
import logging
import math
from typing import BinaryIO

import numpy as np
import soundfile as sf

from labeler.audio.chorus import ANALYSIS_SR, annotated_window, find_chorus
from labeler.audio.config import (
    DEFAULT_STFT_BACKEND,
    DESCRIPTOR_DIM,
    MAX_AUDIO_SECONDS,
    STFT_BACKENDS,
    AudioError,
    FeaturizerConfig,
    TrackFeatures,
    check_max_seconds,
)
from labeler.audio.decode import open_audio
from labeler.audio.features import (
    check_frames,
    descriptors_from,
    fit_clip,
    log_mel_from_power,
    mel_basis,
    mel_to_db,
    power_spectrogram,
)
from labeler.io import storage
from labeler.runtime import jit_cache

log = logging.getLogger(__name__)

# A clip whose RMS is below this (about -80 dBFS, i.e. 1e-4 of full scale) carries no usable
# signal: digital silence, or only dither/noise floor. Such rows get the error kind "silent".
SILENCE_RMS = 1e-4

# With less than this much track beyond the clip there is nothing to choose: the clip starts at 0.
CHORUS_SLACK_SECONDS = 1.0


def _given(value) -> float | None:
    """A chorus bound from a row: None for null/NaN."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _check_clip(samples: np.ndarray, sr: int, min_seconds: float, name: str) -> None:
    seconds = len(samples) / sr
    if seconds < min_seconds:
        raise AudioError("too_short", f"{name}: {seconds:.2f} s of audio, need at least {min_seconds} s")
    rms = float(np.linalg.norm(samples)) / math.sqrt(max(len(samples), 1))  # no float64 copy of a long buffer
    if rms < SILENCE_RMS:
        raise AudioError("silent", f"{name}: RMS {rms:.2e} is below {SILENCE_RMS:.0e} (about -80 dBFS)")


def featurise_track(source: str | bytes | BinaryIO, chorus_start_s: float | None, chorus_end_s: float | None,
                    cfg: FeaturizerConfig, *, backend: str = DEFAULT_STFT_BACKEND,
                    max_seconds: float | None = MAX_AUDIO_SECONDS) -> TrackFeatures:
    """Decode the chorus window of one track and featurise it; raises AudioError for a bad track.

    The header is checked first (labeler.audio.decode): a track longer than `max_seconds` is `too_long`,
    a sample rate outside SAMPLE_RATES `unsupported_format`, before any decoding.

    Given chorus_start_s, the clip starts there and lasts clip_seconds; an annotated chorus shorter
    than the clip is extended with the music that follows it (and the window is moved earlier when it
    would run past the track's end), never padded with silence: a model trained on clips that are
    partly digital silence learns the padding, not the song (measured: Cnn6 on the synthetic set fell
    from 0.92 to 0.52 macro-F1 with 1-s choruses padded to 4-s clips). An annotated chorus longer than
    the clip is cropped to its first clip_seconds. An annotation that does not fit the track
    (start past its end, end before start) is ignored and the chorus is found automatically, with a
    warning: annotations made on a full song do not apply to an excerpt. Without an annotation,
    find_chorus runs on at most chorus_search_seconds of audio decoded at ANALYSIS_SR, and only the
    chosen window is then decoded at the model rate; a track at most one second longer than the clip
    (a 30-s preview) skips the search and starts at 0. Only a track shorter than clip_seconds is
    zero-padded.
    """
    name = storage.describe(source) if isinstance(source, str) else "<audio>"
    start, end = _given(chorus_start_s), _given(chorus_end_s)
    with open_audio(source, max_seconds) as reader:
        window: tuple[float, float] | None = None
        if start is not None:
            start = max(0.0, start)
            fits = (end is None or end > start) and (reader.duration_s is None or start < reader.duration_s)
            if fits:
                window = annotated_window(start, reader.duration_s, cfg.clip_seconds)
            else:
                log.warning("%s: chorus annotation [%s, %s] does not fit the track (%s s); finding it automatically",
                            name, chorus_start_s, chorus_end_s, reader.duration_s)
        if window is None and reader.duration_s is not None and reader.duration_s <= cfg.clip_seconds + CHORUS_SLACK_SECONDS:
            window = (0.0, min(reader.duration_s, cfg.clip_seconds))  # e.g. a 30-s preview clip: nothing to search
        if window is None:
            analysis = reader.read(0.0, cfg.chorus_search_seconds, ANALYSIS_SR)
            _check_clip(analysis, ANALYSIS_SR, cfg.min_seconds, name)
            window = find_chorus(analysis, ANALYSIS_SR, cfg.clip_seconds)
            del analysis
        clip = reader.read(window[0], window[1] - window[0], cfg.sample_rate)
    actual_end = window[0] + len(clip) / cfg.sample_rate
    mel_db, descriptors = clip_features(clip, cfg, name=name, backend=backend)
    return TrackFeatures(log_mel=mel_db, chorus_start_s=float(window[0]), chorus_end_s=float(actual_end), descriptors=descriptors)


def clip_features(clip: np.ndarray, cfg: FeaturizerConfig, *, name: str = "<audio>", min_seconds: float | None = None,
                  backend: str = DEFAULT_STFT_BACKEND) -> tuple[np.ndarray, np.ndarray | None]:
    """(log-mel, descriptors or None) of one decoded clip at cfg.sample_rate: the model's input.

    Raises AudioError too_short / silent (below `min_seconds`, default cfg.min_seconds, or below
    SILENCE_RMS); the clip is zero-padded or cropped to clip_seconds. Shared by the chorus
    (featurise_track) and the timeline windows (labeler.inference.timeline).
    """
    _check_clip(clip, cfg.sample_rate, cfg.min_seconds if min_seconds is None else min_seconds, name)
    clip = fit_clip(clip, cfg)
    power = power_spectrogram(clip, cfg, backend)
    mel_db = check_frames(log_mel_from_power(power, cfg), cfg)
    descriptors = None
    if cfg.descriptors:  # descriptors always read the dB mel (the musicnn front end computes it only here)
        db = mel_db if cfg.frontend == "panns" else mel_to_db(mel_basis(cfg.sample_rate, cfg.window_size, cfg.n_mels,
                                                                      cfg.fmin, cfg.fmax) @ power)
        descriptors = descriptors_from(clip, power, db, cfg)
    return mel_db, descriptors


# --------------------------------------------------------------------------- Ray Data callable


def warm_up_jit() -> None:
    """Run every numba-compiled path of the featuriser once (chorus search, log-mel, descriptors) on a
    synthetic 60-s track, so labeler.runtime.jit_cache can publish a complete cache (see there for why)."""
    rng = np.random.default_rng(0)
    sr = 22050
    t = np.arange(60 * sr) / sr
    tone = np.sin(2 * np.pi * (220 + 110 * (t // 5 % 3)) * t)
    wav = io.BytesIO()
    sf.write(wav, (0.3 * tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32), sr, format="WAV")
    featurise_track(wav.getvalue(), None, None, FeaturizerConfig(descriptors=True))


class Featurizer:
    """Ray Data `map_batches` callable (batch_format="numpy"): one featurised chorus per row.

    In: song_id, audio_uri (may be None), optional chorus_start_s/chorus_end_s (NaN/None = auto).
    Out: every input column, plus log_mel float16 (n, n_frames, n_mels) (zeros on error),
    descriptors float32 (n, DESCRIPTOR_DIM) when config.descriptors, chorus_start_used_s and
    chorus_end_used_s float64 (NaN on error), audio_error object ("<kind>: <detail>" or None).
    A bad track never fails the batch: it gets audio_error instead (`too_long` past
    `max_audio_seconds`). Rows are featurised one at a time, so a batch holds one decoded window at
    most besides its float16 outputs.
    """

    def __init__(self, config: FeaturizerConfig | dict, backend: str = DEFAULT_STFT_BACKEND,
                 max_audio_seconds: float | None = MAX_AUDIO_SECONDS):
        self.config = config if isinstance(config, FeaturizerConfig) else FeaturizerConfig.from_dict(config)
        if backend not in STFT_BACKENDS:
            raise ValueError(f"unknown STFT backend {backend!r}; expected one of {STFT_BACKENDS}")
        self.backend = backend
        self.max_audio_seconds = check_max_seconds(max_audio_seconds)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "audio_uri" not in batch:
            raise ValueError(f"batch has no 'audio_uri' column (columns: {sorted(batch)})")
        cfg = self.config
        uris = batch["audio_uri"]
        n = len(uris)
        starts = batch.get("chorus_start_s")
        ends = batch.get("chorus_end_s")
        mels = np.zeros((n, cfg.n_frames, cfg.n_mels), dtype=np.float16)
        descriptors = np.zeros((n, DESCRIPTOR_DIM), dtype=np.float32) if cfg.descriptors else None
        used_start = np.full(n, np.nan)
        used_end = np.full(n, np.nan)
        errors = np.empty(n, dtype=object)
        for i in range(n):
            uri = uris[i]
            try:
                if uri is None or (isinstance(uri, float) and math.isnan(uri)):
                    raise AudioError("no_audio", "audio_uri is null")
                jit_cache.ensure_compiled(warm_up_jit)  # once per process, before any JIT code runs
                features = featurise_track(str(uri), None if starts is None else starts[i], None if ends is None else ends[i],
                                           cfg, backend=self.backend, max_seconds=self.max_audio_seconds)
            except AudioError as exc:
                errors[i] = str(exc)
                log.info("%s", exc)
                continue
            except Exception as exc:  # noqa: BLE001 - a decoder crash on one file must not fail the batch
                errors[i] = f"corrupt: {storage.describe(str(uri))}: {type(exc).__name__}: {exc}"
                log.warning("unexpected failure featurising %s", storage.describe(str(uri)), exc_info=True)
                continue
            mels[i] = features.log_mel
            if descriptors is not None:
                descriptors[i] = features.descriptors
            used_start[i], used_end[i] = features.chorus_start_s, features.chorus_end_s
            errors[i] = None
        out = dict(batch)
        out["log_mel"] = mels
        if descriptors is not None:
            out["descriptors"] = descriptors
        out["chorus_start_used_s"] = used_start
        out["chorus_end_used_s"] = used_end
        out["audio_error"] = errors
        return out
