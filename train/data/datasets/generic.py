"""A user's own labelled songs: any CSV or Parquet table plus a column mapping.

Each keyword names the *source* column that holds a manifest column, e.g.
`prepare_generic("mine.csv", song_id="id", audio_uri="path", lyrics="text", quadrant="mood_q")`, or
on the command line `--dataset generic=mine.csv --option generic.song_id=id --option
generic.quadrant=mood_q`. Left unset, a manifest column is read from the same-named source column
when there is one. The label is `quadrant` (1..4 or Q1..Q4) or `valence` + `arousal` with their
`midpoint` (values are stored as `v - midpoint`); when both are given the quadrant wins. A catalogue's
own taxonomy maps `label=<column>` instead (a `classes` dataset: its text is the class name, quadrant
stays null; train with `--mode classes`); it cannot be combined with a quadrant label.

Relative local audio paths are resolved against `base_dir` (default: the table's folder); a local
audio file that is listed but absent is counted and the row keeps its lyrics (rows with neither are
dropped and counted). Remote URIs (s3://) are not checked here: the featuriser reports them per row.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from labeler.io import storage
from train.data.datasets.common import (
    Skips,
    blank,
    build_table,
    parse_float_at,
    parse_quadrant_at,
    read_any_table,
    require_columns,
    text_or_none,
)

MAPPABLE = ("song_id", "audio_uri", "lyrics", "quadrant", "valence", "arousal", "artist", "title", "chorus_start_s",
            "chorus_end_s", "label")


def prepare_generic(
    path: str | Path,
    song_id: str | None = None,
    audio_uri: str | None = None,
    lyrics: str | None = None,
    quadrant: str | None = None,
    valence: str | None = None,
    arousal: str | None = None,
    midpoint: float = 0.0,
    artist: str | None = None,
    title: str | None = None,
    chorus_start_s: str | None = None,
    chorus_end_s: str | None = None,
    label: str | None = None,
    dataset: str = "generic",
    base_dir: str | None = None,
    require_inputs: bool = True,
) -> pa.Table:
    """The table at `path` as manifest rows (`<dataset>:<song id>`), fold -1. See the module doc."""
    df = read_any_table(path)
    given = {
        "song_id": song_id, "audio_uri": audio_uri, "lyrics": lyrics, "quadrant": quadrant,
        "valence": valence, "arousal": arousal, "artist": artist, "title": title,
        "chorus_start_s": chorus_start_s, "chorus_end_s": chorus_end_s, "label": label,
    }
    require_columns(df, [c for c in given.values() if c], path)  # explicitly mapped: must exist
    mapping = {name: given[name] or (name if name in df.columns else None) for name in MAPPABLE}
    if mapping["song_id"] is None:
        raise ValueError(f"{path}: no song id column: map one with song_id=<column> (it has {list(df.columns)})")
    has_va = mapping["valence"] is not None and mapping["arousal"] is not None
    if mapping["label"] is not None and (mapping["quadrant"] is not None or has_va):
        raise ValueError(f"{path}: map either label=<column> (own classes) or a quadrant / valence+arousal, not both")
    if mapping["quadrant"] is None and not has_va and mapping["label"] is None:
        raise ValueError(
            f"{path}: no label: map quadrant=<column>, valence=<column> and arousal=<column>, or label=<column> "
            f"(it has {list(df.columns)})"
        )
    if mapping["audio_uri"] is None and mapping["lyrics"] is None:
        raise ValueError(f"{path}: no input column: map audio_uri=<column> and/or lyrics=<column> (it has {list(df.columns)})")
    base = base_dir or storage.parent(storage.absolute_uri(str(path)))

    skips = Skips(dataset)
    rows = []
    for line, record in enumerate(df.to_dict("records"), start=1):
        def cell(name: str, record: dict = record) -> object:
            column = mapping[name]
            return None if column is None or blank(record[column]) else record[column]

        sid = text_or_none(cell("song_id"))
        where = f"{path} row {line}" + (f" ({mapping['song_id']} {sid})" if sid else "")
        if sid is None:
            raise ValueError(f"{where}: empty song id in column {mapping['song_id']!r}")
        audio = text_or_none(cell("audio_uri"))
        if audio is not None and not storage.is_remote(audio):
            local = Path(storage.strip_scheme(audio)) if audio.startswith("file://") else Path(audio)
            local = local if local.is_absolute() else Path(storage.strip_scheme(base)) / local
            if local.is_file():
                audio = str(local.resolve())
            else:
                skips.add("audio files listed but absent", audio)
                audio = None
        row = {
            "source_id": sid,
            "audio_uri": audio,
            "lyrics": text_or_none(cell("lyrics")),
            "artist": text_or_none(cell("artist")),
            "title": text_or_none(cell("title")),
        }
        if mapping["label"] is not None:
            row["label"] = text_or_none(cell("label"))
            if row["label"] is None:
                raise ValueError(f"{where}: empty label in column {mapping['label']!r}")
        q = cell("quadrant")
        row["quadrant"] = parse_quadrant_at(q, where) if q is not None else None
        for axis in ("valence", "arousal"):
            v = cell(axis)
            row[axis] = parse_float_at(v, f"{where} {axis}") - float(midpoint) if v is not None else None
        for name in ("chorus_start_s", "chorus_end_s"):
            v = cell(name)
            row[name] = parse_float_at(v, f"{where} {name}") if v is not None else None
        rows.append(row)
    return build_table(dataset, rows, skips, require_inputs=require_inputs)
