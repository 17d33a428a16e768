"""MIREX-like multimodal emotion dataset (Panda, Malheiro, Paiva et al., CMMR 2013): five mood clusters.

Layout (as distributed)::

    clusters.txt        line i = song i: 'Cluster 1' .. 'Cluster 5'    (the class)
    categories.txt      line i = song i: the AllMusic mood tag that put it there, e.g. 'Wistful'
    dataset info.csv    UTF-16 LE, ';'-separated, header Title;Artist;Album;Track;Year;Length;Size;
                        Last Modified;Filename; (every line ends with ';'), row i = song i
    Audio/NNN.mp3       30-s clips (NNN = song number, zero-padded to three digits)
    Lyrics/NNN.txt      plain-text lyrics

The MIREX clusters are not Russell quadrants, so this is a `classes` dataset: the cluster name is the
manifest's `label` and `quadrant` stays null (train it with `--mode classes`). A song listed in the
metadata whose clip or lyrics file is absent is a counted skip (a partial copy is normal); one with
neither is dropped and counted.

The metadata is not quoted, and a title may itself hold a ';' ("World's a Mess; It's in My Kiss"):
a row is read from the right, where the eight columns Artist..Filename hold no ';' in the dataset, and
whatever is left on the left is the title.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa

from train.data.datasets.common import Skips, build_table, local_file, read_lyrics_file, require_file, text_or_none

DATASET = "mirex"
CLUSTERS = "clusters.txt"
CATEGORIES = "categories.txt"
METADATA = "dataset info.csv"
META_COLUMNS = ("Title", "Artist", "Album", "Track", "Year", "Length", "Size", "Last Modified", "Filename")


def _lines(path: Path) -> list[str]:
    """Stripped lines of a one-value-per-song text file; trailing blank lines are not songs."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def read_metadata(path: Path) -> list[dict[str, str]]:
    """`dataset info.csv` as one dict per song (Title, Artist, ... Filename), in file order."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw.decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-16 text as the dataset distributes it: {exc}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{path}: empty")
    header = [h.strip() for h in lines[0].rstrip(";").split(";")]
    if header != list(META_COLUMNS):
        raise ValueError(f"{path}: header {header!r}, expected {list(META_COLUMNS)!r}")
    right = len(META_COLUMNS) - 1
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        cells = line.rstrip(";").split(";")
        if len(cells) < len(META_COLUMNS):
            raise ValueError(f"{path} line {number}: {len(cells)} field(s), expected {len(META_COLUMNS)}")
        values = [";".join(cells[: len(cells) - right]), *cells[len(cells) - right:]]
        rows.append({name: value.strip() for name, value in zip(META_COLUMNS, values)})
    return rows


def prepare_mirex(path: str | Path, require_inputs: bool = True) -> pa.Table:
    """The MIREX-like corpus at `path` as `classes` manifest rows (`mirex:NNN`, label 'Cluster k'), fold -1."""
    root = Path(path)
    clusters_path = require_file(root / CLUSTERS, "MIREX clusters")
    clusters = _lines(clusters_path)
    categories_path = root / CATEGORIES
    categories = _lines(categories_path) if categories_path.is_file() else []
    metadata_path = root / METADATA
    metadata = read_metadata(metadata_path) if metadata_path.is_file() else []
    for other, values in ((categories_path, categories), (metadata_path, metadata)):
        if values and len(values) != len(clusters):
            raise ValueError(f"{other}: {len(values)} songs, but {clusters_path} lists {len(clusters)} (line i = song i)")

    skips = Skips(DATASET)
    if not metadata:
        skips.add("songs without artist/title (no dataset info.csv)", len(clusters))
    rows = []
    for index, cluster in enumerate(clusters):
        number = f"{index + 1:03d}"
        if not cluster:
            raise ValueError(f"{clusters_path} line {index + 1}: empty cluster for song {number}")
        meta = metadata[index] if metadata else {}
        stem = Path(meta.get("Filename") or f"{number}.mp3").stem
        if stem != number:
            raise ValueError(f"{metadata_path} row {index + 1}: Filename {meta.get('Filename')!r}, expected {number}.mp3")
        audio = local_file(root / "Audio" / f"{number}.mp3", skips, "clips listed but absent", number)
        lyrics_file = root / "Lyrics" / f"{number}.txt"
        text = read_lyrics_file(lyrics_file) if lyrics_file.is_file() else None
        if text is None:
            skips.add("lyrics listed but absent or empty", number)
        rows.append({
            "source_id": number, "audio_uri": audio, "lyrics": text, "label": cluster,
            "artist": text_or_none(meta.get("Artist")), "title": text_or_none(meta.get("Title")),
        })
    kept_clusters = Counter(r["label"] for r in rows if not require_inputs or r["audio_uri"] or r["lyrics"])
    return build_table(DATASET, rows, skips, require_inputs=require_inputs,
                       extra_stats={"listed": len(clusters), "classes": dict(sorted(kept_clusters.items())),
                                    "categories": len(set(categories))})
