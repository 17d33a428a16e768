"""The feature cache: a manifest's songs featurised once (audio, lyrics tokens, the frozen encoders' outputs)
as Parquet shards that every fold, branch and epoch reads back (`read_split`: a small cache whole with pyarrow,
a large one streamed). It runs the callables labelling uses (`labeler.audio.Featurizer`,
`labeler.lyrics.text.LyricsTokenizer`), so training and labelling see the same features.

Layout: `<cache_root>/<featurizer.fingerprint()>-<key>/`, `key` the hash of `cache_key`'s inputs; a
`_SUCCESS.json` written last marks a complete cache (one without it is rebuilt). Columns:

    song_id, fold, quadrant, valence, arousal, [label, label_index int16 (classes)]   from the manifest
    log_mel float16 (n_frames, n_mels), has_audio, audio_error, [descriptors float32]
    [patch_features float32 (patches, 1506)]           the frozen musicnn trunk's output (MusiCNN runs)
    mel_stats float32 (3 * n_mels)                     labeler.audio.features.logmel_stats (audio baseline)
    input_ids int32, attention_mask int8 (max_tokens), has_lyrics, lyrics_error   (when tokenised)
    [lyrics_windows float32 (windows, hidden),     the frozen lyrics encoder's output per window and which
     lyrics_window_used bool (windows)]            windows hold text (runs whose lyrics encoder is frozen)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid

import numpy as np

from labeler.contracts.inputs import AUDIO_URI, CATALOGUE_ONLY, CHORUS_COLUMNS, LYRICS, SONG_ID
from labeler.io import storage
from labeler.label_job.featurise_job import error_counts
from labeler.runtime.isolate import DEFAULT_RETRIES

log = logging.getLogger(__name__)

SUCCESS = "_SUCCESS.json"
# CPUs a cache read (+ its row filter) asks for: small, so reads never wait behind training workers
# that each hold whole CPUs (on a 2-CPU machine a 1-CPU read would deadlock against a 1-CPU worker).
READ_CPUS = 0.25
IN_MEMORY_MB = 1024.0  # caches up to this size are read whole (read_split); TrainPreset.materialize_mb for trials
# The manifest's columns a cache row is built from: the model's inputs (labeler.contracts.inputs) and the targets.
MANIFEST_COLUMNS = (SONG_ID, "fold", "quadrant", "valence", "arousal", AUDIO_URI, LYRICS, *CHORUS_COLUMNS, "label")
LYRICS_VECTOR_COLUMNS = ("lyrics_windows", "lyrics_window_used")  # a frozen lyrics encoder's output, per window
DROP_AFTER = CATALOGUE_ONLY  # not stored: the cache holds features, tokens and targets only


def _hash_uri_bytes(digest, uri: str) -> None:
    """Feed a file's bytes (or every file of a directory, in name order) into `digest`, streaming."""
    fs = storage.fsspec_filesystem(uri)
    path = storage.strip_scheme(uri)
    files = sorted(fs.find(path)) if fs.isdir(path) else [path]
    for name in files:
        if os.path.basename(name).startswith(("_", ".")):
            continue
        digest.update(os.path.basename(name).encode())
        with fs.open(name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)


def cache_key(manifest_uri: str, featurizer, tokenizer_dir: str | None, lyrics, audio_encoder: str | None = None,
              lyrics_encoder: dict | None = None) -> str:
    """`<featurizer fingerprint>-<16 hex of sha256(manifest bytes, tokenizer files, lyrics config[, encoders])>`.

    `lyrics_encoder` (a LyricsEncoderConfig dict) adds what the cached window vectors depend on: its
    pooling and window width and the encoder's own files (config and weights, `encoder_files`).
    """
    digest = hashlib.sha256()
    if audio_encoder:
        digest.update(f"musicnn-trunk:{audio_encoder}".encode())  # what patch_features hold
    if lyrics_encoder:
        digest.update(json.dumps({k: lyrics_encoder.get(k) for k in ("pooling", "window_tokens")},
                                 sort_keys=True).encode())
        files = encoder_files(lyrics_encoder["name_or_path"])
        if not files:  # a hub id: its name is all that is known before it is downloaded
            digest.update(f"lyrics-encoder:{lyrics_encoder['name_or_path']}".encode())
        for path in files:
            _hash_uri_bytes(digest, path)
    _hash_uri_bytes(digest, manifest_uri)
    if tokenizer_dir:
        for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model"):
            p = os.path.join(tokenizer_dir, name)
            if os.path.exists(p):
                _hash_uri_bytes(digest, p)
        digest.update(json.dumps(lyrics.to_dict(), sort_keys=True).encode())
    else:
        digest.update(b"no-lyrics")
    return f"{featurizer.fingerprint()}-{digest.hexdigest()[:16]}"


