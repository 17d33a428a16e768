"""Online labelling of single songs: `POST /label` and `GET /healthz` on Ray Serve.

The endpoint runs the batch job's own stages on one song, so a song gets the same label online as
in the catalogue job: `labeler.audio.featurise_track` (decode -> chorus -> log-mel), the bundle's
`LyricsTokenizer`, the `Predictor`, and `labeler.label_rows.label_rows` to build the LABELS row.
Featurising runs per request in a thread pool (the replica's event loop stays free to accept
requests); the model call is batched across concurrent requests with `@serve.batch`.

Requests (`POST /label`)::

    multipart/form-data: audio=<file part>, and optional fields lyrics, chorus_start_s, chorus_end_s,
                         song_id (or audio_uri instead of the file part)
    application/json:    {"audio_uri": "s3://...", "lyrics": "...", "chorus_start_s": 30.0,
                          "chorus_end_s": 60.0, "song_id": "..."}  (every field optional, but one of
                          audio / audio_uri / lyrics is needed)

The answer is one row of the LABELS contract as JSON (`labelled_at` in ISO-8601), with `embedding`
and `timeline` when the server was started with `--embeddings` / `--timeline SECONDS` (the same
columns as `labeler label` writes; the timeline is decoded from the upload or the URI). Errors are a
JSON object {"error": "<kind>: <detail>"} with a 4xx status; a bad song never gets a 500.

What is a 4xx and what is a labelled row with `audio_error` (the rule):

- 400 `bad_request`/`bad_json`/`missing_fields`/`bad_field`: the request itself is malformed
  (empty body, invalid JSON, unknown or mistyped fields, none of audio, audio_uri, lyrics).
- 413 `too_large`: the request body exceeds `max_upload_mb` (a JSON body: `max_json_kb`); `too_long`: the audio lasts longer than
  `max_audio_seconds` (checked from the file header before decoding).
- 415 `unsupported_media_type`: a body that is neither JSON nor multipart form data.
- 403 `forbidden`: an `audio_uri` outside the prefixes the server was started with
  (`--allow-uri-prefix`; none by default, so by default the server never reads local files or
  buckets on a client's behalf).
- 422 with the audio error kind (`corrupt`, `unsupported_format`, `empty_file`, `ffmpeg_missing`):
  *uploaded* bytes that cannot be decoded. The client sent them explicitly, so answering with a
  lyrics-only label would hide its mistake.
- 422 `worker_crash` (uploads), or a row with `audio_error = 'worker_crash: ...'` (an `audio_uri`: 200 from
  its lyrics, else 422 as below): audio whose featurisation killed the process doing it (a segfault in a
  decoder, say). Each featurise thread decodes in its own child process (labeler.isolate), so the replica
  and the next request are unaffected; the crash is not retried here (the client may).
- 200 with `audio_error` set and `modalities` = "lyrics": audio that decodes but is unusable
  (`silent`, `too_short`), and an `audio_uri` that cannot be read or decoded (`missing_file`,
  `corrupt`, ...), when the song has lyrics: exactly the row the batch job writes for that song.
- 422 with the row's error (e.g. `missing_file: ...; no_lyrics: ...`): nothing usable is left, the
  row the batch job would write with `error` set; the body also carries that `row`.
- 500 only for a failure of the model itself (row error kind `model`), never for a song's content.
"""

import argparse
import asyncio
import dataclasses
import json
import logging
import math
import os
import posixpath
import signal
import threading
import time
import typing
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, BinaryIO

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from labeler import storage

log = logging.getLogger(__name__)

# Audio error kinds that mean "these bytes are not audio this server can decode".
UNDECODABLE_KINDS = frozenset({"corrupt", "unsupported_format", "empty_file", "ffmpeg_missing"})
REQUEST_FIELDS = ("audio", "audio_uri", "lyrics", "chorus_start_s", "chorus_end_s", "song_id")
_MB = 1024 * 1024


