"""One requested song -> the one-row batch the Predictor takes, with the batch job's featuriser and tokenizer.

It runs per request in a thread, decodes in a crash-isolation child and decides which audio
failures are the client's (4xx, RequestError) and which become a row's `audio_error`, as the batch
job would write it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from labeler.contracts.inputs import model_inputs
from labeler.io import storage
from labeler.serve.options import ServeConfig
from labeler.serve.request import RequestError, SongRequest, check_uri_allowed

if TYPE_CHECKING:  # labeler.audio imports librosa: loaded in __init__, when a bundle has an audio branch
    from labeler.audio import FeaturizerConfig

log = logging.getLogger(__name__)

# Audio error kinds that mean "these bytes are not audio this server can decode".
UNDECODABLE_KINDS = frozenset({"corrupt", "unsupported_format", "empty_file", "ffmpeg_missing"})


def rewound(source: Any) -> Any:
    """An uploaded file object at its start (it is opened more than once: the header check, featurising,
    and with --timeline the Predictor's windows)."""
    if hasattr(source, "seek"):
        source.seek(0)
    return source


@contextmanager
def child_source(source: Any) -> Iterator[Any]:
    """What the featurising child opens: a URI as it is; an upload as the path of a private temporary
    copy, written in 1-MiB chunks and removed afterwards.

    A copy on disk, not the bytes: the replica never holds an upload whole (up to max_upload_mb) plus
    its pickled copy on the way to the child (bench/bench_serve.py --upload-memory measures it).
    """
    if not hasattr(source, "read"):
        yield source
        return
    with tempfile.NamedTemporaryFile(prefix="labeler-upload-") as copy:
        shutil.copyfileobj(rewound(source), copy, 1 << 20)
        copy.flush()
        yield copy.name


class SongFeaturiser:
    """One song -> the one-row batch the Predictor takes, with the batch job's featuriser and tokenizer.

    The columns and dtypes are the ones `Featurizer` and `LyricsTokenizer` produce in the batch
    job (log_mel stored as float16, zeros on an audio error), so the model sees identical inputs.
    """

    def __init__(self, info, config: ServeConfig):
        from labeler.audio import FeaturizerConfig  # noqa: PLC0415
        from labeler.lyrics.text import LyricsTokenizer  # noqa: PLC0415

        self.info = info
        self.config = config
        self.featurizer = FeaturizerConfig.from_dict(info.featurizer) if info.uses_audio else None
        self.tokenizer = LyricsTokenizer(info.tokenizer.load(), info.lyrics) if info.uses_lyrics else None
        # A Hugging Face fast tokenizer is not safe to call from two threads at once (its Rust side
        # raises "Already borrowed" while another call changes its padding/truncation state); audio
        # featurising runs in parallel, tokenising (about a millisecond) one song at a time.
        self._tokenizer_lock = threading.Lock()
        # Each featurise thread decodes in its own crash-isolation child (labeler.runtime.isolate): a song that
        # kills the decoder costs that request a worker_crash answer, not the replica.
        self._children = threading.local()

    def __call__(self, song: SongRequest) -> dict[str, np.ndarray]:
        batch: dict[str, np.ndarray] = {
            "song_id": np.array([song.song_id], dtype=object),
            "lyrics": np.array([song.lyrics], dtype=object),
        }
        if self.featurizer is not None:
            batch.update(self._audio_columns(song, self.featurizer))
        with self._tokenizer_lock:
            return model_inputs(batch, self.tokenizer, uses_audio=self.featurizer is not None)

    def _audio_columns(self, song: SongRequest, cfg: FeaturizerConfig) -> dict[str, np.ndarray]:
        from labeler.audio import DESCRIPTOR_DIM  # noqa: PLC0415

        mel = np.zeros((1, cfg.n_frames, cfg.n_mels), dtype=np.float16)
        descriptors = np.zeros((1, DESCRIPTOR_DIM), dtype=np.float32)
        features, error = self._featurise(song, cfg)
        if features is not None:
            mel[0] = features.log_mel
            if cfg.descriptors:
                descriptors[0] = features.descriptors
        out = {"log_mel": mel, "audio_error": np.array([error], dtype=object)}
        if self.config.timeline_seconds is not None:  # what the Predictor decodes the timeline windows from
            source: Any = None
            if features is not None:
                # The upload itself (its spooled temporary file, which the Predictor seeks in window by window;
                # the request closes it after the answer), never its bytes in memory; or the checked URI.
                if song.audio is not None:
                    source = song.audio
                elif song.audio_uri is not None:
                    source = check_uri_allowed(song.audio_uri, self.config.allow_uri_prefixes)
            out["audio_source"] = np.array([source], dtype=object)
        if cfg.descriptors:
            out["descriptors"] = descriptors
        return out

    def _child(self):
        from labeler.runtime.isolate import ChildProcess  # noqa: PLC0415

        if not hasattr(self._children, "child"):
            self._children.child = ChildProcess()
        return self._children.child

    def _featurise(self, song: SongRequest, cfg: FeaturizerConfig):
        """(TrackFeatures, None), or (None, "<kind>: detail") for audio the batch job would also skip.

        Raises RequestError for uploaded bytes that do not decode (422) and for too-long audio (413): the
        header is checked (labeler.audio.check_header: length within max_audio_seconds, a plausible sample
        rate) before anything is decoded.
        """
        from labeler.audio import AudioError, open_audio  # noqa: PLC0415
        from labeler.runtime.isolate import CRASH_KIND, WorkerCrash  # noqa: PLC0415

        uploaded = song.audio is not None
        if uploaded:
            source: Any = song.audio
            name = song.audio_name or "upload"
        elif song.audio_uri is not None:
            source = check_uri_allowed(song.audio_uri, self.config.allow_uri_prefixes)
            name = song.audio_name or storage.describe(song.audio_uri)
        else:
            return None, "no_audio: audio_uri is null"

        try:
            try:
                with open_audio(rewound(source), self.config.max_audio_seconds, name=name):
                    pass
            except AudioError as exc:
                if exc.kind == "too_long":
                    raise RequestError(413, "too_long", exc.detail) from None
                raise
            try:
                with child_source(source) as opened:
                    out = self._child().call("labeler.runtime.isolate:TrackFeaturiser",
                                             {"config": cfg.to_dict(),
                                              "max_audio_seconds": self.config.max_audio_seconds},
                                             {"source": opened, "start": song.chorus_start_s, "end": song.chorus_end_s,
                                              "name": name})
                    if "detail" in out and opened is not source:  # the copy's path means nothing to the client
                        out["detail"] = out["detail"].replace(opened, name)
            except WorkerCrash as crash:  # not retried: the client may retry the request
                log.error("featurising %s crashed its process (%s)", name, crash)
                if uploaded:
                    raise RequestError(422, CRASH_KIND, f"{name}: {crash}") from None
                return None, f"{CRASH_KIND}: {name}: {crash}"
            if "features" in out:
                return out["features"], None
            raise AudioError(out["kind"], out["detail"])
        except AudioError as exc:
            if exc.kind == "too_long":  # the child's own check (the header did not give the length)
                raise RequestError(413, exc.kind, exc.detail) from None
            if uploaded and exc.kind in UNDECODABLE_KINDS:
                raise RequestError(422, exc.kind, exc.detail if exc.detail.startswith(name) else f"{name}: {exc.detail}") from None
            return None, str(exc)
        except RequestError:
            raise
        except Exception as exc:  # noqa: BLE001 - a decoder crash on one file is that file's fault (as in Featurizer)
            log.warning("unexpected failure featurising %s", name, exc_info=True)
            if uploaded:
                raise RequestError(422, "corrupt", f"{name}: {type(exc).__name__}: {exc}") from None
            return None, f"corrupt: {name}: {type(exc).__name__}: {exc}"