def encoder_files(name_or_path: str) -> list[str]:
    """The files of a lyrics encoder that fix its outputs: its config and weights, where labeler.lyrics.pretrained resolves
    it to a local directory (an alias, a folder, a downloaded s3:// folder); [] for a Hugging Face hub id."""
    from labeler.lyrics.pretrained import resolve_encoder  # noqa: PLC0415

    root = resolve_encoder(name_or_path)
    if not os.path.isdir(root):
        return []
    names = ("config.json", "model.safetensors", "pytorch_model.bin")
    return [os.path.join(root, n) for n in names if os.path.exists(os.path.join(root, n))]


class CacheFeaturizer:
    """One Ray Data actor stage: Featurizer, then has_audio + log-mel statistics, then LyricsTokenizer.

    Why one stage: every actor holds a CPU for its lifetime; separate actor stages for audio and
    lyrics on a small cluster can hold every CPU and starve the Parquet read tasks feeding them.
    Audio is featurised in a crash-isolation child (labeler.runtime.isolate): a track that kills it gets
    `audio_error = 'worker_crash: ...'` and has_audio False, so training skips it and the cache's
    _SUCCESS.json counts it, instead of the actor dying and being restarted forever.

    `lyrics_encoder` (a LyricsEncoderConfig dict, with a tokenizer): the pretrained encoder, in eval mode,
    turns each song's tokens into `lyrics_windows` / `lyrics_window_used` (LyricsEncoder.window_vectors),
    so a frozen encoder runs once per song; rows without lyrics get zeros and no used window.
    """

    def __init__(self, featurizer: dict, tokenizer_dir: str | None, lyrics: dict | None,
                 classes: list[str] | None = None, progress_sink=None, audio_encoder: str | None = None,
                 max_retries: int = DEFAULT_RETRIES, torch_threads: int | None = None,
                 lyrics_encoder: dict | None = None):
        from labeler.runtime.isolate import IsolatedFeaturizer  # noqa: PLC0415

        self.classes = {name: i for i, name in enumerate(classes or [])}
        self.progress_sink = progress_sink  # labeler.runtime.console: songs done are counted on the driver's line
        self.featurize = IsolatedFeaturizer(featurizer, retries=max_retries)
        self.encoder = None
        if audio_encoder or lyrics_encoder:
            from labeler.inference.predict import configure_torch_threads  # noqa: PLC0415

            configure_torch_threads(torch_threads)
        if audio_encoder:  # a frozen trunk's output never changes: compute it once per song, here
            from labeler.musicnn.encoder import MusicnnEncoder  # noqa: PLC0415

            self.encoder = MusicnnEncoder(1, encoder=audio_encoder)
            self.encoder.load_pretrained()
        self.tokenize = None
        if tokenizer_dir:
            from labeler.lyrics.text import LyricsTokenizer  # noqa: PLC0415

            self.tokenize = LyricsTokenizer(tokenizer_dir, lyrics)
        self.lyrics_encoder = None
        if lyrics_encoder:
            if not tokenizer_dir:
                raise ValueError("caching lyrics window vectors needs the encoder's tokenizer (tokenizer_dir)")
            from labeler.contracts.coerce import config_from_dict  # noqa: PLC0415
            from labeler.models import LyricsEncoderConfig  # noqa: PLC0415
            from labeler.models.lyrics_encoder import LyricsEncoder  # noqa: PLC0415

            self.lyrics_encoder = LyricsEncoder(config_from_dict(LyricsEncoderConfig, dict(lyrics_encoder)),
                                                pretrained=True).eval()
        if audio_encoder or lyrics_encoder:  # frozen encoders run once per song, at the CPU's rate
            import torch  # noqa: PLC0415

            from labeler.models.engine import accelerate  # noqa: PLC0415

            for frozen in filter(None, (self.encoder, self.lyrics_encoder)):
                accelerate(frozen.eval(), torch.get_num_threads())

    def __call__(self, batch: dict) -> dict:
        from labeler.audio.features import logmel_stats  # noqa: PLC0415

        out = self.featurize(batch)
        errors = out["audio_error"]
        has_audio = np.array([e is None for e in errors], dtype=bool)
        mels = out["log_mel"]
        stats = np.zeros((len(errors), 3 * mels.shape[2]), dtype=np.float32)
        if has_audio.any():
            stats[has_audio] = logmel_stats(mels[has_audio].astype(np.float32))
        out["has_audio"] = has_audio
        out["mel_stats"] = stats
        if self.classes:
            out["label_index"] = np.array([self.classes.get(v, -1) if isinstance(v, str) else -1 for v in batch["label"]],
                                          dtype=np.int16)
        if self.encoder is not None:
            import torch  # noqa: PLC0415

            from labeler.musicnn.model import PATCH_FRAMES, TRUNK_DIM  # noqa: PLC0415

            feats = np.zeros((len(errors), mels.shape[1] // PATCH_FRAMES, TRUNK_DIM), dtype=np.float32)
            if has_audio.any():
                with torch.inference_mode():
                    feats[has_audio] = self.encoder.patch_features(torch.from_numpy(mels[has_audio])).numpy()
            out["patch_features"] = feats
        if self.tokenize is not None:
            out = self.tokenize(out)
        else:
            out["has_lyrics"] = np.zeros(len(errors), dtype=bool)
        if self.lyrics_encoder is not None:
            out.update(lyrics_window_vectors(self.lyrics_encoder, out["input_ids"], out["attention_mask"],
                                             out["has_lyrics"]))
        from labeler.runtime.console import report  # noqa: PLC0415

        report(self.progress_sink, len(errors))
        return {k: v for k, v in out.items() if k not in DROP_AFTER}


def lyrics_window_vectors(encoder, input_ids: np.ndarray, attention_mask: np.ndarray, has_lyrics: np.ndarray) -> dict:
    """{"lyrics_windows": float32 (n, windows, hidden), "lyrics_window_used": bool (n, windows)} of a tokenised
    batch, through `encoder` (a LyricsEncoder) without gradients; rows without lyrics stay zeros / unused."""
    import torch  # noqa: PLC0415

    n, total = input_ids.shape
    width = int(encoder.config.window_tokens) or total
    windows = -(-total // width)
    vectors = np.zeros((n, windows, encoder.embedding_dim), dtype=np.float32)
    used = np.zeros((n, windows), dtype=bool)
    rows = np.flatnonzero(has_lyrics)
    if len(rows):
        with torch.inference_mode():
            v, u = encoder.window_vectors(torch.from_numpy(input_ids[rows]), torch.from_numpy(attention_mask[rows]))
        vectors[rows], used[rows] = v.numpy(), u.numpy()
    return {"lyrics_windows": vectors, "lyrics_window_used": used}


def build_feature_cache(manifest_uri: str, cache_root_uri: str, featurizer, tokenizer_dir: str | None = None,
                        lyrics=None, concurrency: int = 0, batch_size: int = 8, console=None,
                        audio_encoder: str | None = None, max_retries: int = DEFAULT_RETRIES,
                        lyrics_encoder: dict | None = None) -> str:
    """Featurise (and tokenise) the manifest into `<cache_root>/<key>/` unless complete there; return its URI.

    With a `console` (labeler.runtime.console.Console), featurising shows a progress line of songs done.
    `audio_encoder` (a musicnn model id) also stores the frozen trunk's features of each patch per song;
    `lyrics_encoder` (a LyricsEncoderConfig dict, for a frozen lyrics encoder) its vectors of each window.

    Bounded everywhere: a track that crashes the featuriser is a counted `worker_crash` row (see
    CacheFeaturizer); an actor or task whose process dies otherwise is retried `max_retries` times,
    then the build fails with Ray's error and leaves no `_SUCCESS.json`.
    """
    import ray  # noqa: PLC0415

    from labeler.contracts.schemas import MANIFEST, validate  # noqa: PLC0415
    from labeler.runtime.console import Console  # noqa: PLC0415

    manifest_uri = storage.absolute_uri(manifest_uri)
    cache_root_uri = storage.absolute_uri(cache_root_uri)
    schema = storage.read_parquet_schema(manifest_uri)
    validate(schema, MANIFEST, where=storage.describe(manifest_uri))
    cache_uri = storage.join(cache_root_uri, cache_key(manifest_uri, featurizer, tokenizer_dir, lyrics, audio_encoder,
                                                       lyrics_encoder))
    classes = manifest_classes(manifest_uri)
    console = console or Console.silent()
    if storage.exists(storage.join(cache_uri, SUCCESS)):
        log.info("feature cache hit: %s", storage.describe(cache_uri))
        console.print(f"  features of this manifest are cached: {storage.describe(cache_uri)}")
        return cache_uri

    started = time.perf_counter()
    fs, path = storage.filesystem(manifest_uri)
    columns = [c for c in MANIFEST_COLUMNS if c in schema.names]
    ds = ray.data.read_parquet(path, filesystem=fs, ray_remote_args={"max_retries": max_retries}).select_columns(columns)
    # Leave one CPU to the read and write tasks around the actors (actors hold theirs for the whole build, and
    # a read task waiting for a CPU would starve them). Those tasks are light, so the CPU they leave idle goes
    # to the frozen encoder's threads instead (on 2 CPUs: one actor, 2 threads, 91 -> 53 s for the demo's 300
    # songs; bench/README.md): the encoder, not featurising, is most of an actor's time.
    cluster_cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    actors = concurrency or max(1, cluster_cpus - 1)
    torch_threads = max(1, cluster_cpus // actors)
    total = storage.read_parquet(manifest_uri, columns=["song_id"]).num_rows
    with console.stage("featurise", total=total, remote=True) as stage:
        ds = ds.map_batches(
            CacheFeaturizer, batch_size=batch_size, batch_format="numpy", num_cpus=1,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
            fn_constructor_kwargs={"featurizer": featurizer.to_dict(), "tokenizer_dir": tokenizer_dir,
                                   "lyrics": lyrics.to_dict() if lyrics is not None else None, "classes": classes,
                                   "progress_sink": stage.sink, "audio_encoder": audio_encoder, "max_retries": max_retries,
                                   "torch_threads": torch_threads, "lyrics_encoder": lyrics_encoder},
            max_restarts=max_retries, max_task_retries=max_retries,
        )
        staging = f"{cache_uri}.staging-{uuid.uuid4().hex[:8]}"
        sfs, spath = storage.filesystem(staging)
        ds.write_parquet(spath, filesystem=sfs)
    if storage.exists(cache_uri):  # an incomplete earlier attempt
        storage.remove(cache_uri, recursive=True)
    storage.move(staging, cache_uri)
    audio_errors = storage.read_parquet(cache_uri, columns=["audio_error"]).column("audio_error").to_pylist()
    skipped = error_counts(audio_errors)
    storage.write_text(storage.join(cache_uri, SUCCESS), json.dumps({
        "manifest": storage.describe(manifest_uri), "featurizer": featurizer.to_dict(),
        "tokenizer": tokenizer_dir, "lyrics": lyrics.to_dict() if lyrics is not None else None,
        "rows": len(audio_errors), "audio_skipped_by_kind": skipped, "classes": classes,
        "seconds": round(time.perf_counter() - started, 1),
    }, indent=2))
    log.info("feature cache built: %d rows (audio skipped: %s) in %.1f s -> %s", len(audio_errors), skipped or "none",
             time.perf_counter() - started, storage.describe(cache_uri))
    return cache_uri


def split_folds(test_fold: int, k: int) -> dict[str, list[int]]:
    """{"train": [...], "val": [v], "test": [t]}: fold ids per role, from train.data.folds.split_for."""
    from train.data.folds import split_for  # noqa: PLC0415

    roles = split_for(np.arange(k), test_fold, k)
    return {role: [int(f) for f in np.flatnonzero(roles == role)] for role in ("train", "val", "test")}


def in_memory(cache_uri: str, limit_mb: float = IN_MEMORY_MB) -> bool:
    """Whether a cache is small enough (its Parquet bytes on storage, all folds) to read whole into memory.

    Every Ray Data read is a new execution with seconds of fixed cost (file listing, footer readers, read
    tasks); on the small corpora this project trains on (hundreds to a few thousand songs) that cost
    rivals the training itself. A cache up to `limit_mb` is read with pyarrow instead and handed to Ray as
    in-memory blocks; a larger one streams, so memory stays bounded. `limit_mb <= 0` always streams.
    """
    return limit_mb > 0 and storage.tree_size(cache_uri) <= limit_mb * 2**20


def read_split(cache_uri: str, folds: list[int], columns: list[str] | None = None, require: str | None = None,
               limit_mb: float = IN_MEMORY_MB):
    """A Ray Dataset of the cache rows in `folds` (and with audio / lyrics when `require` says so).

    In memory (`in_memory(cache_uri, limit_mb)`: pyarrow reads the filtered rows once, no Ray read tasks) or
    lazy and streamed (`ray.data.read_parquet`); the rows and their types are the same either way.
    """
    import ray  # noqa: PLC0415

    wanted = sorted(set(columns) | {"fold", "has_audio", "has_lyrics"}) if columns is not None else None
    if in_memory(cache_uri, limit_mb):
        filters = [("fold", "in", [int(f) for f in folds])]
        if require in ("audio", "lyrics"):
            filters.append((f"has_{require}", "=", True))
        table = storage.read_parquet(cache_uri, columns=wanted, filters=filters)
        return ray.data.from_arrow(table.select(list(columns)) if columns is not None else table)
    from ray.data.expressions import col  # noqa: PLC0415

    fs, path = storage.filesystem(cache_uri)
    # Reads are light (Parquet pages) and must not wait behind training workers that hold whole CPUs.
    ds = ray.data.read_parquet(path, filesystem=fs, num_cpus=READ_CPUS)
    if wanted is not None:
        ds = ds.select_columns(wanted)
    expr = col("fold").is_in([int(f) for f in folds])
    if require == "audio":
        expr = expr & (col("has_audio") == True)  # noqa: E712 - an expression, not a Python comparison
    elif require == "lyrics":
        expr = expr & (col("has_lyrics") == True)  # noqa: E712
    ds = ds.filter(expr=expr, num_cpus=READ_CPUS)
    return ds.select_columns(list(columns)) if columns is not None else ds


def manifest_classes(manifest_uri: str) -> list[str] | None:
    """The sorted class names of a `classes` manifest (its `label` column); None for a quadrant manifest."""
    from train.data.manifest import label_kind  # noqa: PLC0415

    names = storage.read_parquet_schema(manifest_uri).names
    columns = ["dataset", "quadrant"] + (["label"] if "label" in names else [])
    kind, classes = label_kind(storage.read_parquet(manifest_uri, columns=columns), storage.describe(manifest_uri))
    return classes if kind == "classes" else None


def target_column(mode: str) -> str:
    """The cache column holding a row's training target: `label_index` in mode classes, else `quadrant`."""
    return "label_index" if mode == "classes" else "quadrant"


def caches_embeddings(featurizer) -> bool:
    """Whether a model with this featurizer (a FeaturizerConfig, its dict, or None for no audio) trains on
    the cache's frozen-MusiCNN `patch_features` instead of the log-mel: the musicnn front end."""
    from labeler.audio.config import uses_musicnn_frontend  # noqa: PLC0415

    return uses_musicnn_frontend(featurizer)


def branch_columns(branch: str, descriptors: bool = False, mode: str = "4Q", embeddings: bool = False,
                   lyrics_vectors: bool = False) -> list[str]:
    """The cache columns one branch trains on (tensors only: they go straight to iter_torch_batches).

    `embeddings`: the frozen MusiCNN's cached patch embeddings replace the log-mel. `lyrics_vectors`: the
    frozen lyrics encoder's cached window vectors replace the tokens (the lyrics branch only).
    """
    cols = [target_column(mode)]
    if branch in ("audio", "fusion"):
        cols += ["patch_features" if embeddings else "log_mel"] + (["descriptors"] if descriptors else [])
    if branch == "lyrics" and lyrics_vectors:
        cols += list(LYRICS_VECTOR_COLUMNS)
    elif branch in ("lyrics", "fusion"):
        cols += ["input_ids", "attention_mask"]
    if branch == "fusion":
        cols += ["has_audio", "has_lyrics"]
    return cols


def caches_lyrics_vectors(cache_uri: str) -> bool:
    """Whether the cache holds a frozen lyrics encoder's window vectors (it was built with `lyrics_encoder`)."""
    return LYRICS_VECTOR_COLUMNS[0] in storage.read_parquet_schema(cache_uri).names


def branch_requirement(branch: str) -> str | None:
    """Single-modality branches train on rows that have their modality; fusion on every row."""
    return {"audio": "audio", "lyrics": "lyrics"}.get(branch)


def scalar_columns(cache_uri: str, mode: str = "4Q") -> pa.Table:  # noqa: F821
    """fold, the target column, has_audio, has_lyrics of every cached row (a few bytes a row; read with pyarrow)."""
    return storage.read_parquet(cache_uri, columns=["fold", target_column(mode), "has_audio", "has_lyrics"])


def iter_numpy(cache_uri: str, folds: list[int], columns: list[str], require: str | None = None,
               batch_size: int = 256):
    """Stream numpy batches of a split (for baselines, class counts and driver-side evaluation)."""
    yield from read_split(cache_uri, folds, columns, require).iter_batches(batch_size=batch_size, batch_format="numpy")
