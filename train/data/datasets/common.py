"""What every dataset adapter shares: reading tables and lyrics files, skip accounting.

Each adapter turns one corpus in its own layout into rows of the training manifest. The rules they
must agree on live here, once:

* a file that the dataset lists but that is absent is a *counted skip*, logged once per reason with
  examples, never a crash (`Skips`);
* a layout assumption that does not hold (missing column, unknown label, no header row) is a
  `ValueError` naming the file and the column or value;
* a row ends up with neither audio nor lyrics is dropped and counted: it cannot train anything;
* the song key used to find the same recording in two datasets is one function (`train.data.datasets.names`).

Adapters return a `pyarrow.Table` in the manifest schema with `fold = -1`; their counts travel in the
table's schema metadata (`adapter_stats(table)`), so the function keeps its simple signature.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from labeler.contracts.labels import parse_quadrant, quadrant_from_va
from labeler.contracts.schemas import MANIFEST, check_unique_ids, conform

log = logging.getLogger(__name__)

STATS_KEY = b"mood_labeler.adapter_stats"
NO_FOLD = -1
# How far down a spreadsheet the header row is searched for (MER Bi-modal's sits below a preamble).
HEADER_SCAN_ROWS = 200


# --------------------------------------------------------------------------- skip accounting


@dataclass
class Skips:
    """Counts of rows skipped or inputs missing, by reason, with a few example ids for the log."""

    dataset: str
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, example: object) -> None:
        self.counts[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < 3:
            shown.append(str(example))

    def log(self) -> None:
        """One warning per reason (not one per file: PMEmo alone lists 763 songs without audio here)."""
        for reason, n in sorted(self.counts.items()):
            log.warning("%s: %d %s (e.g. %s)", self.dataset, n, reason, ", ".join(self.examples[reason]))

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


# --------------------------------------------------------------------------- reading tables


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def require_columns(df: pd.DataFrame, columns: Iterable[str], where: str | os.PathLike) -> None:
    """Raise a ValueError naming the file and every missing column (and the ones it has)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{where}: missing column(s) {', '.join(map(repr, missing))}; it has {', '.join(map(repr, map(str, df.columns)))}"
        )


def read_csv(path: Path, encoding: str | None = None, **kwargs: Any) -> pd.DataFrame:
    """A CSV as strings (ids like 'MT0000004637' or '0108' must not turn into numbers).

    Without an explicit encoding it tries UTF-8 and falls back to ISO-8859-1, which decodes any byte:
    the 4Q metadata is ISO-8859-1 while most other files are UTF-8.
    """
    encodings = [encoding] if encoding else ["utf-8-sig", "iso-8859-1"]
    last: Exception | None = None
    for enc in encodings:
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding=enc, **kwargs)
        except UnicodeDecodeError as exc:
            last = exc
    raise ValueError(f"{path}: cannot decode as {' or '.join(encodings)}: {last}")


def read_any_table(path: str | Path) -> pd.DataFrame:
    """A user-given table: CSV or Parquet (local or any URI labeler.io.storage opens), as strings."""
    from labeler.io import storage  # noqa: PLC0415 - keeps this module importable without s3fs set up

    uri = str(path)
    lower = uri.lower()
    if lower.endswith((".parquet", ".pq")) or (not storage.is_remote(uri) and Path(uri).is_dir()):
        df = storage.read_parquet(uri).to_pandas()
        return df.astype(object).where(df.notna(), None)
    if lower.endswith(".csv"):
        if storage.is_remote(uri):
            with storage.open_file(uri) as f:
                return pd.read_csv(f, dtype=str, keep_default_na=False)
        return read_csv(Path(uri))
    raise ValueError(f"{uri}: unsupported table format (expected .csv or .parquet)")


def read_sheet_rows(path: Path) -> list[list[object]]:
    """All cells of the first sheet of a .xls (xlrd), .xlsx (openpyxl) or .csv file, row by row.

    Rows are returned raw (no header inference) because some corpora put a preamble above the header.
    """
    suffix = path.suffix.lower()
    if suffix == ".xls":
        import xlrd  # noqa: PLC0415 - only the MER Bi-modal adapter needs it

        sheet = xlrd.open_workbook(str(path)).sheet_by_index(0)
        return [sheet.row_values(i) for i in range(sheet.nrows)]
    if suffix in (".xlsx", ".xlsm"):
        import openpyxl  # noqa: PLC0415

        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            return [list(row) for row in book.worksheets[0].iter_rows(values_only=True)]
        finally:
            book.close()
    if suffix == ".csv":
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("iso-8859-1")
        return [list(row) for row in csv.reader(io.StringIO(text))]
    raise ValueError(f"{path}: unsupported sheet format {suffix!r} (expected .xls, .xlsx or .csv)")


def _cell_text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # xlrd reads every number as float: 1.0 -> "1"
    return str(value).strip()


def table_below_header(rows: Sequence[Sequence[object]], required: Sequence[str], where: Path) -> pd.DataFrame:
    """The table whose header row is the first row holding all `required` names (case-insensitive).

    The header's position is found, never assumed: MER Bi-modal's sheets carry a preamble of varying
    length above it. Cells become stripped strings; fully empty rows are dropped.
    """
    wanted = {name.strip().lower() for name in required}
    for index, row in enumerate(rows[:HEADER_SCAN_ROWS]):
        names = [_cell_text(c) for c in row]
        if wanted <= {n.lower() for n in names}:
            header = names
            body = [[_cell_text(c) for c in r] for r in rows[index + 1:]]
            width = len(header)
            body = [(r + [""] * width)[:width] for r in body if any(r)]
            df = pd.DataFrame(body, columns=header, dtype=object)
            # Accept the required names in any case, under their canonical spelling.
            canonical = {n.strip().lower(): n for n in required}
            return df.rename(columns={h: canonical[h.lower()] for h in header if h.lower() in canonical})
    raise ValueError(
        f"{where}: no header row with column(s) {', '.join(map(repr, required))} in its first {HEADER_SCAN_ROWS} rows"
    )


