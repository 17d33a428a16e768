"""MoodyLyrics4Q (Çano & Morisio 2017; cleaned split): lyrics labelled with four moods.

Layout::

    MoodyLyrics4Q_cleaned_split.csv   index,artist,title,mood,split    (index like 'ML217')
    lyrics/ML217_<artist>_<title>.json  Genius API JSON, text in song.lyrics   (or ML217*.txt)

`mood` maps to quadrants as happy=Q1, angry=Q2, sad=Q3, relaxed=Q4. Lyrics files are found by their
index prefix (`ML217_...`), not by rebuilding the artist/title part of the name, which Genius
spellings and filesystem-unsafe characters make unreliable. The stored text is `song.lyrics` as
Genius gives it ("Title Lyrics[Verse 1]..." prefix, "...Embed" suffix): cleaning happens at
tokenisation, with the rules labelling uses. Rows without a lyrics file are counted and skipped.
This dataset has no audio.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from train.data.datasets.common import (
    Skips,
    build_table,
    read_csv,
    read_lyrics_file,
    require_columns,
    require_file,
    text_or_none,
)

DATASET = "moodylyrics4q"
TABLE = "MoodyLyrics4Q_cleaned_split.csv"
MOOD_QUADRANTS = {"happy": 1, "angry": 2, "sad": 3, "relaxed": 4}


def _files_by_index(folder: Path) -> dict[str, Path]:
    """'ML217' -> lyrics/ML217_Etta James_A Sunday Kind Of Love.json (or ML217.txt)."""
    found: dict[str, Path] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.suffix.lower() in (".json", ".txt", ".lrc"):
                found.setdefault(p.stem.split("_", 1)[0], p)
    return found


def prepare_moodylyrics4q(
    path: str | Path, lyrics_dir: str = "lyrics", splits: str | None = None
) -> pa.Table:
    """MoodyLyrics4Q at `path` as manifest rows (`moodylyrics4q:ML217`), fold -1.

    `splits`: comma-separated values of the `split` column to keep (default: all rows; the manifest
    assigns its own folds).
    """
    root = Path(path)
    table_path = require_file(root / TABLE, "MoodyLyrics4Q table")
    df = read_csv(table_path)
    require_columns(df, ["index", "artist", "title", "mood"], table_path)
    keep = {s.strip() for s in splits.split(",")} if splits else None
    if keep is not None:
        require_columns(df, ["split"], table_path)
    files = _files_by_index(root / lyrics_dir)
    skips = Skips(DATASET)
    rows = []
    for line, record in enumerate(df.to_dict("records"), start=2):
        if keep is not None and str(record["split"]).strip() not in keep:
            continue
        index = str(record["index"]).strip()
        mood = str(record["mood"]).strip().lower()
        if mood not in MOOD_QUADRANTS:
            raise ValueError(
                f"{table_path} line {line} (index {index}): unknown mood {record['mood']!r}; expected one of {', '.join(MOOD_QUADRANTS)}"
            )
        lyrics_file = files.get(index)
        if lyrics_file is None:
            skips.add("rows without a lyrics file (skipped)", index)
            continue
        text = read_lyrics_file(lyrics_file)
        if text is None:
            skips.add("lyrics files without text (skipped)", lyrics_file.name)
            continue
        rows.append(
            {
                "source_id": index,
                "lyrics": text,
                "quadrant": MOOD_QUADRANTS[mood],
                "artist": text_or_none(record["artist"]),
                "title": text_or_none(record["title"]),
            }
        )
    return build_table(DATASET, rows, skips)
