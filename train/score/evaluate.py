"""`labeler evaluate`: score a model bundle on a manifest's rows (all, or one test fold).

The bundle is opened and verified like a labelling job opens it, the manifest's rows are featurised
and tokenised in batches with the bundle's own configs and completed by `labeler.contracts.inputs.model_inputs`
(the label job's and Serve's step), and the bundle's calibrated probabilities
are scored against the manifest's labels with `train.score.metrics` (quadrant modes, or the bundle's own
classes). Rows that cannot be featurised are skipped and counted by kind, never fatal. Its command
line is `jobs/commands/evaluate.py`; the report of a whole training run is `train.score.report`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from labeler.contracts.inputs import AUDIO_URI, CHORUS_COLUMNS, LYRICS, SONG_ID, model_inputs
from labeler.io import storage
from train.score.metrics import classification_metrics

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)


def _manifest_rows(manifest_uri: str, fold: int | None) -> pa.Table:
    import pyarrow.compute as pc  # noqa: PLC0415

    from labeler.contracts.schemas import MANIFEST, validate  # noqa: PLC0415

    table = storage.read_parquet(manifest_uri)
    validate(table.schema, MANIFEST, where=storage.describe(manifest_uri))
    if fold is not None:
        folds = sorted(set(pc.unique(table.column("fold")).to_pylist()))
        if fold not in folds:
            raise ValueError(f"fold {fold} is not in the manifest {storage.describe(manifest_uri)} (folds: {folds})")
        table = table.filter(pc.equal(table.column("fold"), fold))
    return table


def _batch_columns(table: pa.Table, start: int, stop: int) -> dict[str, np.ndarray]:
    """Manifest rows [start, stop) as the numpy batch the Featurizer and LyricsTokenizer take."""
    part = table.slice(start, stop - start)
    batch: dict[str, np.ndarray] = {}
    for name in (SONG_ID, AUDIO_URI, LYRICS):
        batch[name] = np.asarray(part.column(name).to_pylist(), dtype=object)
    for name in CHORUS_COLUMNS:
        if name in part.column_names:
            batch[name] = np.asarray([np.nan if v is None else v for v in part.column(name).to_pylist()], dtype=np.float64)
    return batch


def _targets(table: pa.Table, mode: str, classes: list[str], manifest_uri: str) -> list[int]:
    """Each row's class index for a bundle of `mode`: from `label` in mode classes, else from the quadrant."""
    from labeler.contracts.labels import class_index, target_for_mode  # noqa: PLC0415
    from train.data.manifest import label_kind  # noqa: PLC0415

    kind, _ = label_kind(table, storage.describe(manifest_uri))
    if (kind == "classes") != (mode == "classes"):
        raise ValueError(f"the bundle predicts {'its own classes' if mode == 'classes' else 'quadrant mode ' + mode} "
                         f"but {storage.describe(manifest_uri)} has {'classes' if kind == 'classes' else 'quadrant'} labels")
    if mode == "classes":
        try:
            return [class_index(v, classes) for v in table.column("label").to_pylist()]
        except ValueError as exc:
            raise ValueError(f"{storage.describe(manifest_uri)}: {exc} (the bundle's classes)") from None
    return [target_for_mode(int(q), mode) for q in table.column("quadrant").to_pylist()]


def evaluate_bundle(bundle_uri: str, manifest_uri: str, fold: int | None = None, batch_size: int = 16) -> dict:
    """Score a model bundle on a manifest's test fold `fold` (or on all rows), in-process and in batches.

    The bundle's own featuriser and tokenizer settings are used, exactly as labelling uses them.
    Rows the model cannot label (no audio for an audio model, undecodable audio, ...) are counted in
    `skipped` by error kind and left out of the metrics. Returns classification_metrics plus
    `mode`, `classes`, `fold`, `skipped` (total), `skipped_by_kind`, `seconds`.
    """
    from labeler.audio import Featurizer  # noqa: PLC0415 - heavy imports only when evaluating
    from labeler.bundle.store import load_bundle  # noqa: PLC0415
    from labeler.inference.predict import Predictor  # noqa: PLC0415
    from labeler.lyrics.text import LyricsTokenizer  # noqa: PLC0415

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    started = time.perf_counter()
    bundle = load_bundle(bundle_uri)  # the whole bundle verified before any work; the Predictor reuses it
    table = _manifest_rows(manifest_uri, fold)
    if table.num_rows == 0:
        raise ValueError(f"no rows to evaluate in {storage.describe(manifest_uri)}" + (f" fold {fold}" if fold is not None else ""))
    mode, classes = bundle.mode, list(bundle.classes)
    model_config = bundle.model.config
    featurizer = Featurizer(bundle.featurizer) if model_config.uses_audio else None
    lyrics_tokenizer = LyricsTokenizer(bundle.tokenizer, bundle.lyrics) if model_config.uses_lyrics else None
    predictor = Predictor(bundle, device="cpu", batch_size=batch_size)

    targets = _targets(table, mode, classes, manifest_uri)
    y_true: list[int] = []
    probs: list[np.ndarray] = []
    skipped: dict[str, int] = {}
    for start in range(0, table.num_rows, batch_size):
        stop = min(start + batch_size, table.num_rows)
        batch = _batch_columns(table, start, stop)
        if featurizer is not None:
            batch = featurizer(batch)
        out = predictor(model_inputs(batch, lyrics_tokenizer, uses_audio=featurizer is not None))
        for i, error in enumerate(out["error"]):
            if error:
                kind = str(error).split(":", 1)[0]
                skipped[kind] = skipped.get(kind, 0) + 1
                continue
            y_true.append(targets[start + i])
            probs.append(np.asarray(out["probs"][i], dtype=np.float64))
        log.info("evaluated %d/%d rows", stop, table.num_rows)
    if not probs:
        raise ValueError(f"every one of the {table.num_rows} rows failed ({skipped}); nothing to score")
    metrics = classification_metrics(np.asarray(y_true), np.stack(probs), classes)
    metrics.update(
        model_id=bundle.model_id,
        model_version=bundle.model_version,
        mode=mode,
        classes=classes,
        fold=fold,
        skipped=int(sum(skipped.values())),
        skipped_by_kind=skipped,
        seconds=round(time.perf_counter() - started, 3),
    )
    return metrics
