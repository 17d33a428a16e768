"""Cross-validation folds, assigned once into the manifest's `fold` column.

Folds are stratified on the quadrant, seeded (default 8848, the seed the BECMER recipes used), and
independent of row order (rows are sorted by song_id before splitting). They are *leak-free*: rows
that are the same song (same normalised artist + title, see `train.data.datasets.names.song_key`) always
share a fold, so a recording never sits on both sides of a train/test split. When a table has such
groups, `StratifiedGroupKFold` splits it; when every song is distinct, `StratifiedKFold` does, which
keeps every quadrant's count per fold within one of the others.

Cross-validation schemes (`cv`):

* ``ALL``: every dataset is split into k folds on its own, so fold i holds ~1/k of each dataset and
  each dataset's quadrant balance. Training run i tests on fold i of all datasets.
* ``holdout:<dataset>`` (``PME`` == ``holdout:pmemo``): that dataset's rows are all fold 0, the test
  set; each other dataset is split on its own over folds 1..k-1. Only test fold 0 is meaningful; with
  `split_for(folds, 0, k)` fold 1 is the validation set (checkpoint choice, early stopping) and folds
  2..k-1 train, so with k=5 three quarters of the other data trains and one quarter validates. A
  same-song group spanning the held-out dataset and another goes wholly to fold 0 (never trains),
  as does a row of another dataset whose `also_in` names a held-out song (the manifest merged them).

Validation: `split_for(folds, test_fold, k)` labels each row train/val/test with val = fold
(test_fold + 1) % k, so the test fold never chooses a checkpoint. k must be >= 3 (a test, a
validation and at least one training fold).

Small classes: a quadrant with fewer rows (groups) than folds is spread over as many folds as it has
rows, with a warning naming dataset and quadrant (when *every* quadrant is that small, the
dataset is split by song groups only, `GroupKFold`, unstratified); a dataset (or the non-held-out part) with fewer
songs than folds (e.g. a 4-song PMEmo slice with k=5) puts each song in its own, seeded, fold and
leaves the other folds without that dataset, with a warning. A split with an empty test or
validation fold is the trainer's to refuse.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold

from train.data.datasets.names import song_key

log = logging.getLogger(__name__)

HOLDOUT_ALIASES = {"PME": "pmemo"}


def parse_cv(cv: str) -> str | None:
    """'ALL' -> None; 'PME' or 'holdout:<dataset>' -> the held-out dataset's name."""
    text = cv.strip()
    if text.upper() == "ALL":
        return None
    if text.upper() in HOLDOUT_ALIASES:
        return HOLDOUT_ALIASES[text.upper()]
    if text.lower().startswith("holdout:") and text.split(":", 1)[1].strip():
        return text.split(":", 1)[1].strip()
    raise ValueError(f"unknown cv scheme {cv!r}: expected ALL, PME or holdout:<dataset>")


def check_k(k: int) -> int:
    if isinstance(k, bool) or int(k) != k or k < 3:
        raise ValueError(f"k must be an integer >= 3 (test, validation and training folds), got {k!r}")
    return int(k)


def _column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


def _also_in(value: str | None, dataset: str) -> bool:
    return bool(value) and any(part.startswith(f"{dataset}:") for part in value.split(","))


def group_keys(table: pa.Table) -> list[str]:
    """Per row, the id of its same-song group: the normalised artist+title, else its own song_id."""
    ids, artists, titles = _column(table, "song_id"), _column(table, "artist"), _column(table, "title")
    return [song_key(a, t) or f"id:{s}" for s, a, t in zip(ids, artists, titles)]