# --------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class ServeConfig:
    """One serving application: the bundle, the scaling and batching knobs, the request limits."""

    bundle: str
    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = 1  # fixed replica count, or the autoscaling minimum when max_replicas is larger
    max_replicas: int | None = None  # > replicas: autoscale between replicas and max_replicas
    max_batch_size: int = 8  # songs per model call (@serve.batch)
    batch_wait_timeout_s: float = 0.05  # how long a model call waits to fill its batch
    max_upload_mb: float = 50.0  # request body limit
    max_json_kb: float = 2048.0  # JSON body limit (JSON names audio by URI; lyrics are capped at 50,000 characters)
    max_audio_seconds: float = 900.0  # longest audio accepted (upload or URI)
    featurise_threads: int = 2  # featurising threads per replica
    replica_cpus: float = 1.0  # Ray CPUs reserved per replica (also torch's thread count)
    allow_uri_prefixes: tuple[str, ...] = ()  # audio_uri must start with one of these; () = audio_uri refused
    expect_version: str | None = None  # refuse a bundle whose recomputed model_version is not this one
    route_prefix: str = "/"
    embeddings: bool = False  # answer with the `embedding` column too
    timeline_seconds: float | None = None  # answer with the `timeline` column, windows of this many seconds

    def __post_init__(self) -> None:
        if not self.bundle:
            raise ValueError("bundle is required (a model bundle directory, local or s3://)")
        for name in ("replicas", "max_batch_size", "featurise_threads", "port"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "port" else 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) < replicas ({self.replicas})")
        for name in ("batch_wait_timeout_s",):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("max_upload_mb", "max_json_kb", "max_audio_seconds", "replica_cpus"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.timeline_seconds is not None and not (0 < self.timeline_seconds < float("inf")):
            raise ValueError(f"timeline_seconds must be a positive number of seconds, got {self.timeline_seconds!r}")
        if not self.route_prefix.startswith("/"):
            raise ValueError(f"route_prefix must start with '/', got {self.route_prefix!r}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * _MB)

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_kb * 1024)

    @classmethod
    def from_mapping(cls, args: dict[str, Any]) -> "ServeConfig":
        """From `serve run labeler.serve:app_builder bundle=URI max_batch_size=16 ...` (values may be strings)."""
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(args) - set(names))
        if unknown:
            raise ValueError(f"unknown serve argument(s): {', '.join(unknown)}; expected some of {', '.join(names)}")
        values = {name: _coerce(name, raw, hints[name]) for name, raw in args.items()}
        if values.get("bundle"):  # replicas do not share the caller's working directory
            values["bundle"] = storage.absolute_uri(str(values["bundle"]))
        return cls(**values)

    def deployment_options(self) -> dict[str, Any]:
        """Options for `LabelService.options(...)`: replicas or autoscaling, per-replica concurrency."""
        options: dict[str, Any] = {
            "ray_actor_options": {"num_cpus": self.replica_cpus},
            # Room for a full batch waiting while the previous one runs (Serve's default is 5).
            "max_ongoing_requests": max(2 * self.max_batch_size, 8),
        }
        if self.max_replicas is not None and self.max_replicas > self.replicas:
            options["autoscaling_config"] = {
                "min_replicas": self.replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.max_batch_size,
            }
        else:
            options["num_replicas"] = self.replicas
        return options


def _coerce(name: str, raw: Any, annotation: Any) -> Any:
    """A builder argument to its field's type (`serve run` passes every value as a string)."""
    if raw is None or not isinstance(raw, str):
        return tuple(raw) if isinstance(raw, list) else raw
    optional = type(None) in typing.get_args(annotation)
    base = next((a for a in typing.get_args(annotation) if a is not type(None)), annotation) if optional else annotation
    kind = typing.get_origin(base) or base
    if optional and raw.strip().lower() in ("", "none", "null"):
        return None
    try:
        if kind is tuple:
            return tuple(p for p in raw.split(",") if p)
        if kind in (int, float):
            return kind(raw)
    except ValueError as exc:
        raise ValueError(f"serve argument {name}={raw!r} is not a valid {getattr(kind, '__name__', kind)}") from exc
    return raw


# --------------------------------------------------------------------------------------------------
# requests


class RequestError(Exception):
    """A request the endpoint answers with a 4xx: status, error kind and a detail for the client."""

    def __init__(self, status: int, kind: str, detail: str, extra: dict | None = None):
        super().__init__(f"{kind}: {detail}")
        self.status = status
        self.kind = kind
        self.extra = extra or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": str(self), **self.extra}, status_code=self.status)


@dataclass
class SongRequest:
    """One song as a client sent it (validated; audio not decoded yet)."""

    song_id: str
    audio: bytes | BinaryIO | None = None  # an upload: spooled to a temporary file beyond UPLOAD_SPOOL_BYTES
    audio_name: str | None = None
    audio_uri: str | None = None
    lyrics: str | None = None
    chorus_start_s: float | None = None
    chorus_end_s: float | None = None
    extra: dict = field(default_factory=dict)
    closers: list = field(default_factory=list, repr=False)  # async callables that free the upload

    async def close(self) -> None:
        for close in self.closers:
            await close()
        self.closers.clear()


