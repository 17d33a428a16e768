"""The CPU stage of the labelling job: decode, chorus, log-mel and tokens for one batch of songs.

Why a module of its own: this is what runs in Ray Data tasks on every free CPU (the job's cost),
apart from the driver's planning and the Predictor actors; its memory reservation also decides how
Ray Data schedules it (featurise_memory_bytes).
"""

from __future__ import annotations

import functools
import json

import numpy as np

from labeler.audio.config import MAX_AUDIO_SECONDS
from labeler.bundle.verified import TokenizerSource
from labeler.contracts.inputs import ERROR_COLUMNS, model_inputs
from labeler.contracts.schemas import nullable_strings
from labeler.runtime.isolate import DEFAULT_RETRIES


@functools.lru_cache(maxsize=4)
def _isolated_featurizer(featurizer_json: str, retries: int, max_audio_seconds: float):
    """One crash-isolating featuriser (and so one child process) per worker process and bundle."""
    from labeler.runtime.isolate import IsolatedFeaturizer  # noqa: PLC0415

    return IsolatedFeaturizer(json.loads(featurizer_json), retries=retries, max_audio_seconds=max_audio_seconds)


@functools.lru_cache(maxsize=4)
def _lyrics_tokenizer(tokenizer: TokenizerSource, lyrics_json: str):
    """One tokenizer per worker process and bundle: Ray Data tasks are stateless but worker
    processes are reused, so this memo loads (and verifies) the tokenizer files once, not once a batch."""
    from labeler.lyrics.text import LyricsTokenizer  # noqa: PLC0415

    return LyricsTokenizer(tokenizer.load(), json.loads(lyrics_json))


def featurise_batch(batch: dict[str, np.ndarray], featurizer: dict | None, tokenizer: TokenizerSource | None,
                    lyrics_json: str, keep_audio_uri: bool = False, max_retries: int = DEFAULT_RETRIES,
                    max_audio_seconds: float = MAX_AUDIO_SECONDS) -> dict[str, np.ndarray]:
    """CPU stage: decode + chorus + log-mel (when the bundle uses audio), tokenise (when it uses lyrics).

    The Featurizer and LyricsTokenizer turn a bad song into a row error themselves; this stage only
    adds the columns a single-branch Predictor does not get from the skipped step. Audio is featurised
    in a child process (labeler.runtime.isolate): a track that kills it becomes an `audio_error` of kind
    `worker_crash` after `max_retries` retries alone, and this task's own process never dies for it. A
    track whose header claims more than `max_audio_seconds` (or an absurd sample rate) is not decoded:
    its `audio_error` is `too_long` (`unsupported_format`).
    """
    if featurizer is not None:
        batch = _isolated_featurizer(json.dumps(featurizer, sort_keys=True), max_retries, max_audio_seconds)(batch)
    batch = model_inputs(batch, _lyrics_tokenizer(tokenizer, lyrics_json) if tokenizer is not None else None,
                         uses_audio=featurizer is not None, keep_audio_uri=keep_audio_uri)
    for name in ERROR_COLUMNS:
        if name in batch:
            batch[name] = _no_error_as_empty(batch[name])
    return batch


def featurise_memory_bytes(featurizer: dict | None, batch_size: int) -> int:
    """Memory one featurise task reserves: a worker's baseline, one decoded search window (with room for
    resampling and the STFT), and the batch's float16 log-mels.

    The reservation also keeps the stages apart: Ray Data fuses a task map into a following actor map
    only when their remote args are equal, and fused, featurising would run inside the few Predictor
    actors one song after another instead of in tasks on every free CPU.
    """
    baseline = 512 * 2**20
    if not featurizer:
        return baseline
    from labeler.audio import FeaturizerConfig  # noqa: PLC0415

    cfg = FeaturizerConfig.from_dict(featurizer)
    window = int(cfg.chorus_search_seconds * cfg.sample_rate) * 4
    return baseline + 3 * window + batch_size * cfg.n_frames * cfg.n_mels * 2 * 2


def _no_error_as_empty(values: np.ndarray) -> np.ndarray:
    """Error columns leave this stage as strings, "" for none.

    Ray Data stores an object column that is None in every row as float NaN, which a consumer
    checking `isinstance(v, float)` would then report as the error "nan"; "" never changes type.
    """
    return np.array([v or "" for v in nullable_strings(values, len(values))], dtype=object)

