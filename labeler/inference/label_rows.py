"""Predictor output -> label rows in the LABELS contract, and the kinds of row errors.

The batch job's commits (labeler.label_job), Serve's single-song answers (labeler.serve) and the
comparison tests all build their LABELS rows here, so they are equal.

Label columns by bundle mode: a 4Q bundle fills quadrant (argmax), prob_q1..q4 and both axes (their
probabilities summed from the quadrants). An Ar or Va bundle fills only its axis (and its
probability); quadrant, prob_q* and the other axis stay null. A `classes` bundle (a catalogue's own
taxonomy) leaves every quadrant and axis column null. In every mode `label` is the top class of the
bundle's classes, `label_prob` its probability and `class_probs` the map class -> probability.
The optional `tags` column is built the same way: a map tag -> probability (keys from the bundle's
MusiCNN encoder, BundleInfo.tag_names).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from labeler.bundle.info import BundleInfo
from labeler.contracts.labels import QUADRANTS, quadrant_probs_to_axes
from labeler.contracts.schemas import TIMELINE_COLUMN, conform, labels_contract, nullable_strings


def error_kind(error: str | None) -> str | None:
    """The kind of a row error: the text before the first colon ('missing_file: x' -> 'missing_file')."""
    if error is None:
        return None
    return str(error).split(":", 1)[0].strip() or "unknown"



def _nullable_float(values: Any, n: int, ok: np.ndarray) -> pa.Array:
    if values is None:
        return pa.nulls(n, pa.float32())
    arr = np.asarray(values, dtype=np.float32).reshape(n)
    return pa.array(arr, type=pa.float32(), mask=~ok | np.isnan(arr))


def label_rows(batch: dict[str, np.ndarray], info: BundleInfo, labelled_at: datetime) -> pa.Table:
    """Predictor output -> label rows in the LABELS contract (see the module docstring per mode)."""
    song_ids = [str(s) for s in batch["song_id"]]
    n = len(song_ids)
    errors = nullable_strings(batch.get("error"), n)
    ok = np.array([e is None for e in errors], dtype=bool)
    probs = np.asarray(batch["probs"], dtype=np.float32).reshape(n, len(info.classes)) if n else np.zeros((0, len(info.classes)), np.float32)
    columns: dict[str, Any] = {"song_id": pa.array(song_ids, pa.string())}
    empty_str = pa.nulls(n, pa.string())
    empty_f = pa.nulls(n, pa.float32())
    for name in ("quadrant", "arousal", "valence"):
        columns[name] = empty_str
    for name in ("arousal_prob", "valence_prob", *(f"prob_{q.lower()}" for q in QUADRANTS)):
        columns[name] = empty_f

    def side(p_high: np.ndarray) -> pa.Array:
        return pa.array(np.where(p_high > 0.5, "high", "low"), pa.string(), mask=~ok)

    if info.mode == "4Q":
        argmax = probs.argmax(axis=1) if n else np.zeros(0, int)
        columns["quadrant"] = pa.array([info.classes[i] for i in argmax], pa.string(), mask=~ok)
        for j, q in enumerate(QUADRANTS):
            columns[f"prob_{q.lower()}"] = pa.array(probs[:, j], pa.float32(), mask=~ok)
        axes = np.array([quadrant_probs_to_axes(p) for p in probs], dtype=np.float32).reshape(n, 2)
        columns["arousal_prob"] = pa.array(axes[:, 0], pa.float32(), mask=~ok)
        columns["valence_prob"] = pa.array(axes[:, 1], pa.float32(), mask=~ok)
        columns["arousal"] = side(axes[:, 0])
        columns["valence"] = side(axes[:, 1])
    elif info.mode in ("Ar", "Va"):
        axis = "arousal" if info.mode == "Ar" else "valence"
        p_high = probs[:, list(info.classes).index("high")]
        columns[f"{axis}_prob"] = pa.array(p_high, pa.float32(), mask=~ok)
        columns[axis] = side(p_high)
    columns.update(_class_columns(probs, info.classes, ok))
    columns["arousal_score"] = _nullable_float(batch.get("arousal_score"), n, ok)
    columns["valence_score"] = _nullable_float(batch.get("valence_score"), n, ok)
    columns["modalities"] = pa.array(nullable_strings(batch.get("modalities"), n), pa.string())
    columns["audio_error"] = pa.array(nullable_strings(batch.get("audio_error"), n), pa.string())
    columns["model_id"] = pa.array([info.model_id] * n, pa.string())
    columns["model_version"] = pa.array([info.model_version] * n, pa.string())
    columns["labelled_at"] = pa.array([labelled_at] * n, pa.timestamp("us", tz="UTC"))
    columns["error"] = pa.array(errors, pa.string())
    columns["ambiguous"] = _ambiguous(probs, ok, info.ambiguous_threshold)
    if "embedding" in batch:
        columns["embedding"] = _embedding_column(batch["embedding"], n, ok)
    if "timeline" in batch:
        columns["timeline"] = _timeline_column(batch["timeline"], n)
    if "tags" in batch:
        columns["tags"] = _tags_column(batch["tags"], info.tag_names(), n, ok)
    return conform(pa.table(columns), labels_contract("embedding" in batch, "timeline" in batch, "tags" in batch))


def _ambiguous(probs: np.ndarray, ok: np.ndarray, threshold: float | None) -> pa.Array:
    """True where the top probability is below the bundle's threshold; null with error or without a threshold."""
    n = len(ok)
    if threshold is None or n == 0:
        return pa.nulls(n, pa.bool_())
    top = np.nan_to_num(probs.max(axis=1), nan=0.0)
    return pa.array(top < float(threshold), pa.bool_(), mask=~ok)