def _check_declared_size(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, "too_large", f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")


def _limited_receive(request: Request, limit: int):
    """The request's ASGI receive, refusing (413) once more than `limit` body bytes have arrived.

    The body is never held whole: JSON bodies are read up to the (small) JSON limit, and multipart
    bodies stream through Starlette's parser, which spools an uploaded file to a temporary file
    beyond UPLOAD_SPOOL_BYTES; so a replica's memory does not grow with concurrent large uploads.
    """
    seen = 0

    async def receive() -> dict:
        nonlocal seen
        message = await request.receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise RequestError(413, "too_large", f"request body exceeds the limit of {limit} bytes")
        return message

    return receive


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body (JSON only: at most `limit` bytes, refused with 413 beyond)."""
    _check_declared_size(request, limit)
    chunks = []
    async for chunk in Request(request.scope, _limited_receive(request, limit)).stream():
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_body(body: bytes) -> dict:
    """A JSON object, or 400 for anything else: invalid JSON, nesting too deep for the parser
    (RecursionError), integers longer than Python converts (ValueError), non-objects."""
    try:
        fields = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RequestError(400, "bad_json", f"body is not valid JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(fields, dict):
        raise RequestError(400, "bad_json", f"expected a JSON object, got {type(fields).__name__}")
    return fields


def _optional_float(name: str, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise RequestError(400, "bad_field", f"{name} must be a number of seconds, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(400, "bad_field", f"{name} must be a number of seconds, got {value!r}") from None
    if math.isnan(number):
        return None
    if math.isinf(number) or number < 0:
        raise RequestError(400, "bad_field", f"{name} must be a finite number >= 0, got {value!r}")
    return number


def _optional_text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and name == "song_id":
        return str(value)
    if not isinstance(value, str):
        raise RequestError(400, "bad_field", f"{name} must be a string, got {type(value).__name__}")
    return value


def song_from_fields(fields: dict[str, Any], audio: bytes | BinaryIO | None = None,
                     audio_name: str | None = None) -> SongRequest:
    """Validate the fields of one request (JSON object or form fields) into a SongRequest."""
    unknown = sorted(set(fields) - set(REQUEST_FIELDS))
    if unknown:
        raise RequestError(400, "bad_field", f"unknown field(s) {', '.join(unknown)}; expected some of {', '.join(REQUEST_FIELDS)}")
    audio_uri = _optional_text("audio_uri", fields.get("audio_uri"))
    audio_uri = audio_uri.strip() or None if audio_uri is not None else None
    if audio is not None and audio_uri is not None:
        raise RequestError(400, "bad_field", "send either an audio file part or audio_uri, not both")
    lyrics = _optional_text("lyrics", fields.get("lyrics"))
    if audio is None and audio_uri is None and not (lyrics and lyrics.strip()):
        raise RequestError(400, "missing_fields", "send an audio file part, an audio_uri or lyrics (none was given)")
    song_id = _optional_text("song_id", fields.get("song_id"))
    return SongRequest(
        song_id=song_id.strip() if song_id and song_id.strip() else f"request-{uuid.uuid4().hex}",
        audio=audio,
        audio_name=audio_name,
        audio_uri=audio_uri,
        lyrics=lyrics,
        chorus_start_s=_optional_float("chorus_start_s", fields.get("chorus_start_s")),
        chorus_end_s=_optional_float("chorus_end_s", fields.get("chorus_end_s")),
    )


async def parse_request(request: Request, config: ServeConfig) -> SongRequest:
    """Read and validate `POST /label`'s body: JSON or multipart form, within the size limits.

    The caller closes the returned request (`song.close()`), which removes a spooled upload.
    """
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    _check_declared_size(request, config.max_upload_bytes)
    if content_type == "multipart/form-data":
        return await _parse_form(request, config.max_upload_bytes)
    body = await read_body(request, min(config.max_upload_bytes, config.max_json_bytes))
    if content_type == "application/json" or (not content_type and body.lstrip().startswith(b"{")):
        fields = parse_json_body(body)
        if "audio" in fields:
            raise RequestError(400, "bad_field", "JSON requests name audio by audio_uri; upload bytes as a multipart 'audio' part")
        return song_from_fields(fields)
    if not body:
        raise RequestError(400, "missing_fields", "empty body: send multipart/form-data with an 'audio' part, or a JSON object")
    raise RequestError(415, "unsupported_media_type",
                       f"content type {content_type or 'none'!r}; send multipart/form-data or application/json")


async def _parse_form(request: Request, limit: int) -> SongRequest:
    """Multipart form streamed through Starlette's parser (the audio part spooled to a temporary file)."""
    from starlette.datastructures import UploadFile  # noqa: PLC0415

    try:
        form = await Request(request.scope, _limited_receive(request, limit)).form(
            max_files=1, max_fields=len(REQUEST_FIELDS))
    except RequestError:
        raise
    except Exception as exc:  # noqa: BLE001 - starlette raises HTTPException/MultiPartException on bad forms
        raise RequestError(400, "bad_request", f"malformed multipart form ({getattr(exc, 'detail', exc)})") from None
    try:
        fields: dict[str, Any] = {}
        audio, audio_name = None, None
        for key, value in form.multi_items():
            if key in fields or (key == "audio" and audio is not None):
                raise RequestError(400, "bad_field", f"field {key!r} given more than once")
            if isinstance(value, UploadFile):
                if key != "audio":
                    raise RequestError(400, "bad_field", f"file part {key!r}: only 'audio' may be a file")
                audio, audio_name = value.file, value.filename
            elif key == "audio":
                raise RequestError(400, "bad_field", "'audio' must be a file part (use audio_uri for a URI)")
            else:
                fields[key] = value
        song = song_from_fields(fields, audio=audio, audio_name=audio_name)
    except BaseException:
        await form.close()
        raise
    song.closers.append(form.close)
    return song


def _rewound(source: Any) -> Any:
    """An uploaded file object at its start (it is opened twice: the duration check, then featurising)."""
    if hasattr(source, "seek"):
        source.seek(0)
    return source


def _payload(source: Any) -> Any:
    """What the featurising child gets: a URI as it is, an uploaded file's bytes (bounded by max_upload_mb):
    a file object cannot cross the process boundary."""
    return _rewound(source).read() if hasattr(source, "read") else source


def check_uri_allowed(uri: str, prefixes: tuple[str, ...]) -> str:
    """The normalised URI when it lies under an allowed prefix; 403 otherwise (no '..' escapes)."""
    if not prefixes:
        raise RequestError(403, "forbidden", "this server does not read audio_uri (start it with --allow-uri-prefix)")
    if storage.is_remote(uri):
        scheme, rest = uri.split("://", 1)
        normal = f"{scheme}://{posixpath.normpath(rest)}"
        if ".." in rest.split("/"):
            raise RequestError(403, "forbidden", f"audio_uri {uri!r} must not contain '..'")
        allowed = any(normal == p.rstrip("/") or normal.startswith(p.rstrip("/") + "/") for p in prefixes if storage.is_remote(p))
    else:
        normal = os.path.realpath(storage.strip_scheme(uri))
        roots = [os.path.realpath(storage.strip_scheme(p)) for p in prefixes if not storage.is_remote(p)]
        allowed = any(normal == r or normal.startswith(r.rstrip(os.sep) + os.sep) for r in roots)
    if not allowed:
        raise RequestError(403, "forbidden", f"audio_uri {uri!r} is outside the allowed prefixes")
    return normal


# --------------------------------------------------------------------------------------------------
# the song -> model-input stage (per request, in a thread)


class SongFeaturiser:
    """One song -> the one-row batch the Predictor takes, with the batch job's featuriser and tokenizer.

    The columns and dtypes are the ones `Featurizer` and `LyricsTokenizer` produce in the batch
    job (log_mel stored as float16, zeros on an audio error), so the model sees identical inputs.
    """

    def __init__(self, info, config: ServeConfig):
        from labeler.audio import FeaturizerConfig  # noqa: PLC0415
        from labeler.lyrics import LyricsTokenizer  # noqa: PLC0415

        self.info = info
        self.config = config
        self.featurizer = FeaturizerConfig.from_dict(info.featurizer) if info.uses_audio else None
        self.tokenizer = LyricsTokenizer(info.tokenizer.load(), info.lyrics) if info.uses_lyrics else None
        # A Hugging Face fast tokenizer is not safe to call from two threads at once (its Rust side
        # raises "Already borrowed" while another call changes its padding/truncation state); audio
        # featurising runs in parallel, tokenising (about a millisecond) one song at a time.
        self._tokenizer_lock = threading.Lock()
        # Each featurise thread decodes in its own crash-isolation child (labeler.isolate): a song that
        # kills the decoder costs that request a worker_crash answer, not the replica.
        self._children = threading.local()

    def __call__(self, song: SongRequest) -> dict[str, np.ndarray]:
        batch: dict[str, np.ndarray] = {
            "song_id": np.array([song.song_id], dtype=object),
            "lyrics": np.array([song.lyrics], dtype=object),
        }
        if self.featurizer is not None:
            batch.update(self._audio_columns(song))
        else:
            batch["audio_error"] = np.array([None], dtype=object)
        if self.tokenizer is not None:
            with self._tokenizer_lock:
                batch = self.tokenizer(batch)
        batch.pop("lyrics")
        return batch

    def _audio_columns(self, song: SongRequest) -> dict[str, np.ndarray]:
        from labeler.audio import DESCRIPTOR_DIM  # noqa: PLC0415

        cfg = self.featurizer
        mel = np.zeros((1, cfg.n_frames, cfg.n_mels), dtype=np.float16)
        descriptors = np.zeros((1, DESCRIPTOR_DIM), dtype=np.float32)
        features, error = self._featurise(song)
        if features is not None:
            mel[0] = features.log_mel
            if cfg.descriptors:
                descriptors[0] = features.descriptors
        out = {"log_mel": mel, "audio_error": np.array([error], dtype=object)}
        if self.config.timeline_seconds is not None:  # what the Predictor decodes the timeline windows from
            source = None
            if features is not None:  # the upload's bytes (read from its spooled file), or the checked URI
                source = (_rewound(song.audio).read() if hasattr(song.audio, "read") else song.audio) \
                    if song.audio is not None else check_uri_allowed(song.audio_uri, self.config.allow_uri_prefixes)
            out["audio_source"] = np.array([source], dtype=object)
        if cfg.descriptors:
            out["descriptors"] = descriptors
        return out

    def _child(self):
        from labeler.isolate import ChildProcess  # noqa: PLC0415

        if not hasattr(self._children, "child"):
            self._children.child = ChildProcess()
        return self._children.child

    def _featurise(self, song: SongRequest):
        """(TrackFeatures, None), or (None, "<kind>: detail") for audio the batch job would also skip.

        Raises RequestError for uploaded bytes that do not decode (422) and for too-long audio (413).
        """
        from labeler.audio import AudioError, open_audio  # noqa: PLC0415
        from labeler.isolate import CRASH_KIND, WorkerCrash  # noqa: PLC0415

        uploaded = song.audio is not None
        if uploaded:
            source: Any = song.audio
        elif song.audio_uri is not None:
            source = check_uri_allowed(song.audio_uri, self.config.allow_uri_prefixes)
        else:
            return None, "no_audio: audio_uri is null"
        name = song.audio_name or ("upload" if uploaded else storage.describe(song.audio_uri))
        try:
            with open_audio(_rewound(source)) as reader:
                seconds = reader.duration_s
            if seconds is not None and seconds > self.config.max_audio_seconds:
                raise RequestError(413, "too_long",
                                   f"{name}: {seconds:.1f} s of audio exceeds the limit of {self.config.max_audio_seconds:g} s")
            try:
                out = self._child().call("labeler.isolate:TrackFeaturiser", {"config": self.featurizer.to_dict()},
                                         {"source": _payload(source), "start": song.chorus_start_s, "end": song.chorus_end_s, "name": name})
            except WorkerCrash as crash:  # not retried: the client may retry the request
                log.error("featurising %s crashed its process (%s)", name, crash)
                if uploaded:
                    raise RequestError(422, CRASH_KIND, f"{name}: {crash}") from None
                return None, f"{CRASH_KIND}: {name}: {crash}"
            if "features" in out:
                return out["features"], None
            raise AudioError(out["kind"], out["detail"])
        except AudioError as exc:
            if uploaded and exc.kind in UNDECODABLE_KINDS:
                raise RequestError(422, exc.kind, f"{name}: {str(exc).split(': ', 1)[-1]}") from None
            return None, str(exc)
        except RequestError:
            raise
        except Exception as exc:  # noqa: BLE001 - a decoder crash on one file is that file's fault (as in Featurizer)
            log.warning("unexpected failure featurising %s", name, exc_info=True)
            if uploaded:
                raise RequestError(422, "corrupt", f"{name}: {type(exc).__name__}: {exc}") from None
            return None, f"corrupt: {name}: {type(exc).__name__}: {exc}"


def row_to_json(row: dict[str, Any]) -> dict[str, Any]:
    """A LABELS row (pyarrow to_pylist) as JSON values: ISO-8601 timestamps, no NaN."""
    out = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, float) and not math.isfinite(value):
            value = None
        elif isinstance(value, list) and value and isinstance(value[0], tuple):  # a map column (class_probs)
            value = dict(value)
        out[key] = value
    return out