def find_table_file(folder: Path, stem: str) -> Path:
    """`folder/stem` with whichever of .xls, .xlsx, .csv exists (in that order of preference)."""
    for suffix in (".xls", ".xlsx", ".csv"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder}: none of {stem}.xls, {stem}.xlsx, {stem}.csv")


def parse_quadrant_at(value: object, where: str) -> int:
    """parse_quadrant, with the file and row named in the error."""
    try:
        return parse_quadrant(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def parse_float_at(value: object, where: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: not a number: {value!r}") from None
    if math.isnan(number):
        raise ValueError(f"{where}: not a number: {value!r}")
    return number


# --------------------------------------------------------------------------- lyrics files


def decode_text(data: bytes | str | None) -> str | None:
    """Raw lyrics to str (no cleaning: that happens at tokenisation, with the same rules as labelling)."""
    from labeler.lyrics.text import decode_lyrics  # noqa: PLC0415 - one decoder for training and labelling

    text = decode_lyrics(data)
    return text if text and text.strip() else None


def read_lyrics_file(path: Path) -> str | None:
    """The lyrics text of one file: plain text/LRC as is; Genius JSON reduced to its `song.lyrics`.

    Returns None for an empty file (or a JSON without lyrics); raises ValueError for a JSON that
    cannot be parsed, naming the file.
    """
    data = path.read_bytes()
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from None
        song = doc.get("song") if isinstance(doc, dict) else None
        text = song.get("lyrics") if isinstance(song, dict) else None
        if text is None and isinstance(doc, dict):
            text = doc.get("lyrics")
        return decode_text(text) if isinstance(text, str) else None
    return decode_text(data)


def index_files(folder: Path | None, suffixes: Iterable[str] | None = None) -> dict[str, Path]:
    """Files under `folder` (recursively) by stem; with `suffixes`, only those extensions."""
    if folder is None or not folder.is_dir():
        return {}
    wanted = {s.lower() for s in suffixes} if suffixes else None
    found: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and (wanted is None or p.suffix.lower() in wanted):
            found.setdefault(p.stem, p)
    return found


# --------------------------------------------------------------------------- building the table


def local_file(path: Path, skips: Skips, reason: str, example: object) -> str | None:
    """The absolute path of `path` when it exists; otherwise a counted skip and None."""
    if path.is_file():
        return str(path.resolve())
    skips.add(reason, example)
    return None


def build_table(
    dataset: str,
    rows: list[dict[str, Any]],
    skips: Skips,
    require_inputs: bool = True,
    extra_stats: dict[str, Any] | None = None,
) -> pa.Table:
    """Rows (dicts with manifest column names) -> a manifest table with fold = -1 and stats metadata.

    Fills `quadrant` from valence/arousal where the dataset gives no label, drops (and counts) rows
    with neither audio nor lyrics when `require_inputs`, and checks song ids are unique. A row with a
    `label` (a `classes` dataset: its own taxonomy) keeps `quadrant` null.
    """
    kept: list[dict[str, Any]] = []
    for row in rows:
        if row.get("label") is not None:
            row["quadrant"] = None
        elif row.get("quadrant") is None:
            if row.get("valence") is None or row.get("arousal") is None:
                raise ValueError(f"{dataset}: song {row.get('source_id')!r} has neither a quadrant nor valence+arousal")
            row["quadrant"] = quadrant_from_va(row["valence"], row["arousal"])
        if require_inputs and not row.get("audio_uri") and not row.get("lyrics"):
            skips.add("rows with neither audio nor lyrics (dropped)", row.get("source_id"))
            continue
        row["song_id"] = f"{dataset}:{row['source_id']}"
        row["dataset"] = dataset
        row["fold"] = NO_FOLD
        kept.append(row)
    columns = MANIFEST.schema.names
    data = {name: [r.get(name) for r in kept] for name in columns}
    table = pa.Table.from_pydict(data, schema=MANIFEST.schema.with_metadata(None))
    table = conform(table, MANIFEST)
    check_unique_ids(table, where=dataset)
    skips.log()
    stats = {
        "dataset": dataset,
        "rows": table.num_rows,
        "with_audio": sum(1 for r in kept if r.get("audio_uri")),
        "with_lyrics": sum(1 for r in kept if r.get("lyrics")),
        "skipped": skips.as_dict(),
        **(extra_stats or {}),
    }
    log.info("%s: %d rows (%d with audio, %d with lyrics)", dataset, stats["rows"], stats["with_audio"], stats["with_lyrics"])
    return table.replace_schema_metadata({STATS_KEY: json.dumps(stats).encode()})


def adapter_stats(table: pa.Table) -> dict[str, Any]:
    """The counts an adapter recorded (rows, with_audio, with_lyrics, skipped, match_rate...)."""
    meta = table.schema.metadata or {}
    return json.loads(meta[STATS_KEY]) if STATS_KEY in meta else {}


def blank(value: object) -> bool:
    """Empty cell: None, NaN or whitespace-only text."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def text_or_none(value: object) -> str | None:
    return None if blank(value) else str(value).strip()
