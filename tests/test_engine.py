"""labeler.models.engine: the CPU Predictor's ONNX Runtime engine labels as PyTorch does.

Tolerance: per-class probabilities within PROB_TOL of PyTorch's, the same top class, embeddings within
EMB_TOL (float32 kernels differ in summation order only). Synthetic inputs always run (MusiCNN with
random weights, a quarter-width Cnn6, a 2-layer BERT); real clips and lyrics from the development data
run where $MOOD_LABELER_DATA and the musicnn checkpoints are there.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoTokenizer

from labeler.audio import FeaturizerConfig
from labeler.bundle.store import save_bundle
from labeler.inference.predict import ENGINE_VAR, Predictor
from labeler.lyrics.text import LyricsConfig
from labeler.models import AudioCnnConfig, EmotionModel, LyricsEncoderConfig, ModelConfig
from labeler.models import engine as engines
from tiny_models import tiny_bert_dir

PROB_TOL = 1e-4
EMB_TOL = 1e-4
PATCH = 187


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("engine")


def _save(workdir, name: str, config: ModelConfig, featurizer: FeaturizerConfig, bert: str | None) -> str:
    torch.manual_seed(0)
    model = EmotionModel(config, encoder_config=AutoConfig.from_pretrained(bert) if bert else None).eval()
    uri = str(workdir / name)
    save_bundle(uri, model, featurizer, LyricsConfig(max_tokens=32) if bert else None,
                tokenizer=AutoTokenizer.from_pretrained(bert) if bert else None, model_id=name)
    return uri


@pytest.fixture(scope="module")
def bundles(workdir):
    """A MusiCNN + BERT fusion bundle (random weights) and a Cnn6 audio bundle."""
    bert = tiny_bert_dir(workdir)
    musicnn = ModelConfig(branch="fusion", mode="4Q", hidden_dim=16,
                          audio=AudioCnnConfig(arch="MusiCNN", n_mels=96, embedding_dim=16),
                          lyrics=LyricsEncoderConfig(name_or_path=bert))
    cnn6 = ModelConfig(branch="audio", mode="4Q", lyrics=None, audio=AudioCnnConfig(n_mels=32, width=0.25, embedding_dim=16))
    return {"musicnn": _save(workdir, "musicnn-fusion", musicnn, FeaturizerConfig.musicnn(clip_seconds=6.0), bert),
            "cnn6": _save(workdir, "cnn6-audio", cnn6, FeaturizerConfig(clip_seconds=2.0, n_mels=32), None)}


def _batch(n: int, frames: int, mels: int, vocab: int = 150, tokens: int = 32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    mask = np.zeros((n, tokens), dtype=np.int64)
    for i in range(n):
        mask[i, : 4 + (5 * i) % (tokens - 4)] = 1
    return {
        "song_id": np.array([f"s{i}" for i in range(n)], dtype=object),
        "log_mel": rng.normal(0, 2, (n, frames, mels)).astype(np.float32),
        "audio_error": np.array([None] * n, dtype=object),
        "input_ids": rng.integers(5, vocab, (n, tokens)) * mask,
        "attention_mask": mask,
        "has_lyrics": np.array([i % 3 != 1 for i in range(n)]),
        "lyrics_error": np.array([None] * n, dtype=object),
    }


def _assert_same_labels(fast: dict, reference: dict) -> None:
    assert np.abs(fast["probs"] - reference["probs"]).max() <= PROB_TOL
    assert (fast["probs"].argmax(axis=1) == reference["probs"].argmax(axis=1)).all()
    assert np.abs(fast["embedding"] - reference["embedding"]).max() <= EMB_TOL
    assert list(fast["modalities"]) == list(reference["modalities"])


@pytest.mark.parametrize("kind, frames, mels", [("musicnn", 2 * PATCH, 96), ("cnn6", 200, 32)])
def test_onnx_engine_labels_like_pytorch_on_synthetic_inputs(bundles, kind, frames, mels):
    reference = Predictor(bundles[kind], device="cpu", engine="torch", embeddings=True, batch_size=4)
    fast = Predictor(bundles[kind], device="cpu", engine="auto", embeddings=True, batch_size=4)
    assert reference.engine == "torch" and fast.engine == "onnxruntime"
    batch = _batch(7, frames, mels)  # two sub-batches: 4 rows, then 3 (the graphs take any batch size)
    _assert_same_labels(fast(batch), reference(batch))


def test_the_environment_picks_the_engine_and_a_bad_name_fails(bundles, monkeypatch):
    monkeypatch.setenv(ENGINE_VAR, "torch")
    assert Predictor(bundles["cnn6"], device="cpu").engine == "torch"
    with pytest.raises(ValueError, match="unknown engine 'tensorrt'"):
        Predictor(bundles["cnn6"], device="cpu", engine="tensorrt")


def test_without_onnxruntime_the_predictor_keeps_pytorch_and_says_so(bundles, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with caplog.at_level(logging.WARNING, logger=engines.__name__):
        predictor = Predictor(bundles["cnn6"], device="cpu", engine="onnxruntime")
    assert predictor.engine == "torch"
    assert [r.getMessage() for r in caplog.records] == ["onnxruntime is not installed: the encoders run on PyTorch"]
    assert np.isfinite(predictor(_batch(2, 200, 32))["probs"]).all()


def test_a_part_that_fails_to_export_keeps_pytorch_with_one_log_line(bundles, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(engines, "export_graph", broken)
    with caplog.at_level(logging.WARNING, logger=engines.__name__):
        predictor = Predictor(bundles["cnn6"], device="cpu")
    assert predictor.engine == "torch"
    assert len(caplog.records) == 1 and "unsupported operator" in caplog.records[0].getMessage()
    reference = Predictor(bundles["cnn6"], device="cpu", engine="torch", embeddings=True)
    predictor.embeddings = True
    batch = _batch(3, 200, 32)
    np.testing.assert_array_equal(predictor(batch)["probs"], reference(batch)["probs"])


def test_an_engine_is_picklable_and_rebuilds_its_session():
    import pickle

    net = torch.nn.Sequential(torch.nn.Linear(6, 3), torch.nn.ReLU()).eval()
    x = torch.randn(5, 6)
    function = engines.OrtFunction(engines.export_graph(net, (x,), ("x",), {"x": {0: "n"}}), ("x",), threads=1)
    copy = pickle.loads(pickle.dumps(function))
    with torch.inference_mode():
        want = net(x)
    assert torch.allclose(copy(x), want, atol=1e-6) and torch.allclose(function(x[:2]), want[:2], atol=1e-6)


@pytest.mark.realdata
def test_onnx_engine_labels_real_clips_and_lyrics_like_pytorch(workdir, shared_data, musicnn_available):
    """cpu-small's fusion architecture with the pretrained MusiCNN and MiniLM (seeded heads) on four real 4Q
    clips (30 s: ten patches each) and four MoodyLyrics4Q lyrics: both engines give the same labels."""
    import json

    from labeler.audio import Featurizer
    from labeler.lyrics.pretrained import load_tokenizer
    from labeler.lyrics.text import LyricsTokenizer
    from train.fit.configs import featurizer_config, lyrics_config, model_config
    from train.fit.presets import get_preset

    preset = get_preset("cpu-small")
    torch.manual_seed(0)
    model = EmotionModel.from_pretrained_branches(ModelConfig.from_dict(model_config(preset, "fusion", "4Q"))).eval()
    uri = str(workdir / "cpu-small-real")
    save_bundle(uri, model, featurizer_config(preset), lyrics_config(preset), tokenizer=load_tokenizer(preset.lyrics_encoder),
                model_id="cpu-small-real")
    clips = sorted((shared_data / "4q").rglob("*.mp3"))[:4]
    lyrics = [json.loads(p.read_text())["song"]["lyrics"]
              for p in sorted((shared_data / "moodylyrics4q" / "lyrics").glob("*.json"))[:4]]
    rows = {"song_id": np.array([c.stem for c in clips], dtype=object),
            "audio_uri": np.array([str(c) for c in clips], dtype=object),
            "lyrics": np.array([lyrics[0], None, lyrics[2], lyrics[3]], dtype=object)}
    reference = Predictor(uri, device="cpu", engine="torch", embeddings=True)
    fast = Predictor(uri, device="cpu", engine="auto", embeddings=True)
    assert fast.engine == "onnxruntime"
    batch = LyricsTokenizer(reference.bundle.tokenizer, reference.bundle.lyrics)(
        Featurizer(reference.bundle.featurizer)(rows))
    assert all(e is None for e in batch["audio_error"])
    want, got = reference(batch), fast(batch)
    assert list(want["modalities"]) == ["audio+lyrics", "audio", "audio+lyrics", "audio+lyrics"]
    _assert_same_labels(got, want)
