"""The data contracts: catalogue (input), training manifest, labels (output).

They are the interface the recommender's ETL depends on (see README "Data contracts"), so each is
written once here as an Arrow schema, and `validate` checks a table or a Parquet schema against one
before any work starts, naming every missing or mistyped column in a single error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labeler.contracts.labels import QUADRANTS
from labeler.runtime.display import markdown_table


@dataclass(frozen=True)
class Column:
    """One column of a contract: its Arrow type, whether it must be present, whether nulls are allowed."""

    name: str
    type: pa.DataType
    required: bool = True
    nullable: bool = True
    doc: str = ""


@dataclass(frozen=True)
class Contract:
    name: str
    columns: tuple[Column, ...]

    @property
    def schema(self) -> pa.Schema:
        """The full Arrow schema (required and optional columns), in contract order."""
        return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns])

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


class SchemaError(ValueError):
    """A table does not follow a contract; the message names every offending column."""


CATALOGUE = Contract(
    "catalogue",
    (
        Column("song_id", pa.string(), nullable=False, doc="unique track id"),
        Column("audio_uri", pa.string(), doc="local path, file:// or s3://; may be null"),
        Column("lyrics", pa.string(), doc="plain or LRC text; null or empty for instrumentals"),
        Column("chorus_start_s", pa.float64(), required=False, doc="chorus start; found automatically when absent"),
        Column("chorus_end_s", pa.float64(), required=False, doc="chorus end"),
    ),
)

MANIFEST = Contract(
    "manifest",
    (
        Column("song_id", pa.string(), nullable=False, doc="unique across datasets, e.g. 'pmemo:1001'"),
        Column("dataset", pa.string(), nullable=False, doc="adapter name: 4q, pmemo, bimodal, deezer, moodylyrics4q, mirex, generic, synth"),
        Column("audio_uri", pa.string()),
        Column("lyrics", pa.string()),
        Column("valence", pa.float64(), doc="rescaled so that 0 is the dataset's midpoint; null where not given"),
        Column("arousal", pa.float64(), doc="rescaled so that 0 is the dataset's midpoint; null where not given"),
        Column("quadrant", pa.int8(), doc="1..4; null only in a `classes` dataset (its class is `label`)"),
        Column("fold", pa.int8(), nullable=False, doc="0..K-1 (see README: folds)"),
        Column("chorus_start_s", pa.float64(), required=False),
        Column("chorus_end_s", pa.float64(), required=False),
        Column("artist", pa.string(), required=False, doc="provenance"),
        Column("title", pa.string(), required=False, doc="provenance"),
        Column("source_id", pa.string(), required=False, doc="the id inside its dataset"),
        Column("also_in", pa.string(), required=False, doc="other datasets holding the same song"),
        Column("label", pa.string(), required=False,
               doc="class name in a `classes` dataset (own taxonomy, e.g. 'Cluster 3'); null in quadrant datasets"),
    ),
)

# All class probabilities in one column: a plain Arrow map (Parquet MAP), which pandas reads as a list of
# (class, probability) tuples, DuckDB as a MAP (`class_probs['Q1']`) and Spark as map<string,float>.
CLASS_PROBS_TYPE = pa.map_(pa.string(), pa.float32())

_PROB_COLUMNS = tuple(
    Column(f"prob_{q.lower()}", pa.float32(), doc=f"P({q})") for q in QUADRANTS
)

LABELS = Contract(
    "labels",
    (
        Column("song_id", pa.string(), nullable=False),
        Column("quadrant", pa.string(), doc="Q1..Q4; null when error is set, and in mode `classes`"),
        *_PROB_COLUMNS,
        Column("arousal", pa.string(), doc="'high' or 'low'"),
        Column("arousal_prob", pa.float32(), doc="P(arousal high)"),
        Column("valence", pa.string(), doc="'high' or 'low'"),
        Column("valence_prob", pa.float32(), doc="P(valence high)"),
        Column("arousal_score", pa.float32(), doc="continuous arousal (0 = midpoint) where the model regresses it"),
        Column("valence_score", pa.float32(), doc="continuous valence (0 = midpoint) where the model regresses it"),
        Column("label", pa.string(), doc="the top class in the bundle's own classes (Q1..Q4, low/high, or e.g. 'Cluster 3')"),
        Column("label_prob", pa.float32(), doc="P(label)"),
        Column("class_probs", CLASS_PROBS_TYPE,
               doc="every class's probability, map class -> P (pandas: list of (class, P) tuples; DuckDB/Spark: MAP)"),
        Column("modalities", pa.string(), doc="'audio+lyrics', 'audio', 'lyrics', or null with error"),
        Column("audio_error", pa.string(), doc="why the audio was not used, when it was not (e.g. 'missing_file: ...')"),
        Column("model_id", pa.string(), nullable=False),
        Column("model_version", pa.string(), nullable=False),
        Column("labelled_at", pa.timestamp("us", tz="UTC"), nullable=False),
        Column("error", pa.string(), doc="null when labelled; '<kind>: <reason>' otherwise"),
        Column("ambiguous", pa.bool_(), required=False,
               doc="top probability below the bundle's ambiguous_threshold (chosen on the validation fold); "
                   "null with error, or for a bundle without a threshold"),
    ),
)

# One window of a `timeline`: the same fields for every mode. `label` is the window's top class
# (Q1..Q4 in 4Q, 'low'/'high' in Ar/Va, the catalogue's own class in classes mode); the axis
# probabilities are null where the mode has no such axis.
TIMELINE_WINDOW = pa.struct([
    pa.field("start", pa.float32()),
    pa.field("end", pa.float32()),
    pa.field("label", pa.string()),
    pa.field("label_prob", pa.float32()),
    pa.field("arousal_prob", pa.float32()),
    pa.field("valence_prob", pa.float32()),
])

# Columns a run writes only when asked for (`labeler label --embeddings`, `--timeline SECONDS`, `--tags`):
# a partition written without them has no such column at all, so nothing is paid for unused data.
EMBEDDING_COLUMN = Column(
    "embedding", pa.list_(pa.float32()), required=False,
    doc="`--embeddings`: the model's penultimate vector, L2-normalised, float32, length = the bundle's "
        "embedding_dim; null with error",
)
TIMELINE_COLUMN = Column(
    "timeline", pa.list_(TIMELINE_WINDOW), required=False,
    doc="`--timeline SECONDS`: successive windows of the whole track, each a struct (start, end, label, "
        "label_prob, arousal_prob, valence_prob); null without usable audio",
)
TAGS_COLUMN = Column(
    "tags", CLASS_PROBS_TYPE, required=False,
    doc="`--tags` (a MusiCNN bundle): the pretrained encoder's 50 tags (genre, era, instruments, mood words; "
        "labeler/musicnn/tags.py), map tag -> P, P the sigmoid of each 3-s patch's tag logits averaged over "
        "the clip's patches (musicnn's taggram); null without usable audio, e.g. a song labelled from lyrics alone",
)


def labels_contract(embeddings: bool = False, timeline: bool = False, tags: bool = False) -> Contract:
    """The LABELS contract plus the optional columns a run was asked to write."""
    wanted_columns = ((EMBEDDING_COLUMN, embeddings), (TIMELINE_COLUMN, timeline), (TAGS_COLUMN, tags))
    extra = tuple(c for c, wanted in wanted_columns if wanted)
    return Contract(LABELS.name, LABELS.columns + extra) if extra else LABELS


CONTRACTS: dict[str, Contract] = {c.name: c for c in (CATALOGUE, MANIFEST, LABELS)}


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Accept the physical variants writers produce for the same logical type."""
    if actual.equals(expected):
        return True
    if pa.types.is_string(expected):
        return pa.types.is_string(actual) or pa.types.is_large_string(actual) or pa.types.is_null(actual)
    if pa.types.is_floating(expected):
        return pa.types.is_floating(actual) or pa.types.is_integer(actual) or pa.types.is_null(actual)
    if pa.types.is_integer(expected):
        return pa.types.is_integer(actual)
    if pa.types.is_timestamp(expected):
        return pa.types.is_timestamp(actual)
    if pa.types.is_boolean(expected):
        return pa.types.is_null(actual)
    if pa.types.is_list(expected):  # float16/float64 embeddings, large lists, all-null lists
        return pa.types.is_null(actual) or ((pa.types.is_list(actual) or pa.types.is_large_list(actual)
                                             or pa.types.is_fixed_size_list(actual))
                                            and _compatible(actual.value_type, expected.value_type))
    if pa.types.is_struct(expected):
        return pa.types.is_struct(actual) and all(
            actual.get_field_index(f.name) >= 0 and _compatible(actual.field(f.name).type, f.type) for f in expected)
    if pa.types.is_map(expected):
        return pa.types.is_map(actual) and _compatible(actual.key_type, expected.key_type) and \
            _compatible(actual.item_type, expected.item_type)
    return False


