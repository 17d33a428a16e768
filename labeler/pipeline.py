"""The labelling job: catalogue Parquet in, one label row per song out, with Ray Data.

    read_parquet (needed columns only) -> drop songs already labelled by this model version
    -> featurise audio + tokenise lyrics (CPU tasks) -> Predictor (actor pool; GPU actors where the
    cluster has GPUs) -> label rows (LABELS contract) -> commit Parquet parts -> completion record

Output layout (readable as one dataset by pandas, pyarrow, DuckDB and Spark)::

    <output>/version=<model_version>/part-<hash>.parquet   committed label parts of one model version
    <output>/version=<model_version>/_SUCCESS.json         completion record of that version (written last)
    <output>/_SUCCESS.json                                 copy of the record of the latest completed run
    <output>/_staging/version=<model_version>/<run_id>/    parts being written (ignored by readers: '_' prefix)
    <output>/_lease/version=<model_version>/lease-*.json   who is writing this version now (labeler.lease)

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
- One run per output and model version at a time: a run takes the version's lease (labeler.lease)
  before it reads what is done or touches any file, and a second run fails at once with
  LeaseHeldError naming the holder. Every part commit checks the lease generation (fencing), so a
  run whose lease was lost (storage outage, a frozen driver) stops before committing more. A killed run's lease expires after `lease_seconds` (default 120),
  after which re-running resumes. Runs of different model versions into one output run side by side.
- Songs removed from the catalogue keep their old labels in the partition (they are harmless to a
  join on song_id); the completion record counts the partition's rows and the catalogue's.

Optional columns (labeler.schemas.labels_contract): `--embeddings` adds `embedding` (the model's
penultimate vector, L2-normalised) and `--timeline SECONDS` adds `timeline` (labeler.timeline: windows
of the whole track, decoded in the Predictor actors, which then need `audio_uri`). A partition holds
the same columns in every part: a re-run asking for other optional columns than the version's
existing parts have is refused (label into another output instead). `ambiguous` is always written.

Label columns by bundle mode: a 4Q bundle fills quadrant (argmax), prob_q1..q4 and both axes (their
probabilities summed from the quadrants). An Ar or Va bundle fills only its axis (and its
probability); quadrant, prob_q* and the other axis stay null. A `classes` bundle (a catalogue's own
taxonomy) leaves every quadrant and axis column null. In every mode `label` is the top class of the
bundle's classes, `label_prob` its probability and `class_probs` the map class -> probability.
Continuous scores are filled where the model has a regression head.

Audio bytes are read on the workers only: the driver handles URIs, song ids and the small
per-part commit records.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import re
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labeler import storage
from labeler.isolate import DEFAULT_RETRIES
from labeler.lease import DEFAULT_TTL_SECONDS, LEASE_DIR, Fence, Lease
from labeler.labels import QUADRANT_DESCRIPTIONS, QUADRANTS, quadrant_probs_to_axes
from labeler.verified import TokenizerSource, VerifiedBundle, check_version, verify_bundle
from labeler.schemas import (
    CATALOGUE,
    LABELS,
    SchemaError,
    TIMELINE_COLUMN,
    check_unique_ids,
    conform,
    labels_contract,
    nullable_strings,
    validate,
)

log = logging.getLogger(__name__)

SUCCESS_FILE = "_SUCCESS.json"
STAGING_DIR = "_staging"
PARTITION_KEY = "version"


# --------------------------------------------------------------------------------------------------
# configuration


@dataclass
class LabelJobConfig:
    """Knobs of one labelling run; None means 'derive from the cluster's resources'."""

    address: str | None = None  # Ray cluster address; None: RAY_ADDRESS, else a local Ray
    featurise_batch_size: int | None = None  # songs per featurise batch (and per input block)
    predict_batch_size: int | None = None  # songs per Predictor call
    featurise_cpus: float | None = None  # CPUs reserved by one featurise task (fractions allowed)
    min_actors: int | None = None  # Predictor actor pool size
    max_actors: int | None = None
    use_gpu: bool | None = None  # None: GPU actors when the cluster has GPUs
    rows_per_part: int = 2048  # rows per committed Parquet part (the resume granularity)
    plot: str | None = None  # PNG of the quadrant distribution and the valence-arousal scatter
    lease_seconds: float = DEFAULT_TTL_SECONDS  # a killed run blocks its output version this long
    embeddings: bool = False  # write the `embedding` column
    timeline_seconds: float | None = None  # write the `timeline` column, windows of this many seconds
    expect_version: str | None = None  # refuse a bundle whose model_version is not this one
    max_retries: int = DEFAULT_RETRIES  # retries of a task or actor whose process died (bounded: see build_dataset)

    def __post_init__(self) -> None:
        for name in ("featurise_batch_size", "predict_batch_size", "min_actors", "max_actors", "rows_per_part"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.featurise_cpus is not None and not self.featurise_cpus > 0:
            raise ValueError(f"featurise_cpus must be > 0, got {self.featurise_cpus!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        if not self.lease_seconds >= 4:
            raise ValueError(f"lease_seconds must be >= 4 (the lease is renewed every quarter of it), got {self.lease_seconds!r}")
        if self.min_actors and self.max_actors and self.min_actors > self.max_actors:
            raise ValueError(f"min_actors ({self.min_actors}) > max_actors ({self.max_actors})")
        if self.timeline_seconds is not None and not (0 < self.timeline_seconds < float("inf")):
            raise ValueError(f"timeline_seconds must be a positive number of seconds, got {self.timeline_seconds!r}")


@dataclass(frozen=True)
class Resources:
    """The concrete sizes a run uses, after defaults were derived from the cluster."""

    featurise_batch_size: int
    predict_batch_size: int
    featurise_cpus: float
    min_actors: int
    max_actors: int
    use_gpu: bool
    actor_cpus: float = 1.0  # CPUs one Predictor actor reserves (with a GPU: what is left after one featurise task)

    def describe(self) -> str:
        """The plan in one line, for the summary: where featurising and the model run, and how wide."""
        device = (f"1 GPU and {self.actor_cpus:g} CPU each (the model runs on CPU inside an actor whose GPU has no CUDA)"
                  if self.use_gpu else f"{self.actor_cpus:g} CPU each")
        return (f"featurise on CPU tasks ({self.featurise_cpus:g} CPU each, {self.featurise_batch_size} songs a batch); "
                f"Predictor on {self.min_actors}-{self.max_actors} actor(s), {device}, {self.predict_batch_size} songs a call")


def resolve_resources(config: LabelJobConfig, cluster: dict[str, float]) -> Resources:
    """Fill unset knobs from `ray.cluster_resources()`.

    With GPUs: one Predictor actor per GPU (the pool grows from one), batches of 64, and one CPU per
    featurise task. CPU only: featurising dominates (decoding and the chorus search cost several
    times a batched CNN + MiniLM pass), so Predictor actors are few (one per 8 CPUs, one CPU each)
    and featurise tasks reserve less than a CPU, so that one task per CPU still fits beside the
    actors, which sit idle most of the time. Featurise batches of 16 songs, predict batches of 32 on
    CPU: on 2 cores with 1,000 30-s songs, 16/32 ran at 11.1 songs/s against 8.7 for 8/16 (per-task
    and per-call overheads), and 32/32 at 11.5 was within noise of it (bench/bench_label.py).
    """
    cpus = max(1, int(cluster.get("CPU", 1)))
    gpus = int(cluster.get("GPU", 0))
    use_gpu = (gpus > 0) if config.use_gpu is None else config.use_gpu
    if use_gpu and gpus == 0:
        raise ValueError("use_gpu requested but the Ray cluster has no GPU")
    max_default = max(1, gpus) if use_gpu else max(1, cpus // 8)
    max_actors = config.max_actors or max(max_default, config.min_actors or 1)
    min_actors = config.min_actors or 1
    if min_actors > max_actors:
        raise ValueError(f"min_actors ({min_actors}) > max_actors ({max_actors})")
    if config.featurise_cpus is not None:
        featurise_cpus = config.featurise_cpus
    elif use_gpu:
        featurise_cpus = 1.0
    else:
        featurise_cpus = max(0.25, round((cpus - max_actors) / cpus, 2))
    # A GPU actor also reserves CPU (Ray Data's default: 1), and actors hold theirs for the whole run: with
    # as many GPUs as CPUs (a simulated GPU cluster, a small GPU node) they would hold every CPU and the
    # featurise tasks feeding them could never start - the job would hang. Leave one featurise task room.
    actor_cpus = 1.0
    if use_gpu and cpus - max_actors < featurise_cpus:
        actor_cpus = max(0.1, round((cpus - featurise_cpus) / max_actors, 2))
    return Resources(
        actor_cpus=actor_cpus,
        featurise_batch_size=config.featurise_batch_size or 16,
        predict_batch_size=config.predict_batch_size or (64 if use_gpu else 32),
        featurise_cpus=featurise_cpus,
        min_actors=min_actors,
        max_actors=max_actors,
        use_gpu=use_gpu,
    )


# --------------------------------------------------------------------------------------------------
# the bundle, as the driver sees it


@dataclass(frozen=True)
class BundleInfo:
    """What the driver and the CPU stages need from a bundle's config.json (weights stay unread)."""

    uri: str
    model_id: str
    model_version: str
    mode: str
    classes: tuple[str, ...]
    branch: str
    featurizer: dict
    lyrics: dict
    ambiguous_threshold: float | None = None  # top probability below which a label is flagged ambiguous
    embedding_dim: int | None = None  # length of the `embedding` column

    @property
    def uses_audio(self) -> bool:
        return self.branch in ("audio", "fusion")

    @property
    def uses_lyrics(self) -> bool:
        return self.branch in ("lyrics", "fusion")

    @property
    def tokenizer(self) -> TokenizerSource | None:
        """Where featurise tasks and Serve load the verified tokenizer from (None without a lyrics branch)."""
        return TokenizerSource(self.uri, self.model_version) if self.uses_lyrics else None

    @classmethod
    def from_verified(cls, bundle: VerifiedBundle) -> "BundleInfo":
        config = bundle.config
        model = config.get("model") or {}
        branch = model.get("branch", "fusion")
        return cls(
            uri=bundle.uri,
            model_id=str(config["model_id"]),
            model_version=check_version(bundle.model_version),
            mode=str(config.get("mode") or model.get("mode", "4Q")),
            classes=tuple(config["classes"]),
            branch=branch,
            featurizer=dict(config.get("featurizer") or {}),
            lyrics=dict(config.get("lyrics") or {}),
            ambiguous_threshold=config.get("ambiguous_threshold"),
            embedding_dim=config.get("embedding_dim"),
        )


def read_bundle_info(bundle_uri: str, expect_version: str | None = None) -> BundleInfo:
    """The whole bundle verified (every listed file against its sha256, the version recomputed and
    compared with `expect_version`): drivers call this before a lease, a Ray task or a replica."""
    return BundleInfo.from_verified(verify_bundle(storage.absolute_uri(bundle_uri), expect_version))


# --------------------------------------------------------------------------------------------------
# output layout


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
        return [u for u in storage.listdir(self.partition_uri) if _basename(u).startswith("part-") and u.endswith(".parquet")]


def _basename(uri: str) -> str:
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


# --------------------------------------------------------------------------------------------------
# worker-side stages


def error_kind(error: str | None) -> str | None:
    """The kind of a row error: the text before the first colon ('missing_file: x' -> 'missing_file')."""
    if error is None:
        return None
    return str(error).split(":", 1)[0].strip() or "unknown"


def _filter_ids(batch: pa.Table, ids_ref: list, keep: bool) -> pa.Table:
    """Anti-join without a join: keep the rows whose song_id is in the set (keep=True) or not in it."""
    import ray  # noqa: PLC0415

    mask = pc.is_in(batch.column("song_id"), value_set=ray.get(ids_ref[0]))
    return batch.filter(mask if keep else pc.invert(mask))


def todo_filter(ids: pa.Array, done: pa.Array) -> tuple[int, pa.Array | None, bool]:
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


@functools.lru_cache(maxsize=4)
def _isolated_featurizer(featurizer_json: str, retries: int):
    """One crash-isolating featuriser (and so one child process) per worker process and bundle."""
    from labeler.isolate import IsolatedFeaturizer  # noqa: PLC0415

    return IsolatedFeaturizer(json.loads(featurizer_json), retries=retries)


@functools.lru_cache(maxsize=4)
def _lyrics_tokenizer(tokenizer: TokenizerSource, lyrics_json: str):
    """One tokenizer per worker process and bundle: Ray Data tasks are stateless but worker
    processes are reused, so this memo loads (and verifies) the tokenizer files once, not once a batch."""
    from labeler.lyrics import LyricsTokenizer  # noqa: PLC0415

    return LyricsTokenizer(tokenizer.load(), json.loads(lyrics_json))


def featurise_batch(batch: dict[str, np.ndarray], featurizer: dict | None, tokenizer: TokenizerSource | None,
                    lyrics_json: str, keep_audio_uri: bool = False, progress_sink=None,
                    max_retries: int = DEFAULT_RETRIES) -> dict[str, np.ndarray]:
    """CPU stage: decode + chorus + log-mel (when the bundle uses audio), tokenise (when it uses lyrics).

    The Featurizer and LyricsTokenizer turn a bad song into a row error themselves; this stage only
    adds the columns a single-branch Predictor does not get from the skipped step. Audio is featurised
    in a child process (labeler.isolate): a track that kills it becomes an `audio_error` of kind
    `worker_crash` after `max_retries` retries alone, and this task's own process never dies for it.
    """
    if featurizer is not None:
        batch = _isolated_featurizer(json.dumps(featurizer, sort_keys=True), max_retries)(batch)
    else:
        batch = dict(batch)
        batch["audio_error"] = np.array([None] * len(batch["song_id"]), dtype=object)
    if tokenizer is not None:
        batch = _lyrics_tokenizer(tokenizer, lyrics_json)(batch)
    for name in ("audio_error", "lyrics_error"):
        if name in batch:
            batch[name] = _no_error_as_empty(batch[name])
    # The catalogue's text and URIs are not needed after this point (but for a timeline, which the
    # Predictor decodes window by window): do not ship them to the actors.
    for name in ("lyrics",) if keep_audio_uri else ("lyrics", "audio_uri"):
        batch.pop(name, None)
    from labeler.console import report  # noqa: PLC0415

    report(progress_sink, len(batch["song_id"]))  # featurising is the job's cost: count songs here
    return batch


def featurise_memory_bytes(featurizer: dict | None, batch_size: int) -> int:
    """Memory one featurise task reserves: a worker's baseline, one decoded search window (with room for
    resampling and the STFT), and the batch's float16 log-mels.

    The reservation also keeps the stages apart: Ray Data fuses a task map into a following actor map
    only when their remote args are equal, and fused, featurising would run inside the few Predictor
    actors one song after another instead of in tasks on every free CPU.
    """
    baseline = 512 * 2**20
    if not featurizer:
        return baseline
    from labeler.audio import FeaturizerConfig  # noqa: PLC0415

    cfg = FeaturizerConfig.from_dict(featurizer)
    window = int(cfg.chorus_search_seconds * cfg.sample_rate) * 4
    return baseline + 3 * window + batch_size * cfg.n_frames * cfg.n_mels * 2 * 2


def _no_error_as_empty(values: np.ndarray) -> np.ndarray:
    """Error columns leave this stage as strings, "" for none.

    Ray Data stores an object column that is None in every row as float NaN, which a consumer
    checking `isinstance(v, float)` would then report as the error "nan"; "" never changes type.
    """
    return np.array([v or "" for v in nullable_strings(values, len(values))], dtype=object)


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
    return conform(pa.table(columns), labels_contract("embedding" in batch, "timeline" in batch))


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


def _class_columns(probs: np.ndarray, classes: tuple[str, ...], ok: np.ndarray) -> dict[str, pa.Array]:
    """label (top class), label_prob and class_probs (map class -> P) of every mode; null where not ok."""
    n = len(ok)
    top = probs.argmax(axis=1) if n else np.zeros(0, int)
    offsets = np.concatenate([[0], np.cumsum(ok * len(classes))]).astype(np.int32)  # error rows: empty and null
    keys = pa.array(list(classes) * int(ok.sum()), pa.string())
    values = pa.array(probs[ok].reshape(-1), pa.float32())
    class_probs = pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), keys, values, mask=pa.array(~ok))
    return {
        "label": pa.array([classes[i] for i in top], pa.string(), mask=~ok),
        "label_prob": pa.array(probs[np.arange(n), top] if n else np.zeros(0, np.float32), pa.float32(), mask=~ok),
        "class_probs": class_probs,
    }


def _counts_json(values: list[str | None]) -> str:
    return json.dumps(dict(Counter(v for v in values if v is not None)), sort_keys=True)


def commit_part(batch: dict[str, np.ndarray], info: BundleInfo, staging_uri: str, partition_uri: str,
                fence: Fence | None = None) -> pa.Table:
    """Write one chunk of label rows into staging, rename it into the partition, return its record.

    With a `fence` (the run's lease generation) the commit first checks that the run still holds
    the lease, and raises LeaseLostError (writing nothing into the partition) when it does not.
    """
    table = label_rows(batch, info, datetime.now(timezone.utc))
    ids = table.column("song_id").to_pylist()
    name = part_name(ids)
    staged, final = storage.join(staging_uri, name), storage.join(partition_uri, name)
    storage.write_parquet(table, staged)
    if fence is not None:
        fence.check()
    storage.makedirs(partition_uri)
    storage.move(staged, final)
    errors = table.column("error").to_pylist()
    return pa.table({
        "file": [final],
        "rows": [table.num_rows],
        "labelled": [sum(e is None for e in errors)],
        "errors": [_counts_json([error_kind(e) for e in errors])],
        "audio_errors": [_counts_json([error_kind(e) for e in table.column("audio_error").to_pylist()])],
    })


# --------------------------------------------------------------------------------------------------
# the driver


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
    plan: str = ""  # Resources.describe() of the run ("" when nothing needed labelling)

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
        if self.quadrants:
            total = sum(self.quadrants.values())
            dist = ", ".join(f"{q}={self.quadrants.get(q, 0)} ({100 * self.quadrants.get(q, 0) / total:.0f}%)" for q in QUADRANTS)
            lines.append(f"quadrants ({self.partition_rows} rows in version): {dist}")
        if self.plot:
            lines.append(f"plot: {self.plot}")
        return "\n".join(lines)


def recover_cwd() -> None:
    """Move off a working directory that no longer exists (and say so), so nothing after it fails on os.getcwd().

    Why: under `ray job submit --working-dir`, the driver runs inside Ray's copy of the working dir on
    the head node, and after a worker node was lost Ray removed that copy while the job still ran: the
    run had committed every row, then failed with a bare '[Errno 2] No such file or directory' (from
    os.getcwd()) and no completion record (issue #22). The driver needs nothing from its working dir by
    then (paths are absolute, code is imported).
    """
    import os  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    try:
        os.getcwd()
    except FileNotFoundError:
        fallback = tempfile.gettempdir()
        log.warning("this driver's working directory no longer exists (a Ray job's working_dir removed after a "
                    "lost node?); continuing in %s", fallback)
        os.chdir(fallback)


def ensure_ray(address: str | None) -> None:
    """Connect to the cluster at `address` (or RAY_ADDRESS), or start a local Ray (with its dashboard) when neither is set."""
    from labeler.console import ensure_ray as start  # noqa: PLC0415

    start(address, include_dashboard=None)


def _catalogue_columns(schema: pa.Schema) -> list[str]:
    return [c.name for c in CATALOGUE.columns if c.name in schema.names]


def _validated_catalogue(catalogue_uri: str) -> tuple[list[str], pa.Array]:
    """Check the contract and the ids before any work; return the columns to read and all song ids."""
    try:
        schema = storage.read_parquet_schema(catalogue_uri)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"catalogue not found: {storage.describe(catalogue_uri)}") from exc
    validate(schema, CATALOGUE, where=storage.describe(catalogue_uri))
    ids = storage.read_parquet(catalogue_uri, columns=["song_id"])
    check_unique_ids(ids, where=f"catalogue {storage.describe(catalogue_uri)}")
    return _catalogue_columns(schema), ids.column("song_id").combine_chunks().cast(pa.string())


