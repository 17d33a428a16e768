"""train.select.fusion and labeler.models.LateFusion: fitting on validation rows, choosing, and the model's math.

Pure numpy for the fitting; tiny offline models for the model and bundle round trip (no Ray).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax
from transformers import AutoConfig

from labeler.models import AudioCnnConfig, EmotionModel, LyricsEncoderConfig, ModelConfig
from tiny_models import tiny_bert_dir
from train.score.metrics import macro_f1
from train.select import fusion

N_CLASSES = 3


def branches(n=150, audio_acc=0.9, lyrics_acc=0.4, seed=0):
    """Synthetic calibrated branch log-probabilities: a reliable audio branch and a weak lyrics one."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % N_CLASSES
    out = []
    for acc in (audio_acc, lyrics_acc):
        guess = np.where(rng.random(n) < acc, y, rng.integers(0, N_CLASSES, n))
        logits = rng.normal(0, 0.3, (n, N_CLASSES))
        logits[np.arange(n), guess] += 2.0
        out.append(log_softmax(logits, axis=1))
    return out[0], out[1], y


def test_average_weight_leans_on_the_better_branch_and_logreg_fits():
    log_a, log_l, y = branches()
    w = fusion.fit("average", log_a, log_l, y, N_CLASSES)["audio_weight"]
    assert 0.6 <= w <= 1.0
    params = fusion.fit("logreg", log_a, log_l, y, N_CLASSES)
    assert np.asarray(params["weight"]).shape == (N_CLASSES, 2 * N_CLASSES)
    assert macro_f1(y, fusion.combine("logreg", params, log_a, log_l), N_CLASSES) >= 0.8


def test_gate_trusts_the_confident_branch():
    log_a, log_l, y = branches()
    params = fusion.fit("gated", log_a, log_l, y, N_CLASSES)
    assert macro_f1(y, fusion.combine("gated", params, log_a, log_l), N_CLASSES) >= 0.8


def test_logreg_with_a_class_absent_from_validation_never_predicts_it():
    log_a, log_l, y = branches()
    keep = y != 2
    params = fusion.fit("logreg", log_a[keep], log_l[keep], y[keep], N_CLASSES)
    assert (fusion.combine("logreg", params, log_a, log_l).argmax(1) != 2).all()


def test_choose_scores_late_candidates_by_cross_fitting_and_keeps_the_head_when_it_is_better():
    log_a, log_l, y = branches()
    choice = fusion.choose(log_a, log_l, y, N_CLASSES, head_val_macro_f1=0.1)
    assert set(choice["val_macro_f1"]) == {"equal", "average", "logreg", "gated", "head"}
    assert choice["winner"] != "head"
    assert all(0.0 <= v <= 1.0 for v in choice["val_macro_f1"].values())
    better = fusion.choose(log_a, log_l, y, N_CLASSES, head_val_macro_f1=1.0)
    best_late = max(v for k, v in better["val_macro_f1"].items() if k != "head")
    assert best_late < 1.0 - better["tolerance"]  # the head leads by more than one standard error...
    assert better["winner"] == "head"  # ...so it is kept


def test_one_standard_error_is_a_proportions_and_shrinks_with_the_validation_fold():
    adjusted = (0.4 * 40 + 2) / 44
    assert fusion.one_standard_error(0.4, 40) == pytest.approx(np.sqrt(adjusted * (1 - adjusted) / 44))  # ~0.075
    assert fusion.one_standard_error(0.4, 4000) == pytest.approx(0.0077, abs=1e-4)
    # A perfect score on 40 songs is not certain: the demo's head scored 1.0 on validation and 0.8 on test.
    assert 0.02 < fusion.one_standard_error(1.0, 40) < 0.05
    assert fusion.one_standard_error(0.5, 0) == 0.0


def test_the_simplest_candidate_within_one_standard_error_wins():
    scores = {"average": 0.40, "gated": 0.44, "logreg": 0.47, "head": 0.50}
    assert fusion.simplest_within(scores, 0.077) == "gated"  # 0.44 >= 0.50 - 0.077; average is 0.1 behind
    assert fusion.simplest_within(scores, 0.10) == "average"  # a tie at the edge keeps the simpler
    assert fusion.simplest_within(scores, 0.0) == "head"  # a large validation fold: the plain argmax
    assert fusion.simplest_within({"average": 0.5, "head": 0.5}, 0.0) == "average"  # equal: the simpler


