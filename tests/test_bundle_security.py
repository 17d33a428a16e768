"""Attacks through a bundle (issue: security findings 1-3): each reproduces what the old code allowed.

- a crafted S3 prefix wrote a file outside the encoder cache (`..` in a key);
- the tokenizer that featurise tasks and Serve load was never checked (tampered or unlisted files);
- a crafted `model_version` built output paths outside the output and the job deleted a directory there;
- model_version hashed provenance and metrics, so re-exporting a model relabelled the catalogue.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pytest

from labeler.bundle.info import BundleInfo, read_bundle_info
from labeler.bundle.store import BundleError, load_bundle, save_bundle
from labeler.bundle.verified import compute_model_version, open_bundle, verify_bundle
from labeler.io import storage
from labeler.label_job import LabelJobConfig, OutputLayout, label_catalogue
from labeler.label_job.featurise import featurise_batch
from labeler.lyrics.pretrained import EncoderError, resolve_encoder
from tests.helpers import make_bundle

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> str:
    return make_bundle(tmp_path_factory.mktemp("bundles"))


def _copy(bundle: str, dst: Path) -> Path:
    import shutil

    shutil.copytree(bundle, dst)
    return dst


def _rewrite_config(root: Path, **changes) -> dict:
    """Edit config.json and re-sign it (a consistent forgery: hashes and model_version recomputed)."""
    config = json.loads((root / "config.json").read_text())
    config.update(changes)
    config["model_version"] = compute_model_version(config)
    (root / "config.json").write_text(json.dumps(config))
    return config


def _put(bucket: str, key: str, data: bytes) -> None:
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1").put_object(
        Bucket=bucket.removeprefix("s3://"), Key=key, Body=data)


# ----------------------------------------------------------------------------- 1: writes outside a cache


def test_s3_encoder_prefix_with_dotdot_key_writes_nothing_outside_the_cache(s3_bucket, tmp_path):
    _put(s3_bucket, "enc/config.json", b"{}")
    _put(s3_bucket, "enc/../../escaped.txt", b"owned")  # a literal key; the old code joined it onto the cache
    cache = tmp_path / "a" / "b" / "cache"
    with pytest.raises(EncoderError, match="unsafe relative path"):
        resolve_encoder(f"{s3_bucket}/enc", cache_dir=cache)
    assert not list(tmp_path.rglob("escaped.txt"))


def test_s3_bundle_downloads_only_listed_names_and_refuses_unsafe_ones(s3_bucket, bundle, tmp_path):
    uri = f"{s3_bucket}/models/b"
    for path in Path(bundle).rglob("*"):
        if path.is_file():
            _put(s3_bucket, f"models/b/{path.relative_to(bundle).as_posix()}", path.read_bytes())
    info = read_bundle_info(uri)
    tokenizer = info.tokenizer.load()  # verified, from a private folder of listed names only
    assert tokenizer("love")["input_ids"]
    assert load_bundle(uri, expect_version=info.model_version).model_version == info.model_version
    for name in ("tokenizer/../../../escaped.txt", "/etc/passwd", "tokenizer/.hidden", "notes.txt", "tokenizer/a/b"):
        config = json.loads((Path(bundle) / "config.json").read_text())
        config["files"][name] = "0" * 64
        config["model_version"] = compute_model_version(config)
        _put(s3_bucket, "models/b/config.json", json.dumps(config).encode())
        with pytest.raises(BundleError, match="unsafe or unknown path"):
            read_bundle_info(uri)
        with pytest.raises(BundleError, match="unsafe or unknown path"):
            load_bundle(uri)
    assert not list(tmp_path.rglob("escaped.txt"))


# -------------------------------------------------------------------------- 2: the tokenizer that runs


def test_tampered_tokenizer_is_refused_by_the_driver_the_featurise_task_and_the_loader(bundle, tmp_path):
    root = _copy(bundle, tmp_path / "b")
    info = read_bundle_info(str(root))
    vocab = next(p for p in (root / "tokenizer").iterdir() if p.name in ("vocab.txt", "tokenizer.json"))
    vocab.write_bytes(vocab.read_bytes().replace(b"love", b"hate", 1) + b"\n")
    with pytest.raises(BundleError, match=f"tokenizer/{vocab.name} has sha256"):
        read_bundle_info(str(root))
    batch = {"song_id": np.array(["a"], dtype=object), "lyrics": np.array(["love"], dtype=object)}
    with pytest.raises(BundleError, match=f"tokenizer/{vocab.name}"):
        featurise_batch(batch, None, info.tokenizer, json.dumps(info.lyrics))
    with pytest.raises(BundleError, match=f"tokenizer/{vocab.name}"):
        load_bundle(str(root))


def test_unlisted_tokenizer_file_is_refused_and_never_read(bundle, tmp_path):
    root = _copy(bundle, tmp_path / "b")
    info = read_bundle_info(str(root))
    folder = Path(info.tokenizer.load().name_or_path)
    assert folder.parent != root and sorted(p.name for p in folder.iterdir()) == sorted(
        n.split("/", 1)[1] for n in open_bundle(str(root)).names("tokenizer/"))
    (root / "tokenizer" / "tokenizer_config.json.bak").write_text("{}")
    with pytest.raises(BundleError, match="unlisted file tokenizer/tokenizer_config.json.bak"):
        read_bundle_info(str(root))


# ----------------------------------------------------------------- 3: a crafted model_version and paths


def test_crafted_model_version_is_refused_before_anything_is_deleted(bundle, tmp_path):
    root = _copy(bundle, tmp_path / "b")
    victim = tmp_path / "victim"
    (victim / "keep").mkdir(parents=True)
    output = tmp_path / "out" / "labels"
    crafted = "0123456789abcdef/../../../../victim"
    config = json.loads((root / "config.json").read_text())
    config["model_version"] = crafted
    (root / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="model_version must be 16 lowercase hex digits"):
        label_catalogue(str(tmp_path / "missing.parquet"), str(root), str(output), LabelJobConfig())
    assert (victim / "keep").is_dir() and not output.exists()
    with pytest.raises(BundleError):
        OutputLayout(str(output), crafted)
    with pytest.raises(ValueError, match="run id"):
        OutputLayout(str(output), "0123456789abcdef").staging_uri("../../victim")


def test_expect_version_pins_the_model(bundle, tmp_path):
    version = verify_bundle(bundle).model_version
    assert verify_bundle(bundle, expect_version=version).model_version == version
    root = _copy(bundle, tmp_path / "b")
    _rewrite_config(root, temperature=0.25)  # a consistent forgery: only a pinned version catches it
    with pytest.raises(BundleError, match=f"expected {version}"):
        read_bundle_info(str(root), expect_version=version)
    with pytest.raises(BundleError, match=f"expected {version}"):
        load_bundle(str(root), expect_version=version)


def test_cli_refuses_a_bad_bundle_in_one_line_before_any_work(bundle, tmp_path):
    root = _copy(bundle, tmp_path / "b")
    weights = root / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    output = tmp_path / "labels"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    env.pop("RAY_ADDRESS", None)
    for bad, expected in ((str(root), "model.safetensors has sha256"), (str(tmp_path / "nowhere"), "no such bundle"),
                          (str(tmp_path), "is this a model bundle")):
        proc = subprocess.run([sys.executable, "-m", "jobs.cli", "label", "--catalogue", str(tmp_path / "c.parquet"),
                               "--bundle", bad, "--output", str(output)], env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and expected in lines[0] and "Traceback" not in proc.stderr, proc.stderr
        assert not output.exists()


# ------------------------------------------------------------ 4: model_version covers predictions only


def test_reexport_with_new_provenance_keeps_the_version_and_a_prediction_change_does_not(tmp_path):
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from labeler.audio import FeaturizerConfig
    from labeler.lyrics.text import LyricsConfig
    from labeler.models import AudioCnnConfig, EmotionModel, LyricsEncoderConfig, ModelConfig
    from tiny_models import tiny_bert_dir

    bert = tiny_bert_dir(tmp_path / "enc")
    torch.manual_seed(0)
    config = ModelConfig(branch="fusion", mode="4Q", hidden_dim=16, audio=AudioCnnConfig(width=0.125, embedding_dim=16),
                         lyrics=LyricsEncoderConfig(name_or_path=bert))
    model = EmotionModel(config, encoder_config=AutoConfig.from_pretrained(bert))

    def export(name: str, **kw) -> str:
        args = dict(model_id="m", provenance={"run": name}, metrics={"f1": len(name)}, temperature=1.0)
        args.update(kw)
        return save_bundle(str(tmp_path / name), model, FeaturizerConfig(), LyricsConfig(max_tokens=32),
                           tokenizer=AutoTokenizer.from_pretrained(bert), **args)

    first = export("first")
    assert export("second-export", model_id="renamed", provenance={"run": "x", "host": "y"}, metrics={"f1": 0.9}) == first
    assert BundleInfo.from_verified(verify_bundle(str(tmp_path / "second-export"))).model_version == first
    assert export("warmer", temperature=1.5) != first
    assert save_bundle(str(tmp_path / "other-lyrics"), model, FeaturizerConfig(), LyricsConfig(max_tokens=64),
                       tokenizer=AutoTokenizer.from_pretrained(bert)) != first
    tok = AutoTokenizer.from_pretrained(bert)
    tok.model_max_length = 64  # a different tokenizer_config.json
    assert save_bundle(str(tmp_path / "other-tokenizer"), model, FeaturizerConfig(), LyricsConfig(max_tokens=32),
                       tokenizer=tok) != first
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert export("retrained") != first


def test_uri_with_credentials_is_refused_without_echoing_them():
    with pytest.raises(storage.StorageError) as info:
        storage.absolute_uri("s3://AKIAEXAMPLE:wJalrXUtnFEMI/K7MDENG@bucket/bundle")
    assert "AKIAEXAMPLE" not in str(info.value) and "wJalr" not in str(info.value)
    with pytest.raises(storage.StorageError, match="must not carry credentials") as info:
        read_bundle_info("s3://AKIAEXAMPLE:hunter2key@bucket/bundle")
    assert "hunter2key" not in str(info.value) and isinstance(info.value, ValueError)  # one line in the CLI
