"""What a labelling run must label: the catalogue checked, and the anti-join against what is done.

Why a module of its own: these are the driver's only passes over the whole catalogue's ids (at ten
million songs they are its cost: bench/bench_driver_scale.py), vectorised with pyarrow compute.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from labeler.contracts.schemas import CATALOGUE, check_unique_ids, validate
from labeler.io import storage


def filter_ids(batch: pa.Table, ids_ref: list, keep: bool) -> pa.Table:
    """Anti-join without a join: keep the rows whose song_id is in the set (keep=True) or not in it."""
    import ray  # noqa: PLC0415

    mask = pc.is_in(batch.column("song_id"), value_set=ray.get(ids_ref[0]))
    return batch.filter(mask if keep else pc.invert(mask))


def todo_filter(ids: pa.Array, done: pa.Array | pa.ChunkedArray) -> tuple[int, pa.Array | None, bool]:
    """(songs already labelled, the smaller id set to ship to the read tasks, keep) for the anti-join.

    The driver matches the catalogue against the partition once; the read tasks then test their rows
    against whichever set is smaller - the songs to label (a re-run after a few new songs) or the
    songs done (a first run) - so no task builds a hash set of millions of ids (bench/bench_driver_scale.py).
    """
    if len(done) == 0:
        return 0, None, False
    labelled = pc.is_in(ids, value_set=done)
    n_done = int(pc.sum(labelled).as_py() or 0)
    if len(ids) - n_done <= n_done:
        return n_done, pc.filter(ids, pc.invert(labelled)), True
    return n_done, pc.filter(ids, labelled), False


def catalogue_columns(schema: pa.Schema) -> list[str]:
    return [c.name for c in CATALOGUE.columns if c.name in schema.names]


def validated_catalogue(catalogue_uri: str) -> tuple[list[str], pa.Array]:
    """Check the contract and the ids before any work; return the columns to read and all song ids."""
    try:
        schema = storage.read_parquet_schema(catalogue_uri)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"catalogue not found: {storage.describe(catalogue_uri)}") from exc
    validate(schema, CATALOGUE, where=storage.describe(catalogue_uri))
    table = storage.read_parquet(catalogue_uri, columns=["song_id"])
    check_unique_ids(table, where=f"catalogue {storage.describe(catalogue_uri)}")
    ids = table.column("song_id").combine_chunks().cast(pa.string())
    del table
    release_memory()
    return catalogue_columns(schema), ids


def release_memory() -> None:
    """Give Arrow's freed buffers back to the system: mimalloc keeps them (about a gigabyte after the
    id checks of a 10M-song catalogue), and the driver's peak is the sum of its passes without this."""
    pa.default_memory_pool().release_unused()


def ids_in(ids: pa.Array, value_set: pa.Array | pa.ChunkedArray) -> int:
    if len(value_set) == 0 or len(ids) == 0:
        return 0
    return int(pc.sum(pc.is_in(ids, value_set=value_set)).as_py() or 0)
