"""The training manifest: the union of the dataset adapters' rows, one row per song, with folds.

`prepare` runs each adapter, concatenates their rows in the manifest schema, merges the same song
found in several datasets into one row, assigns the cross-validation folds once (`train.data.folds`) and
returns the table with a report. `labeler prepare` (jobs/commands/prepare.py) is its command line; it writes Parquet locally or
to S3.

Same song across datasets: rows whose normalised artist + title match (`names.song_key`) are one
song. The row of the dataset listed *first* is kept, with its label; it takes the duplicate's audio
(with its chorus times) or lyrics when it has none, and lists the duplicates' song ids in `also_in`.
Valence/arousal are never merged: each dataset rates on its own scale. Duplicates, and those whose
quadrants disagree, are in the report.

Label kinds: a quadrant dataset labels every row with `quadrant`; a `classes` dataset (its own
taxonomy, e.g. mirex's clusters) with `label`, quadrant null. One manifest holds one kind: a model
trains on one set of classes, so mixing them is an error (`label_kind`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from labeler.contracts.labels import QUADRANTS, row_classes
from labeler.contracts.schemas import MANIFEST, check_unique_ids, conform, validate
from labeler.io import storage
from labeler.runtime.display import check_plain
from train.data.datasets.bimodal import prepare_bimodal
from train.data.datasets.common import adapter_stats
from train.data.datasets.deezer import prepare_deezer
from train.data.datasets.fourq import prepare_4q
from train.data.datasets.generic import prepare_generic
from train.data.datasets.mirex import prepare_mirex
from train.data.datasets.moodylyrics4q import prepare_moodylyrics4q
from train.data.datasets.names import song_key
from train.data.datasets.pmemo import prepare_pmemo
from train.data.datasets.synth import prepare_synth
from train.data.folds import assign_folds, check_k, format_fold_summary, parse_cv

log = logging.getLogger(__name__)

ADAPTERS: dict[str, Callable[..., pa.Table]] = {
    "4q": prepare_4q,
    "pmemo": prepare_pmemo,
    "bimodal": prepare_bimodal,
    "deezer": prepare_deezer,
    "moodylyrics4q": prepare_moodylyrics4q,
    "generic": prepare_generic,
    "mirex": prepare_mirex,
    "synth": prepare_synth,
}

Source = tuple[str, str, dict[str, Any]]


@dataclass
class PrepareReport:
    """What `prepare` did: per-dataset adapter stats, duplicates merged, rows per dataset and quadrant."""

    k: int
    cv: str
    seed: int
    rows: int = 0
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    fold_table: str = ""
    seconds: float = 0.0

    @property
    def label_conflicts(self) -> int:
        return sum(1 for d in self.duplicates if not d["same_quadrant"])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label_conflicts": self.label_conflicts}

    def format(self) -> str:
        """The printed summary: rows, rows with audio, rows with lyrics per dataset and quadrant."""
        lines = [f"{'dataset':<16}{'class':<12}{'rows':>8}{'audio':>8}{'lyrics':>8}"]
        for r in self.summary:
            lines.append(f"{r['dataset']:<16}{r['quadrant']:<12}{r['rows']:>8}{r['with_audio']:>8}{r['with_lyrics']:>8}")
        for name, stats in self.datasets.items():
            skipped = ", ".join(f"{n} {reason}" for reason, n in stats.get("skipped", {}).items())
            extra = f"; join match rate {stats['match_rate']:.1%}" if "match_rate" in stats else ""
            if skipped or extra:
                lines.append(f"{name}: {skipped or 'nothing skipped'}{extra}")
        lines.append(
            f"{len(self.duplicates)} duplicate song(s) merged across datasets"
            f" ({self.label_conflicts} with different quadrants)"
        )
        for d in self.duplicates[:10]:
            lines.append(f"  {d['kept']} <- {d['merged']} ({d['key']})")
        lines.append(f"folds (k={self.k}, cv={self.cv}, seed={self.seed}):")
        lines.append(self.fold_table)
        lines.append(f"{self.rows} rows in {self.seconds:.1f} s")
        return "\n".join(lines)


def _merge_duplicates(table: pa.Table) -> tuple[pa.Table, list[dict[str, Any]]]:
    """One row per song key; the first row wins and takes missing audio/lyrics from the others."""
    rows = table.to_pylist()
    kept: list[dict[str, Any]] = []
    first_by_key: dict[str, dict[str, Any]] = {}
    duplicates: list[dict[str, Any]] = []
    for row in rows:
        key = song_key(row.get("artist"), row.get("title"))
        first = first_by_key.get(key) if key else None
        if first is None:
            if key:
                first_by_key[key] = row
            kept.append(row)
            continue
        if not first.get("audio_uri") and row.get("audio_uri"):
            first["audio_uri"] = row["audio_uri"]
            first["chorus_start_s"], first["chorus_end_s"] = row.get("chorus_start_s"), row.get("chorus_end_s")
        if not first.get("lyrics") and row.get("lyrics"):
            first["lyrics"] = row["lyrics"]
        first["also_in"] = ",".join(filter(None, [first.get("also_in"), row["song_id"]]))
        duplicates.append(
            {"key": key, "kept": first["song_id"], "merged": row["song_id"], "same_quadrant": first["quadrant"] == row["quadrant"]}
        )
    merged = pa.Table.from_pylist(kept, schema=table.schema) if kept else table.slice(0, 0)
    return merged, duplicates


def label_kind(table: pa.Table, where: str = "manifest") -> tuple[str, list[str]]:
    """('quadrant', Q1..Q4) or ('classes', sorted class names) of a manifest; ValueError when mixed.

    Every row must carry exactly one kind of label: a quadrant, or (a classes dataset) a `label`.
    Class names must be plain text (labeler.runtime.display.check_plain: no control characters), as a bundle's are.
    """
    quadrants = table.column("quadrant").to_pylist()
    labels = table.column("label").to_pylist() if "label" in table.column_names else [None] * table.num_rows
    datasets = table.column("dataset").to_pylist()
    by_kind: dict[str, set[str]] = {"quadrant": set(), "classes": set()}
    for ds, q, lab in zip(datasets, quadrants, labels):
        if (q is None) == (lab is None):
            raise ValueError(f"{where}: a {ds} row has {'both a quadrant and a label' if q is not None else 'neither a quadrant nor a label'}")
        by_kind["quadrant" if q is not None else "classes"].add(ds)
    if by_kind["quadrant"] and by_kind["classes"]:
        raise ValueError(
            f"{where} mixes quadrant datasets ({', '.join(sorted(by_kind['quadrant']))}) with classes datasets "
            f"({', '.join(sorted(by_kind['classes']))}): a model trains on one set of classes; prepare them separately")
    if by_kind["classes"]:
        classes = sorted({lab for lab in labels if lab is not None})
        for name in classes:  # they become a bundle's class names: plain text, or no work starts
            check_plain(name, f"{where}: class name")
        return "classes", classes
    return "quadrant", list(QUADRANTS)


def _summary(table: pa.Table) -> list[dict[str, Any]]:
    counts: dict[tuple[str, str], list[int]] = {}
    for ds, name, audio, text in zip(
        table.column("dataset").to_pylist(), row_classes(table),
        table.column("audio_uri").to_pylist(), table.column("lyrics").to_pylist(),
    ):
        c = counts.setdefault((ds, name), [0, 0, 0])
        c[0] += 1
        c[1] += bool(audio)
        c[2] += bool(text)
    return [
        {"dataset": ds, "quadrant": name, "rows": c[0], "with_audio": c[1], "with_lyrics": c[2]}
        for (ds, name), c in sorted(counts.items())
    ]


def prepare(sources: list[Source], k: int = 5, cv: str = "ALL", seed: int = 8848) -> tuple[pa.Table, PrepareReport]:
    """Run the adapters named in `sources` ((name, path, options) each) and build the manifest."""
    started = time.perf_counter()
    k = check_k(k)
    holdout = parse_cv(cv)
    if not sources:
        raise ValueError("no dataset given: pass at least one NAME=PATH")
    report = PrepareReport(k=k, cv=cv, seed=seed)
    tables = []
    for name, path, options in sources:
        if name not in ADAPTERS:
            raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(ADAPTERS)}")
        log.info("preparing %s from %s", name, storage.describe(str(path)))
        table = ADAPTERS[name](path, **options)
        stats = adapter_stats(table)
        label = stats.get("dataset", name)
        if label in report.datasets:
            raise ValueError(f"dataset {label!r} given twice (for a second generic table, set its dataset= option)")
        report.datasets[label] = stats
        tables.append(conform(table, MANIFEST))
    union = pa.concat_tables(tables)
    label_kind(union)  # one kind of label per manifest, before any work on it
    if holdout is not None and holdout not in report.datasets:
        raise ValueError(f"cv {cv!r}: dataset {holdout!r} is not among those prepared ({', '.join(report.datasets)})")
    check_unique_ids(union, where="manifest")
    union, report.duplicates = _merge_duplicates(union)
    if report.duplicates:
        log.info("%d duplicate song(s) merged across datasets", len(report.duplicates))
    manifest = assign_folds(union, k=k, seed=seed, cv=cv)
    manifest = conform(manifest, MANIFEST, keep_extra=False)
    validate(manifest.schema, MANIFEST, where="(prepared)")
    report.rows = manifest.num_rows
    report.summary = _summary(manifest)
    report.fold_table = format_fold_summary(manifest)
    report.seconds = time.perf_counter() - started
    return manifest, report
