"""A catalogue (labeler.contracts.schemas.CATALOGUE) from a folder of audio files and, optionally, one of lyrics.

    python scripts/folder_catalogue.py --audio music/ [--lyrics lyrics/] --output catalogue.parquet

Each audio file is one song: its name without the extension is the song_id, and `lyrics/<song_id>.txt`
(or .lrc), when there, its lyrics. Lyrics files without audio become lyrics-only songs. This is how
the development MIREX slice (`Audio/NNN.mp3`, `Lyrics/NNN.txt`) becomes a catalogue for
`labeler label`; a real catalogue usually comes from the recommender's own tables instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa

from labeler.contracts.schemas import CATALOGUE, check_unique_ids, conform
from labeler.io import storage

AUDIO_SUFFIXES = {".mp3", ".wav", ".flac", ".ogg", ".m4a", ".aac", ".opus"}
LYRICS_SUFFIXES = (".txt", ".lrc")


def folder_catalogue(audio_dir: str, lyrics_dir: str | None = None) -> pa.Table:
    audio = {p.stem: p for p in sorted(Path(audio_dir).iterdir()) if p.suffix.lower() in AUDIO_SUFFIXES}
    lyrics: dict[str, Path] = {}
    if lyrics_dir:
        for p in sorted(Path(lyrics_dir).iterdir()):
            if p.suffix.lower() in LYRICS_SUFFIXES:
                lyrics.setdefault(p.stem, p)
    ids = sorted(set(audio) | set(lyrics))
    if not ids:
        raise ValueError(f"no audio ({', '.join(sorted(AUDIO_SUFFIXES))}) or lyrics files in {audio_dir}")
    table = pa.table({
        "song_id": ids,
        "audio_uri": [str(audio[i].resolve()) if i in audio else None for i in ids],
        "lyrics": [lyrics[i].read_text(encoding="utf-8", errors="replace") if i in lyrics else None for i in ids],
    })
    table = conform(table, CATALOGUE)
    check_unique_ids(table, where="catalogue")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", required=True, help="folder of audio files (one song each)")
    parser.add_argument("--lyrics", help="folder of <song_id>.txt / .lrc lyrics")
    parser.add_argument("--output", required=True, help="catalogue Parquet to write (local or s3://)")
    args = parser.parse_args(argv)
    try:
        table = folder_catalogue(args.audio, args.lyrics)
    except (OSError, ValueError) as exc:
        print(f"folder_catalogue: error: {exc}", file=sys.stderr)
        return 2
    storage.write_parquet(table, storage.absolute_uri(args.output))
    with_lyrics = sum(v is not None for v in table.column("lyrics").to_pylist())
    with_audio = sum(v is not None for v in table.column("audio_uri").to_pylist())
    print(f"catalogue: {table.num_rows} songs ({with_audio} with audio, {with_lyrics} with lyrics) -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
