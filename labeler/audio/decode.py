"""Decoding: a URI, bytes or a file object -> windows of mono float32 audio at any rate.

soundfile (libsndfile 1.2: WAV, FLAC, OGG Vorbis, Opus, MP3, AIFF, ...) seeks to the window and
reads it block by block, each block mixed to mono and resampled with soxr's streaming resampler,
so a one-hour file costs one window of memory. MP3 seeking in libsndfile 1.2 is sample-accurate
(checked against a full decode). MP4-family files (M4A, AAC, ...) go through an `ffmpeg`
subprocess when one is installed. Every expected failure is an AudioError naming its kind.

What a header claims is checked when the file is opened, before it sizes any work (`check_header`):
a sample rate outside SAMPLE_RATES or a length above the caller's `max_seconds` is refused, no read
to the end decodes past `max_seconds`, and a block holds at most _BLOCK_SAMPLES samples whatever the
sample rate and channel count, so one file costs bounded memory and time whatever its header says.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, BinaryIO

import numpy as np
import soundfile as sf
import soxr

from labeler.audio.config import MAX_AUDIO_SECONDS, AudioError, check_header
from labeler.io import storage

# Decoding reads this much audio at a time: large blocks keep libsndfile's per-call overhead low
# (small blocks made MP3 decoding ~1.5x slower), and one block of 44.1 kHz stereo is only 3.5 MB.
_BLOCK_SECONDS = 10.0
# ... but never more samples (frames x channels) than this: 4 MB of float32 whatever the header claims.
_BLOCK_SAMPLES = 1 << 20
# libsndfile's frame count for a file whose header gives no length (a FLAC stream with 0 total samples):
# soundfile cannot read such a file to its end (its position update fails there), so it is refused.
_UNKNOWN_FRAMES = 2**63 - 1

# Formats libsndfile decodes here; MP4-family containers need ffmpeg.
_SOUNDFILE_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64", ".rf64"})
_FFMPEG_SUFFIXES = frozenset({".m4a", ".mp4", ".m4b", ".aac", ".3gp", ".webm", ".wma", ".alac"})


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

    def __init__(self, sfile: sf.SoundFile, name: str, max_seconds: float | None):
        self._f = sfile
        self._name = name
        self.samplerate = sfile.samplerate
        self.duration_s = sfile.frames / sfile.samplerate
        # A read to the end stops at the header's length, and never past the cap.
        cap = sfile.frames if max_seconds is None else int(math.ceil(max_seconds * sfile.samplerate))
        self._to_end = min(sfile.frames, cap)

    def read(self, start_s: float, duration_s: float | None, sr: int) -> np.ndarray:
        total = self._f.frames
        first = min(max(0, int(round(start_s * self.samplerate))), total)
        wanted = max(0, self._to_end - first) if duration_s is None else min(total - first, int(round(duration_s * self.samplerate)))
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
            block_frames = max(1, min(int(_BLOCK_SECONDS * self.samplerate), _BLOCK_SAMPLES // self._f.channels))
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

    def __init__(self, path: str, name: str, max_seconds: float | None):
        self._path = path
        self._name = name
        self._max_seconds = max_seconds

    def read(self, start_s: float, duration_s: float | None, sr: int) -> np.ndarray:
        if duration_s is None and self._max_seconds is not None:  # a read to the end stops at the cap
            duration_s = max(0.0, self._max_seconds - start_s)
            if duration_s == 0.0:
                return np.zeros(0, dtype=np.float32)
        cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
        if start_s > 0:
            cmd += ["-ss", f"{start_s:.6f}"]
        if duration_s is not None:
            cmd += ["-t", f"{duration_s:.6f}"]
        cmd += ["-i", self._path, "-vn", "-ac", "1", "-ar", str(sr), "-f", "f32le", "-"]
        proc = subprocess.run(cmd, capture_output=True, check=False)  # noqa: S603 - an argument list, no shell; -i takes the path as data
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
def _ffmpeg_reader(fobj: IO[bytes], name: str, local_path: str | None, max_seconds: float | None) -> Iterator[_Reader]:
    _require_ffmpeg(name)
    if local_path is not None:
        yield _FfmpegReader(local_path, name, max_seconds)
        return
    # Remote object or in-memory bytes: MP4 needs seeking, so give ffmpeg a real file.
    with tempfile.NamedTemporaryFile(suffix=_suffix(name) or ".m4a") as tmp:
        fobj.seek(0)
        shutil.copyfileobj(fobj, tmp)
        tmp.flush()
        yield _FfmpegReader(tmp.name, name, max_seconds)


@contextmanager
def open_audio(source: str | bytes | BinaryIO, max_seconds: float | None = MAX_AUDIO_SECONDS,
               name: str | None = None) -> Iterator[_Reader]:
    """Open a URI (local, file://, s3://), raw bytes or a seekable binary file object for windowed reads.

    Raises AudioError with kind no_audio, missing_file, empty_file, corrupt, unsupported_format (also
    for a sample rate outside SAMPLE_RATES), too_long (a header length above `max_seconds`; None: no
    cap) or ffmpeg_missing; a read to the end stops at `max_seconds`. The file stays open inside the
    context, so one track can be read twice (the chorus analysis, then the window) with a single open,
    which matters on S3. A file object is read from its current position. `name` is how errors name
    the source (default: the URI, '<bytes>' or the file object's name).
    """
    if source is None or (isinstance(source, str) and not source.strip()):
        raise AudioError("no_audio", "audio_uri is null")
    local_path: str | None = None
    if isinstance(source, str):
        name = name or storage.describe(source)
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
        name = name or "<bytes>"
        fobj = io.BytesIO(bytes(source))
    elif hasattr(source, "read") and hasattr(source, "seek"):
        if name is None:
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
            with _ffmpeg_reader(fobj, name, local_path, max_seconds) as reader:
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
            if sfile.frames >= _UNKNOWN_FRAMES:
                raise AudioError("unsupported_format", f"{name}: its header gives no length (a FLAC stream?); "
                                                       f"re-encode the file")
            reader = _SoundFileReader(sfile, name, max_seconds)
            check_header(name, sfile.samplerate, reader.duration_s, max_seconds)
            yield reader
    finally:
        if owns:
            fobj.close()


def decode_window(source: str | bytes | BinaryIO, start_s: float | None, duration_s: float | None, sr: int,
                  max_seconds: float | None = MAX_AUDIO_SECONDS) -> np.ndarray:
    """Mono float32 at `sr` of [start_s, start_s + duration_s) (None: from the start / to the end).

    Only the window is decoded (soundfile seeks to it), so memory is one window whatever the file's
    length. A window past the end of the track yields an empty array; the caller decides what that means.
    The header is checked as open_audio checks it (`max_seconds`).
    """
    if sr <= 0:
        raise ValueError(f"sr={sr} must be > 0")
    with open_audio(source, max_seconds) as reader:
        return reader.read(max(0.0, start_s or 0.0), duration_s, sr)