def test_choose_records_the_tolerance_it_used():
    log_a, log_l, y = branches()
    choice = fusion.choose(log_a, log_l, y, N_CLASSES, head_val_macro_f1=0.0)
    assert choice["winner"] != "head"
    assert choice["tolerance"] == pytest.approx(fusion.one_standard_error(max(choice["val_macro_f1"].values()), len(y)))


def test_equal_is_the_plain_average_and_fits_nothing():
    log_a, log_l, y = branches()
    assert fusion.fit("equal", log_a, log_l, y, N_CLASSES) == {"audio_weight": 0.5}
    assert fusion.fit("equal", log_a[:5], log_l[:5], y[:5], N_CLASSES) == {"audio_weight": 0.5}
    np.testing.assert_allclose(fusion.combine("equal", {"audio_weight": 0.5}, log_a, log_l), (log_a + log_l) / 2)
    assert fusion.PREFERENCE[0] == "equal"  # the simplest: kept whenever it is within one SE of the best


def raw_parts(n=150, seed=0, lyrics_scale=8.0):
    """branch_parts-like raw network outputs: the lyrics network far overconfident (logits x lyrics_scale)."""
    log_a, log_l, y = branches(n=n, audio_acc=0.7, lyrics_acc=0.7, seed=seed)
    words = np.array(["sunshine dance", "rage fire", "tears rain"])
    rng = np.random.default_rng(seed + 7)
    texts = np.array([f"{words[c if rng.random() < 0.7 else rng.integers(0, 3)]} la la" for c in y], dtype=object)
    return {"log_a": log_a, "log_l": log_l * lyrics_scale, "y": y, "has_audio": np.ones(n, bool),
            "has_lyrics": np.ones(n, bool), "texts": texts, "fold": np.zeros(n, dtype=np.int64)}


def test_each_network_gets_its_own_temperature_on_the_fitting_rows():
    """A lyrics network 8x too confident is cooled by its own temperature, not by a bundle's (which, for a
    stacked lyrics branch, belongs to the stacked logits: the MIREX runs applied up to 20 to the network)."""
    parts = raw_parts()
    rows = np.ones(len(parts["y"]), bool)
    logits, params, (t_a, t_l) = fusion._late_logits("equal", parts, rows, N_CLASSES)
    assert params == {"audio_weight": 0.5}
    assert t_l > 4 * t_a  # the overconfident network is divided by much more
    expected = (fusion.calibrated_logprobs(parts["log_a"], t_a) + fusion.calibrated_logprobs(parts["log_l"], t_l)) / 2
    np.testing.assert_allclose(logits, expected)
    half = np.arange(len(rows)) < 75
    assert fusion._late_logits("equal", parts, half, N_CLASSES)[2] != (t_a, t_l)  # fitted on the rows given only


def test_finished_candidates_are_cross_fitted_with_their_lexical_stacker():
    from labeler.lyrics.lexical import LexicalConfig, LexicalModel

    parts = raw_parts()
    rows = np.ones(len(parts["y"]), bool)
    lexical = LexicalModel.fit(list(parts["texts"]), parts["y"], N_CLASSES, LexicalConfig(min_df=1, char_max=0))
    networks_only = fusion.cross_fitted_finished_f1("equal", parts, rows, None, N_CLASSES)
    with_lexical = {k: fusion.cross_fitted_finished_f1(k, parts, rows, lexical, N_CLASSES) for k in fusion.LATE_KINDS}
    assert with_lexical["equal"] > networks_only + 0.03  # the words are a third, informative expert
    assert all(0.0 <= v <= 1.0 for v in with_lexical.values())
    assert lexical.stack_weight is None  # scoring never touches the lyrics bundle's model
    few = np.arange(len(rows)) < 4  # too few to cross-fit: scored in sample, still a number
    assert 0.0 <= fusion.cross_fitted_finished_f1("logreg", parts, few, lexical, N_CLASSES) <= 1.0


def test_equal_stack_adds_the_lexical_expert_with_fixed_shares():
    from labeler.lyrics.lexical import LexicalConfig, LexicalModel
    from train.select.stacking import fit_equal_stack

    parts = raw_parts(n=60)
    texts = list(parts["texts"])
    texts[3] = ""  # a row without lyrics keeps the network's logits
    lexical = LexicalModel.fit(texts, parts["y"], N_CLASSES, LexicalConfig(min_df=1, char_max=0))
    net = parts["log_a"]
    out = fit_equal_stack(lexical, net, texts, parts["y"], fusion.EQUAL_NETWORK_SHARE)
    lex = lexical.logits(texts)
    t_lex = lexical.stack_weight[0, N_CLASSES] ** -1 / 3  # the lexical block is (1/3) / T_lex on the diagonal
    np.testing.assert_allclose(out[0], 2 / 3 * net[0] + lex[0] / (3 * t_lex), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[3], net[3], rtol=1e-6)
    assert 0.05 <= t_lex <= 20.0


