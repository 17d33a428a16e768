"""The lyrics of a larger labelled corpus that the lexical model learns its words from (`--lexical-source`).

A catalogue's own mood taxonomy usually comes with a few hundred labelled songs, too few for a
vocabulary of mood words; a public lyrics corpus has thousands (`bench/README.md` compares the two).
`labeler.lyrics.lexical.LexicalModel.fit_transfer` does the
fitting; this module reads the source manifest once per run and keeps it clean:

* any `labeler prepare` manifest with lyrics: its classes are its `label`s, or its quadrants Q1..Q4;
* its rows that are also in the run's manifest (same `song_id`, or the same `train.data.datasets.names.song_key`:
  accents, case, punctuation, "feat." parts, bracketed suffixes and the artist's word order ignored) are dropped: a song the run tests on must not teach the
  lexical model its words through the back door;
* rows without usable lyrics are skipped, as the feature cache skips them (`labeler.lyrics.text.prepare_lyrics`).
"""

from __future__ import annotations

from dataclasses import dataclass

from labeler.io import storage
from train.data.datasets.names import song_key

MIN_SONGS = 20  # fewer source songs than this cannot teach a vocabulary; a user error, said before training


@dataclass(frozen=True)
class LexicalSource:
    """The source corpus as the lexical model needs it: cleaned texts, class indices, class names."""

    uri: str
    texts: list[str]
    y: list[int]
    classes: list[str]
    dropped_overlap: int  # rows also in the run's manifest
    dropped_no_lyrics: int

    def describe(self) -> dict:
        """What the run's provenance records about the source."""
        return {"manifest": storage.describe(self.uri), "songs": len(self.texts), "classes": self.classes,
                "dropped_overlap": self.dropped_overlap, "dropped_no_lyrics": self.dropped_no_lyrics}


def _columns(uri: str, wanted: tuple[str, ...]):
    """The manifest's table with those of `wanted` it has."""
    names = set(storage.read_parquet_schema(uri).names)
    return storage.read_parquet(uri, columns=[c for c in wanted if c in names])


def load_source(source_uri: str, run_manifest_uri: str) -> LexicalSource:
    """The source manifest's usable lyrics and labels, without the songs of the run's manifest.

    ValueError (one line, said before any training) when the source cannot serve: unreadable, without
    `lyrics`, or with fewer than MIN_SONGS usable songs in at least two classes.
    """
    from labeler.contracts.labels import row_classes  # noqa: PLC0415
    from labeler.lyrics.text import prepare_lyrics  # noqa: PLC0415
    from train.data.manifest import label_kind  # noqa: PLC0415

    source_uri = storage.absolute_uri(source_uri)
    where = f"--lexical-source {storage.describe(source_uri)}"
    try:
        names = set(storage.read_parquet_schema(source_uri).names)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{where}: not a readable Parquet manifest ({type(exc).__name__}: {exc})") from None
    missing = {"song_id", "dataset", "quadrant", "lyrics"} - names
    if missing:
        raise ValueError(f"{where}: not a training manifest with lyrics (missing {', '.join(sorted(missing))}); "
                         "make one with `labeler prepare`")
    table = _columns(source_uri, ("song_id", "dataset", "quadrant", "label", "lyrics", "artist", "title"))
    _, classes = label_kind(table, where)
    source = {c: table.column(c).to_pylist() for c in table.column_names}
    labels = row_classes(table)

    run = _columns(run_manifest_uri, ("song_id", "artist", "title"))
    run_ids = set(run.column("song_id").to_pylist())
    run_keys = ({song_key(a, t) for a, t in zip(run.column("artist").to_pylist(), run.column("title").to_pylist())}
                if {"artist", "title"} <= set(run.column_names) else set()) - {None}
    artists = source.get("artist", [None] * len(labels))
    titles = source.get("title", [None] * len(labels))
    texts: list[str] = []
    y: list[int] = []
    overlap = no_lyrics = 0
    for song_id, artist, title, lyrics, label in zip(source["song_id"], artists, titles, source["lyrics"], labels):
        if song_id in run_ids or song_key(artist, title) in run_keys:
            overlap += 1
            continue
        text, error = prepare_lyrics(lyrics)
        if error is not None:
            no_lyrics += 1
            continue
        texts.append(text)
        y.append(classes.index(label))
    if len(texts) < MIN_SONGS or len(set(y)) < 2:
        raise ValueError(f"{where}: {len(texts)} usable songs in {len(set(y))} class(es) after dropping {overlap} "
                         f"also in the run's manifest and {no_lyrics} without lyrics; need >= {MIN_SONGS} in >= 2 classes")
    return LexicalSource(source_uri, texts, y, classes, overlap, no_lyrics)
