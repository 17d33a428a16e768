"""Data contracts: every missing or mistyped column is named in one error, before any work starts."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labeler.contracts.schemas import (
    CATALOGUE,
    CONTRACTS,
    LABELS,
    MANIFEST,
    SchemaError,
    check_unique_ids,
    conform,
    contract_table,
    is_missing,
    nullable_strings,
    validate,
)
from labeler.io import storage


def _catalogue(**columns) -> pa.Table:
    base = {
        "song_id": pa.array(["a", "b"]),
        "audio_uri": pa.array(["/x/a.wav", None]),
        "lyrics": pa.array(["la la", None]),
    }
    base.update(columns)
    return pa.table({k: v for k, v in base.items() if v is not None})


def test_contracts_are_registered_and_list_required_columns():
    assert set(CONTRACTS) == {"catalogue", "manifest", "labels"}
    assert CATALOGUE.required == ["song_id", "audio_uri", "lyrics"]
    assert {"song_id", "dataset", "valence", "arousal", "quadrant", "fold"} <= set(MANIFEST.required)
    assert "chorus_start_s" not in MANIFEST.required
    assert {"song_id", "quadrant", "prob_q1", "prob_q4", "model_version", "labelled_at", "error"} <= set(LABELS.required)
    assert CATALOGUE.schema.names == [c.name for c in CATALOGUE.columns]
    assert not CATALOGUE.schema.field("song_id").nullable
    with pytest.raises(KeyError):
        CATALOGUE.column("nope")


def test_a_valid_catalogue_passes():
    validate(_catalogue().schema, CATALOGUE)


def test_one_error_names_every_missing_column():
    table = pa.table({"audio_uri": ["/x/a.wav"]})
    with pytest.raises(SchemaError) as info:
        validate(table.schema, CATALOGUE, where="s3://bucket/catalogue.parquet")
    message = str(info.value)
    assert "song_id" in message and "lyrics" in message
    assert "missing required column(s): song_id, lyrics" in message
    assert "s3://bucket/catalogue.parquet" in message
    assert "audio_uri" not in message.split("missing")[1]
    assert isinstance(info.value, ValueError)  # the CLI prints ValueErrors as one line


def test_mistyped_columns_are_named_with_both_types():
    table = _catalogue(lyrics=pa.array([1, 2]), chorus_start_s=pa.array(["1.0", "2.0"]))
    with pytest.raises(SchemaError) as info:
        validate(table.schema, CATALOGUE)
    message = str(info.value)
    assert "column 'lyrics' has type int64, expected string" in message
    assert "column 'chorus_start_s' has type string, expected double" in message


def test_missing_and_mistyped_are_reported_together():
    table = pa.table({"song_id": [1, 2], "audio_uri": ["a", "b"]})
    with pytest.raises(SchemaError, match=re.escape("missing required column(s): lyrics; column 'song_id' has type int64")):
        validate(table.schema, CATALOGUE)


def test_physical_variants_of_the_same_logical_type_are_accepted():
    table = _catalogue(
        song_id=pa.array(["a", "b"], pa.large_string()),
        lyrics=pa.nulls(2),  # an all-null column Arrow could not type
        chorus_start_s=pa.array([1, 2], pa.int32()),
        chorus_end_s=pa.array([3.0, 4.0], pa.float32()),
    )
    validate(table.schema, CATALOGUE)
    out = conform(table, CATALOGUE)
    assert out.schema.equals(CATALOGUE.schema)
    assert out.column("chorus_start_s").to_pylist() == [1.0, 2.0]


def test_conform_orders_casts_and_adds_optional_columns():
    table = _catalogue().select(["lyrics", "song_id", "audio_uri"]).append_column("genre", pa.array(["pop", "rock"]))
    out = conform(table, CATALOGUE)
    assert out.column_names == ["song_id", "audio_uri", "lyrics", "chorus_start_s", "chorus_end_s"]
    assert out.column("chorus_start_s").null_count == 2
    assert out.schema.equals(CATALOGUE.schema)
    kept = conform(table, CATALOGUE, keep_extra=True)
    assert kept.column_names[-1] == "genre" and kept.column("genre").to_pylist() == ["pop", "rock"]


def test_conform_refuses_a_table_that_breaks_the_contract():
    with pytest.raises(SchemaError, match="song_id"):
        conform(pa.table({"audio_uri": ["a"], "lyrics": ["b"]}), CATALOGUE)


def test_manifest_conform_narrows_integers():
    table = pa.table({
        "song_id": ["pmemo:1"], "dataset": ["pmemo"], "audio_uri": [None], "lyrics": [None],
        "valence": [0.2], "arousal": [-0.1], "quadrant": [4], "fold": [-1],
    })
    out = conform(table, MANIFEST)
    assert out.schema.field("quadrant").type == pa.int8() and out.schema.field("fold").type == pa.int8()
    assert out.column("also_in").null_count == 1


def test_check_unique_ids():
    check_unique_ids(_catalogue())
    duplicated = pa.table({"song_id": ["a", "b", "a", "c", "c", "c"]})
    with pytest.raises(SchemaError, match=r"catalogue: 2 duplicate song_id value\(s\), e\.g\. 'a', 'c'"):
        check_unique_ids(duplicated, where="catalogue")
    with pytest.raises(SchemaError, match=r"table: 1 row\(s\) have a null song_id"):
        check_unique_ids(pa.table({"song_id": ["a", None]}))


def test_validating_a_parquet_file_schema_without_reading_it(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(_catalogue(), good)
    validate(storage.read_parquet_schema(str(good)), CATALOGUE, where=str(good))

    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["a"], "lyrics": [3]}), bad)
    with pytest.raises(SchemaError) as info:
        validate(storage.read_parquet_schema(str(bad)), CATALOGUE, where=str(bad))
    message = str(info.value)
    assert "song_id, audio_uri" in message and "'lyrics' has type int64" in message and str(bad) in message


def test_validating_a_directory_of_parquet_files(tmp_path):
    """Ray Data and Spark write a catalogue as a directory of part files."""
    folder = tmp_path / "catalogue"
    folder.mkdir()
    pq.write_table(_catalogue(), folder / "part-0.parquet")
    pq.write_table(_catalogue(song_id=pa.array(["c", "d"])), folder / "part-1.parquet")
    validate(storage.read_parquet_schema(str(folder)), CATALOGUE)
    assert storage.read_parquet(str(folder)).num_rows == 4


def test_contract_table_lists_every_column():
    for contract in CONTRACTS.values():
        text = contract_table(contract)
        assert len(text.splitlines()) == len(contract.columns) + 2
        for column in contract.columns:
            assert f"`{column.name}`" in text


def test_missing_string_cells_in_every_form_ray_data_hands_them_over():
    # An object column that is None in every row of a block comes back as float NaN (numpy or Python).
    for value in (None, float("nan"), np.float32("nan"), np.float64("nan"), ""):
        assert is_missing(value), value
    for value in ("corrupt: truncated file", "0", 0.0, np.float32(1.5)):
        assert not is_missing(value), value


def test_nullable_strings_normalises_a_column_and_fills_an_absent_one():
    column = np.array([None, float("nan"), "", "no_audio: missing file", 3], dtype=object)
    assert nullable_strings(column, 5) == [None, None, None, "no_audio: missing file", "3"]
    assert nullable_strings(None, 3) == [None, None, None]
