"""The labelling job's completion step (labeler.label_job.summary.finish) on real Parquet parts:
the record is written only when the partition holds one row per catalogue song.

Why its own test: finish proves "one row per song" without counting every id when it can (every
catalogue id present among exactly as many rows), so each way a partition can be wrong is checked here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labeler.contracts.schemas import LABELS, conform
from labeler.label_job.layout import OutputLayout
from labeler.label_job.summary import LabelSummary, finish

VERSION = "0123456789abcdef"


def _partition(tmp_path: Path, parts: list[list[str]]) -> OutputLayout:
    layout = OutputLayout(str(tmp_path / "labels"), VERSION)
    Path(layout.partition_uri).mkdir(parents=True)
    now = datetime.now(UTC)
    for n, ids in enumerate(parts):
        k = len(ids)
        cols = {"song_id": pa.array(ids, pa.string()), "quadrant": pa.array(["Q1"] * k, pa.string()),
                "model_id": pa.array(["m"] * k), "model_version": pa.array([VERSION] * k),
                "labelled_at": pa.array([now] * k, pa.timestamp("us", tz="UTC"))}
        table = pa.table({f.name: cols.get(f.name, pa.nulls(k, f.type)) for f in LABELS.schema})
        pq.write_table(conform(table, LABELS), str(Path(layout.partition_uri) / f"part-test-{n:04d}.parquet"))
    return layout


def _finish(layout: OutputLayout, catalogue: list[str]) -> LabelSummary:
    summary = LabelSummary(catalogue_uri="catalogue.parquet", output_uri=layout.output_uri,
                           partition_uri=layout.partition_uri, model_id="m", model_version=VERSION, run_id="r",
                           catalogue_rows=len(catalogue), already_labelled=0)
    return finish(layout, summary, pa.array(catalogue, pa.string()), datetime.now(UTC), None, lease=None)


CATALOGUE = [f"s{i}" for i in range(6)]


def test_one_row_per_song_across_parts_finishes(tmp_path):
    summary = _finish(_partition(tmp_path, [CATALOGUE[:4], CATALOGUE[4:]]), CATALOGUE)
    assert summary.partition_rows == 6 and summary.quadrants["Q1"] == 6


def test_a_duplicate_hiding_a_missing_song_is_refused(tmp_path):
    # as many rows as songs, but s5 has none and s0 has two: the count alone would pass
    layout = _partition(tmp_path, [CATALOGUE[:5], ["s0"]])
    with pytest.raises(RuntimeError, match="duplicate song_id.*'s0'"):
        _finish(layout, CATALOGUE)


def test_a_missing_song_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="1 catalogue song\\(s\\) have no label row"):
        _finish(_partition(tmp_path, [CATALOGUE[:5]]), CATALOGUE)


def test_a_duplicate_beside_every_song_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="duplicate song_id"):
        _finish(_partition(tmp_path, [CATALOGUE, ["s3"]]), CATALOGUE)


def test_labels_of_songs_no_longer_in_the_catalogue_are_kept(tmp_path):
    # a catalogue that lost a song since the last run: its old row stays, every current song has one
    summary = _finish(_partition(tmp_path, [CATALOGUE + ["gone"]]), CATALOGUE)
    assert summary.partition_rows == 7
    assert not Path(OutputLayout(str(tmp_path / "labels"), VERSION).success_uri).exists()  # no lease: no record
    assert summary.quadrants == {"Q1": 7, "Q2": 0, "Q3": 0, "Q4": 0}
