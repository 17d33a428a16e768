"""Online labelling of single songs: `POST /label` and `GET /healthz` on Ray Serve.

The endpoint runs the batch job's own stages on one song, so a song gets the same label online as
in the catalogue job: `labeler.audio.featurise_track` (decode -> chorus -> log-mel), the bundle's
`LyricsTokenizer`, the `Predictor`, and `labeler.inference.label_rows.label_rows` to build the LABELS row.
Featurising runs per request in a thread pool (the replica's event loop stays free to accept
requests); the model call is batched across concurrent requests with `@serve.batch`.

Requests (`POST /label`)::

    multipart/form-data: audio=<file part>, and optional fields lyrics, chorus_start_s, chorus_end_s,
                         song_id (or audio_uri instead of the file part)
    application/json:    {"audio_uri": "s3://...", "lyrics": "...", "chorus_start_s": 30.0,
                          "chorus_end_s": 60.0, "song_id": "..."}  (every field optional, but one of
                          audio / audio_uri / lyrics is needed)

The answer is one row of the LABELS contract as JSON (`labelled_at` in ISO-8601), with `embedding`,
`timeline` and `tags` when the server was started with `--embeddings` / `--timeline SECONDS` / `--tags` (the same
columns as `labeler label` writes; the timeline is decoded window by window from the upload's spooled file,
never held in memory whole, or from the URI). Errors are a
JSON object {"error": "<kind>: <detail>"} with a 4xx status; a bad song never gets a 500.

What is a 4xx and what is a labelled row with `audio_error` (the rule):

- 400 `bad_request`/`bad_json`/`missing_fields`/`bad_field`: the request itself is malformed
  (empty body, invalid JSON, unknown or mistyped fields, none of audio, audio_uri, lyrics).
- 413 `too_large`: the request body exceeds `max_upload_mb` (a JSON body: `max_json_kb`); `too_long`: the audio lasts longer than
  `max_audio_seconds` (checked from the file header before decoding; labeler.audio.check_header, as the batch job).
  A header whose sample rate is outside labeler.audio.SAMPLE_RATES is `unsupported_format` (below).
- 415 `unsupported_media_type`: a body that is neither JSON nor multipart form data.
- 403 `forbidden`: an `audio_uri` outside the prefixes the server was started with
  (`--allow-uri-prefix`; none by default, so by default the server never reads local files or
  buckets on a client's behalf).
- 422 with the audio error kind (`corrupt`, `unsupported_format`, `empty_file`, `ffmpeg_missing`):
  *uploaded* bytes that cannot be decoded. The client sent them explicitly, so answering with a
  lyrics-only label would hide its mistake.
- 422 `worker_crash` (uploads), or a row with `audio_error = 'worker_crash: ...'` (an `audio_uri`: 200 from
  its lyrics, else 422 as below): audio whose featurisation killed the process doing it (a segfault in a
  decoder, say). Each featurise thread decodes in its own child process (labeler.runtime.isolate), so the replica
  and the next request are unaffected; the crash is not retried here (the client may).
- 200 with `audio_error` set and `modalities` = "lyrics": audio that decodes but is unusable
  (`silent`, `too_short`), and an `audio_uri` that cannot be read or decoded (`missing_file`,
  `corrupt`, ...), when the song has lyrics: exactly the row the batch job writes for that song.
- 422 with the row's error (e.g. `missing_file: ...; no_lyrics: ...`): nothing usable is left, the
  row the batch job would write with `error` set; the body also carries that `row`.
- 500 only for a failure of the model itself (row error kind `model`), never for a song's content.
"""

import asyncio
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from labeler.serve.featuriser import SongFeaturiser
from labeler.serve.options import ServeConfig
from labeler.serve.request import RequestError, parse_request

log = logging.getLogger(__name__)


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
    from labeler.inference.label_rows import error_kind  # noqa: PLC0415

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
        from labeler.bundle.info import BundleInfo  # noqa: PLC0415
        from labeler.bundle.verified import open_bundle  # noqa: PLC0415
        from labeler.inference.predict import Predictor  # noqa: PLC0415

        self.config = config
        # The replica reads every file it uses through the verified loader, pinned to the version the
        # driver checked (run_cli), so a bundle swapped after the driver's check is refused here.
        self.info = BundleInfo.from_verified(open_bundle(config.bundle, config.expect_version))
        self.predictor = Predictor(self.info.uri, batch_size=config.max_batch_size,
                                   num_threads=max(1, int(config.replica_cpus)), embeddings=config.embeddings,
                                   timeline_seconds=config.timeline_seconds, expect_version=self.info.model_version,
                                   tags=config.tags, max_audio_seconds=config.max_audio_seconds)
        self.featuriser = SongFeaturiser(self.info, config)
        self._featurise_pool = ThreadPoolExecutor(config.featurise_threads, thread_name_prefix="featurise")
        self._model_pool = ThreadPoolExecutor(1, thread_name_prefix="model")
        # Ray's overloads type a @serve.batch method as a plain callable; its setters exist at run time.
        self._predict.set_max_batch_size(config.max_batch_size)  # type: ignore[attr-defined]  # see above
        self._predict.set_batch_wait_timeout_s(config.batch_wait_timeout_s)  # type: ignore[attr-defined]  # see above
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
            row = await self._predict(batch)
        except RequestError as exc:
            return exc.response()
        finally:
            if song is not None:
                await song.close()  # removes the spooled upload, which a --timeline reads until the answer
        status = status_for_row(row)
        if status != 200:
            return JSONResponse({"error": row["error"], "row": row}, status_code=status)
        return JSONResponse(row)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _predict(self, batches: list[dict[str, np.ndarray]]) -> list[dict[str, Any]]:
        """Concurrent requests' one-row batches -> one Predictor call -> one LABELS row each."""
        from labeler.inference.label_rows import label_rows  # noqa: PLC0415

        merged = {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(self._model_pool, self.predictor, merged)
        table = label_rows(out, self.info, datetime.now(UTC))
        return [row_to_json(r) for r in table.to_pylist()]


def build_app(config: ServeConfig):
    """The Serve application for `config` (pass to serve.run)."""
    # @serve.deployment turns the class into a Deployment, but serve.ingress's annotation hands mypy the class back.
    return LabelService.options(**config.deployment_options()).bind(config)  # type: ignore[attr-defined]  # see above


def app_builder(args: dict[str, Any]):
    """Application builder: `serve run labeler.serve:app_builder bundle=URI [max_batch_size=16 ...]`.

    Takes any ServeConfig field as key=value (also in a `serve deploy` config file's `args`); host and
    port are then Serve's own (`serve run --host/--port`, or the config file's http_options)."""
    return build_app(ServeConfig.from_mapping(dict(args)))


def start(config: ServeConfig, name: str = "labeler"):
    """Start Serve's HTTP proxy on config.host:port and deploy the application; returns its handle."""
    serve.start(http_options={"host": config.host, "port": config.port})
    return serve.run(build_app(config), name=name, route_prefix=config.route_prefix)
