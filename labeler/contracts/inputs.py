"""The model's input columns, named once, and the step that completes a featurised batch for the Predictor.

Every place that assembles a batch from catalogue or manifest rows (the label job, Serve, `labeler
evaluate`, `labeler featurise`, the crash-isolated featuriser and the training feature cache) takes
the column names from here, so the implicit protocol between featuriser, tokenizer and model has one
spelling.

The batch job's CPU stage (labeler.label_job.featurise) and Serve's per-request featuriser
(labeler.serve.featuriser) decode audio differently (a crash-isolated batch featuriser in a Ray task;
one song in a thread's child process), but from there on both hand the Predictor the same columns: an
`audio_error` column even without an audio branch, the bundle's
tokens when it has a lyrics branch, and no catalogue text or URIs it does not need. `model_inputs`
is that shared step, and the column names the Predictor consumes live here, not in each caller.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# What a featuriser reads from a catalogue row (labeler.contracts.schemas.CATALOGUE names the same columns).
SONG_ID, AUDIO_URI, LYRICS = "song_id", "audio_uri", "lyrics"
# A chorus given by the catalogue (the featuriser finds one when they are absent) ...
CHORUS_COLUMNS = ("chorus_start_s", "chorus_end_s")
FEATURISER_INPUTS = (SONG_ID, AUDIO_URI, *CHORUS_COLUMNS)
# ... and the one the featuriser used: provenance of a label row, not an input of the model.
CHORUS_USED_COLUMNS = ("chorus_start_used_s", "chorus_end_used_s")
# Catalogue-side columns no model reads once a batch is featurised and tokenised.
CATALOGUE_ONLY = (AUDIO_URI, LYRICS, *CHORUS_COLUMNS, *CHORUS_USED_COLUMNS)
# Row errors of the two branches: "<kind>: <detail>", or missing.
ERROR_COLUMNS = ("audio_error", "lyrics_error")
# Heavy feature columns the Predictor consumes and does not pass on to the label rows.
FEATURE_COLUMNS = ("log_mel", "descriptors", "input_ids", "attention_mask", "has_lyrics", "audio_source", "lyrics_text")


def model_inputs(batch: dict[str, np.ndarray], tokenizer: Any | None, uses_audio: bool,
                 keep_audio_uri: bool = False) -> dict[str, np.ndarray]:
    """A batch whose audio was featurised (when `uses_audio`) -> the columns the Predictor takes.

    Without an audio branch every row gets `audio_error` None (the Predictor reads the column in every
    mode); with a `tokenizer` (labeler.lyrics.text.LyricsTokenizer) the lyrics become tokens. The catalogue's
    lyrics and audio URI are dropped after this point, but for a timeline, which the Predictor decodes
    from `audio_uri` window by window (`keep_audio_uri`).
    """
    batch = dict(batch)
    if not uses_audio:
        batch["audio_error"] = np.array([None] * len(batch[SONG_ID]), dtype=object)
    if tokenizer is not None:
        batch = tokenizer(batch)
    for name in (LYRICS,) if keep_audio_uri else (LYRICS, AUDIO_URI):
        batch.pop(name, None)
    return batch