def build_dataset(catalogue_uri: str, columns: list[str], id_filter: tuple[pa.Array | None, bool], info: BundleInfo,
                  res: Resources, rows_per_part: int, staging_uri: str, partition_uri: str, embeddings: bool = False,
                  timeline_seconds: float | None = None, fence: Fence | None = None, progress_sink=None,
                  max_retries: int = DEFAULT_RETRIES):
    """The Ray Data plan; returns a dataset of per-part commit records (one row per committed part).

    `id_filter` is (ids, keep) from todo_filter: the rows to label are those whose song_id is in ids
    (keep) or not in them; (None, False) labels every row.

    Every task and actor is retried at most `max_retries` times when its process or node dies (Ray
    Data's default is forever: one poison track once hung a job for good). A track that crashes the
    featuriser never kills a task (featurise_batch isolates it), so what is left to retry is a lost
    node or an out-of-memory kill of the task itself; when retries run out the run fails with Ray's
    error and commits nothing more. No block is ever dropped (`max_errored_blocks` stays 0), and
    _finish refuses to write the completion record unless every catalogue song has its row.
    """
    import ray  # noqa: PLC0415
    from labeler.predict import Predictor  # noqa: PLC0415

    retry = {"max_retries": max_retries}
    fs, path = storage.filesystem(catalogue_uri)
    # ray_remote_args (deprecated in Ray 2.60, no named equivalent for max_retries yet): read tasks fuse with the
    # maps after them and take these args, so without it the fused read+featurise would retry forever.
    ds = ray.data.read_parquet(path, filesystem=fs, ray_remote_args=retry).select_columns(columns)
    ids, keep = id_filter
    if ids is not None:
        ds = ds.map_batches(_filter_ids, batch_format="pyarrow", fn_kwargs={"ids_ref": [ray.put(ids)], "keep": keep},
                            batch_size=None, **retry)
    ds = ds.repartition(target_num_rows_per_block=res.featurise_batch_size)
    ds = ds.map_batches(
        featurise_batch,
        batch_format="numpy",
        batch_size=res.featurise_batch_size,
        num_cpus=res.featurise_cpus,
        memory=featurise_memory_bytes(info.featurizer if info.uses_audio else None, res.featurise_batch_size),
        fn_kwargs={
            "featurizer": info.featurizer if info.uses_audio else None,
            "tokenizer": info.tokenizer,
            "lyrics_json": json.dumps(info.lyrics, sort_keys=True),
            "keep_audio_uri": timeline_seconds is not None,
            "progress_sink": progress_sink,
            "max_retries": max_retries,
        },
        **retry,
    )
    actor_resources = {"num_gpus": 1, "num_cpus": res.actor_cpus} if res.use_gpu else {"num_cpus": res.actor_cpus}
    ds = ds.map_batches(
        Predictor,
        fn_constructor_kwargs={"bundle_uri": info.uri, "batch_size": res.predict_batch_size,
                               "embeddings": embeddings, "timeline_seconds": timeline_seconds,
                               "expect_version": info.model_version},
        batch_format="numpy",
        batch_size=res.predict_batch_size,
        compute=ray.data.ActorPoolStrategy(min_size=res.min_actors, max_size=res.max_actors),
        max_restarts=max_retries,
        max_task_retries=max_retries,
        **actor_resources,
    )
    # Committing a part is one small write and a rename: it reserves no CPU, so it never waits behind
    # featurise tasks that hold every CPU (Ray Data otherwise warns that the job may hang).
    return ds.map_batches(
        commit_part,
        batch_format="numpy",
        batch_size=rows_per_part,
        num_cpus=0,
        fn_kwargs={"info": info, "staging_uri": staging_uri, "partition_uri": partition_uri, "fence": fence},
        **retry,
    )


