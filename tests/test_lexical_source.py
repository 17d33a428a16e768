"""train.data.lexical_source: the corpus the lexical model learns its words from, read and kept clean."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from train.data.datasets.names import song_key
from train.data.lexical_source import MIN_SONGS, load_source


def manifest(path, rows, label=False):
    cols = {"song_id": [r[0] for r in rows], "dataset": ["x"] * len(rows), "artist": [r[1] for r in rows],
            "title": [r[2] for r in rows], "lyrics": [r[3] for r in rows],
            "quadrant": pa.array([None if label else r[4] for r in rows], pa.int64())}
    if label:
        cols["label"] = [r[4] for r in rows]
    pq.write_table(pa.table(cols), path)
    return str(path)


def source_rows(n=30):
    return [(f"s{i}", f"Artist {i}", f"Song {i}", f"words of song {i} love" if i % 7 else None, 1 + i % 4) for i in range(n)]


def test_song_key_ignores_case_punctuation_and_artist_word_order():
    assert song_key("Smith, Bessie", "Gimme a Pigfoot!") == song_key("bessie smith", "gimme a pigfoot")
    assert song_key("AC/DC", "Back in Black") != song_key("AC/DC", "Back in Blue")
    assert song_key("x", None) is None and song_key("x", "  ") is None


def test_the_overlap_filter_drops_accent_featuring_and_remaster_variants_of_the_runs_songs(tmp_path):
    """One song key for merging datasets and for this filter: a variant of a run song never teaches the lexical model."""
    variants = [("v1", "Beyonc\u00e9", "Halo (Remastered 2011)"), ("v2", "Beyonce feat. Jay-Z", "Halo"),
                ("v3", "Smith, Bessie", "Gimme a Pigfoot!")]
    rows = [(sid, artist, title, f"variant words {sid}", 1) for sid, artist, title in variants] + source_rows()
    run = manifest(tmp_path / "run.parquet", [("r1", "Beyonce", "Halo", "x", 1), ("r2", "Bessie Smith", "gimme a pigfoot", "y", 2)])
    source = load_source(manifest(tmp_path / "src.parquet", rows), run)
    assert not [t for t in source.texts if t.startswith("variant")] and source.dropped_overlap == 3


def test_drops_the_runs_songs_and_rows_without_lyrics(tmp_path):
    src = manifest(tmp_path / "src.parquet", source_rows())
    run = manifest(tmp_path / "run.parquet", [("s1", "a", "b", "x", 1),  # same song_id
                                               ("r9", "ARTIST 2", "song-2", "y", 2)])  # same artist and title
    source = load_source(src, run)
    assert source.classes == ["Q1", "Q2", "Q3", "Q4"]
    assert source.dropped_overlap == 2
    assert source.dropped_no_lyrics == 5  # i = 0, 7, 14, 21, 28 have none
    kept = {f"words of song {i} love" for i in range(30) if i % 7 and i not in (1, 2)}
    assert set(source.texts) == kept and len(source.y) == len(kept)
    assert all(source.classes[y] == f"Q{1 + int(t.split()[3]) % 4}" for t, y in zip(source.texts, source.y))
    assert source.describe()["songs"] == len(kept)


def test_a_classes_manifest_is_a_source_too(tmp_path):
    rows = [(f"s{i}", "a", f"t{i}", f"text {i}", ["calm", "wild"][i % 2]) for i in range(MIN_SONGS)]
    source = load_source(manifest(tmp_path / "src.parquet", rows, label=True),
                         manifest(tmp_path / "run.parquet", [("r", "b", "c", "d", 1)]))
    assert source.classes == ["calm", "wild"] and len(source.texts) == MIN_SONGS


def test_unusable_sources_are_one_line_errors(tmp_path):
    run = manifest(tmp_path / "run.parquet", [("r", "b", "c", "d", 1)])
    with pytest.raises(ValueError, match="not a readable Parquet manifest"):
        load_source(str(tmp_path / "missing.parquet"), run)
    pq.write_table(pa.table({"song_id": ["a"], "lyrics": ["x"]}), tmp_path / "bare.parquet")
    with pytest.raises(ValueError, match="missing dataset, quadrant"):
        load_source(str(tmp_path / "bare.parquet"), run)
    with pytest.raises(ValueError, match="usable songs"):
        load_source(manifest(tmp_path / "small.parquet", source_rows(10)), run)