def status_for_row(row: dict[str, Any]) -> int:
    """200 for a labelled row; 422 when the song had nothing usable; 500 when the model itself failed."""
    from labeler.label_rows import error_kind  # noqa: PLC0415

    kind = error_kind(row.get("error"))
    if kind is None:
        return 200
    return 500 if kind == "model" else 422


# --------------------------------------------------------------------------------------------------
# the deployment

api = FastAPI(title="mood-labeler", description="Russell-quadrant labels for single songs (chorus audio + lyrics).")


@serve.deployment
@serve.ingress(api)
class LabelService:
    """A Serve replica: loads the bundle once, featurises per request, predicts in batches."""

    def __init__(self, config: ServeConfig):
        from labeler.bundle_info import BundleInfo  # noqa: PLC0415
        from labeler.predict import Predictor  # noqa: PLC0415
        from labeler.verified import open_bundle  # noqa: PLC0415

        self.config = config
        # The replica reads every file it uses through the verified loader, pinned to the version the
        # driver checked (run_cli), so a bundle swapped after the driver's check is refused here.
        self.info = BundleInfo.from_verified(open_bundle(config.bundle, config.expect_version))
        self.predictor = Predictor(self.info.uri, batch_size=config.max_batch_size,
                                   num_threads=max(1, int(config.replica_cpus)), embeddings=config.embeddings,
                                   timeline_seconds=config.timeline_seconds, expect_version=self.info.model_version)
        self.featuriser = SongFeaturiser(self.info, config)
        self._featurise_pool = ThreadPoolExecutor(config.featurise_threads, thread_name_prefix="featurise")
        self._model_pool = ThreadPoolExecutor(1, thread_name_prefix="model")
        self._predict.set_max_batch_size(config.max_batch_size)
        self._predict.set_batch_wait_timeout_s(config.batch_wait_timeout_s)
        log.info("serving %s version %s (%s, %s)", self.info.model_id, self.info.model_version, self.info.mode, self.info.branch)

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"ok": True, "model_id": self.info.model_id, "model_version": self.info.model_version,
                "mode": self.info.mode, "branch": self.info.branch}

    @api.post("/label")
    async def label(self, request: Request) -> JSONResponse:
        song = None
        try:
            song = await parse_request(request, self.config)
            loop = asyncio.get_running_loop()
            batch = await loop.run_in_executor(self._featurise_pool, self.featuriser, song)
        except RequestError as exc:
            return exc.response()
        finally:
            if song is not None:
                await song.close()  # the spooled upload is not needed once featurised
        row = await self._predict(batch)
        status = status_for_row(row)
        if status != 200:
            return JSONResponse({"error": row["error"], "row": row}, status_code=status)
        return JSONResponse(row)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _predict(self, batches: list[dict[str, np.ndarray]]) -> list[dict[str, Any]]:
        """Concurrent requests' one-row batches -> one Predictor call -> one LABELS row each."""
        from labeler.label_rows import label_rows  # noqa: PLC0415

        merged = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(self._model_pool, self.predictor, merged)
        table = label_rows(out, self.info, datetime.now(timezone.utc))
        return [row_to_json(r) for r in table.to_pylist()]


