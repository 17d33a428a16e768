"""4Q audio emotion dataset (Panda, Malheiro & Paiva, IEEE TAFFC 2018).

Layout (as distributed)::

    panda_dataset_taffc_annotations.csv   Song,Quadrant            (Q1..Q4 from AllMusic mood tags)
    panda_dataset_taffc_metadata.csv      "Song","Artist","Title",...  ISO-8859-1, quoted
    Q1/<Song>.mp3 ... Q4/<Song>.mp3       30-s clips, filed under their quadrant

The label is the annotation file's `Quadrant`; there is no valence/arousal. 4Q ships no lyrics: an
optional `lyrics` folder (`<Song>.txt`, `.lrc` or `.json`) or table (CSV/Parquet with `song_id`,
`lyrics`) adds them. The module is `fourq` because a module name cannot start with a digit.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from train.data.datasets.common import (
    Skips,
    build_table,
    index_files,
    local_file,
    parse_quadrant_at,
    read_any_table,
    read_csv,
    read_lyrics_file,
    require_columns,
    require_file,
    text_or_none,
)

DATASET = "4q"
ANNOTATIONS = "panda_dataset_taffc_annotations.csv"
METADATA = "panda_dataset_taffc_metadata.csv"


def _lyrics_by_song(lyrics: str | Path) -> dict[str, str | None] | dict[str, Path]:
    """Song id -> lyrics text (table) or -> file (folder); files are read only for listed songs."""
    source = Path(lyrics)
    if source.is_dir():
        return index_files(source, (".txt", ".lrc", ".json"))
    df = read_any_table(lyrics)
    require_columns(df, ["song_id", "lyrics"], lyrics)
    return {str(k).strip(): text_or_none(v) for k, v in zip(df["song_id"], df["lyrics"])}


def prepare_4q(path: str | Path, lyrics: str | None = None, require_inputs: bool = True) -> pa.Table:
    """The 4Q corpus at `path` as manifest rows (`4q:<Song>`), fold -1.

    `lyrics`: optional folder or table of lyrics by song id. `require_inputs`: drop (and count) songs
    whose clip is absent and that have no lyrics.
    """
    root = Path(path)
    annotations_path = require_file(root / ANNOTATIONS, "4Q annotations")
    metadata_path = require_file(root / METADATA, "4Q metadata")
    annotations = read_csv(annotations_path)
    require_columns(annotations, ["Song", "Quadrant"], annotations_path)
    metadata = read_csv(metadata_path, encoding="iso-8859-1")
    require_columns(metadata, ["Song", "Artist", "Title"], metadata_path)
    meta_by_song = {str(r.Song).strip(): r for r in metadata.itertuples(index=False)}
    lyrics_by_song = _lyrics_by_song(lyrics) if lyrics else {}

    skips = Skips(DATASET)
    rows = []
    for line, record in enumerate(annotations.itertuples(index=False), start=2):
        song = str(record.Song).strip()
        if not song:
            raise ValueError(f"{annotations_path} line {line}: empty Song id")
        quadrant = parse_quadrant_at(record.Quadrant, f"{annotations_path} line {line} (Song {song})")
        meta = meta_by_song.get(song)
        if meta is None:
            skips.add("songs missing from the metadata file (no artist/title)", song)
        audio = local_file(root / f"Q{quadrant}" / f"{song}.mp3", skips, "clips listed but absent", song)
        text = None
        if lyrics:
            found = lyrics_by_song.get(song)
            text = read_lyrics_file(found) if isinstance(found, Path) else found
            if text is None:
                skips.add("songs without lyrics", song)
        rows.append(
            {
                "source_id": song,
                "audio_uri": audio,
                "lyrics": text,
                "quadrant": quadrant,
                "artist": text_or_none(meta.Artist) if meta is not None else None,
                "title": text_or_none(meta.Title) if meta is not None else None,
            }
        )
    return build_table(DATASET, rows, skips, require_inputs=require_inputs)
