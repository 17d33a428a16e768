"""Cross-validation folds: stratified, reproducible, leak-free, holdout semantics, nested validation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from train.data.folds import assign_folds, fold_summary, format_fold_summary, parse_cv, split_for


def _table(datasets: dict[str, int], seed: int = 0, shared: list[tuple[str, str]] | None = None) -> pa.Table:
    """A manifest-like table: per dataset n songs with random quadrants and distinct artists/titles."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, n in datasets.items():
        for i in range(n):
            rows.append({"song_id": f"{name}:{i}", "dataset": name, "quadrant": int(rng.integers(1, 5)),
                         "artist": f"{name} artist {i}", "title": f"title {i}", "fold": -1})
    for a, b in shared or []:  # give two rows the same artist+title, written differently
        for r in rows:
            if r["song_id"] == b:
                r["artist"], r["title"] = [x.upper() + "!" for x in next((s["artist"], s["title"]) for s in rows if s["song_id"] == a)]
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("song_id", pa.string()), ("dataset", pa.string()), ("quadrant", pa.int8()),
        ("artist", pa.string()), ("title", pa.string()), ("fold", pa.int8()),
    ]))


def _folds(table: pa.Table) -> dict[str, int]:
    return dict(zip(table.column("song_id").to_pylist(), table.column("fold").to_pylist()))


def test_stratified_per_dataset_within_one():
    table = assign_folds(_table({"a": 203, "b": 57}), k=5)
    summary = fold_summary(table).to_pylist()
    for dataset in ("a", "b"):
        for q in (1, 2, 3, 4):
            counts = [next((r["rows"] for r in summary if r["dataset"] == dataset and r["fold"] == f and r["quadrant"] == q), 0)
                      for f in range(5)]
            assert max(counts) - min(counts) <= 1, (dataset, q, counts)
    assert set(table.column("fold").to_pylist()) == {0, 1, 2, 3, 4}
    assert "Q1" in format_fold_summary(table)


def test_reproducible_and_order_independent():
    table = _table({"a": 100})
    first = _folds(assign_folds(table, k=5, seed=8848))
    shuffled = table.take(np.random.default_rng(1).permutation(table.num_rows))
    assert _folds(assign_folds(shuffled, k=5, seed=8848)) == first
    assert _folds(assign_folds(table, k=5, seed=1)) != first


def test_duplicates_share_a_fold_within_and_across_datasets():
    shared = [("a:0", "a:1"), ("a:2", "a:3"), ("a:4", "b:0"), ("a:5", "b:1"), ("a:6", "b:2")]
    for seed in (8848, 1, 2):
        folds = _folds(assign_folds(_table({"a": 60, "b": 40}, shared=shared), k=4, seed=seed))
        for x, y in shared:
            assert folds[x] == folds[y], (seed, x, y)


def test_holdout_semantics():
    table = _table({"pmemo": 30, "4q": 80, "moodylyrics4q": 40}, shared=[("pmemo:0", "4q:0")])
    for cv in ("PME", "holdout:pmemo"):
        out = assign_folds(table, k=5, cv=cv)
        rows = out.to_pylist()
        assert {r["fold"] for r in rows if r["dataset"] == "pmemo"} == {0}
        assert {r["fold"] for r in rows if r["dataset"] != "pmemo" and r["song_id"] != "4q:0"} == {1, 2, 3, 4}
        assert _folds(out)["4q:0"] == 0  # the same song as a held-out one never trains
    with pytest.raises(ValueError, match="'deezer' has no rows"):
        assign_folds(table, cv="holdout:deezer")


def test_split_for_never_overlaps():
    folds = assign_folds(_table({"a": 50}), k=5).column("fold")
    values = np.asarray(folds.to_pylist())
    for test_fold in range(5):
        split = split_for(folds, test_fold, 5)
        assert set(values[split == "test"]) == {test_fold}
        assert set(values[split == "val"]) == {(test_fold + 1) % 5}
        assert test_fold not in set(values[split == "train"]) and (test_fold + 1) % 5 not in set(values[split == "train"])
    with pytest.raises(ValueError, match="assign folds first"):
        split_for([0, -1, 2], 0, 5)
    with pytest.raises(ValueError, match="test_fold"):
        split_for([0, 1, 2], 5, 5)


def test_small_inputs_and_bad_arguments():
    # fewer songs than folds: each gets its own fold, reproducibly
    out = _folds(assign_folds(_table({"tiny": 3, "big": 40}), k=5))
    tiny = [out[f"tiny:{i}"] for i in range(3)]
    assert len(set(tiny)) == 3 and tiny == [_folds(assign_folds(_table({"tiny": 3, "big": 40}), k=5))[f"tiny:{i}"] for i in range(3)]
    with pytest.raises(ValueError, match="k must be an integer >= 3"):
        assign_folds(_table({"a": 10}), k=2)
    with pytest.raises(ValueError, match="unknown cv scheme 'SOME'"):
        parse_cv("SOME")
    assert parse_cv("all") is None and parse_cv("PME") == "pmemo" and parse_cv("holdout:4q") == "4q"