def build_app(config: ServeConfig):
    """The Serve application for `config` (pass to serve.run)."""
    return LabelService.options(**config.deployment_options()).bind(config)


def app_builder(args: dict[str, Any]):
    """Application builder: `serve run labeler.serve:app_builder bundle=URI [max_batch_size=16 ...]`.

    Takes any ServeConfig field as key=value (also in a `serve deploy` config file's `args`); host and
    port are then Serve's own (`serve run --host/--port`, or the config file's http_options)."""
    return build_app(ServeConfig.from_mapping(dict(args)))


# --------------------------------------------------------------------------------------------------
# command line


def configure_parser(parser: argparse.ArgumentParser) -> None:
    d = ServeConfig(bundle="-")
    parser.add_argument("--bundle", required=True, metavar="URI", help="model bundle directory (local or s3://)")
    parser.add_argument("--host", default=d.host, help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=d.port, help="port (default %(default)s)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--replicas", type=int, default=d.replicas, help="replicas (the minimum when autoscaling; default %(default)s)")
    parser.add_argument("--max-replicas", type=int, default=None, help="autoscale up to this many replicas")
    parser.add_argument("--replica-cpus", type=float, default=d.replica_cpus, help="CPUs per replica (default %(default)s)")
    parser.add_argument("--featurise-threads", type=int, default=d.featurise_threads, help="featurising threads per replica")
    parser.add_argument("--max-batch-size", type=int, default=d.max_batch_size, help="songs per model call (default %(default)s)")
    parser.add_argument("--batch-wait-timeout-s", type=float, default=d.batch_wait_timeout_s,
                        help="seconds a model call waits to fill its batch (default %(default)s)")
    parser.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb, help="request body limit (default %(default)s)")
    parser.add_argument("--max-json-kb", type=float, default=d.max_json_kb, help="JSON body limit (default %(default)s)")
    parser.add_argument("--max-audio-seconds", type=float, default=d.max_audio_seconds,
                        help="longest audio accepted (default %(default)s)")
    parser.add_argument("--allow-uri-prefix", action="append", default=[], metavar="PREFIX",
                        help="accept JSON audio_uri under this local folder or s3:// prefix (repeatable; default: none)")
    parser.add_argument("--embeddings", action="store_true", help="answer with the `embedding` column (as labeler label --embeddings)")
    parser.add_argument("--timeline", dest="timeline_seconds", type=float, default=None, metavar="SECONDS",
                        help="answer with the `timeline` column (as labeler label --timeline)")
    parser.add_argument("--expect-version", default=None, metavar="V",
                        help="refuse the bundle unless its recomputed model_version is V")


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    return ServeConfig(
        bundle=storage.absolute_uri(args.bundle), host=args.host, port=args.port, replicas=args.replicas,
        max_replicas=args.max_replicas, replica_cpus=args.replica_cpus, featurise_threads=args.featurise_threads,
        max_batch_size=args.max_batch_size, batch_wait_timeout_s=args.batch_wait_timeout_s,
        max_upload_mb=args.max_upload_mb, max_json_kb=args.max_json_kb, max_audio_seconds=args.max_audio_seconds,
        allow_uri_prefixes=tuple(args.allow_uri_prefix), embeddings=args.embeddings,
        timeline_seconds=args.timeline_seconds, expect_version=args.expect_version,
    )