def _ids_in(ids: pa.Array, value_set: pa.Array) -> int:
    if len(value_set) == 0 or len(ids) == 0:
        return 0
    return int(pc.sum(pc.is_in(ids, value_set=value_set)).as_py() or 0)


def label_catalogue(catalogue_uri: str, bundle_uri: str, output_uri: str,
                    config: LabelJobConfig | None = None, console=None) -> LabelSummary:
    """Label every catalogue song that this bundle's model version has not labelled yet.

    The catalogue's contract and its song ids are checked before any work (SchemaError naming the
    columns). Returns the run's summary; raises RuntimeError, without writing the completion record,
    if the committed partition does not hold exactly one row per catalogue song, and
    labeler.lease.LeaseHeldError, before any work, while another run writes this output and version.
    With a `console` (labeler.console.Console), the run shows a progress line of songs done.
    """
    from labeler.console import Console  # noqa: PLC0415

    console = console or Console.silent()
    config = config or LabelJobConfig()
    started_at = datetime.now(timezone.utc)
    catalogue_uri = storage.absolute_uri(catalogue_uri)
    output_uri = storage.absolute_uri(output_uri)
    # The whole bundle is verified first: a bad bundle fails here, before a lease, a file or Ray.
    info = read_bundle_info(bundle_uri, config.expect_version)
    columns, ids = _validated_catalogue(catalogue_uri)
    if config.timeline_seconds is not None and not info.uses_audio:
        raise ValueError(f"--timeline labels windows of the audio, but bundle {storage.describe(info.uri)} "
                         f"is a {info.branch} model without an audio branch")
    layout = OutputLayout(output_uri, info.model_version)
    run_id = new_run_id(started_at)
    # What is done is read under the lease: a run still committing would otherwise be relabelled.
    with Lease(layout.lease_dir, run_id, config.lease_seconds) as lease:
        _check_same_optional_columns(layout, config)
        done = read_partition(layout, ["song_id"]).column("song_id").combine_chunks()
        already, *id_filter = todo_filter(ids, done)
        del done
        summary = LabelSummary(
            catalogue_uri=catalogue_uri, output_uri=layout.output_uri, partition_uri=layout.partition_uri,
            model_id=info.model_id, model_version=info.model_version, run_id=run_id,
            catalogue_rows=len(ids), already_labelled=already,
        )
        todo = summary.catalogue_rows - summary.already_labelled
        log.info("catalogue %s: %d songs, %d already labelled by version %s, %d to label",
                 storage.describe(catalogue_uri), len(ids), summary.already_labelled, info.model_version, todo)
        if todo == 0 and storage.exists(layout.success_uri):
            return _finish(layout, summary, ids, started_at, config.plot, lease=None)

        t0 = time.perf_counter()
        if todo:
            import ray  # noqa: PLC0415

            from labeler.console import ensure_ray as start_ray  # noqa: PLC0415

            start_ray(config.address)
            res = resolve_resources(config, ray.cluster_resources())
            log.info("resources: %s", res)
            summary.plan = res.describe()
            _report_stale_staging(layout)
            storage.remove(layout.success_uri)  # the version is incomplete until this run finishes
            staging = layout.staging_uri(run_id)
            errors: Counter = Counter()
            audio_errors: Counter = Counter()
            with console.stage("label", total=todo, remote=True) as stage:
                records = build_dataset(catalogue_uri, columns, tuple(id_filter), info, res, config.rows_per_part, staging,
                                        layout.partition_uri, config.embeddings, config.timeline_seconds,
                                        fence=lease.fence, progress_sink=stage.sink, max_retries=config.max_retries)
                for record in records.iter_rows():
                    if lease.lost.is_set():
                        lease.check_held()  # raises LeaseLostError: the commits are fenced off already
                    summary.files.append(record["file"])
                    summary.written += int(record["rows"])
                    summary.labelled += int(record["labelled"])
                    errors.update(json.loads(record["errors"]))
                    audio_errors.update(json.loads(record["audio_errors"]))
                    log.info("committed %s (%d rows; %d/%d this run)", _basename(record["file"]), record["rows"], summary.written, todo)
            summary.errors, summary.audio_errors = dict(errors), dict(audio_errors)
            recover_cwd()
            try:
                storage.remove(staging, recursive=True)
            except OSError as exc:  # housekeeping only: the next run reports a leftover staging directory
                log.warning("could not remove the staging directory %s: %s", staging, exc)
        summary.seconds = time.perf_counter() - t0
        return _finish(layout, summary, ids, started_at, config.plot, lease=lease)


