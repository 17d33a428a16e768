"""The feature cache: built once with Ray Data, reused, read back per split without the other folds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from labeler.io import storage


@pytest.fixture(scope="module")
def small_manifest(tmp_path_factory) -> str:
    """16 synthetic songs; the last one's audio is a copy named tests/poison's POISON_FILE, so featurising it
    kills the process with SIGSEGV (conftest exports the injection into every process the tests start)."""
    import pyarrow as pa

    from synth import SynthConfig, synthesise
    from tests.poison import sitecustomize as poison
    from train.data.datasets.synth import prepare_synth
    from train.data.folds import assign_folds

    root = tmp_path_factory.mktemp("fc")
    result = synthesise(SynthConfig(songs=16, output=str(root / "synth"), seconds=5.0, formats=("wav",), seed=1))
    manifest = prepare_synth(result.output)
    uris = manifest.column("audio_uri").to_pylist()
    poisoned = root / poison.POISON_FILE
    shutil.copy(uris[-1], poisoned)
    manifest = manifest.set_column(manifest.schema.get_field_index("audio_uri"), "audio_uri",
                                   pa.array([*uris[:-1], str(poisoned)], pa.string()))
    uri = str(root / "manifest.parquet")
    storage.write_parquet(assign_folds(manifest, k=4), uri)
    return uri


def test_cache_is_built_once_and_split_reads_filter_rows(small_manifest, ray_local, tmp_path):
    from labeler.audio import FeaturizerConfig
    from labeler.lyrics.text import LyricsConfig
    from tiny_models import tiny_bert_dir
    from train.cache.feature_cache import SUCCESS, build_feature_cache, in_memory, read_split, scalar_columns, split_folds

    fz = FeaturizerConfig(sample_rate=16000, clip_seconds=2.0, window_size=512, hop_size=320, fmax=8000.0)
    tok = tiny_bert_dir(tmp_path)
    lyr = LyricsConfig(max_tokens=32)
    uri = build_feature_cache(small_manifest, str(tmp_path / "cache"), fz, tok, lyr)
    assert uri.split("/")[-1].startswith(fz.fingerprint() + "-")
    assert storage.exists(storage.join(uri, SUCCESS))
    stamp = storage.read_text(storage.join(uri, SUCCESS))
    # The poison track crashed the featuriser: skipped for audio, counted, never retried forever.
    assert json.loads(stamp)["audio_skipped_by_kind"] == {"worker_crash": 1} and json.loads(stamp)["rows"] == 16
    # Second call: a cache hit (same directory, marker untouched, nothing re-featurised).
    assert build_feature_cache(small_manifest, str(tmp_path / "cache"), fz, tok, lyr) == uri
    assert storage.read_text(storage.join(uri, SUCCESS)) == stamp
    # Another featuriser config is another cache.

    scalars = scalar_columns(uri)
    assert scalars.num_rows == 16
    split = split_folds(0, 4)
    assert split == {"train": [2, 3], "val": [1], "test": [0]}
    ds = read_split(uri, split["train"], ["log_mel", "input_ids", "attention_mask", "quadrant", "fold"], "audio")
    batch = next(iter(ds.iter_batches(batch_size=64, batch_format="numpy")))
    assert set(np.unique(batch["fold"])) <= {2, 3}
    with_audio = scalars.column("has_audio").to_numpy(zero_copy_only=False)
    assert int((~with_audio).sum()) == 1
    assert len(batch["fold"]) == int((np.isin(scalars.column("fold").to_numpy(), [2, 3]) & with_audio).sum())
    assert batch["log_mel"].dtype == np.float16 and batch["log_mel"].shape[1:] == (fz.n_frames, fz.n_mels)
    assert batch["input_ids"].shape[1] == 32 and batch["attention_mask"].max() == 1
    assert np.abs(batch["log_mel"].astype(np.float32)).sum() > 0
    # A small cache is read whole with pyarrow (no Ray read tasks); streamed (limit_mb=0) it gives the same rows.
    assert in_memory(uri) and not in_memory(uri, limit_mb=0)
    streamed = read_split(uri, split["train"], ["log_mel", "input_ids", "quadrant", "fold"], "audio", limit_mb=0)
    whole = read_split(uri, split["train"], ["log_mel", "input_ids", "quadrant", "fold"], "audio")
    assert streamed.schema() == whole.schema() and whole.columns() == ["log_mel", "input_ids", "quadrant", "fold"]
    rows = [sorted(((r["fold"], r["quadrant"], r["log_mel"].tobytes()) for r in ds.take_all()), key=str)
            for ds in (streamed, whole)]
    assert rows[0] == rows[1] and len(rows[0]) == len(batch["fold"])


def test_cache_key_changes_with_featuriser_and_manifest(small_manifest, tmp_path):
    from labeler.audio import FeaturizerConfig
    from train.cache.feature_cache import cache_key

    a = FeaturizerConfig(sample_rate=16000, clip_seconds=2.0, fmax=8000.0)
    b = FeaturizerConfig(sample_rate=16000, clip_seconds=3.0, fmax=8000.0)
    assert cache_key(small_manifest, a, None, None) != cache_key(small_manifest, b, None, None)
    table = storage.read_parquet(small_manifest)
    other = str(tmp_path / "m2.parquet")
    storage.write_parquet(table.slice(0, 10), other)
    assert cache_key(small_manifest, a, None, None) != cache_key(other, a, None, None)
    assert cache_key(small_manifest, a, None, None) == cache_key(small_manifest, a, None, None)


def test_cache_key_follows_the_frozen_lyrics_encoder(small_manifest, tmp_path):
    from labeler.audio import FeaturizerConfig
    from labeler.lyrics.text import LyricsConfig
    from tiny_models import tiny_bert_dir
    from train.cache.feature_cache import cache_key

    fz, lyr = FeaturizerConfig(sample_rate=16000, clip_seconds=2.0, fmax=8000.0), LyricsConfig(max_tokens=32)
    tok, other = tiny_bert_dir(tmp_path), tiny_bert_dir(tmp_path, hidden_size=16)
    enc = {"name_or_path": tok, "pooling": "mean", "window_tokens": 32, "dropout": 0.1}
    key = cache_key(small_manifest, fz, tok, lyr, lyrics_encoder=enc)
    assert key != cache_key(small_manifest, fz, tok, lyr)  # tokens only: another cache
    assert key != cache_key(small_manifest, fz, tok, lyr, lyrics_encoder={**enc, "window_tokens": 16})
    assert key != cache_key(small_manifest, fz, tok, lyr, lyrics_encoder={**enc, "pooling": "cls"})
    assert key != cache_key(small_manifest, fz, tok, lyr, lyrics_encoder={**enc, "name_or_path": other})
    assert key == cache_key(small_manifest, fz, tok, lyr, lyrics_encoder={**enc, "dropout": 0.3})  # the head's, not the cache's
    hub = {**enc, "name_or_path": "some-org/some-encoder"}  # a hub id: keyed by its name (nothing to read offline)
    assert cache_key(small_manifest, fz, tok, lyr, lyrics_encoder=hub) != key
    assert cache_key(small_manifest, fz, tok, lyr, lyrics_encoder=hub) != cache_key(
        small_manifest, fz, tok, lyr, lyrics_encoder={**hub, "name_or_path": "other-org/some-encoder"})


def test_a_frozen_lyrics_encoder_is_cached_once_per_song(small_manifest, ray_local, tmp_path):
    """Built with `lyrics_encoder`, the cache holds each song's window vectors: the encoder's own output on the
    cache's tokens; songs without lyrics hold zeros; the lyrics branch then reads vectors, not tokens."""
    import pyarrow as pa
    import torch

    from labeler.audio import FeaturizerConfig
    from labeler.lyrics.text import LyricsConfig
    from labeler.models import LyricsEncoderConfig
    from labeler.models.lyrics_encoder import LyricsEncoder
    from tiny_models import tiny_bert_dir
    from train.cache.feature_cache import (
        LYRICS_VECTOR_COLUMNS,
        branch_columns,
        build_feature_cache,
        caches_lyrics_vectors,
        read_split,
    )

    table = storage.read_parquet(small_manifest)  # no audio (cheap: the featuriser only records why)
    table = table.set_column(table.schema.get_field_index("audio_uri"), "audio_uri", pa.nulls(table.num_rows, pa.string()))
    lyrics = table.column("lyrics").to_pylist()
    lyrics[0] = None
    table = table.set_column(table.schema.get_field_index("lyrics"), "lyrics", pa.array(lyrics, pa.string()))
    manifest = str(tmp_path / "lyrics_only.parquet")
    storage.write_parquet(table, manifest)
    fz = FeaturizerConfig(sample_rate=16000, clip_seconds=2.0, window_size=512, hop_size=320, fmax=8000.0)
    tok = tiny_bert_dir(tmp_path)
    lyr = LyricsConfig(max_tokens=16, max_windows=4, window_overlap=4)
    enc = {"name_or_path": tok, "pooling": "mean", "window_tokens": 16}
    uri = build_feature_cache(manifest, str(tmp_path / "cache"), fz, tok, lyr, lyrics_encoder=enc)
    assert caches_lyrics_vectors(uri)
    assert not caches_lyrics_vectors(build_feature_cache(manifest, str(tmp_path / "cache"), fz, tok, lyr))
    columns = branch_columns("lyrics", lyrics_vectors=True)
    assert set(LYRICS_VECTOR_COLUMNS) <= set(columns) and "input_ids" not in columns
    assert "input_ids" in branch_columns("fusion", lyrics_vectors=True)  # fusion fine-tunes: it reads tokens
    rows = read_split(uri, [0, 1, 2, 3], ["song_id", "input_ids", "attention_mask", "has_lyrics",
                                          *LYRICS_VECTOR_COLUMNS]).to_pandas()
    assert len(rows) == table.num_rows
    has = rows["has_lyrics"].to_numpy()
    assert 0 < has.sum() < len(has)
    vectors = np.stack(rows["lyrics_windows"].to_numpy())
    used = np.stack(rows["lyrics_window_used"].to_numpy())
    assert vectors.shape == (len(rows), 4, 32) and vectors.dtype == np.float32
    assert not vectors[~has].any() and not used[~has].any() and used[has, 0].all()
    encoder = LyricsEncoder(LyricsEncoderConfig(**enc), pretrained=True).eval()
    ids, mask = (torch.from_numpy(np.stack(rows[c].to_numpy())[has]) for c in ("input_ids", "attention_mask"))
    with torch.inference_mode():
        expected, expected_used = encoder.window_vectors(ids, mask)
    np.testing.assert_allclose(vectors[has], expected.numpy(), rtol=1e-5, atol=1e-6)
    assert (used[has] == expected_used.numpy()).all()
