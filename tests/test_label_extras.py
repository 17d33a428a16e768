"""The optional label columns (ambiguous, embedding, timeline) as label_rows builds them, and the
contract they follow: readable by pyarrow, pandas and DuckDB without custom code."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from labeler.bundle.info import BundleInfo
from labeler.contracts.schemas import LABELS, contract_table, labels_contract, validate
from labeler.inference.label_rows import label_rows
from labeler.label_job import LabelJobConfig, OutputLayout
from labeler.label_job.layout import check_same_optional_columns

WINDOW = {"start": 0.0, "end": 10.0, "label": "Q2", "label_prob": 0.6, "arousal_prob": 0.8, "valence_prob": 0.3}


def _info(threshold: float | None = 0.5) -> BundleInfo:
    return BundleInfo(uri="/b", model_id="m", model_version="v1", mode="4Q", classes=("Q1", "Q2", "Q3", "Q4"),
                      branch="fusion", featurizer={}, lyrics={}, ambiguous_threshold=threshold,
                      embedding_dim=3)


def _batch(**extra) -> dict:
    return {"song_id": np.array(["a", "b", "c"], dtype=object),
            "probs": np.array([[0.4, 0.3, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1], [np.nan] * 4], np.float32),
            "error": np.array([None, None, "no_audio: x; no_lyrics: y"], dtype=object), **extra}


def test_ambiguous_is_always_written_and_null_where_it_cannot_be_known():
    table = label_rows(_batch(), _info(), datetime.now(UTC))
    assert table.column_names == LABELS.schema.names  # no optional column unless asked for
    assert table.column("ambiguous").to_pylist() == [True, False, None]
    assert label_rows(_batch(), _info(None), datetime.now(UTC)).column("ambiguous").null_count == 3


def test_embedding_and_timeline_columns(tmp_path):
    emb = np.array([[0.6, 0.8, 0.0], [1.0, 0.0, 0.0], [np.nan] * 3], np.float32)
    timelines = np.array([json.dumps([WINDOW, {**WINDOW, "start": 10.0, "end": 12.5, "label": None,
                                               "label_prob": None, "arousal_prob": None, "valence_prob": None}]),
                          "", ""], dtype=object)
    table = label_rows(_batch(embedding=emb, timeline=timelines), _info(), datetime.now(UTC))
    validate(table.schema, labels_contract(embeddings=True, timeline=True))
    assert table.column_names[-2:] == ["embedding", "timeline"]
    assert table.column("embedding").to_pylist()[:2] == [pytest.approx([0.6, 0.8, 0.0]), [1.0, 0.0, 0.0]]
    assert table.column("embedding").to_pylist()[2] is None and table.column("timeline").to_pylist()[1] is None
    first = table.column("timeline").to_pylist()[0]
    assert first[0] == pytest.approx(WINDOW) and first[1]["label"] is None

    path = tmp_path / "part.parquet"
    pq.write_table(table, path)
    frame = pd.read_parquet(path)
    assert frame.loc[0, "embedding"].dtype == np.float32 and len(frame.loc[0, "embedding"]) == 3
    assert frame.loc[0, "timeline"][0]["label"] == "Q2"
    import duckdb

    assert duckdb.sql(f"SELECT list_cosine_similarity(a.embedding::DOUBLE[], b.embedding::DOUBLE[]) FROM '{path}' a, '{path}' b "
                      f"WHERE a.song_id = 'a' AND b.song_id = 'b'").fetchall()[0][0] == pytest.approx(0.6)
    assert duckdb.sql(f"SELECT timeline[1].label, len(timeline) FROM '{path}' WHERE song_id = 'a'").fetchall() == [("Q2", 2)]


def test_a_version_keeps_one_set_of_optional_columns(tmp_path):
    layout = OutputLayout(str(tmp_path), "0123456789abcdef")
    check_same_optional_columns(layout, LabelJobConfig(embeddings=True))  # nothing committed yet: anything goes
    emb = np.eye(3, dtype=np.float32)
    (tmp_path / "version=0123456789abcdef").mkdir()
    pq.write_table(label_rows(_batch(embedding=emb), _info(), datetime.now(UTC)),
                   tmp_path / "version=0123456789abcdef" / "part-x.parquet")
    check_same_optional_columns(layout, LabelJobConfig(embeddings=True))
    with pytest.raises(ValueError, match="labelled with --embeddings; this run asks for none of --embeddings, --timeline, --tags"):
        check_same_optional_columns(layout, LabelJobConfig())
    with pytest.raises(ValueError, match="positive number of seconds"):
        LabelJobConfig(timeline_seconds=0)


def test_contract_tables_name_the_new_columns():
    text = contract_table(labels_contract(embeddings=True, timeline=True, tags=True))
    for name in ("`ambiguous`", "`embedding`", "`timeline`", "`tags`"):
        assert name in text
    assert "embedding" not in LABELS.schema.names and "tags" not in LABELS.schema.names
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for line in text.splitlines():  # the README's labels table is this generated one, row for row
        assert line in readme, line