def _check_same_optional_columns(layout: OutputLayout, config: LabelJobConfig) -> None:
    """Refuse to add parts with other optional columns than the version's committed parts have.

    Readers take one schema for a partition; parts with and without `embedding` would make the
    column silently vanish (or appear null) depending on which part a reader looks at first.
    """
    parts = layout.part_uris()
    if not parts:
        return
    names = set(storage.read_parquet_schema(parts[0]).names)
    have = {"embeddings": "embedding" in names, "timeline": "timeline" in names}
    want = {"embeddings": config.embeddings, "timeline": config.timeline_seconds is not None}
    if have != want:
        def flags(d: dict) -> str:
            return " ".join(f"--{k}" for k, v in d.items() if v) or "neither --embeddings nor --timeline"

        raise ValueError(f"{storage.describe(layout.partition_uri)} was labelled with {flags(have)}; this run asks for "
                         f"{flags(want)}: use the same options, or label into another --output")


def _report_stale_staging(layout: OutputLayout) -> None:
    """Name the staging folders killed runs left behind (never committed, ignored by readers).

    They are not deleted: a run deletes nothing but its own staging folder, so no path it did not
    make itself can ever be removed. Delete them by hand when no run is writing.
    """
    stale = storage.listdir(layout.staging_root)
    if stale:
        log.warning("%d staging folder(s) of earlier runs under %s hold uncommitted parts (safe to delete "
                    "while no run writes this version)", len(stale), storage.describe(layout.staging_root))


