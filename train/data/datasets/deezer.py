"""Deezer mood detection dataset (Delbouys et al., ISMIR 2018): valence/arousal for 18,644 MSD songs.

Layout::

    train.csv, validation.csv, test.csv
        dzr_sng_id,MSD_sng_id,MSD_track_id,valence,arousal,artist_name,track_name

Valence and arousal are already centred (midpoint 0) and are kept as they are. The dataset has no
audio and no lyrics: they come from a user-given *join table* (CSV or Parquet) with `lyrics` and/or
`audio_uri`, matched by `dzr_sng_id` where the join table has that column, and otherwise (or for
rows the id did not match) by normalised artist + title (`names.song_key`: lowercase, no accents or
punctuation, no "feat." parts, no bracketed suffixes). The join table's artist/title columns may be
called `artist`/`title` or `artist_name`/`track_name`. Relative `audio_uri` values are resolved
against the join table's folder.

A join table is required: without one every row has neither audio nor lyrics, and a manifest of
songs without inputs is useless, so the adapter raises instead of returning an empty table. Rows the
join does not match are dropped and counted; the match rate is logged and recorded in the stats.
The dataset's own train/validation/test split is not kept: the manifest assigns its own folds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa

from labeler.io import storage
from train.data.datasets.common import (
    Skips,
    blank,
    build_table,
    parse_float_at,
    read_any_table,
    read_csv,
    require_columns,
    text_or_none,
)
from train.data.datasets.names import song_key

log = logging.getLogger(__name__)

DATASET = "deezer"
SPLITS = ("train", "validation", "test")
COLUMNS = ["dzr_sng_id", "valence", "arousal", "artist_name", "track_name"]


def _pick(df: pd.DataFrame, *names: str) -> str | None:
    return next((n for n in names if n in df.columns), None)


def _resolve_audio(value: object, base: str) -> str | None:
    text = text_or_none(value)
    if text is None or storage.is_remote(text) or Path(text).is_absolute():
        return text
    return str((Path(base) / text).resolve())


def _load_join(join: str) -> tuple[dict[str, dict], dict[str, dict], int]:
    """Join table -> (by dzr id, by song key, rows); each value holds lyrics/audio_uri."""
    df = read_any_table(join)
    lyrics_col = _pick(df, "lyrics")
    audio_col = _pick(df, "audio_uri")
    if lyrics_col is None and audio_col is None:
        raise ValueError(f"{join}: the join table needs a 'lyrics' and/or an 'audio_uri' column; it has {list(df.columns)}")
    id_col = _pick(df, "dzr_sng_id")
    artist_col = _pick(df, "artist", "artist_name")
    title_col = _pick(df, "title", "track_name")
    if id_col is None and (artist_col is None or title_col is None):
        raise ValueError(
            f"{join}: the join table needs 'dzr_sng_id' or artist and title columns "
            f"('artist'/'artist_name', 'title'/'track_name'); it has {list(df.columns)}"
        )
    base = storage.parent(storage.absolute_uri(str(join)))
    by_id: dict[str, dict] = {}
    by_key: dict[str, dict] = {}
    for record in df.to_dict("records"):
        inputs = {
            "lyrics": text_or_none(record[lyrics_col]) if lyrics_col else None,
            "audio_uri": _resolve_audio(record[audio_col], base) if audio_col else None,
        }
        if id_col and not blank(record[id_col]):
            by_id.setdefault(str(record[id_col]).strip(), inputs)
        if artist_col and title_col:
            key = song_key(record[artist_col], record[title_col])
            if key:
                by_key.setdefault(key, inputs)
    return by_id, by_key, len(df)


def prepare_deezer(path: str | Path, join: str | None = None, splits: str = ",".join(SPLITS)) -> pa.Table:
    """Deezer at `path` joined with `join` (CSV/Parquet of lyrics and/or audio_uri), fold -1.

    `splits`: comma-separated split files to read (default all three).
    """
    if not join:
        raise ValueError(
            "deezer: a join table is required (--option deezer.join=PATH: CSV or Parquet with dzr_sng_id or "
            "artist+title, and lyrics and/or audio_uri); the dataset itself has neither audio nor lyrics"
        )
    root = Path(path)
    frames = []
    for split in (s.strip() for s in splits.split(",") if s.strip()):
        split_path = root / f"{split}.csv"
        if not split_path.is_file():
            raise FileNotFoundError(f"deezer split file not found: {split_path}")
        df = read_csv(split_path)
        require_columns(df, COLUMNS, split_path)
        df["_where"] = [f"{split_path} line {i}" for i in range(2, len(df) + 2)]
        frames.append(df)
    if not frames:
        raise ValueError(f"deezer: no split selected (splits={splits!r})")
    songs = pd.concat(frames, ignore_index=True)
    by_id, by_key, join_rows = _load_join(join)

    skips = Skips(DATASET)
    rows = []
    matched_by_id = matched_by_title = 0
    for record in songs.to_dict("records"):
        sid = str(record["dzr_sng_id"]).strip()
        where = f"{record['_where']} (dzr_sng_id {sid})"
        inputs = by_id.get(sid)
        if inputs is not None:
            matched_by_id += 1
        else:
            inputs = by_key.get(song_key(record["artist_name"], record["track_name"]) or "")
            if inputs is not None:
                matched_by_title += 1
        if inputs is None:
            skips.add("songs not in the join table (dropped)", sid)
            continue
        audio = inputs["audio_uri"]
        if audio and not storage.is_remote(audio) and not Path(audio).is_file():
            skips.add("audio files listed in the join table but absent", audio)
            audio = None
        rows.append(
            {
                "source_id": sid,
                "audio_uri": audio,
                "lyrics": inputs["lyrics"],
                "valence": parse_float_at(record["valence"], where),
                "arousal": parse_float_at(record["arousal"], where),
                "artist": text_or_none(record["artist_name"]),
                "title": text_or_none(record["track_name"]),
            }
        )
    total = len(songs)
    matched = matched_by_id + matched_by_title
    stats = {
        "songs": total,
        "join_rows": join_rows,
        "matched": matched,
        "matched_by_id": matched_by_id,
        "matched_by_title": matched_by_title,
        "match_rate": matched / total if total else 0.0,
    }
    log.info(
        "deezer: join matched %d of %d songs (%.1f%%: %d by id, %d by artist+title)",
        matched, total, 100 * stats["match_rate"], matched_by_id, matched_by_title,
    )
    return build_table(DATASET, rows, skips, extra_stats=stats)
