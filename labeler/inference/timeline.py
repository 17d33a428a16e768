"""Mood over time: label successive windows of a whole track (`labeler label --timeline SECONDS`).

A track is cut into windows of SECONDS from its start ([0, S), [S, 2S), ...; a last piece shorter
than the featuriser's `min_seconds` joins the window before it). Each window is labelled from one
model input: the `clip_seconds` of audio centred on the window (the length the model was trained
on), moved inside the track at its ends; a track shorter than a clip is zero-padded as for the
chorus. So with `--timeline 10` and a 30-s model the windows overlap in what the model hears but
not in what they report, and with a window longer than the clip the model hears its middle.

Windows use audio only (a fused model gets its lyrics placeholder): lyrics are not time-aligned,
and the song's whole lyrics would pull every window toward the same class.

Memory is bounded whatever the track's length: the file is opened once, each window's clip is
decoded by seeking to it (`labeler.audio.open_audio`), and the model sees `chunk` windows at a time;
nothing holds more than one chunk of log-mels. A window whose audio is silent gets a null label.

Work is bounded too: the header's length and sample rate are checked before any window is planned
(labeler.audio.check_header), so a track longer than `max_seconds` is refused as `too_long` and a
sample rate outside SAMPLE_RATES as `unsupported_format` (AudioError), never planned; a track whose
length is unknown until decoded is refused as soon as its audio runs past `max_seconds`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from labeler.audio import MAX_AUDIO_SECONDS, AudioError, FeaturizerConfig, check_header, clip_features, open_audio
from labeler.contracts.labels import quadrant_probs_to_axes
from labeler.io import storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """One timeline window: what it reports (start, end) and the audio the model hears (clip_start, clip_end)."""

    start: float
    end: float
    clip_start: float
    clip_end: float


def _check_seconds(seconds: float) -> float:
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"timeline window must be a positive number of seconds, got {seconds!r}")
    return float(seconds)


def plan_windows(duration_s: float, seconds: float, clip_seconds: float, min_seconds: float,
                 max_seconds: float | None = MAX_AUDIO_SECONDS, name: str = "<audio>") -> list[Window]:
    """The windows of a track of known length (see the module docstring).

    Raises AudioError `too_long` for a length above `max_seconds` (or not finite), before planning.
    """
    seconds = _check_seconds(seconds)
    if not math.isfinite(duration_s):
        raise AudioError("too_long", f"{name}: its header gives a length of {duration_s} s")
    check_header(name, None, duration_s, max_seconds)
    if duration_s <= 0:
        return []
    edges = [k * seconds for k in range(int(math.ceil(duration_s / seconds)))] + [duration_s]
    if len(edges) > 2 and edges[-1] - edges[-2] < min_seconds:
        del edges[-2]  # a short tail joins the window before it
    windows = []
    for start, end in zip(edges[:-1], edges[1:]):
        centre = (start + end) / 2
        clip_start = min(max(0.0, centre - clip_seconds / 2), max(0.0, duration_s - clip_seconds))
        windows.append(Window(start, end, clip_start, min(duration_s, clip_start + clip_seconds)))
    return windows


def iter_window_features(source: str | bytes | BinaryIO, cfg: FeaturizerConfig, seconds: float, chunk: int = 16,
                         max_seconds: float | None = MAX_AUDIO_SECONDS,
                         ) -> Iterator[tuple[list[Window], np.ndarray, np.ndarray | None, np.ndarray]]:
    """Yield (windows, log_mel float32 (b, frames, mels), descriptors (b, D) or None, usable (b,)) per chunk.

    Raises AudioError when the track cannot be opened or its header is past the limits (see the module
    docstring). A track whose length is unknown before decoding (ffmpeg) is read window after window
    from the start until the audio ends, and refused (`too_long`) if it plays on past `max_seconds`.
    """
    seconds = _check_seconds(seconds)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    name = storage.describe(source) if isinstance(source, str) else "<audio>"
    with open_audio(source, max_seconds) as reader:
        if reader.duration_s is not None:
            planned: Iterator[Window] = iter(plan_windows(reader.duration_s, seconds, cfg.clip_seconds, cfg.min_seconds,
                                                          max_seconds, name))
        else:
            planned = _open_ended(seconds, cfg.clip_seconds)
        pending: list[tuple[Window, np.ndarray | None, np.ndarray | None]] = []
        for window in planned:
            clip = reader.read(window.clip_start, window.clip_end - window.clip_start, cfg.sample_rate)
            if reader.duration_s is None:
                heard = len(clip) / cfg.sample_rate
                if heard < cfg.min_seconds:
                    break  # past the end of an open-ended track
                if max_seconds is not None and window.start >= max_seconds:
                    raise AudioError("too_long", f"{name}: its audio runs past the limit of {max_seconds:g} s")
                if heard < window.clip_end - window.clip_start - 1e-3:  # the track ends inside this window
                    window = Window(window.start, min(window.end, window.clip_start + heard), window.clip_start,
                                    window.clip_start + heard)
                    planned = iter(())
            try:
                mel, descriptors = clip_features(clip, cfg, min_seconds=min(cfg.min_seconds, window.end - window.start))
            except AudioError as exc:  # a silent or too-short stretch: that window has no label
                log.debug("timeline window %.1f-%.1f s: %s", window.start, window.end, exc)
                mel = descriptors = None
            pending.append((window, mel, descriptors))
            if len(pending) == chunk:
                yield _stack(pending, cfg)
                pending = []
        if pending:
            yield _stack(pending, cfg)


def _open_ended(seconds: float, clip_seconds: float) -> Iterator[Window]:
    """Windows of a track of unknown length: each clip starts at its window (no centring without an end)."""
    k = 0
    while True:
        start = k * seconds
        yield Window(start, start + seconds, start, start + clip_seconds)
        k += 1


def _stack(pending, cfg: FeaturizerConfig):
    windows = [w for w, _, _ in pending]
    usable = np.array([m is not None for _, m, _ in pending], dtype=bool)
    mels = np.zeros((len(pending), cfg.n_frames, cfg.n_mels), dtype=np.float32)
    descriptors = None
    if cfg.descriptors:
        from labeler.audio import DESCRIPTOR_DIM  # noqa: PLC0415

        descriptors = np.zeros((len(pending), DESCRIPTOR_DIM), dtype=np.float32)
    for i, (_, mel, desc) in enumerate(pending):
        if mel is not None:
            mels[i] = mel
            if descriptors is not None:
                descriptors[i] = desc
    return windows, mels, descriptors, usable


def axis_probs(mode: str, classes: list[str] | tuple[str, ...], probs: np.ndarray) -> tuple[float | None, float | None]:
    """(P(arousal high), P(valence high)) of one probability vector; None for an axis the mode lacks."""
    if mode == "4Q":
        arousal, valence = quadrant_probs_to_axes(probs)
        return arousal, valence
    if mode in ("Ar", "Va") and "high" in classes:
        p_high = float(probs[list(classes).index("high")])
        return (p_high, None) if mode == "Ar" else (None, p_high)
    return None, None


def window_rows(windows: list[Window], probs: np.ndarray, usable: np.ndarray, mode: str,
                classes: list[str] | tuple[str, ...]) -> list[dict[str, Any]]:
    """Timeline entries (the TIMELINE_WINDOW struct of labeler.contracts.schemas) of one chunk of windows."""
    rows = []
    for window, p, ok in zip(windows, probs, usable):
        row: dict[str, Any] = {"start": round(window.start, 3), "end": round(window.end, 3), "label": None,
                               "label_prob": None, "arousal_prob": None, "valence_prob": None}
        if ok and np.isfinite(p).all():
            top = int(np.argmax(p))
            arousal, valence = axis_probs(mode, classes, p)
            row.update(label=str(classes[top]), label_prob=float(p[top]), arousal_prob=arousal, valence_prob=valence)
        rows.append(row)
    return rows


def track_timeline(source: str | bytes | BinaryIO, cfg: FeaturizerConfig, seconds: float, mode: str,
                   classes: list[str] | tuple[str, ...],
                   predict: Callable[[np.ndarray, np.ndarray | None, np.ndarray], np.ndarray],
                   chunk: int = 16, max_seconds: float | None = MAX_AUDIO_SECONDS) -> list[dict[str, Any]]:
    """The timeline of one track: `predict(log_mel, descriptors, usable) -> probs (b, classes)` per chunk.

    Raises AudioError as iter_window_features does (a track past the limits is never planned)."""
    rows: list[dict[str, Any]] = []
    for windows, mels, descriptors, usable in iter_window_features(source, cfg, seconds, chunk, max_seconds):
        probs = predict(mels, descriptors, usable) if usable.any() else np.full((len(windows), len(classes)), np.nan)
        rows.extend(window_rows(windows, probs, usable, mode, classes))
    return rows