def _finish(layout: OutputLayout, summary: LabelSummary, ids: pa.Array, started_at: datetime,
            plot: str | None, lease: Lease | None) -> LabelSummary:
    """Check one row per catalogue song, fill the partition-wide figures, write the record last (given a lease).

    Vectorised (pyarrow compute, no Python object per row): at 10 million rows this is the driver's peak
    (bench/bench_driver_scale.py). Idempotent: it only reads the partition and (re)writes the records, so a
    re-run after a driver that died here writes them without labelling anything.
    """
    table = read_partition(layout, ["song_id", "quadrant", "error", *(("arousal_prob", "valence_prob") if plot else ())])
    summary.partition_rows = table.num_rows
    try:
        check_unique_ids(table, where=f"labels {storage.describe(layout.partition_uri)}")
    except SchemaError as exc:
        raise RuntimeError(f"{exc}; not writing {SUCCESS_FILE} (was another run writing the same output?)") from exc
    missing = len(ids) - _ids_in(ids, table.column("song_id").combine_chunks())
    if missing:
        raise RuntimeError(f"{missing} catalogue song(s) have no label row in {storage.describe(layout.partition_uri)}; "
                           f"not writing {SUCCESS_FILE}")
    quadrants = _value_counts(table.column("quadrant"))
    summary.quadrants = {q: quadrants.get(q, 0) for q in QUADRANTS} if quadrants else {}
    if plot:
        summary.plot = plot_labels(table, plot, f"{summary.model_id} {summary.model_version}")
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
            "started_at": started_at.isoformat(),
            "finished_at": datetime.now(timezone.utc).isoformat(),
            "files": sorted(_basename(u) for u in layout.part_uris()),
        }
        text = json.dumps(record, indent=2, sort_keys=True)
        storage.write_text(layout.success_uri, text)
        storage.write_text(layout.root_success_uri, text)
    return summary