def _embedding_column(values: Any, n: int, ok: np.ndarray) -> pa.Array:
    """(n, dim) float32 -> list<float32>, null for error rows (and any row the model did not reach)."""
    arr = np.asarray(values, dtype=np.float32).reshape(n, -1) if n else np.zeros((0, 0), np.float32)
    valid = ok & np.isfinite(arr).all(axis=1) if n else ok
    dim = arr.shape[1] if n else 0
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * dim, pa.int32())
    lists = pa.ListArray.from_arrays(offsets, pa.array(arr.reshape(-1), pa.float32()), mask=pa.array(~valid))
    return lists.cast(pa.list_(pa.float32()))


def _timeline_column(values: Any, n: int) -> pa.Array:
    """JSON text per row (the Predictor's `timeline`) -> list<TIMELINE_WINDOW>; "" -> null."""
    rows = [None if not text else json.loads(text) for text in nullable_strings(values, n)]
    return pa.array(rows, TIMELINE_COLUMN.type)


def _tags_column(values: Any, names: tuple[str, ...], n: int, ok: np.ndarray) -> pa.Array:
    """(n, 50) taggram -> map tag -> P; null for error rows and rows without one (NaN: no usable audio)."""
    arr = np.asarray(values, dtype=np.float32).reshape(n, len(names)) if n else np.zeros((0, len(names)), np.float32)
    return _prob_map(arr, names, ok & np.isfinite(arr).all(axis=1))


def _prob_map(probs: np.ndarray, keys: tuple[str, ...], valid: np.ndarray) -> pa.Array:
    """(n, k) probabilities -> map<string, float32> key -> P, one entry per key; null (and empty) where not valid."""
    offsets = np.concatenate([[0], np.cumsum(valid * len(keys))]).astype(np.int32)
    key_array = pa.array(list(keys) * int(valid.sum()), pa.string())
    values = pa.array(probs[valid].reshape(-1), pa.float32())
    return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), key_array, values, mask=pa.array(~valid))


def _class_columns(probs: np.ndarray, classes: tuple[str, ...], ok: np.ndarray) -> dict[str, pa.Array]:
    """label (top class), label_prob and class_probs (map class -> P) of every mode; null where not ok."""
    n = len(ok)
    top = probs.argmax(axis=1) if n else np.zeros(0, int)
    return {
        "label": pa.array([classes[i] for i in top], pa.string(), mask=~ok),
        "label_prob": pa.array(probs[np.arange(n), top] if n else np.zeros(0, np.float32), pa.float32(), mask=~ok),
        "class_probs": _prob_map(probs, classes, ok),
    }

