"""`FeaturizerConfig`: every parameter that changes the audio features, and the shared result types.

Why a module of its own, without librosa or torch: the config is stored in the model bundle and
read by drivers (memory planning, bundle info) that never featurise; importing it must stay cheap.
`AudioError` (the row error kinds), the header limits (`check_header`, applied where a file is
opened) and `TrackFeatures` are what every stage of labeler.audio raises, checks or returns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

ERROR_KINDS = ("no_audio", "missing_file", "empty_file", "corrupt", "unsupported_format", "ffmpeg_missing", "silent",
               "too_short", "too_long")

# Header limits. A file's header (its sample rate and length) sizes decoding, the chorus search and the
# timeline's windows, so what it claims is checked (`check_header`) before any of them runs: a track
# longer than the cap is a `too_long` row error, a sample rate outside SAMPLE_RATES `unsupported_format`.
# MAX_AUDIO_SECONDS is the default cap (`labeler label --max-audio-seconds`); `labeler serve` has its own
# `--max-audio-seconds` (ServeConfig), checked by the same function.
MAX_AUDIO_SECONDS = 3600.0
SAMPLE_RATES = (1000, 768000)  # Hz: telephone-band recordings up to 768-kHz studio masters

# Descriptor vector: log-mel bands pooled to this many bands before mean/std.
DESCRIPTOR_BANDS = 16
N_MFCC = 20
N_CONTRAST = 7  # librosa.feature.spectral_contrast: 6 bands + 1 valley row

STFT_BACKENDS = ("librosa", "torch")
# torch.stft is the default: on one core (a Ray CPU worker's budget) bench/bench_featurise.py measured
# the 30-s log-mel at ~15 ms CPU with torch vs ~20 ms with librosa; the two agree to 1e-5 relative
# (tests/test_audio.py). librosa stays available for environments without torch.
DEFAULT_STFT_BACKEND = "torch"

# Front ends: "panns" is the PANNs log-mel in dB (Cnn6/Cnn10); "musicnn" is the input the pretrained
# musicnn encoders were trained on (Pons & Serra 2019): the same centred, reflect-padded power mel,
# cast to float16 as musicnn does, then log10(10000 x + 1) computed in float32 (under numpy 2,
# 10000 * float16 stays float16 and overflows to inf in ~0.6% of bins), in patches of 187 frames.
FRONTENDS = ("panns", "musicnn")
# musicnn's fixed geometry (the wheel's configuration.py): anything else feeds the pretrained
# network a spectrogram it never saw, so FeaturizerConfig refuses it. Typed Any: int and float fields by name.
MUSICNN_GEOMETRY: dict[str, Any] = {"sample_rate": 16000, "window_size": 512, "hop_size": 256, "n_mels": 96,
                                    "fmin": 0.0, "fmax": 8000.0}
MUSICNN_PATCH_FRAMES = 187  # 3 s


def uses_musicnn_frontend(featurizer) -> bool:
    """Whether a featurizer (a FeaturizerConfig, its dict as stored in a bundle, or None/{} for no audio) feeds
    the pretrained MusiCNN: training then caches the frozen encoder's patch embeddings, and on CPU the
    labelling Predictor costs more than featurising (labeler.label_job.resources)."""
    frontend = featurizer.get("frontend") if isinstance(featurizer, dict) else getattr(featurizer, "frontend", None)
    return frontend == "musicnn"


@dataclass(frozen=True)
class FeaturizerConfig:
    """Every parameter that changes the features; stored in the model bundle (see `fingerprint`)."""

    sample_rate: int = 32000
    clip_seconds: float = 30.0
    window_size: int = 1024
    hop_size: int = 320
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    min_seconds: float = 1.0  # shorter decoded audio -> too_short
    chorus_search_seconds: float = 240.0  # auto chorus analyses at most this much of a track
    descriptors: bool = False  # also compute the handcrafted descriptor vector (Hybrid branch)
    frontend: str = "panns"  # "panns" (dB log-mel) or "musicnn" (see FRONTENDS; `FeaturizerConfig.musicnn`)

    def __post_init__(self) -> None:
        problems = []
        if self.sample_rate <= 0:
            problems.append(f"sample_rate={self.sample_rate} must be > 0")
        if not self.clip_seconds > 0:
            problems.append(f"clip_seconds={self.clip_seconds} must be > 0")
        if self.hop_size <= 0 or self.window_size < self.hop_size:
            problems.append(f"window_size={self.window_size}, hop_size={self.hop_size}: need 0 < hop_size <= window_size")
        if self.n_mels <= 0:
            problems.append(f"n_mels={self.n_mels} must be > 0")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            problems.append(f"fmin={self.fmin}, fmax={self.fmax}: need 0 <= fmin < fmax <= sample_rate/2 ({self.sample_rate / 2})")
        if not 0 < self.min_seconds <= self.clip_seconds:
            problems.append(f"min_seconds={self.min_seconds} must be in (0, clip_seconds={self.clip_seconds}]")
        if self.chorus_search_seconds < self.clip_seconds:
            problems.append(f"chorus_search_seconds={self.chorus_search_seconds} must be >= clip_seconds={self.clip_seconds}")
        if self.frontend not in FRONTENDS:
            problems.append(f"frontend={self.frontend!r} must be one of {', '.join(FRONTENDS)}")
        elif self.frontend == "musicnn":
            off = {k: getattr(self, k) for k, v in MUSICNN_GEOMETRY.items() if float(getattr(self, k)) != float(v)}
            if off:
                problems.append(f"the musicnn front end has a fixed geometry {MUSICNN_GEOMETRY}; got {off}")
            elif 1 + self.clip_samples // self.hop_size < MUSICNN_PATCH_FRAMES:
                problems.append(f"clip_seconds={self.clip_seconds} is shorter than one musicnn patch (3 s)")
        if self.descriptors and self.n_mels < DESCRIPTOR_BANDS:
            problems.append(f"n_mels={self.n_mels} must be >= {DESCRIPTOR_BANDS} when descriptors=True")
        if problems:
            raise ValueError("invalid FeaturizerConfig: " + "; ".join(problems))

    @classmethod
    def musicnn(cls, clip_seconds: float = 30.0, **kwargs) -> FeaturizerConfig:
        """The musicnn front end's config: its fixed geometry, `clip_seconds` of chorus (3-s patches)."""
        return cls(clip_seconds=clip_seconds, frontend="musicnn", **MUSICNN_GEOMETRY, **kwargs)

    @property
    def patches(self) -> int:
        """musicnn patches of 187 frames a clip (0 for the PANNs front end)."""
        return (1 + self.clip_samples // self.hop_size) // MUSICNN_PATCH_FRAMES if self.frontend == "musicnn" else 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FeaturizerConfig:
        from labeler.contracts.coerce import config_from_dict  # noqa: PLC0415

        return config_from_dict(cls, d)

    def fingerprint(self) -> str:
        """16 hex chars of sha256 over the canonical JSON: feature caches are keyed by it."""
        d = self.to_dict()
        if d["frontend"] == "panns":  # the field's default: PANNs configs keep their earlier fingerprints
            del d["frontend"]
        canonical = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def n_frames(self) -> int:
        """Frames of one clip: a centred STFT of clip_samples gives 1 + clip_samples // hop (musicnn:
        only whole 187-frame patches are kept)."""
        if self.frontend == "musicnn":
            return self.patches * MUSICNN_PATCH_FRAMES
        return 1 + self.clip_samples // self.hop_size


def check_header(name: str, sample_rate: float | None, duration_s: float | None, max_seconds: float | None) -> None:
    """Raise AudioError unless a header's claims are audio this project decodes within the cap.

    `unsupported_format` for a sample rate outside SAMPLE_RATES (checked first: a 1-Hz header's length
    means nothing), `too_long` for a duration above `max_seconds`. None skips a check: a sample rate
    or length the header does not give (ffmpeg), or no cap.
    """
    low, high = SAMPLE_RATES
    if sample_rate is not None and not low <= sample_rate <= high:
        raise AudioError("unsupported_format", f"{name}: sample rate {sample_rate:g} Hz is outside {low}-{high} Hz")
    if max_seconds is not None and duration_s is not None and not duration_s <= max_seconds:
        raise AudioError("too_long", f"{name}: {duration_s:.1f} s of audio exceeds the limit of {max_seconds:g} s")


def check_max_seconds(value: float | None, what: str = "max_audio_seconds") -> float | None:
    """A cap on a track's length, checked: None (no cap) or a positive finite number of seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


class AudioError(Exception):
    """An expected failure to featurise one track; `kind` is one of ERROR_KINDS.

    str(e) is "<kind>: <detail>", the form the row error columns carry.
    """

    def __init__(self, kind: str, detail: str):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown audio error kind {kind!r}; expected one of {ERROR_KINDS}")
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass
class TrackFeatures:
    log_mel: np.ndarray  # float32 (n_frames, n_mels)
    chorus_start_s: float
    chorus_end_s: float
    descriptors: np.ndarray | None = None  # float32 (DESCRIPTOR_DIM,) when config.descriptors


def descriptor_names() -> list[str]:
    """Names of the descriptor vector's entries, in order (DESCRIPTOR_DIM of them)."""
    names: list[str] = []

    def mean_std(prefix: str, count: int | None = None) -> None:
        for stat in ("mean", "std"):
            if count is None:
                names.append(f"{prefix}_{stat}")
            else:
                names.extend(f"{prefix}{i}_{stat}" for i in range(count))

    mean_std("logmel_band", DESCRIPTOR_BANDS)
    mean_std("mfcc", N_MFCC)
    mean_std("chroma", 12)
    mean_std("contrast", N_CONTRAST)
    mean_std("onset_strength")
    names.append("tempo_bpm")
    mean_std("rms")
    mean_std("spectral_centroid")
    mean_std("spectral_rolloff")
    mean_std("zcr")
    return names


DESCRIPTOR_DIM: int = len(descriptor_names())
