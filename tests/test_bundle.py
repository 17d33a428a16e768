"""labeler.bundle.store: round trips (local, S3), content-hash versions, tamper refusal, no pickles."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

from labeler.audio import DESCRIPTOR_DIM, FeaturizerConfig
from labeler.bundle.store import BundleError, load_bundle, read_bundle_config, save_bundle
from labeler.io import storage
from labeler.lyrics.text import LyricsConfig
from labeler.models import AudioCnnConfig, EmotionModel, LyricsEncoderConfig, ModelConfig
from tiny_models import tiny_bert_dir

FRAMES, MELS = 48, 64


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return tiny_bert_dir(tmp_path_factory.mktemp("enc"))


def make_fusion(bert: str, regression: bool = True) -> EmotionModel:
    torch.manual_seed(0)
    cfg = ModelConfig(branch="fusion", mode="4Q", hidden_dim=16, regression=regression,
                      audio=AudioCnnConfig(arch="Cnn6", width=0.25, embedding_dim=32),
                      lyrics=LyricsEncoderConfig(name_or_path=bert))
    model = EmotionModel(cfg, encoder_config=AutoConfig.from_pretrained(bert))
    # non-trivial BatchNorm statistics, so a lost buffer would show up in the outputs
    model.train()
    with torch.no_grad():
        model(log_mel=torch.randn(4, FRAMES, MELS) * 3 + 1, input_ids=torch.randint(5, 50, (4, 8)),
              attention_mask=torch.ones(4, 8, dtype=torch.long))
    return model.eval()


def inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 50, (3, 10), generator=g)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0
    return dict(log_mel=torch.randn(3, FRAMES, MELS, generator=g), input_ids=ids, attention_mask=mask,
                has_audio=torch.tensor([True, True, False]), has_lyrics=torch.tensor([True, False, True]))


def save(uri, model, bert, **kw) -> str:
    return save_bundle(uri, model, FeaturizerConfig(), LyricsConfig(max_tokens=32), tokenizer=AutoTokenizer.from_pretrained(bert),
                       provenance={"folds": [0]}, metrics={"macro_f1": 0.5}, temperature=1.5, **kw)


def test_local_round_trip_is_identical(tmp_path, bert):
    model = make_fusion(bert)
    uri = str(tmp_path / "bundle")
    version = save(uri, model, bert)
    files = sorted(p.relative_to(uri).as_posix() for p in Path(uri).rglob("*") if p.is_file())
    assert {"config.json", "model.safetensors", "encoder/config.json"} <= set(files)
    assert any(f.startswith("tokenizer/") for f in files)
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle"))]

    loaded = load_bundle(uri)
    assert loaded.model_version == version and len(version) == 16
    assert loaded.model_id == "mood-4q-fusion-cnn6-tiny-bert-32"
    assert loaded.classes == ["Q1", "Q2", "Q3", "Q4"] and loaded.mode == "4Q" and loaded.temperature == 1.5
    assert loaded.featurizer == FeaturizerConfig() and loaded.lyrics == LyricsConfig(max_tokens=32)
    assert loaded.config["provenance"] == {"folds": [0]} and loaded.config["metrics"] == {"macro_f1": 0.5}
    assert not loaded.model.training
    x = inputs()
    with torch.inference_mode():
        expected, actual = model(**x), loaded.model(**x)
    assert torch.equal(expected.logits, actual.logits) and torch.equal(expected.va, actual.va)
    assert loaded.tokenizer("love and rain")["input_ids"] == AutoTokenizer.from_pretrained(bert)("love and rain")["input_ids"]
    # same content, same version; a changed weight, a new version
    assert save(str(tmp_path / "again"), model, bert) == version
    with torch.no_grad():
        model.head[-1].bias += 1
    assert save(str(tmp_path / "changed"), model, bert) != version


def test_s3_round_trip_is_identical(s3_bucket, bert):
    model = make_fusion(bert)
    uri = f"{s3_bucket}/models/fusion"
    version = save(uri, model, bert)
    assert read_bundle_config(uri)["model_version"] == version
    loaded = load_bundle(uri)
    x = inputs()
    with torch.inference_mode():
        assert torch.equal(model(**x).logits, loaded.model(**x).logits)
    names = [u.rsplit("/", 1)[-1] for u in storage.listdir(uri)]
    assert "model.safetensors" in names and "config.json" in names


def test_tampered_weights_refused(tmp_path, bert):
    uri = tmp_path / "b"
    save(str(uri), make_fusion(bert), bert)
    weights = uri / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.safetensors"):
        load_bundle(str(uri))


def test_edited_config_refused(tmp_path, bert):
    uri = tmp_path / "b"
    save(str(uri), make_fusion(bert), bert)
    config = json.loads((uri / "config.json").read_text())
    config["temperature"] = 0.5
    (uri / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="config.json"):
        load_bundle(str(uri))


def test_missing_or_extra_file_refused(tmp_path, bert):
    uri = tmp_path / "b"
    save(str(uri), make_fusion(bert), bert)
    (uri / "tokenizer" / "extra.py").write_text("print('hi')")
    with pytest.raises(BundleError, match="tokenizer/extra.py"):
        load_bundle(str(uri))
    (uri / "tokenizer" / "extra.py").unlink()
    (uri / "encoder" / "config.json").unlink()
    with pytest.raises(BundleError, match="encoder/config.json is missing"):
        load_bundle(str(uri))
    with pytest.raises(BundleError, match="config.json not found"):
        load_bundle(str(tmp_path / "nowhere"))


def test_loading_never_unpickles(tmp_path, bert, monkeypatch):
    uri = str(tmp_path / "b")
    model = make_fusion(bert)
    save(uri, model, bert)

    def refuse(*args, **kwargs):
        raise AssertionError("a bundle load must not unpickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded = load_bundle(uri)
    with torch.inference_mode():
        assert torch.equal(model(**inputs()).logits, loaded.model(**inputs()).logits)


def test_audio_only_hybrid_bundle_carries_descriptor_stats(tmp_path):
    cfg = ModelConfig(branch="audio", mode="Ar", lyrics=None,
                      audio=AudioCnnConfig(width=0.25, embedding_dim=16, descriptor_dim=DESCRIPTOR_DIM))
    model = EmotionModel(cfg).eval()
    mean = torch.linspace(-1, 1, DESCRIPTOR_DIM)
    std = torch.linspace(0.5, 2, DESCRIPTOR_DIM)
    uri = str(tmp_path / "hybrid")
    save_bundle(uri, model, FeaturizerConfig(descriptors=True), None, descriptor_stats={"mean": mean.tolist(), "std": std.tolist()})
    loaded = load_bundle(uri)
    assert loaded.tokenizer is None and loaded.lyrics is None and not (Path(uri) / "tokenizer").exists()
    assert loaded.config["model_id"] == "mood-ar-audio-cnn6-hybrid"
    torch.testing.assert_close(loaded.model.audio_encoder.descriptor_mean, mean)
    torch.testing.assert_close(torch.tensor(loaded.descriptor_stats["std"]), std)
    d = torch.randn(2, DESCRIPTOR_DIM)
    log_mel = torch.randn(2, FRAMES, MELS)
    with torch.inference_mode():
        assert torch.equal(model(log_mel=log_mel, descriptors=d).logits, loaded.model(log_mel=log_mel, descriptors=d).logits)


def test_incompatible_parts_refused_before_writing(tmp_path, bert):
    audio = EmotionModel(ModelConfig(branch="audio", lyrics=None, audio=AudioCnnConfig(width=0.25)))
    with pytest.raises(ValueError, match="n_mels"):
        save_bundle(str(tmp_path / "a"), audio, FeaturizerConfig(n_mels=128), None)
    with pytest.raises(ValueError, match="descriptor"):
        save_bundle(str(tmp_path / "a"), audio, FeaturizerConfig(descriptors=True), None)
    with pytest.raises(ValueError, match="temperature"):
        save_bundle(str(tmp_path / "a"), audio, FeaturizerConfig(), None, temperature=0.0)
    with pytest.raises(ValueError, match="tokenizer"):
        save_bundle(str(tmp_path / "a"), make_fusion(bert), FeaturizerConfig(), LyricsConfig())
    assert not (tmp_path / "a").exists()


def _stacked_lyrics_bundle(uri: str, bert: str) -> None:
    import numpy as np

    from labeler.lyrics.lexical import LexicalConfig, LexicalModel

    cfg = ModelConfig(branch="lyrics", mode="Ar", audio=None, lyrics=LyricsEncoderConfig(name_or_path=bert))
    model = EmotionModel(cfg, encoder_config=AutoConfig.from_pretrained(bert)).eval()
    texts = ["love joy dance", "tears cry alone", "joy joy love", "cry tears rain"]
    y = np.array([1, 0, 1, 0])
    lexical = LexicalModel.fit(texts, y, 2, LexicalConfig(min_df=1))
    lexical.fit_stack(np.zeros((4, 2)), lexical.logits(texts), y)
    save_bundle(uri, model, None, LyricsConfig(max_tokens=32), tokenizer=AutoTokenizer.from_pretrained(bert), lexical=lexical)


@pytest.mark.parametrize("name", ["lexical/model.safetensors", "lexical/vocab.json"])
def test_stacked_bundle_lexical_arrays_verified(tmp_path, bert, monkeypatch, name):
    uri = tmp_path / "b"
    _stacked_lyrics_bundle(str(uri), bert)
    assert {"lexical/model.safetensors", "lexical/vocab.json"} <= set(read_bundle_config(str(uri))["files"])

    def refuse(*args, **kwargs):
        raise AssertionError("a bundle load must not unpickle")

    with monkeypatch.context() as m:
        m.setattr(pickle, "load", refuse)
        m.setattr(pickle, "loads", refuse)
        assert load_bundle(str(uri)).lexical.n_classes == 2
    data = bytearray((uri / name).read_bytes())
    data[-3] ^= 0x01
    (uri / name).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=name.replace(".", r"\.")):
        load_bundle(str(uri))
    (uri / name).unlink()
    with pytest.raises(BundleError, match="is missing"):
        load_bundle(str(uri))


def test_unlisted_lexical_file_refused(tmp_path, bert):
    uri = tmp_path / "b"
    _stacked_lyrics_bundle(str(uri), bert)
    (uri / "lexical" / "extra.pkl").write_bytes(b"\x80\x04")
    with pytest.raises(BundleError, match="lexical/extra.pkl"):
        load_bundle(str(uri))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_saving_over_a_stacked_bundle_removes_its_lexical_files(tmp_path, bert, where, request):
    """A late-fusion winner replaces the fusion head's stacked bundle in place: the old bundle's
    lexical/ files must go with it, or the new bundle is refused for holding unlisted files."""
    if where == "s3":
        uri = f"{request.getfixturevalue('s3_bucket')}/b"
    else:
        uri = str(tmp_path / "b")
    _stacked_lyrics_bundle(uri, bert)
    cfg = ModelConfig(branch="lyrics", mode="Ar", audio=None, lyrics=LyricsEncoderConfig(name_or_path=bert))
    plain = EmotionModel(cfg, encoder_config=AutoConfig.from_pretrained(bert)).eval()
    save_bundle(uri, plain, None, LyricsConfig(max_tokens=32), tokenizer=AutoTokenizer.from_pretrained(bert))
    assert not any(name.startswith("lexical/") for name in read_bundle_config(uri)["files"])
    assert load_bundle(uri).lexical is None