def start(config: ServeConfig, name: str = "labeler"):
    """Start Serve's HTTP proxy on config.host:port and deploy the application; returns its handle."""
    serve.start(http_options={"host": config.host, "port": config.port})
    return serve.run(build_app(config), name=name, route_prefix=config.route_prefix)


def run_cli(args: argparse.Namespace) -> int:
    from labeler.bundle_info import read_bundle_info  # noqa: PLC0415
    from labeler.console import ensure_ray  # noqa: PLC0415

    config = config_from_args(args)
    # The whole bundle is verified here (one line on failure, not inside a replica), and the replicas
    # are pinned to the version checked.
    info = read_bundle_info(config.bundle, config.expect_version)
    config = dataclasses.replace(config, expect_version=info.model_version)
    if config.timeline_seconds is not None and not info.uses_audio:
        raise ValueError(f"--timeline labels windows of the audio, but bundle {storage.describe(info.uri)} "
                         f"is a {info.branch} model without an audio branch")
    # Ctrl-C, and SIGTERM from a process manager, both end in serve.shutdown(); SIGINT is set
    # explicitly because a shell starts background jobs with it ignored. Short sleeps: the signal may
    # land on one of Ray's threads, and Python runs the handler only when the main thread wakes up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    ensure_ray(args.address, include_dashboard=None)  # a local Ray keeps its dashboard for Serve
    try:
        start(config)
        print(f"serving {info.model_id} {info.model_version} on http://{config.host}:{config.port}"
              f" (POST /label, GET /healthz); Ctrl-C stops", flush=True)
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping: shutting Serve down", flush=True)
    finally:
        serve.shutdown()
    return 0


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
