"""The real recordings shipped with the project, as a catalogue: the demo's last step and the tests' input.

`labeler/builtin/music/` (package data) holds 30-s OGG Vorbis excerpts of public-domain and CC-BY
recordings from librosa's example data, each `<name>.ogg` beside `<name>.txt`: the original licence and
attribution text, plus a line saying what the excerpt is. They are instrumental, so their rows have no
lyrics and are labelled from audio alone.

`recordings()` lists them (name, path, attribution's first line), sorted by name; a recording without
its licence file is never listed. `write_catalogue(uri)` writes them as a catalogue
(labeler.contracts.schemas: song_id, audio_uri, lyrics) and returns the rows written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MUSIC_DIR = Path(__file__).resolve().parent / "music"


@dataclass(frozen=True)
class Recording:
    name: str  # the song_id in the catalogue
    path: Path
    credit: str  # the first line of its licence file: title, author, licence

    @property
    def licence_file(self) -> Path:
        return self.path.with_suffix(".txt")


def recordings(folder: str | Path | None = None) -> list[Recording]:
    """The shipped recordings that carry their licence file (module doc)."""
    folder = Path(folder) if folder is not None else MUSIC_DIR
    out = []
    for path in sorted(folder.glob("*.ogg")):
        licence = path.with_suffix(".txt")
        if licence.is_file():
            first = licence.read_text(encoding="utf-8").strip().splitlines()
            out.append(Recording(name=path.stem, path=path, credit=first[0].strip() if first else ""))
    return out


def write_catalogue(uri: str, folder: str | Path | None = None) -> list[Recording]:
    """Write the shipped recordings as a catalogue Parquet at `uri`; return them (ValueError when none)."""
    import pyarrow as pa  # noqa: PLC0415

    from labeler.io import storage  # noqa: PLC0415

    found = recordings(folder)
    if not found:
        raise ValueError(f"no recordings with their licence files in {folder or MUSIC_DIR}")
    table = pa.table({
        "song_id": pa.array([r.name for r in found], pa.string()),
        "audio_uri": pa.array([str(r.path) for r in found], pa.string()),
        "lyrics": pa.array([None] * len(found), pa.string()),
    })
    storage.write_parquet(table, uri)
    return found
