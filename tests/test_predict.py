"""labeler.inference.predict: a real featurised + tokenised batch with good and bad rows through a saved bundle."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoConfig, AutoTokenizer

from labeler.audio import Featurizer, FeaturizerConfig
from labeler.bundle.store import load_bundle, save_bundle
from labeler.contracts.inputs import FEATURE_COLUMNS
from labeler.inference.predict import Predictor, configure_torch_threads
from labeler.lyrics.text import LyricsConfig, LyricsTokenizer
from labeler.models import AudioCnnConfig, EmotionModel, LyricsEncoderConfig, ModelConfig
from tiny_models import tiny_bert_dir

FEATURIZER = FeaturizerConfig(clip_seconds=1.5, min_seconds=0.5)
LYRICS = LyricsConfig(max_tokens=24)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("predict")


@pytest.fixture(scope="module")
def bert(workdir):
    return tiny_bert_dir(workdir)


def _bundle(workdir, bert, branch: str, temperature: float, regression: bool = False) -> str:
    torch.manual_seed(0)
    cfg = ModelConfig(branch=branch, mode="4Q", hidden_dim=16, regression=regression,
                      audio=AudioCnnConfig(width=0.25, embedding_dim=16) if branch != "lyrics" else None,
                      lyrics=LyricsEncoderConfig(name_or_path=bert) if branch != "audio" else None)
    model = EmotionModel(cfg, encoder_config=AutoConfig.from_pretrained(bert) if cfg.uses_lyrics else None).eval()
    uri = str(workdir / f"bundle-{branch}")
    save_bundle(uri, model, FEATURIZER, LYRICS if cfg.uses_lyrics else None,
                tokenizer=AutoTokenizer.from_pretrained(bert) if cfg.uses_lyrics else None, temperature=temperature)
    return uri


@pytest.fixture(scope="module")
def fusion_bundle(workdir, bert):
    return _bundle(workdir, bert, "fusion", temperature=2.0, regression=True)


@pytest.fixture(scope="module")
def batch(workdir, bert):
    """Five songs: both modalities, broken audio + lyrics, audio only, nothing usable, no audio_uri + lyrics."""
    sr = FEATURIZER.sample_rate
    t = np.arange(int(sr * 2.0)) / sr
    good = workdir / "good.wav"
    sf.write(good, (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32), sr)
    missing = str(workdir / "missing.wav")
    rows = {
        "song_id": np.array(["both", "bad_audio", "audio_only", "nothing", "lyrics_only"], dtype=object),
        "audio_uri": np.array([str(good), missing, str(good), missing, None], dtype=object),
        "lyrics": np.array(["love sunshine dance", "tears alone cry", None, "", "calm gentle breeze"], dtype=object),
        "chorus_start_s": np.array([0.0, np.nan, 0.2, np.nan, np.nan]),
        "chorus_end_s": np.array([1.5, np.nan, 1.7, np.nan, np.nan]),
    }
    featurised = Featurizer(FEATURIZER)(rows)
    return LyricsTokenizer(AutoTokenizer.from_pretrained(bert), LYRICS)(featurised)


def test_mixed_batch(fusion_bundle, batch):
    predictor = Predictor(fusion_bundle, batch_size=2)
    assert predictor.device.type == "cpu"
    out = predictor(batch)
    assert not set(FEATURE_COLUMNS) & set(out)  # heavy arrays are not passed on
    assert list(out["song_id"]) == ["both", "bad_audio", "audio_only", "nothing", "lyrics_only"]
    assert list(out["modalities"]) == ["audio+lyrics", "lyrics", "audio", None, "lyrics"]
    probs = out["probs"]
    assert probs.dtype == np.float32 and probs.shape == (5, 4)
    ok = [0, 1, 2, 4]
    np.testing.assert_allclose(probs[ok].sum(axis=1), 1.0, rtol=1e-5)
    assert np.isnan(probs[3]).all()
    errors = list(out["error"])
    assert errors[0] is None and errors[1] is None and errors[2] is None and errors[4] is None
    assert errors[3].startswith("missing_file: ") and "no_lyrics" in errors[3]
    assert out["audio_error"][1].startswith("missing_file") and out["audio_error"][4].startswith("no_audio")
    assert out["audio_error"][0] is None
    assert np.isfinite(out["valence_score"][ok]).all() and np.isnan(out["arousal_score"][3])


def test_probabilities_use_temperature_and_batch_split_is_invisible(fusion_bundle, batch):
    split = Predictor(fusion_bundle, batch_size=1)(batch)
    whole = Predictor(fusion_bundle, batch_size=64)(batch)
    np.testing.assert_allclose(split["probs"], whole["probs"], rtol=1e-5, atol=1e-6)

    bundle = load_bundle(fusion_bundle)
    assert bundle.temperature == 2.0
    with torch.inference_mode():
        logits = bundle.model(
            log_mel=torch.from_numpy(batch["log_mel"][:1].astype(np.float32)),
            input_ids=torch.from_numpy(batch["input_ids"][:1].astype(np.int64)),
            attention_mask=torch.from_numpy(batch["attention_mask"][:1].astype(np.int64)),
        ).logits
    np.testing.assert_allclose(whole["probs"][0], torch.softmax(logits / 2.0, dim=-1)[0].numpy(), rtol=1e-4, atol=1e-6)


def test_single_branch_bundles(workdir, bert, batch):
    lyrics_out = Predictor(_bundle(workdir, bert, "lyrics", 1.0))(batch)
    assert list(lyrics_out["modalities"]) == ["lyrics", "lyrics", None, None, "lyrics"]
    assert lyrics_out["error"][2].startswith("no_lyrics")
    assert np.isnan(lyrics_out["valence_score"]).all()  # no regression head

    audio_out = Predictor(_bundle(workdir, bert, "audio", 1.0))(batch)
    assert list(audio_out["modalities"]) == ["audio", None, "audio", None, None]
    assert audio_out["error"][1].startswith("missing_file") and audio_out["error"][4].startswith("no_audio")
    np.testing.assert_allclose(audio_out["probs"][[0, 2]].sum(axis=1), 1.0, rtol=1e-5)


def test_non_finite_features_become_a_row_error(fusion_bundle, batch):
    bad = dict(batch)
    bad["log_mel"] = batch["log_mel"].copy()
    bad["log_mel"][0, 3, 5] = np.inf
    out = Predictor(fusion_bundle)(bad)
    assert out["modalities"][0] == "lyrics" and out["audio_error"][0].startswith("corrupt")
    empty = Predictor(fusion_bundle)({k: v[:0] for k, v in batch.items()})
    assert empty["probs"].shape == (0, 4) and len(empty["error"]) == 0
    wrong = dict(batch, log_mel=np.zeros((5, 10, 32), dtype=np.float16))
    with pytest.raises(ValueError, match="log_mel"):
        Predictor(fusion_bundle)(wrong)


def test_thread_policy_respects_explicit_and_env(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert configure_torch_threads(1) == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert configure_torch_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_stacked_lyrics_bundle_with_whole_lyric_windows(workdir, bert):
    """Windows + lexical model + stacker through the bundle and the Predictor, no pickle anywhere."""
    from labeler.lyrics.lexical import LexicalConfig, LexicalModel

    windows = LyricsConfig(max_tokens=8, max_windows=3, window_overlap=2)
    torch.manual_seed(0)
    cfg = ModelConfig(branch="lyrics", mode="4Q", audio=None,
                      lyrics=LyricsEncoderConfig(name_or_path=bert, window_tokens=8))
    model = EmotionModel(cfg, encoder_config=AutoConfig.from_pretrained(bert)).eval()
    texts = ["love sunshine dance happy joy", "rage fight scream burn hate", "tears alone cry lost grey",
             "calm gentle breeze quiet peace"] * 3
    lexical = LexicalModel.fit(texts, np.arange(12) % 4, 4, LexicalConfig(min_df=1))
    lexical.fit_stack(np.zeros((12, 4)), lexical.logits(texts), np.arange(12) % 4)
    uri = str(workdir / "bundle-stacked")
    save_bundle(uri, model, None, windows, tokenizer=AutoTokenizer.from_pretrained(bert), temperature=1.5, lexical=lexical)
    rows = {"song_id": np.array(["a", "b", "c"], dtype=object),
            "lyrics": np.array(["tears alone cry lost grey cold empty sorrow goodbye rain " * 3, None, "love sunshine"],
                               dtype=object)}
    batch = LyricsTokenizer(AutoTokenizer.from_pretrained(bert), windows)(rows)
    assert batch["input_ids"].shape == (3, 24) and batch["attention_mask"][0].reshape(3, 8).any(axis=1).all()
    out = Predictor(uri)(batch)
    assert list(out["modalities"]) == ["lyrics", None, "lyrics"] and "lyrics_text" not in out
    bundle = load_bundle(uri)
    assert bundle.lexical is not None and bundle.config["lexical"]["stacked"]
    with torch.inference_mode():
        net = bundle.model(input_ids=torch.from_numpy(batch["input_ids"][[0, 2]].astype(np.int64)),
                           attention_mask=torch.from_numpy(batch["attention_mask"][[0, 2]].astype(np.int64))).logits.numpy()
    stacked = lexical.stacked(net, lexical.logits(list(batch["lyrics_text"][[0, 2]])))
    expected = torch.softmax(torch.from_numpy(stacked) / 1.5, dim=-1).numpy()
    np.testing.assert_allclose(out["probs"][[0, 2]], expected, rtol=1e-4, atol=1e-6)
    assert out["probs"][0].argmax() == 2  # the lexical part is strong here: sad words -> Q3
    with pytest.raises(ValueError, match="lyrics_text"):
        Predictor(uri)({k: v for k, v in batch.items() if k != "lyrics_text"})
