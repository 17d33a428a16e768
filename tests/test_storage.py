"""Storage: one way to open local paths, file://, s3:// (a real S3-API server on loopback) and memory://."""

from __future__ import annotations

import io
import os
import re
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from labeler.io import storage

REPO = Path(__file__).resolve().parents[1]


def _table() -> pa.Table:
    return pa.table({"song_id": ["a", "b", "c"], "score": [0.1, 0.2, 0.3]})


def _wav_bytes(sr: int = 16000) -> tuple[bytes, np.ndarray]:
    samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(sr // 2) / sr)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, samples, sr, format="WAV", subtype="FLOAT")
    return buffer.getvalue(), samples


def _roundtrip(base: str) -> None:
    """The same checks for every scheme: bytes, text, Parquet, audio through a seekable file, listing."""
    data_uri = storage.join(base, "data", "table.parquet")
    storage.write_parquet(_table(), data_uri)
    assert storage.exists(data_uri)
    assert storage.read_parquet(data_uri).equals(_table())
    assert storage.read_parquet(data_uri, columns=["song_id"]).column_names == ["song_id"]
    assert storage.read_parquet_schema(data_uri).names == ["song_id", "score"]

    wav, samples = _wav_bytes()
    audio_uri = storage.join(base, "audio", "tone.wav")
    storage.write_bytes(audio_uri, wav)
    assert storage.size(audio_uri) == len(wav)
    assert storage.read_bytes(audio_uri) == wav
    with storage.open_file(audio_uri) as f:
        decoded, sr = sf.read(f, dtype="float32")
    assert sr == 16000 and np.array_equal(decoded, samples)
    with storage.open_file(audio_uri) as f:  # soundfile seeks: decode only a window
        with sf.SoundFile(f) as sound:
            sound.seek(4000)
            assert np.array_equal(sound.read(100, dtype="float32"), samples[4000:4100])

    text_uri = storage.join(base, "notes", "hello.txt")
    storage.write_text(text_uri, "héllo")
    assert storage.read_text(text_uri) == "héllo"

    assert storage.listdir(base) == sorted([storage.join(base, d) for d in ("audio", "data", "notes")])
    assert storage.listdir(storage.join(base, "audio")) == [audio_uri]
    assert storage.listdir(storage.join(base, "nothing-here")) == []
    assert not storage.exists(storage.join(base, "audio", "other.wav"))

    moved = storage.join(base, "audio", "moved.wav")
    storage.move(audio_uri, moved)
    assert storage.exists(moved) and not storage.exists(audio_uri)
    storage.remove(storage.join(base, "notes"), recursive=True)
    assert not storage.exists(text_uri)
    storage.remove(storage.join(base, "never-written"))  # removing what is not there is a no-op


def test_local_path(tmp_path):
    _roundtrip(str(tmp_path / "store"))


def test_file_scheme(tmp_path):
    base = f"file://{tmp_path}/store"
    _roundtrip(base)
    assert storage.strip_scheme(base) == f"{tmp_path}/store"
    assert not storage.is_remote(base) and storage.absolute_uri(base) == f"{tmp_path}/store"


def test_memory_scheme():
    _roundtrip(f"memory://test-{uuid.uuid4().hex[:8]}")


def test_s3(s3_bucket):
    _roundtrip(f"{s3_bucket}/prefix")
    # Listing sees what another client wrote (no stale directory cache).
    import boto3

    bucket = s3_bucket[len("s3://"):]
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).put_object(Bucket=bucket, Key="prefix/data/extra.bin", Body=b"x")
    assert f"{s3_bucket}/prefix/data/extra.bin" in storage.listdir(f"{s3_bucket}/prefix/data")


def test_s3_parquet_directory_and_pyarrow_filesystem(s3_bucket):
    """Ray Data reads and writes through the pyarrow filesystem; a directory of parts reads as one table."""
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(f"{s3_bucket}/parts")
    assert path == f"{s3_bucket[5:]}/parts"
    for i in range(2):
        pq.write_table(_table(), f"{path}/part-{i}.parquet", filesystem=fs)
    assert storage.read_parquet(f"{s3_bucket}/parts").num_rows == 6
    assert storage.read_parquet_schema(f"{s3_bucket}/parts").names == ["song_id", "score"]


def test_missing_files_raise_file_not_found(tmp_path, s3_bucket):
    for uri in (str(tmp_path / "absent.wav"), f"{s3_bucket}/absent.wav", "memory://absent/x.wav"):
        with pytest.raises(FileNotFoundError):
            storage.read_bytes(uri)


def test_join_and_parent():
    assert storage.join("s3://bucket/a/", "b", "c.wav") == "s3://bucket/a/b/c.wav"
    assert storage.join("memory://x", "y") == "memory://x/y"
    assert storage.join("/data/cat", "audio", "a.wav") == "/data/cat/audio/a.wav"
    assert storage.parent("s3://bucket/a/b.wav") == "s3://bucket/a"
    assert storage.parent("/data/cat/a.wav") == "/data/cat"


def test_schemes_and_absolute_uris(tmp_path, monkeypatch):
    assert storage.is_s3("s3://b/k") and storage.is_s3("s3a://b/k") and not storage.is_s3("/b/k")
    assert storage.is_remote("s3://b/k") and storage.is_remote("memory://x") and not storage.is_remote("/x")
    assert storage.strip_scheme("s3://bucket/key") == "bucket/key"
    assert storage.strip_scheme("memory://a/b") == "/a/b"
    monkeypatch.chdir(tmp_path)
    assert storage.absolute_uri("rel/file.wav") == str(tmp_path / "rel" / "file.wav")
    assert storage.absolute_uri("s3://b/k") == "s3://b/k"
    assert storage.absolute_uri("~/x").startswith(os.path.expanduser("~"))


def test_describe_never_shows_credentials():
    assert storage.describe("s3://AKIAXXX:secret@bucket/key.parquet") == "s3://***@bucket/key.parquet"
    assert "secret" not in storage.describe("https://user:secret@host/path")
    assert storage.describe("s3://AKIAXXX:se/cr+et@bucket/k") == "s3://***@bucket/k"  # AWS secrets hold '/'
    assert storage.describe("https://token@host/p") == "https://***@host/p"
    assert storage.describe("s3://bucket/catalogue.parquet") == "s3://bucket/catalogue.parquet"
    # An '@' inside the path is not a credential: the bucket and key stay readable.
    assert storage.describe("s3://bucket/artist@live/song.mp3") == "s3://bucket/artist@live/song.mp3"
    assert storage.describe("/music/me@home/a.wav") == "/music/me@home/a.wav"


def test_s3_endpoint_comes_from_the_environment(s3_server, monkeypatch):
    fs = storage.fsspec_filesystem("s3://bucket/x")
    assert fs.endpoint_url == s3_server and fs.client_kwargs == {"region_name": "us-east-1"}
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")
    assert storage._s3_options()["endpoint_url"] == "http://127.0.0.1:1"


def test_only_storage_imports_s3fs():
    """Everything else reaches S3 through labeler.io.storage, so credentials and endpoints live in one place."""
    pattern = re.compile(r"^\s*(import\s+s3fs|from\s+s3fs\b)", re.MULTILINE)
    offenders = []
    for package in ("labeler", "train", "jobs"):
        for path in (REPO / package).rglob("*.py"):
            if pattern.search(path.read_text(encoding="utf-8")) and path != REPO / "labeler" / "io" / "storage.py":
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
    assert pattern.search((REPO / "labeler" / "io" / "storage.py").read_text(encoding="utf-8"))
