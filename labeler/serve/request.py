"""`POST /label`'s body -> one validated `SongRequest`, or a 4xx `RequestError` (see labeler.serve).

Contract: this is the only part of Serve that reads untrusted bytes (JSON, multipart uploads, URIs);
its limits and refusals raise RequestError with a 4xx status and an error kind.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import uuid
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.types import Message

from labeler.io import storage
from labeler.serve.options import ServeConfig

REQUEST_FIELDS = ("audio", "audio_uri", "lyrics", "chorus_start_s", "chorus_end_s", "song_id")


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

    async def receive() -> Message:
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
