"""Where a labelling run writes: the output layout, staging, part commits and their fencing.

Output layout (readable as one dataset by pandas, pyarrow, DuckDB and Spark)::

    <output>/version=<model_version>/part-<hash>.parquet   committed label parts of one model version
    <output>/version=<model_version>/_SUCCESS.json         completion record of that version (written last)
    <output>/_SUCCESS.json                                 copy of the record of the latest completed run
    <output>/_staging/version=<model_version>/<run_id>/    parts being written (ignored by readers: '_' prefix)
    <output>/_lease/version=<model_version>/lease-*.json   who is writing this version now (labeler.io.lease)

Why this layout:

- Every model version labels the whole catalogue into its own Hive-style partition, side by side, so
  a new model can be compared with, or rolled back to, the previous one. The partition key is named
  `version` (not `model_version`) because each part file also carries the full LABELS contract,
  `model_version` included; a partition key with the same name as a file column makes pyarrow
  refuse to merge the schemas.
- Parts are committed in chunks: a worker writes a part into the run's staging directory and renames
  it into the partition (atomic locally; on S3 an object appears whole or not at all). A part's name
  is a hash of its song ids, so a retried task overwrites its own part instead of duplicating rows.
  A killed run keeps its committed parts; its staging directory stays, ignored by readers (a run
  deletes nothing but its own staging folder, so no path it did not make can be removed).
- A re-run anti-joins the catalogue against the song ids already committed in the partition and
  labels only the rest (new songs, or what a killed run did not finish). An unchanged re-run writes
  nothing. Before committing anything the run removes the version's `_SUCCESS.json`; it writes it
  again, last, after checking that the partition holds exactly one row per catalogue song. ETL waits
  for that file.
- One run per output and model version at a time: a run takes the version's lease (labeler.io.lease)
  before it reads what is done or touches any file, and a second run fails at once with
  LeaseHeldError naming the holder. Every part commit checks the lease generation (fencing), so a
  run whose lease was lost (storage outage, a frozen driver) stops before committing more. A killed run's lease expires after `lease_seconds` (default 120),
  after which re-running resumes. Runs of different model versions into one output run side by side.
- Songs removed from the catalogue keep their old labels in the partition (they are harmless to a
  join on song_id); the completion record counts the partition's rows and the catalogue's.

Optional columns (labeler.contracts.schemas.labels_contract): `--embeddings` adds `embedding` (the model's
penultimate vector, L2-normalised), `--timeline SECONDS` adds `timeline` (labeler.inference.timeline: windows
of the whole track, decoded in the Predictor actors, which then need `audio_uri`) and `--tags` adds
`tags` (a MusiCNN bundle's 50 tag probabilities, labeler.musicnn.tags). A partition holds one set of
them in every part (check_same_optional_columns).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from labeler.bundle.info import BundleInfo
from labeler.bundle.verified import check_version
from labeler.contracts.schemas import LABELS
from labeler.inference.label_rows import error_kind, label_rows
from labeler.io import storage
from labeler.io.lease import LEASE_DIR, Fence
from labeler.label_job.config import LabelJobConfig

log = logging.getLogger(__name__)

SUCCESS_FILE = "_SUCCESS.json"
STAGING_DIR = "_staging"
PARTITION_KEY = "version"


RUN_ID_PATTERN = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{8}$")


def new_run_id(started_at: datetime) -> str:
    return f"{started_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class OutputLayout:
    """Where one model version's labels, staging files and completion records live.

    Every path is built from the output URI and checked parts only: a model_version of 16 hex
    digits (recomputed from the verified bundle) and run ids of the form new_run_id makes.
    """

    output_uri: str
    model_version: str

    def __post_init__(self) -> None:
        check_version(self.model_version)

    @property
    def partition_uri(self) -> str:
        return storage.join(self.output_uri, f"{PARTITION_KEY}={self.model_version}")

    @property
    def success_uri(self) -> str:
        return storage.join(self.partition_uri, SUCCESS_FILE)

    @property
    def root_success_uri(self) -> str:
        return storage.join(self.output_uri, SUCCESS_FILE)

    @property
    def staging_root(self) -> str:
        """Per version, so that runs of two model versions into one output never touch each other's files."""
        return storage.join(self.output_uri, STAGING_DIR, f"{PARTITION_KEY}={self.model_version}")

    @property
    def lease_dir(self) -> str:
        return storage.join(self.output_uri, LEASE_DIR, f"{PARTITION_KEY}={self.model_version}")

    def staging_uri(self, run_id: str) -> str:
        """This run's staging folder: the only place a run ever deletes a folder."""
        if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id):
            raise ValueError(f"run id {str(run_id)[:40]!r} is not of the form {RUN_ID_PATTERN.pattern}")
        return storage.join(self.staging_root, run_id)

    def part_uris(self) -> list[str]:
        return [u for u in storage.listdir(self.partition_uri) if basename(u).startswith("part-") and u.endswith(".parquet")]


def basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def part_name(song_ids: list[str]) -> str:
    """A part's name from its content, so that a retried task rewrites the same file."""
    digest = hashlib.sha256("\n".join(sorted(song_ids)).encode("utf-8")).hexdigest()[:20]
    return f"part-{digest}.parquet"


def read_partition(layout: OutputLayout, columns: list[str]) -> pa.Table:
    """The committed label rows of one version (only `columns`); empty when there are none."""
    if not layout.part_uris():
        return pa.table({c: pa.array([], LABELS.schema.field(c).type) for c in columns})
    return storage.read_parquet(layout.partition_uri, columns=columns)


def counts_json(values: list[str | None]) -> str:
    return json.dumps(dict(Counter(v for v in values if v is not None)), sort_keys=True)


def commit_part(batch: dict[str, np.ndarray], info: BundleInfo, staging_uri: str, partition_uri: str,
                fence: Fence | None = None) -> pa.Table:
    """Write one chunk of label rows into staging, rename it into the partition, return its record.

    With a `fence` (the run's lease generation) the commit first checks that the run still holds
    the lease, and raises LeaseLostError (writing nothing into the partition) when it does not.
    """
    table = label_rows(batch, info, datetime.now(UTC))
    ids = table.column("song_id").to_pylist()
    name = part_name(ids)
    staged, final = storage.join(staging_uri, name), storage.join(partition_uri, name)
    storage.write_parquet(table, staged)
    if fence is not None:
        fence.check()
    storage.makedirs(partition_uri)
    storage.move(staged, final)
    return part_record(final, table)


def part_record(uri: str, table: pa.Table) -> pa.Table:
    """The commit record of the part at `uri` holding `table`'s label rows (what the driver adds up)."""
    errors = table.column("error").to_pylist()
    return pa.table({
        "file": [uri],
        "rows": [table.num_rows],
        "labelled": [sum(e is None for e in errors)],
        "errors": [counts_json([error_kind(e) for e in errors])],
        "audio_errors": [counts_json([error_kind(e) for e in table.column("audio_error").to_pylist()])],
    })


def read_part_record(uri: str) -> pa.Table:
    """The commit record of a part already in the partition, from its rows (a record the driver never received)."""
    return part_record(uri, storage.read_parquet(uri, columns=["error", "audio_error"]))


def check_same_optional_columns(layout: OutputLayout, config: LabelJobConfig) -> None:
    """Refuse to add parts with other optional columns than the version's committed parts have.

    Readers take one schema for a partition; parts with and without `embedding` would make the
    column silently vanish (or appear null) depending on which part a reader looks at first.
    """
    parts = layout.part_uris()
    if not parts:
        return
    names = set(storage.read_parquet_schema(parts[0]).names)
    have = {"embeddings": "embedding" in names, "timeline": "timeline" in names, "tags": "tags" in names}
    want = {"embeddings": config.embeddings, "timeline": config.timeline_seconds is not None, "tags": config.tags}
    if have != want:
        def flags(d: dict) -> str:
            return " ".join(f"--{k}" for k, v in d.items() if v) or "none of --embeddings, --timeline, --tags"

        raise ValueError(f"{storage.describe(layout.partition_uri)} was labelled with {flags(have)}; this run asks for "
                         f"{flags(want)}: use the same options, or label into another --output")


def report_stale_staging(layout: OutputLayout) -> None:
    """Name the staging folders killed runs left behind (never committed, ignored by readers).

    They are not deleted: a run deletes nothing but its own staging folder, so no path it did not
    make itself can ever be removed. Delete them by hand when no run is writing.
    """
    stale = storage.listdir(layout.staging_root)
    if stale:
        log.warning("%d staging folder(s) of earlier runs under %s hold uncommitted parts (safe to delete "
                    "while no run writes this version)", len(stale), storage.describe(layout.staging_root))