def test_one_modality_rows_take_their_branch():
    log_a, log_l, y = branches(n=6)
    has_a = np.array([True, True, False, True, False, True])
    has_l = np.array([True, False, True, True, True, False])
    out = fusion.fused_logits("average", {"audio_weight": 0.3}, log_a, log_l, has_a, has_l)
    np.testing.assert_allclose(out[1], log_a[1])
    np.testing.assert_allclose(out[2], log_l[2])
    np.testing.assert_allclose(out[0], 0.3 * log_a[0] + 0.7 * log_l[0])


@pytest.fixture(scope="module")
def branch_models(tmp_path_factory):
    bert = tiny_bert_dir(tmp_path_factory.mktemp("enc"))
    torch.manual_seed(0)
    audio = AudioCnnConfig(n_mels=64, width=0.25, embedding_dim=32)
    lyrics = LyricsEncoderConfig(name_or_path=bert)
    a = EmotionModel(ModelConfig(branch="audio", mode="classes", classes=["x", "y", "z"], audio=audio, lyrics=None))
    t = EmotionModel(ModelConfig(branch="lyrics", mode="classes", classes=["x", "y", "z"], audio=None, lyrics=lyrics),
                     encoder_config=AutoConfig.from_pretrained(bert))
    return a.eval(), t.eval(), bert


@pytest.mark.parametrize("kind", ["equal", "average", "logreg", "gated"])
def test_late_model_matches_the_numpy_math_and_survives_a_bundle(branch_models, kind, tmp_path):
    from labeler.audio import FeaturizerConfig
    from labeler.bundle.store import load_bundle, save_bundle
    from labeler.lyrics.text import LyricsConfig

    audio, lyrics, bert = branch_models
    config = ModelConfig(branch="fusion", mode="classes", classes=["x", "y", "z"], audio=audio.config.audio,
                         lyrics=lyrics.config.lyrics, fusion=fusion.model_kind(kind))
    model = EmotionModel.late_from_branches(audio, lyrics, config, audio_temperature=1.7, lyrics_temperature=0.8).eval()
    log_a, log_l, y = branches(n=40, seed=1)
    params = fusion.fit(kind, log_a, log_l, y, N_CLASSES)
    fusion.set_params(model.late, kind, params)

    torch.manual_seed(1)
    log_mel = torch.randn(4, 64, 64)
    ids = torch.randint(5, 50, (4, 10))
    mask = torch.ones(4, 10, dtype=torch.long)
    flags = dict(has_audio=torch.tensor([True, True, False, True]), has_lyrics=torch.tensor([True, False, True, True]))
    with torch.inference_mode():
        out = model(log_mel=log_mel, input_ids=ids, attention_mask=mask, **flags)
        # the branch parts are the branch models' own logits at their temperatures
        torch.testing.assert_close(out.branch_logprobs[0][0], torch.log_softmax(audio(log_mel=log_mel[:1]).logits[0] / 1.7, -1))
        torch.testing.assert_close(out.branch_logprobs[1][2], torch.log_softmax(
            lyrics(input_ids=ids[2:3], attention_mask=mask[2:3]).logits[0] / 0.8, -1))
    parts = [p.double().numpy() for p in out.branch_logprobs]
    expected = fusion.fused_logits(kind, params, parts[0], parts[1], flags["has_audio"].numpy(), flags["has_lyrics"].numpy())
    np.testing.assert_allclose(out.logits.numpy(), expected, rtol=1e-4, atol=1e-4)
    assert out.modalities() == ["audio+lyrics", "audio", "lyrics", "audio+lyrics"]

    uri = str(tmp_path / "bundle")
    save_bundle(uri, model, FeaturizerConfig(n_mels=64), LyricsConfig(), tokenizer=bert)
    loaded = load_bundle(uri)
    assert loaded.classes == ["x", "y", "z"] and loaded.model.config.fusion == fusion.model_kind(kind)
    with torch.inference_mode():
        again = loaded.model(log_mel=log_mel, input_ids=ids, attention_mask=mask, **flags)
    torch.testing.assert_close(again.logits, out.logits)


def test_late_fusion_needs_the_fusion_branch():
    with pytest.raises(ValueError, match="fusion='late' is for branch 'fusion'"):
        ModelConfig(branch="audio", fusion="late", lyrics=None)
    with pytest.raises(ValueError, match="unknown fusion"):
        ModelConfig(fusion="stacked")
