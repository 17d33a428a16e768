"""Requests as an attacker sends them (security findings 4, 6, 7): bounded memory, 400s, no freezes.

Without Ray: the request parser is driven with a real Starlette Request over an ASGI receive, as
Serve's proxy calls it. The same attacks against the running endpoint are in tests/test_serve.py
(`test_a_megabyte_of_digits...`, `test_nested_json...`), which owns the Serve fixture.
"""

from __future__ import annotations

import asyncio
import json
import tracemalloc

import pytest
from starlette.requests import Request

from labeler.serve import RequestError, ServeConfig, parse_request

MB = 1024 * 1024


def _request(body: bytes, content_type: str, chunk: int = 64 * 1024) -> Request:
    chunks = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]
    state = {"i": 0}

    async def receive() -> dict:
        i = state["i"]
        state["i"] += 1
        if i >= len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[i], "more_body": i < len(chunks) - 1}

    scope = {"type": "http", "method": "POST", "path": "/label", "headers": [
        (b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]}
    return Request(scope, receive)


def _multipart(audio: bytes, lyrics: str = "la la") -> tuple[bytes, str]:
    boundary = "----sec-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"lyrics\"\r\n\r\n{lyrics}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"song.wav\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + audio + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _parse(body: bytes, content_type: str, **config):
    return asyncio.run(parse_request(_request(body, content_type), ServeConfig(bundle="-", **config)))


def test_upload_streams_to_a_temporary_file_with_a_bounded_buffer():
    """The old parser held the body whole, then a copy for the form, then the file's bytes: a 20 MB
    upload cost over 60 MB of Python memory per request. Now it is spooled (Python allocations stay
    a few MB whatever the size), and the spooled file is gone once the request is closed."""
    audio = bytes(range(256)) * (20 * MB // 256)
    body, content_type = _multipart(audio)
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        song = _parse(body, content_type, max_upload_mb=50.0)
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert peak < len(body) + 6 * MB  # the test's own body is counted once; the parser adds a bounded buffer
    assert song.lyrics == "la la" and song.audio.read() == audio
    assert song.audio._rolled  # on disk, not in memory (SpooledTemporaryFile)
    asyncio.run(song.close())
    assert song.audio.closed


def test_oversized_bodies_get_413_while_streaming_even_without_a_length():
    body, content_type = _multipart(b"x" * (2 * MB))
    req = _request(body, content_type)
    req.scope["headers"] = [h for h in req.scope["headers"] if h[0] != b"content-length"]
    with pytest.raises(RequestError) as info:
        asyncio.run(parse_request(req, ServeConfig(bundle="-", max_upload_mb=1.0)))
    assert info.value.status == 413 and info.value.kind == "too_large"
    with pytest.raises(RequestError) as info:
        _parse(json.dumps({"lyrics": "a" * 40_000}).encode(), "application/json", max_json_kb=16)
    assert info.value.status == 413


@pytest.mark.parametrize("body", [
    b"[" * 200_000 + b"]" * 200_000,                               # nesting deeper than the parser's recursion
    b'{"lyrics": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"song_id": ' + b"9" * 5000 + b"}",                           # 5,000 digits: past int's 4,300-digit limit
    b'{"chorus_start_s": ' + b"1" * 100_000 + b"}",
    b'{"lyrics": "\xff\xfe"}',                                      # not UTF-8
    b'{"lyrics": "unterminated',
    b"[1, 2, 3]",
])
def test_malformed_json_of_any_depth_or_size_is_a_400(body):
    """Deeply nested JSON raised RecursionError and a 4,300-digit integer ValueError: both were 500s."""
    with pytest.raises(RequestError) as info:
        _parse(body, "application/json")
    assert info.value.status == 400 and info.value.kind == "bad_json"
