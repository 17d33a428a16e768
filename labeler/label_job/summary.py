"""What a labelling run did: its summary, and the completion record written from the partition.

Why a module of its own: the completion record (`_SUCCESS.json`, what ETL waits for) is written
only after the committed partition is checked against the catalogue; that check and the figures
people read are the job's end, separate from planning and running it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from labeler.contracts.labels import QUADRANTS
from labeler.contracts.schemas import SchemaError, check_unique_ids
from labeler.inference.label_rows import error_kind
from labeler.io import storage
from labeler.io.lease import Lease
from labeler.label_job.layout import SUCCESS_FILE, OutputLayout, basename, read_partition
from labeler.label_job.plan import ids_in
from labeler.label_job.plot import plot_labels
from labeler.runtime.display import plain_text

log = logging.getLogger(__name__)


@dataclass
class LabelSummary:
    """What one run did; printed at the end and returned to callers (the demo, tests, benchmarks)."""

    catalogue_uri: str
    output_uri: str
    partition_uri: str
    model_id: str
    model_version: str
    run_id: str
    catalogue_rows: int
    already_labelled: int
    written: int = 0  # label rows committed by this run
    labelled: int = 0  # of which labelled (error is null)
    errors: dict[str, int] = field(default_factory=dict)  # this run's row errors by kind
    audio_errors: dict[str, int] = field(default_factory=dict)  # labelled without audio, by kind
    files: list[str] = field(default_factory=list)  # parts committed by this run
    partition_rows: int = 0
    quadrants: dict[str, int] = field(default_factory=dict)  # over the whole partition
    seconds: float = 0.0
    plot: str | None = None
    plot_error: str | None = None  # why the --plot PNG was not drawn (the run still succeeds)
    plan: str = ""  # Resources.describe() of the run ("" when nothing needed labelling)
    resumes: int = 0  # times the run picked up after the cluster failed its plan (label_job.resume)
    replans: int = 0  # times a resume found another cluster and planned again (the plan above is the last)

    @property
    def nothing_new(self) -> bool:
        return self.written == 0

    @property
    def songs_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(nothing_new=self.nothing_new, songs_per_second=round(self.songs_per_second, 3))
        return d

    def to_text(self) -> str:
        lines = [f"labels of model {self.model_id} version {self.model_version} -> {storage.describe(self.partition_uri)}"]
        if self.nothing_new:
            lines.append(f"nothing new: all {self.catalogue_rows} catalogue songs already labelled by this version; wrote nothing")
        else:
            lines.append(
                f"rows: {self.catalogue_rows} in catalogue, {self.already_labelled} already labelled, "
                f"{self.written} written in {len(self.files)} part(s): {self.labelled} labelled, "
                f"{self.written - self.labelled} errors"
            )
            if self.errors:
                lines.append("errors by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(self.errors.items())))
            if self.audio_errors:
                lines.append("labelled without audio, by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(self.audio_errors.items())))
            lines.append(f"time: {self.seconds:.1f} s, {self.songs_per_second:.2f} songs/s")
            if self.plan:
                lines.append(f"plan: {self.plan}")
            if self.resumes:
                lines.append(f"resumed {self.resumes} time(s) after the cluster failed the run's plan (see the log file)"
                             + (f"; planned again {self.replans} time(s) for the nodes left" if self.replans else ""))
        if self.quadrants:
            total = sum(self.quadrants.values())
            dist = ", ".join(f"{q}={self.quadrants.get(q, 0)} ({100 * self.quadrants.get(q, 0) / total:.0f}%)" for q in QUADRANTS)
            lines.append(f"quadrants ({self.partition_rows} rows in version): {dist}")
        if self.plot:
            lines.append(f"plot: {self.plot}")
        elif self.plot_error:
            lines.append(f"plot: not drawn ({self.plot_error}; see the log file)")
        return "\n".join(lines)


def finish(layout: OutputLayout, summary: LabelSummary, ids: pa.Array, started_at: datetime,
            plot: str | None, lease: Lease | None) -> LabelSummary:
    """Check one row per catalogue song, fill the partition-wide figures, write the record last (given a lease).

    Vectorised (pyarrow compute, no Python object per row): at 10 million rows this is the driver's peak
    (bench/bench_driver_scale.py). Idempotent: it only reads the partition and (re)writes the records, so a
    re-run after a driver that died here writes them without labelling anything.
    """
    table = read_partition(layout, ["song_id", "quadrant", "error", *(("arousal_prob", "valence_prob") if plot else ())])
    summary.partition_rows = table.num_rows
    missing = len(ids) - ids_in(ids, table.column("song_id"))
    # Every one of the catalogue's (unique) ids has a row, among exactly as many rows: one row each, no
    # duplicate possible. Only otherwise is the partition counted id by id (a hash of 10M ids: ~1 GB).
    if missing or table.num_rows != len(ids):
        try:
            check_unique_ids(table, where=f"labels {storage.describe(layout.partition_uri)}")
        except SchemaError as exc:
            raise RuntimeError(f"{exc}; not writing {SUCCESS_FILE} (was another run writing the same output?)") from exc
    if missing:
        raise RuntimeError(f"{missing} catalogue song(s) have no label row in {storage.describe(layout.partition_uri)}; "
                           f"not writing {SUCCESS_FILE}")
    quadrants = _value_counts(table.column("quadrant"))
    summary.quadrants = {q: quadrants.get(q, 0) for q in QUADRANTS} if quadrants else {}
    if plot:  # an illustration: a plot that fails is logged, and the run still certifies its labels
        try:
            summary.plot = plot_labels(table, plot, f"{summary.model_id} {summary.model_version}")
        except Exception as exc:  # noqa: BLE001
            log.warning("the labels plot %s could not be drawn: %s", plain_text(plot), plain_text(exc), exc_info=True)
            summary.plot_error = plain_text(f"{type(exc).__name__}: {str(exc).strip()}")[:200]
    if lease is not None:
        lease.check_held()
        partition_errors = Counter(error_kind(e) for e in pc.drop_null(table.column("error")).to_pylist())
        record = {
            "model_id": summary.model_id,
            "model_version": summary.model_version,
            "partition": layout.partition_uri,
            "catalogue": summary.catalogue_uri,
            "catalogue_rows": summary.catalogue_rows,
            "rows": table.num_rows,
            "errors": sum(partition_errors.values()),
            "errors_by_kind": dict(partition_errors),
            "quadrants": summary.quadrants,
            "run_id": summary.run_id,
            "written_this_run": summary.written,
            "resumes_this_run": summary.resumes,
            "plan": summary.plan,
            "replans_this_run": summary.replans,
            "started_at": started_at.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "files": sorted(basename(u) for u in layout.part_uris()),
        }
        text = json.dumps(record, indent=2, sort_keys=True)
        storage.write_text(layout.success_uri, text)
        storage.write_text(layout.root_success_uri, text)
    return summary


def _value_counts(column: pa.ChunkedArray) -> dict:
    counts = pc.value_counts(pc.drop_null(column))
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))