def _split(song_ids: np.ndarray, quadrants: np.ndarray, groups: np.ndarray, n_splits: int, seed: int, where: str) -> np.ndarray:
    """Fold 0..n_splits-1 per row (rows given in any order; result in that order)."""
    n_groups = len(set(groups.tolist()))
    order = np.argsort(song_ids, kind="stable")
    if n_groups < n_splits:
        # Too few songs to stratify: each group gets its own fold, chosen by a seeded shuffle.
        log.warning("%s: only %d distinct song(s) for %d folds: folds without its songs stay empty", where, n_groups, n_splits)
        names = sorted(set(groups.tolist()))
        slots = np.random.default_rng(seed).permutation(n_splits)[: len(names)]
        fold_of = dict(zip(names, slots.tolist()))
        return np.array([fold_of[g] for g in groups.tolist()], dtype=np.int64)
    y, g = quadrants[order], groups[order]
    classes, counts = np.unique(y, return_counts=True)
    for q, c in zip(classes, counts):
        if c < n_splits:
            log.warning("%s: quadrant %d has %d row(s), fewer than %d folds: some folds lack it", where, q, c, n_splits)
    grouped = n_groups < len(g)
    if counts.max() < n_splits:
        # sklearn cannot stratify when every class is smaller than k: split by song groups only.
        log.warning("%s: every quadrant has fewer rows than %d folds: folds are not stratified", where, n_splits)
        splitter, grouped = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed), True
    else:
        splitter = (StratifiedGroupKFold if grouped else StratifiedKFold)(n_splits=n_splits, shuffle=True, random_state=seed)
    folds_sorted = np.full(len(y), -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*least populated class.*", category=UserWarning)
        for fold, (_, test_index) in enumerate(splitter.split(np.zeros(len(y)), y, g if grouped else None)):
            folds_sorted[test_index] = fold
    folds = np.empty_like(folds_sorted)
    folds[order] = folds_sorted
    return folds


def _split_each_dataset(
    folds: np.ndarray, rows: np.ndarray, datasets: np.ndarray, song_ids: np.ndarray,
    quadrants: np.ndarray, groups: np.ndarray, n_splits: int, first_fold: int, seed: int,
) -> None:
    """Split each dataset among `rows` on its own into folds first_fold..first_fold+n_splits-1 (in place)."""
    for name in sorted(set(datasets[rows].tolist())):
        part = rows[datasets[rows] == name]
        folds[part] = first_fold + _split(song_ids[part], quadrants[part], groups[part], n_splits, seed, f"dataset {name}")


def assign_folds(table: pa.Table, k: int = 5, seed: int = 8848, cv: str = "ALL") -> pa.Table:
    """`table` with its `fold` column set (int8), per the scheme `cv` (see the module doc)."""
    k = check_k(k)
    holdout = parse_cv(cv)
    n = table.num_rows
    datasets = np.array(table.column("dataset").to_pylist(), dtype=object)
    song_ids = np.array(table.column("song_id").to_pylist(), dtype=object)
    quadrants = _strata(table)
    groups = np.array(group_keys(table), dtype=object)
    folds = np.full(n, -1, dtype=np.int64)

    if holdout is None:
        _split_each_dataset(folds, np.arange(n), datasets, song_ids, quadrants, groups, k, 0, seed)
    else:
        held = datasets == holdout
        if not held.any():
            raise ValueError(f"cv {cv!r}: dataset {holdout!r} has no rows (datasets: {', '.join(sorted(set(datasets.tolist())))})")
        # A row merged with a held-out song (also_in) and same-song groups touching the held-out
        # dataset are test data too: the held-out set stays complete and never trains.
        held = held | np.array([_also_in(v, holdout) for v in _column(table, "also_in")], dtype=bool)
        test_groups = set(groups[held].tolist())
        test = held | np.isin(groups, list(test_groups))
        folds[test] = 0
        rest = np.flatnonzero(~test)
        if rest.size == 0:
            raise ValueError(f"cv {cv!r}: no rows outside dataset {holdout!r} to train on")
        _split_each_dataset(folds, rest, datasets, song_ids, quadrants, groups, k - 1, 1, seed)

    folds = _unify_groups(folds, groups, song_ids)
    column = pa.array(folds, type=pa.int8())
    index = table.column_names.index("fold") if "fold" in table.column_names else None
    if index is None:
        return table.append_column(pa.field("fold", pa.int8(), nullable=False), column)
    return table.set_column(index, table.schema.field("fold"), column)


def _unify_groups(folds: np.ndarray, groups: np.ndarray, song_ids: np.ndarray) -> np.ndarray:
    """Give every member of a same-song group the fold of its smallest fold (0 = test wins).

    Needed only where a group spans datasets under ``ALL`` (each dataset is split on its own); the
    manifest de-duplicates such songs first, so this rarely moves anything.
    """
    best: dict[str, int] = {}
    for g, f in zip(groups.tolist(), folds.tolist()):
        best[g] = min(f, best.get(g, f))
    unified = np.array([best[g] for g in groups.tolist()], dtype=np.int64)
    moved = int((unified != folds).sum())
    if moved:
        log.info("folds: %d row(s) moved to the fold of a same-song row in another dataset", moved)
    return unified


def split_for(folds: pa.Array | pa.ChunkedArray | np.ndarray | list[int], test_fold: int, k: int) -> np.ndarray:
    """'train' / 'val' / 'test' per row for the run that tests on `test_fold`: val = (test_fold + 1) % k."""
    k = check_k(k)
    if not 0 <= int(test_fold) < k:
        raise ValueError(f"test_fold must be in 0..{k - 1}, got {test_fold!r}")
    if isinstance(folds, (pa.Array, pa.ChunkedArray)):
        folds = folds.to_numpy(zero_copy_only=False) if isinstance(folds, pa.Array) else np.asarray(folds.to_pylist())
    values = np.asarray(folds, dtype=np.int64)
    bad = values[(values < 0) | (values >= k)]
    if bad.size:
        raise ValueError(f"fold values must be in 0..{k - 1} (assign folds first), found {sorted(set(bad.tolist()))[:5]}")
    val_fold = (int(test_fold) + 1) % k
    out = np.full(values.shape, "train", dtype=object)
    out[values == val_fold] = "val"
    out[values == int(test_fold)] = "test"
    return out


def fold_summary(table: pa.Table) -> pa.Table:
    """Rows per (dataset, fold, quadrant): the table a report prints to show the folds' balance."""
    counts = table.select(["dataset", "fold", "quadrant"]).group_by(["dataset", "fold", "quadrant"]).aggregate([("quadrant", "count")])
    counts = counts.rename_columns(["dataset", "fold", "quadrant", "rows"])
    return counts.sort_by([("dataset", "ascending"), ("fold", "ascending"), ("quadrant", "ascending")])


def _strata(table: pa.Table) -> np.ndarray:
    """The class each row is stratified on, as integer codes: its quadrant, or its label (classes datasets)."""
    from labeler.contracts.labels import row_classes  # noqa: PLC0415

    return np.unique(np.array(row_classes(table), dtype=object), return_inverse=True)[1].astype(np.int64)


def format_fold_summary(table: pa.Table) -> str:
    """Rows per dataset and fold, one column per class (Q1..Q4, or a classes dataset's own names)."""
    from labeler.contracts.labels import row_classes  # noqa: PLC0415

    cells: dict[tuple[str, int], Counter] = {}
    for name, fold, cls in zip(table.column("dataset").to_pylist(), table.column("fold").to_pylist(), row_classes(table)):
        cells.setdefault((name, fold), Counter())[cls] += 1
    names = sorted({c for counts in cells.values() for c in counts})
    width = max([7] + [len(c) + 2 for c in names])
    lines = [f"{'dataset':<16}{'fold':>5}" + "".join(f"{c:>{width}}" for c in names) + f"{'rows':>8}"]
    for (name, fold), counts in sorted(cells.items()):
        row = [counts.get(c, 0) for c in names]
        lines.append(f"{name:<16}{fold:>5}" + "".join(f"{c:>{width}}" for c in row) + f"{sum(row):>8}")
    return "\n".join(lines)


def check_folds(table: pa.Table, k: int) -> None:
    """Every fold value in 0..k-1 (what training expects)."""
    folds = table.column("fold")
    low, high = pc.min(folds).as_py(), pc.max(folds).as_py()
    if folds.null_count or low is None or low < 0 or high >= k:
        raise ValueError(f"manifest folds must be 0..{k - 1}, found {low}..{high} ({folds.null_count} null)")