def _value_counts(column: pa.ChunkedArray) -> dict:
    counts = pc.value_counts(pc.drop_null(column))
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))


def plot_labels(table: pa.Table, path: str, title: str) -> str:
    """PNG: the quadrant distribution and the valence-arousal scatter of the labelled songs."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    quadrants = [q for q in table.column("quadrant").to_pylist()]
    counts = Counter(q for q in quadrants if q is not None)
    valence = np.array(table.column("valence_prob").to_pylist(), dtype=float)
    arousal = np.array(table.column("arousal_prob").to_pylist(), dtype=float)
    colours = {"Q1": "tab:orange", "Q2": "tab:red", "Q3": "tab:blue", "Q4": "tab:green"}
    fig, (ax_bar, ax_sc) = plt.subplots(1, 2, figsize=(11, 4.8))
    ax_bar.bar(list(QUADRANTS), [counts.get(q, 0) for q in QUADRANTS], color=[colours[q] for q in QUADRANTS])
    ax_bar.set_title("songs per quadrant")
    ax_bar.set_ylabel("songs")
    for i, q in enumerate(QUADRANTS):
        ax_bar.annotate(str(counts.get(q, 0)), (i, counts.get(q, 0)), ha="center", va="bottom")
    both = ~np.isnan(valence) & ~np.isnan(arousal)
    for q in QUADRANTS:
        sel = both & np.array([x == q for x in quadrants], dtype=bool)
        ax_sc.scatter(valence[sel], arousal[sel], s=12, alpha=0.7, color=colours[q], label=q)
    for q, (x, y) in {"Q1": (0.98, 0.98), "Q2": (0.02, 0.98), "Q3": (0.02, 0.02), "Q4": (0.98, 0.02)}.items():
        ax_sc.text(x, y, f"{q} {QUADRANT_DESCRIPTIONS[q].split()[0]}", transform=ax_sc.transAxes, fontsize=8,
                   color=colours[q], ha="right" if x > 0.5 else "left", va="top" if y > 0.5 else "bottom")
    ax_sc.axhline(0.5, color="grey", lw=0.8)
    ax_sc.axvline(0.5, color="grey", lw=0.8)
    ax_sc.set_xlim(0, 1)
    ax_sc.set_ylim(0, 1)
    ax_sc.set_xlabel("P(valence high)")
    ax_sc.set_ylabel("P(arousal high)")
    ax_sc.set_title("valence-arousal")
    if both.any():
        ax_sc.legend(loc="center right", fontsize=8)
    fig.suptitle(f"labels: {title} ({table.num_rows} songs, {int(both.sum())} with both axes)")
    fig.tight_layout()
    if storage.is_remote(path):
        import io  # noqa: PLC0415

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        storage.write_bytes(path, buf.getvalue())
    else:
        storage.makedirs(storage.parent(storage.absolute_uri(path)))
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------
# command line


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalogue", required=True, metavar="URI", help="catalogue Parquet file or directory (local or s3://)")
    parser.add_argument("--bundle", required=True, metavar="URI", help="model bundle directory (local or s3://)")
    parser.add_argument("--output", required=True, metavar="URI", help="labels root; writes <output>/version=<model_version>/")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--featurise-batch-size", type=int, default=None, help="songs per featurise batch (default 16)")
    parser.add_argument("--predict-batch-size", type=int, default=None, help="songs per model call (default 64 GPU / 32 CPU)")
    parser.add_argument("--featurise-cpus", type=float, default=None, help="CPUs per featurise task (default: 1 with GPUs; CPU only, what fits one task per CPU beside the actors)")
    parser.add_argument("--min-actors", type=int, default=None, help="smallest Predictor pool (default 1)")
    parser.add_argument("--max-actors", type=int, default=None, help="largest Predictor pool (default: GPUs, or CPUs/8)")
    gpu = parser.add_mutually_exclusive_group()
    gpu.add_argument("--gpu", dest="use_gpu", action="store_const", const=True, default=None, help="Predictor on GPU actors")
    gpu.add_argument("--no-gpu", dest="use_gpu", action="store_const", const=False, help="Predictor on CPU actors")
    parser.add_argument("--rows-per-part", type=int, default=LabelJobConfig.rows_per_part,
                        help="rows per committed part file, the unit a killed run resumes from (default %(default)s)")
    parser.add_argument("--lease-seconds", type=float, default=LabelJobConfig.lease_seconds,
                        help="how long a killed run keeps other runs off this output version (default %(default)s)")
    parser.add_argument("--expect-version", default=None, metavar="V",
                        help="refuse the bundle unless its recomputed model_version is V (pins the model against tampering)")
    parser.add_argument("--max-retries", type=int, default=LabelJobConfig.max_retries,
                        help="retries of a task, actor or track whose process died before the track is isolated "
                             "as a worker_crash row or the run fails (default %(default)s)")
    parser.add_argument("--plot", default=None, metavar="PNG", help="also draw the quadrant distribution and V-A scatter")
    parser.add_argument("--embeddings", action="store_true",
                        help="also write `embedding`: the model's penultimate vector, L2-normalised, for similarity search")
    parser.add_argument("--timeline", dest="timeline_seconds", type=float, default=None, metavar="SECONDS",
                        help="also write `timeline`: labels of successive SECONDS-long windows of the whole track")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def config_from_args(args: argparse.Namespace) -> LabelJobConfig:
    return LabelJobConfig(
        address=args.address, featurise_batch_size=args.featurise_batch_size, predict_batch_size=args.predict_batch_size,
        featurise_cpus=args.featurise_cpus, min_actors=args.min_actors, max_actors=args.max_actors,
        use_gpu=args.use_gpu, rows_per_part=args.rows_per_part, plot=args.plot, lease_seconds=args.lease_seconds,
        embeddings=args.embeddings, timeline_seconds=args.timeline_seconds, expect_version=args.expect_version,
        max_retries=args.max_retries,
    )


def run_cli(args: argparse.Namespace, console=None) -> int:
    from labeler.console import Console  # noqa: PLC0415

    console = console or Console()
    summary = label_catalogue(args.catalogue, args.bundle, args.output, config_from_args(args), console=console)
    console.print(json.dumps(summary.to_dict(), indent=2) if args.json else summary.to_text())
    return 0
