"""`labeler featurise`: a catalogue's chorus audio -> log-mel Parquet, with Ray Data.

`featurise_catalogue` is the library call (the training feature cache reuses it with its own
config); its command line is `jobs/commands/featurise.py`. The catalogue is validated against the
contract before any work starts, read with Ray Data from local disk or S3, featurised by the shared
`Featurizer` on CPU workers and written as Parquet, one row per catalogue row: a track that cannot
be featurised keeps its row with `audio_error` set.

log_mel is written as Ray's tensor extension column (float16, shape (n_frames, n_mels) per row), so
`ray.data.read_parquet` gives back (n_frames, n_mels) arrays; pyarrow and pandas see it as a
fixed-size list column.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable

from labeler.audio import DEFAULT_STFT_BACKEND, STFT_BACKENDS, FeaturizerConfig
from labeler.contracts import schemas
from labeler.contracts.inputs import FEATURISER_INPUTS
from labeler.io import storage
from labeler.runtime.isolate import DEFAULT_RETRIES, IsolatedFeaturizer

log = logging.getLogger(__name__)


def error_counts(errors: Iterable[str | None]) -> dict[str, int]:
    """Counts of row errors by kind (the text before the first colon)."""
    return dict(Counter(e.split(":", 1)[0] for e in errors if e))


def featurise_catalogue(
    catalogue_uri: str,
    output_uri: str,
    config: FeaturizerConfig,
    *,
    batch_size: int = 8,
    concurrency: int | tuple[int, int] | None = None,
    keep_columns: Iterable[str] = (),
    overwrite: bool = False,
    backend: str = DEFAULT_STFT_BACKEND,
    address: str | None = None,
) -> dict:
    """Featurise every catalogue row's chorus into Parquet at `output_uri`; returns a summary dict.

    Raises SchemaError (a ValueError) naming missing or mistyped columns before any work, and
    ValueError when `output_uri` already holds files and `overwrite` is False (appending would
    duplicate rows). `keep_columns` are extra catalogue columns passed through (e.g. lyrics).
    `concurrency` is the Featurizer actor pool size (default: 1 up to the cluster's CPUs).
    Summary keys: rows, ok, errors (by kind), seconds, rows_per_s, output, fingerprint.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size} must be > 0")
    if backend not in STFT_BACKENDS:
        raise ValueError(f"unknown STFT backend {backend!r}; expected one of {STFT_BACKENDS}")
    catalogue_uri = storage.absolute_uri(catalogue_uri)
    output_uri = storage.absolute_uri(output_uri)
    if not storage.exists(catalogue_uri):
        raise FileNotFoundError(f"catalogue {storage.describe(catalogue_uri)} does not exist")
    schema = storage.read_parquet_schema(catalogue_uri)
    schemas.validate(schema, schemas.CATALOGUE, where=storage.describe(catalogue_uri))
    keep = list(dict.fromkeys(keep_columns))
    absent = [c for c in keep if c not in schema.names]
    if absent:
        raise schemas.SchemaError(f"keep_columns not in the catalogue {storage.describe(catalogue_uri)}: {', '.join(absent)}")
    # The columns the featuriser reads; everything else in the catalogue is dropped unless asked for.
    columns = [c for c in FEATURISER_INPUTS if c in schema.names] + [c for c in keep if c not in FEATURISER_INPUTS]
    if storage.listdir(output_uri):
        if not overwrite:
            raise ValueError(f"output {storage.describe(output_uri)} already holds files; pass overwrite=True (--overwrite) to replace them")
        storage.remove(output_uri, recursive=True)

    import ray  # noqa: PLC0415 - Ray loads only when a job runs

    from labeler.runtime.session import ensure_ray  # noqa: PLC0415

    ensure_ray(address)  # after the checks above: a bad input fails without starting Ray

    started = time.perf_counter()
    in_fs, in_path = storage.filesystem(catalogue_uri)
    out_fs, out_path = storage.filesystem(output_uri)
    dataset = ray.data.read_parquet(in_path, filesystem=in_fs, ray_remote_args={"max_retries": DEFAULT_RETRIES}).select_columns(columns)
    if concurrency is None:
        concurrency = (1, max(1, int(ray.cluster_resources().get("CPU", 1))))
    low, high = concurrency if isinstance(concurrency, tuple) else (concurrency, concurrency)
    # Crash-isolated (labeler.runtime.isolate): a track that kills the featuriser is a `worker_crash` row; an actor
    # that dies otherwise is restarted at most DEFAULT_RETRIES times (Ray Data's default is forever).
    featurised = dataset.map_batches(
        IsolatedFeaturizer,
        fn_constructor_kwargs={"config": config.to_dict(), "backend": backend},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high),  # `concurrency=` is deprecated since Ray 2.51
        num_cpus=1,
        max_restarts=DEFAULT_RETRIES,
        max_task_retries=DEFAULT_RETRIES,
    )
    storage.makedirs(output_uri)
    featurised.write_parquet(out_path, filesystem=out_fs)
    seconds = time.perf_counter() - started

    # The summary reads back only the small error column: it also proves the output is readable.
    written = storage.read_parquet(output_uri, columns=["audio_error"]).column("audio_error").to_pylist()
    errors = error_counts(written)
    rows = len(written)
    summary = {
        "rows": rows,
        "ok": rows - sum(errors.values()),
        "errors": errors,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds, 3) if seconds > 0 else None,
        "output": storage.describe(output_uri),
        "fingerprint": config.fingerprint(),
    }
    log.info("featurised %s", summary)
    return summary


def format_summary(summary: dict) -> str:
    errors = ", ".join(f"{k}={v}" for k, v in sorted(summary["errors"].items())) or "none"
    return (
        f"featurised {summary['rows']} rows ({summary['ok']} ok) in {summary['seconds']:.1f} s "
        f"({summary['rows_per_s']} rows/s) -> {summary['output']}\n"
        f"errors by kind: {errors}\nfeaturizer fingerprint: {summary['fingerprint']}"
    )
