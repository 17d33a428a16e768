"""Decoding: a URI, bytes or a file object -> windows of mono float32 audio at any rate.

soundfile (libsndfile 1.2: WAV, FLAC, OGG Vorbis, Opus, MP3, AIFF, ...) seeks to the window and
reads it block by block, each block mixed to mono and resampled with soxr's streaming resampler,
so a one-hour file costs one window of memory. MP3 seeking in libsndfile 1.2 is sample-accurate
(checked against a full decode). MP4-family files (M4A, AAC, ...) go through an `ffmpeg`
subprocess when one is installed. Every expected failure is an AudioError naming its kind.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from typing import BinaryIO, Iterator

import numpy as np
import soundfile as sf
import soxr

from labeler import storage
from labeler.audio.config import AudioError

# Decoding reads this much audio at a time: large blocks keep libsndfile's per-call overhead low
# (small blocks made MP3 decoding ~1.5x slower), and one block of 44.1 kHz stereo is only 3.5 MB.
_BLOCK_SECONDS = 10.0

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