def validate(schema: pa.Schema, contract: Contract, where: str = "") -> None:
    """Raise SchemaError naming every missing or mistyped column of `schema` against `contract`."""
    problems: list[str] = []
    missing = [c.name for c in contract.columns if c.required and c.name not in schema.names]
    if missing:
        problems.append(f"missing required column(s): {', '.join(missing)}")
    for c in contract.columns:
        if c.name in schema.names:
            actual = schema.field(c.name).type
            if not _compatible(actual, c.type):
                problems.append(f"column {c.name!r} has type {actual}, expected {c.type}")
    if problems:
        source = f" {where}" if where else ""
        raise SchemaError(f"{contract.name}{source} does not follow the contract: " + "; ".join(problems))


def conform(table: pa.Table, contract: Contract, keep_extra: bool = False) -> pa.Table:
    """Validate, then cast to the contract's types and order, adding absent optional columns as nulls."""
    validate(table.schema, contract)
    arrays, fields = [], []
    for c in contract.columns:
        if c.name in table.column_names:
            arrays.append(table.column(c.name).cast(c.type))
        else:
            arrays.append(pa.nulls(table.num_rows, c.type))
        fields.append(pa.field(c.name, c.type, nullable=c.nullable))
    if keep_extra:
        for name in table.column_names:
            if name not in contract.schema.names:
                arrays.append(table.column(name))
                fields.append(table.schema.field(name))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def check_unique_ids(table: pa.Table, column: str = "song_id", where: str = "") -> None:
    """song_id is the join key of every contract: duplicates or nulls are a data error."""
    ids = table.column(column)
    if ids.null_count:
        raise SchemaError(f"{where or 'table'}: {ids.null_count} row(s) have a null {column}")
    counts = pc.value_counts(ids)
    dup = counts.filter(pc.greater(counts.field("counts"), 1)).field("values").to_pylist()  # vectorised: 10M ids in seconds
    if dup:
        shown = ", ".join(map(repr, dup[:5]))
        raise SchemaError(f"{where or 'table'}: {len(dup)} duplicate {column} value(s), e.g. {shown}")


def is_missing(value: Any) -> bool:
    """None, NaN of any float type, or "": the ways a nullable string cell reaches a batch function.

    Ray Data stores an object column that is None in every row of a block as float NaN, so a
    string column's "no value" arrives as None in one batch and NaN in the next.
    """
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    return isinstance(value, str) and not value


def nullable_strings(values: Any, n: int) -> list[str | None]:
    """A batch column of optional strings as str | None per row; an absent column is n Nones."""
    if values is None:
        return [None] * n
    return [None if is_missing(v) else str(v) for v in values]


def contract_table(contract: Contract) -> str:
    """The contract as a Markdown table, for the README."""
    return markdown_table(["column", "type", "required", "nullable", "meaning"],
                          [[f"`{c.name}`", c.type, "yes" if c.required else "no", "yes" if c.nullable else "no", c.doc]
                           for c in contract.columns])
