"""MER Bi-modal dataset (Malheiro et al., 2016): 162 songs with audio clip, lyrics and a quadrant.

Layout (the sheets come as .xls; .xlsx and .csv copies with the same layout are accepted too)::

    MER-Bimodal-Dataset.xls   preamble rows, then a header with 'Song Code', 'Lyrics Code', 'Quadrant'
                              (optionally 'Artist', 'Title')
    MER_lyrics_dataset.xls    preamble rows, then a header with 'Code' (the lyrics code) and,
                              where present, 'Artist' and 'Title'/'Song'  -- optional, used for names
    <audio dir>/...           clips whose file name starts with the song code   (e.g. A001.mp3)
    <lyrics dir>/...          text files whose name starts with the lyrics code (e.g. L001.txt)

The header row's position is found by scanning for the row holding those names (the preamble's
length differs between the two sheets and between releases). Audio and lyrics are looked up
recursively by code, so per-quadrant subfolders work. Which folder holds what is an option
(`audio_dir`, `lyrics_dir`); by default the first existing of Audio/audio/clips/chorus and
Lyrics/lyrics. No copy of this dataset is available to the project: the layout follows the
description above, and the tests build it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from train.data.datasets.common import (
    Skips,
    build_table,
    find_table_file,
    parse_quadrant_at,
    read_lyrics_file,
    read_sheet_rows,
    table_below_header,
    text_or_none,
)

DATASET = "bimodal"
SONGS_SHEET = "MER-Bimodal-Dataset"
LYRICS_SHEET = "MER_lyrics_dataset"
SONG_COLUMNS = ("Song Code", "Lyrics Code", "Quadrant")
AUDIO_DIRS = ("Audio", "audio", "clips", "chorus")
LYRICS_DIRS = ("Lyrics", "lyrics")
AUDIO_SUFFIXES = (".mp3", ".wav", ".flac", ".ogg")
LYRICS_SUFFIXES = (".txt", ".lrc", ".json")


def _first_dir(root: Path, chosen: str | None, candidates: tuple[str, ...]) -> Path | None:
    if chosen:
        folder = root / chosen
        if not folder.is_dir():
            raise FileNotFoundError(f"bimodal: folder not found: {folder}")
        return folder
    return next((root / c for c in candidates if (root / c).is_dir()), None)


def _files_by_code(folder: Path | None, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Code -> file, where the file's stem is the code or starts with it followed by a non-alphanumeric."""
    found: dict[str, Path] = {}
    if folder is None:
        return found
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in suffixes:
            code = re.split(r"[^0-9A-Za-z]", p.stem, maxsplit=1)[0]
            found.setdefault(code.upper(), p)
    return found


def _column(df, *names: str) -> str | None:
    lower = {str(c).lower(): c for c in df.columns}
    return next((lower[n.lower()] for n in names if n.lower() in lower), None)


def _names_by_lyrics_code(root: Path) -> dict[str, tuple[str | None, str | None]]:
    """Lyrics code -> (artist, title) from MER_lyrics_dataset, when that sheet is present."""
    try:
        path = find_table_file(root, LYRICS_SHEET)
    except FileNotFoundError:
        return {}
    df = table_below_header(read_sheet_rows(path), ["Code"], path)
    artist_col = _column(df, "Artist")
    title_col = _column(df, "Title", "Song", "Name")
    return {
        str(r["Code"]).strip().upper(): (
            text_or_none(r[artist_col]) if artist_col else None,
            text_or_none(r[title_col]) if title_col else None,
        )
        for r in df.to_dict("records")
        if text_or_none(r["Code"])
    }


def prepare_bimodal(
    path: str | Path,
    audio_dir: str | None = None,
    lyrics_dir: str | None = None,
    require_inputs: bool = True,
) -> pa.Table:
    """MER Bi-modal at `path` as manifest rows (`bimodal:<Song Code>`), fold -1."""
    root = Path(path)
    songs_path = find_table_file(root, SONGS_SHEET)
    songs = table_below_header(read_sheet_rows(songs_path), SONG_COLUMNS, songs_path)
    names = _names_by_lyrics_code(root)
    audio_files = _files_by_code(_first_dir(root, audio_dir, AUDIO_DIRS), AUDIO_SUFFIXES)
    lyrics_files = _files_by_code(_first_dir(root, lyrics_dir, LYRICS_DIRS), LYRICS_SUFFIXES)
    artist_col, title_col = _column(songs, "Artist"), _column(songs, "Title")

    skips = Skips(DATASET)
    rows = []
    for number, record in enumerate(songs.to_dict("records"), start=1):
        song_code = str(record["Song Code"]).strip()
        lyrics_code = str(record["Lyrics Code"]).strip()
        if not song_code:
            raise ValueError(f"{songs_path}: data row {number} has an empty 'Song Code'")
        quadrant = parse_quadrant_at(record["Quadrant"], f"{songs_path} data row {number} (Song Code {song_code})")
        audio = audio_files.get(song_code.upper())
        if audio is None:
            skips.add("songs listed whose audio clip is absent", song_code)
        lyrics_file = lyrics_files.get(lyrics_code.upper()) if lyrics_code else None
        text = read_lyrics_file(lyrics_file) if lyrics_file is not None else None
        if text is None:
            skips.add("songs listed whose lyrics file is absent or empty", lyrics_code or song_code)
        artist, title = names.get(lyrics_code.upper(), (None, None))
        rows.append(
            {
                "source_id": song_code,
                "audio_uri": str(audio.resolve()) if audio is not None else None,
                "lyrics": text,
                "quadrant": quadrant,
                "artist": (text_or_none(record[artist_col]) if artist_col else None) or artist,
                "title": (text_or_none(record[title_col]) if title_col else None) or title,
            }
        )
    return build_table(DATASET, rows, skips, require_inputs=require_inputs)
