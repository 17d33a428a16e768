"""Audio featurisation shared by training and labelling: decode -> chorus -> log-mel (+ descriptors).

One featuriser, one config (`FeaturizerConfig`, stored in the model bundle), so the log-mel a model
is trained on is exactly the log-mel it labels with. The stages are plain functions, testable
without Ray; `Featurizer` wraps them as a Ray Data `map_batches` callable that never lets one bad
file fail a batch.

Decoding reads only what it needs: soundfile (libsndfile 1.2: WAV, FLAC, OGG Vorbis, Opus, MP3,
AIFF, ...) seeks to the window and reads it block by block, each block mixed to mono and resampled
with soxr's streaming resampler, so a one-hour file costs one window of memory. MP3 seeking in
libsndfile 1.2 is sample-accurate (checked against a full decode). MP4-family files (M4A, AAC, ...)
go through an `ffmpeg` subprocess when one is installed.

Log-mel follows PANNs (Kong et al. 2020; torchlibrosa's Spectrogram + LogmelFilterBank): Hann
window, centred STFT with reflect padding, power spectrum, librosa's (Slaney) mel filterbank,
10*log10(max(mel, 1e-10)) with ref 1.0 and no top_db clipping.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import math
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import librosa
import numpy as np
import soundfile as sf
import soxr

from labeler import jit_cache, storage

log = logging.getLogger(__name__)

# A clip whose RMS is below this (about -80 dBFS, i.e. 1e-4 of full scale) carries no usable
# signal: digital silence, or only dither/noise floor. Such rows get the error kind "silent".
SILENCE_RMS = 1e-4

# The automatic chorus finder analyses audio at this rate: chroma and MFCC need nothing above
# ~5 kHz, and a quarter of 44.1 kHz keeps 240 s of analysis audio near 10 MB.
ANALYSIS_SR = 11025
_ANALYSIS_N_FFT = 2048
_CHORUS_POOL_FRAMES = 4  # chroma/MFCC frames (hop 1024 at ANALYSIS_SR) averaged into one chorus-analysis frame

# Decoding reads this much audio at a time: large blocks keep libsndfile's per-call overhead low
# (small blocks made MP3 decoding ~1.5x slower), and one block of 44.1 kHz stereo is only 3.5 MB.
_BLOCK_SECONDS = 10.0

# With less than this much track beyond the clip there is nothing to choose: the clip starts at 0.
_CHORUS_SLACK_SECONDS = 1.0

# Formats libsndfile decodes here; MP4-family containers need ffmpeg.
_SOUNDFILE_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64", ".rf64"})
_FFMPEG_SUFFIXES = frozenset({".m4a", ".mp4", ".m4b", ".aac", ".3gp", ".webm", ".wma", ".alac"})

ERROR_KINDS = ("no_audio", "missing_file", "empty_file", "corrupt", "unsupported_format", "ffmpeg_missing", "silent", "too_short")

# Descriptor vector: log-mel bands pooled to this many bands before mean/std.
_DESCRIPTOR_BANDS = 16
_N_MFCC = 20
_N_CONTRAST = 7  # librosa.feature.spectral_contrast: 6 bands + 1 valley row

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
# network a spectrogram it never saw, so FeaturizerConfig refuses it.
MUSICNN_GEOMETRY = {"sample_rate": 16000, "window_size": 512, "hop_size": 256, "n_mels": 96, "fmin": 0.0, "fmax": 8000.0}
MUSICNN_PATCH_FRAMES = 187  # 3 s


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
        if self.descriptors and self.n_mels < _DESCRIPTOR_BANDS:
            problems.append(f"n_mels={self.n_mels} must be >= {_DESCRIPTOR_BANDS} when descriptors=True")
        if problems:
            raise ValueError("invalid FeaturizerConfig: " + "; ".join(problems))

    @classmethod
    def musicnn(cls, clip_seconds: float = 30.0, **kwargs) -> "FeaturizerConfig":
        """The musicnn front end's config: its fixed geometry, `clip_seconds` of chorus (3-s patches)."""
        return cls(clip_seconds=clip_seconds, frontend="musicnn", **MUSICNN_GEOMETRY, **kwargs)

    @property
    def patches(self) -> int:
        """musicnn patches of 187 frames a clip (0 for the PANNs front end)."""
        return (1 + self.clip_samples // self.hop_size) // MUSICNN_PATCH_FRAMES if self.frontend == "musicnn" else 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeaturizerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown FeaturizerConfig field(s): {', '.join(unknown)}")
        return cls(**d)

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


# --------------------------------------------------------------------------- decoding


def _suffix(name: str | None) -> str:
    if not name:
        return ""
    return os.path.splitext(name.split("?", 1)[0])[1].lower()


def _is_mp4_family(head: bytes) -> bool:
    """ISO base media files (M4A, MP4, 3GP) start with a box whose type is 'ftyp'."""
    return len(head) >= 8 and head[4:8] == b"ftyp"


class _Reader:
    """Reads windows of one opened audio source as mono float32 at any rate."""

    duration_s: float | None  # None when unknown until decoded (ffmpeg)

    def read(self, start_s: float, duration_s: float | None, sr: int) -> np.ndarray:
        raise NotImplementedError


class _SoundFileReader(_Reader):
    """libsndfile: seek to the window, read it block by block, mono-mix and resample each block."""

    def __init__(self, sfile: sf.SoundFile, name: str):
        self._f = sfile
        self._name = name
        self.samplerate = sfile.samplerate
        self.duration_s = sfile.frames / sfile.samplerate if sfile.frames > 0 else 0.0

    def read(self, start_s: float, duration_s: float | None, sr: int) -> np.ndarray:
        total = self._f.frames
        first = min(max(0, int(round(start_s * self.samplerate))), total)
        wanted = total - first if duration_s is None else min(total - first, int(round(duration_s * self.samplerate)))
        if wanted <= 0:
            return np.zeros(0, dtype=np.float32)
        stream = None if sr == self.samplerate else soxr.ResampleStream(self.samplerate, sr, 1, dtype="float32", quality="HQ")
        # One preallocated output buffer: peak memory is the window at `sr` plus one block.
        out = np.empty(int(math.ceil(wanted * sr / self.samplerate)) + 64, dtype=np.float32)
        filled = 0

        def append(chunk: np.ndarray) -> None:
            nonlocal out, filled
            if filled + len(chunk) > len(out):
                out = np.resize(out, filled + len(chunk))
            out[filled:filled + len(chunk)] = chunk
            filled += len(chunk)

        try:
            self._f.seek(first)
            remaining = wanted
            block_frames = int(_BLOCK_SECONDS * self.samplerate)
            while remaining > 0:
                block = self._f.read(min(block_frames, remaining), dtype="float32", always_2d=True)
                if len(block) == 0:
                    break  # the header promised more frames than the stream holds (truncated file)
                remaining -= len(block)
                # Mono mix as a matrix-vector product: numpy's mean over a 2-wide axis is ~30x slower.
                mono = block @ np.full(block.shape[1], 1.0 / block.shape[1], dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
                append(mono if stream is None else stream.resample_chunk(mono, last=False))
            if stream is not None:
                append(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
            raise AudioError("corrupt", f"{self._name}: decoding failed: {exc}") from exc
        return out[:filled]


class _FfmpegReader(_Reader):
    """ffmpeg decodes MP4-family files (which need random access to their 'moov' box) from a path."""

    duration_s = None

    def __init__(self, path: str, name: str):
        self._path = path
        self._name = name

    def read(self, start_s: float, duration_s: float | None, sr: int) -> np.ndarray:
        cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
        if start_s > 0:
            cmd += ["-ss", f"{start_s:.6f}"]
        if duration_s is not None:
            cmd += ["-t", f"{duration_s:.6f}"]
        cmd += ["-i", self._path, "-vn", "-ac", "1", "-ar", str(sr), "-f", "f32le", "-"]
        proc = subprocess.run(cmd, capture_output=True, check=False)
        if proc.returncode != 0:
            detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise AudioError("corrupt", f"{self._name}: ffmpeg failed: {detail[-1] if detail else proc.returncode}")
        return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)


def _require_ffmpeg(name: str) -> None:
    if shutil.which("ffmpeg") is None:
        raise AudioError(
            "ffmpeg_missing",
            f"{name}: MP4/AAC-family audio needs ffmpeg; install it (e.g. `apt-get install ffmpeg` or `conda install ffmpeg`) and put it on PATH",
        )


@contextmanager
def _ffmpeg_reader(fobj: BinaryIO, name: str, local_path: str | None) -> Iterator[_Reader]:
    _require_ffmpeg(name)
    if local_path is not None:
        yield _FfmpegReader(local_path, name)
        return
    # Remote object or in-memory bytes: MP4 needs seeking, so give ffmpeg a real file.
    with tempfile.NamedTemporaryFile(suffix=_suffix(name) or ".m4a") as tmp:
        fobj.seek(0)
        shutil.copyfileobj(fobj, tmp)
        tmp.flush()
        yield _FfmpegReader(tmp.name, name)


@contextmanager
def open_audio(source: str | bytes | BinaryIO) -> Iterator[_Reader]:
    """Open a URI (local, file://, s3://), raw bytes or a seekable binary file object for windowed reads.

    Raises AudioError with kind no_audio, missing_file, empty_file, corrupt, unsupported_format or
    ffmpeg_missing. The file stays open inside the context, so one track can be read twice (the
    chorus analysis, then the window) with a single open, which matters on S3.
    """
    if source is None or (isinstance(source, str) and not source.strip()):
        raise AudioError("no_audio", "audio_uri is null")
    local_path: str | None = None
    if isinstance(source, str):
        name = storage.describe(source)
        if not storage.is_remote(source):
            local_path = storage.strip_scheme(source)
        try:
            fobj = storage.open_file(source, "rb")
        except FileNotFoundError as exc:
            raise AudioError("missing_file", f"{name} does not exist") from exc
        except IsADirectoryError as exc:
            raise AudioError("missing_file", f"{name} is a directory, not an audio file") from exc
        except PermissionError as exc:
            raise AudioError("missing_file", f"{name}: permission denied") from exc
    elif isinstance(source, (bytes, bytearray, memoryview)):
        name = "<bytes>"
        fobj = io.BytesIO(bytes(source))
    elif hasattr(source, "read") and hasattr(source, "seek"):
        name = getattr(source, "name", None) or "<file object>"
        name = name if isinstance(name, str) else "<file object>"
        fobj = source
    else:
        raise TypeError(f"audio source must be a URI, bytes or a binary file object, not {type(source).__name__}")

    owns = isinstance(source, (str, bytes, bytearray, memoryview))
    try:
        start = fobj.tell()
        fobj.seek(0, os.SEEK_END)
        size = fobj.tell() - start
        fobj.seek(start)
        if size <= 0:
            raise AudioError("empty_file", f"{name} has 0 bytes")
        head = fobj.read(12)
        fobj.seek(start)
        suffix = _suffix(name)
        if suffix in _FFMPEG_SUFFIXES or _is_mp4_family(head):
            with _ffmpeg_reader(fobj, name, local_path) as reader:
                yield reader
            return
        try:
            sfile = sf.SoundFile(fobj)
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            reason = str(exc).rsplit(":", 1)[-1].strip() or type(exc).__name__
            if suffix in _SOUNDFILE_SUFFIXES:
                raise AudioError("corrupt", f"{name}: not a readable {suffix[1:].upper()} file ({reason})") from exc
            what = f"'{suffix}' files are not supported" if suffix else "unrecognised audio data"
            raise AudioError("unsupported_format", f"{name}: {what} ({reason})") from exc
        with sfile:
            if sfile.frames <= 0:
                raise AudioError("empty_file", f"{name} holds no audio frames")
            yield _SoundFileReader(sfile, name)
    finally:
        if owns:
            fobj.close()


def decode_window(source: str | bytes | BinaryIO, start_s: float | None, duration_s: float | None, sr: int) -> np.ndarray:
    """Mono float32 at `sr` of [start_s, start_s + duration_s) (None: from the start / to the end).

    Only the window is decoded (soundfile seeks to it), so memory is one window whatever the file's
    length. A window past the end of the track yields an empty array; the caller decides what that means.
    """
    if sr <= 0:
        raise ValueError(f"sr={sr} must be > 0")
    with open_audio(source) as reader:
        return reader.read(max(0.0, start_s or 0.0), duration_s, sr)


# --------------------------------------------------------------------------- chorus


def _fallback_window(duration_s: float, clip_seconds: float) -> tuple[float, float]:
    """The window used when no repetition is found: centred on the first third of the track, kept inside it."""
    if duration_s <= clip_seconds:
        return 0.0, duration_s
    start = min(max(0.0, duration_s / 3.0 - clip_seconds / 2.0), duration_s - clip_seconds)
    return start, start + clip_seconds


def _annotated_window(start_s: float, duration_s: float | None, clip_seconds: float) -> tuple[float, float]:
    """clip_seconds from an annotated chorus start, moved earlier to stay inside the track when it can."""
    if duration_s is not None and start_s + clip_seconds > duration_s:
        start_s = max(0.0, duration_s - clip_seconds)
    end_s = start_s + clip_seconds
    return start_s, end_s if duration_s is None else min(end_s, duration_s)


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
    rec = librosa.segment.recurrence_matrix(features, mode="affinity", sym=True, width=width, metric="cosine")
    if not np.any(rec):
        return _fallback_window(duration, clip_seconds)
    score = rec.sum(axis=1)
    window_score = np.convolve(score, np.ones(clip_frames) / clip_frames, mode="valid")
    if window_score.max() - window_score.min() <= 1e-6 * max(window_score.max(), 1e-12):
        return _fallback_window(duration, clip_seconds)
    start = float(np.argmax(window_score)) / frames_per_s
    start = min(start, duration - clip_seconds)
    return start, start + clip_seconds


# --------------------------------------------------------------------------- log-mel


@functools.lru_cache(maxsize=8)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa's default (Slaney) mel filterbank, as PANNs builds it."""
    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(np.float32)


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
            stft = torch.stft(torch.from_numpy(samples), cfg.window_size, cfg.hop_size, win_length=cfg.window_size,
                              window=window, center=True, pad_mode="reflect", return_complex=True)
            return (stft.real ** 2 + stft.imag ** 2).numpy()
    raise ValueError(f"unknown STFT backend {backend!r}; expected one of {STFT_BACKENDS}")


def _mel_db(mel: np.ndarray) -> np.ndarray:
    return (10.0 * np.log10(np.maximum(mel, 1e-10))).T.astype(np.float32, copy=False)


def _log_mel_from_power(power: np.ndarray, cfg: FeaturizerConfig) -> np.ndarray:
    """(frames, n_mels) features of the config's front end, from the power spectrogram."""
    mel = _mel_basis(cfg.sample_rate, cfg.window_size, cfg.n_mels, cfg.fmin, cfg.fmax) @ power
    if cfg.frontend == "musicnn":
        compressed = np.log10(10000.0 * mel.T[:cfg.n_frames].astype(np.float16).astype(np.float32) + 1.0)
        return compressed.astype(np.float32, copy=False)
    return _mel_db(mel)


def fit_clip(samples: np.ndarray, cfg: FeaturizerConfig) -> np.ndarray:
    """Zero-pad or crop to exactly clip_seconds, so every clip has cfg.n_frames frames."""
    return librosa.util.fix_length(np.asarray(samples, dtype=np.float32), size=cfg.clip_samples)


def _check_samples(samples: np.ndarray, sr: int, cfg: FeaturizerConfig) -> np.ndarray:
    if sr != cfg.sample_rate:
        raise ValueError(f"sr={sr} does not match the featurizer's sample_rate={cfg.sample_rate}; resample first")
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"samples must be mono (1-D), got shape {samples.shape}")
    if not np.all(np.isfinite(samples)):
        raise ValueError("samples contain NaN or infinite values")
    return fit_clip(samples, cfg)


def _check_frames(features: np.ndarray, cfg: FeaturizerConfig) -> np.ndarray:
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
    return _check_frames(_log_mel_from_power(power_spectrogram(clip, cfg, backend), cfg), cfg)


# --------------------------------------------------------------------------- descriptors


def descriptor_names() -> list[str]:
    """Names of the descriptor vector's entries, in order (DESCRIPTOR_DIM of them)."""
    names: list[str] = []

    def mean_std(prefix: str, count: int | None = None) -> None:
        for stat in ("mean", "std"):
            if count is None:
                names.append(f"{prefix}_{stat}")
            else:
                names.extend(f"{prefix}{i}_{stat}" for i in range(count))

    mean_std("logmel_band", _DESCRIPTOR_BANDS)
    mean_std("mfcc", _N_MFCC)
    mean_std("chroma", 12)
    mean_std("contrast", _N_CONTRAST)
    mean_std("onset_strength")
    names.append("tempo_bpm")
    mean_std("rms")
    mean_std("spectral_centroid")
    mean_std("spectral_rolloff")
    mean_std("zcr")
    return names


DESCRIPTOR_DIM: int = len(descriptor_names())


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
    bands = np.stack([b.mean(axis=1) for b in np.array_split(mel_db.T, _DESCRIPTOR_BANDS, axis=0)])
    mfcc = librosa.feature.mfcc(S=mel_db.T, n_mfcc=_N_MFCC)
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


# --------------------------------------------------------------------------- one track


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
                    cfg: FeaturizerConfig, *, backend: str = DEFAULT_STFT_BACKEND) -> TrackFeatures:
    """Decode the chorus window of one track and featurise it; raises AudioError for a bad track.

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
    with open_audio(source) as reader:
        window: tuple[float, float] | None = None
        if start is not None:
            start = max(0.0, start)
            fits = (end is None or end > start) and (reader.duration_s is None or start < reader.duration_s)
            if fits:
                window = _annotated_window(start, reader.duration_s, cfg.clip_seconds)
            else:
                log.warning("%s: chorus annotation [%s, %s] does not fit the track (%s s); finding it automatically",
                            name, chorus_start_s, chorus_end_s, reader.duration_s)
        if window is None and reader.duration_s is not None and reader.duration_s <= cfg.clip_seconds + _CHORUS_SLACK_SECONDS:
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
    (featurise_track) and the timeline windows (labeler.timeline).
    """
    _check_clip(clip, cfg.sample_rate, cfg.min_seconds if min_seconds is None else min_seconds, name)
    clip = fit_clip(clip, cfg)
    power = power_spectrogram(clip, cfg, backend)
    mel_db = _check_frames(_log_mel_from_power(power, cfg), cfg)
    descriptors = None
    if cfg.descriptors:  # descriptors always read the dB mel (the musicnn front end computes it only here)
        db = mel_db if cfg.frontend == "panns" else _mel_db(_mel_basis(cfg.sample_rate, cfg.window_size, cfg.n_mels,
                                                                      cfg.fmin, cfg.fmax) @ power)
        descriptors = descriptors_from(clip, power, db, cfg)
    return mel_db, descriptors


# --------------------------------------------------------------------------- Ray Data callable


def warm_up_jit() -> None:
    """Run every numba-compiled path of the featuriser once (chorus search, log-mel, descriptors) on a
    synthetic 60-s track, so labeler.jit_cache can publish a complete cache (see there for why)."""
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
    A bad track never fails the batch: it gets audio_error instead. Rows are featurised one at a
    time, so a batch holds one decoded window at most besides its float16 outputs.
    """

    def __init__(self, config: FeaturizerConfig | dict, backend: str = DEFAULT_STFT_BACKEND):
        self.config = config if isinstance(config, FeaturizerConfig) else FeaturizerConfig.from_dict(config)
        if backend not in STFT_BACKENDS:
            raise ValueError(f"unknown STFT backend {backend!r}; expected one of {STFT_BACKENDS}")
        self.backend = backend

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
                                           cfg, backend=self.backend)
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
