"""The synthetic corpus (the `synth` package, `labeler synth`) as manifest rows, like any other corpus.

Layout (as `synth.synthesise` writes it, local or s3://)::

    songs.parquet        one row per song: song_id, index, audio_uri, lyrics (as sung: complete even
                         where the catalogue hides them), valence, arousal, quadrant, chorus_start_s,
                         chorus_end_s, and the noise applied (audio_flipped, lyrics_quadrant, ...)
    catalogue.parquet    the labelling input (not read here), audio/, synth.json

Song ids are kept as they are in the catalogue (`synth-00000`), not prefixed with the dataset as the
public corpora's are, so that labels join the truth on song_id. The valence and arousal are the
drawn truth; the quadrant follows them. Folds are -1: `train.data.folds.assign_folds` (or
`labeler prepare --dataset synth=DIR`) assigns them. The synthetic corpus has its own adapter,
rather than the generic one, because its files may live on S3 and its truth is a Parquet table.
"""

from __future__ import annotations

import pyarrow as pa

from labeler.contracts.schemas import MANIFEST, conform
from labeler.io import storage

DATASET = "synth"
SONGS = "songs.parquet"


def prepare_synth(path: str) -> pa.Table:
    """The synthetic corpus written under `path` as manifest rows (song ids as in its catalogue), fold -1."""
    uri = storage.join(storage.absolute_uri(path), SONGS)
    if not storage.exists(uri):
        raise FileNotFoundError(f"{storage.describe(uri)} not found: is {path} the output of `labeler synth`?")
    songs = storage.read_parquet(uri)
    n = songs.num_rows
    table = pa.table(
        {
            "song_id": songs.column("song_id"),
            "dataset": [DATASET] * n,
            "audio_uri": songs.column("audio_uri"),
            "lyrics": songs.column("lyrics"),
            "valence": songs.column("valence"),
            "arousal": songs.column("arousal"),
            "quadrant": songs.column("quadrant").cast(pa.int8()),
            "fold": pa.array([-1] * n, pa.int8()),
            "chorus_start_s": songs.column("chorus_start_s"),
            "chorus_end_s": songs.column("chorus_end_s"),
            "source_id": pa.array([str(i) for i in songs.column("index").to_pylist()], pa.string()),
        }
    )
    return conform(table, MANIFEST)
