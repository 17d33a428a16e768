"""labeler.lyrics.lexical: scikit-learn-identical TF-IDF features, fitting, the stacker, pickle-free save/load."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from labeler.lyrics.lexical import LexicalConfig, LexicalModel, analyze

TEXTS = [
    "I love  you baby, love me! Dance all night",
    "Kill the   lights\nblood and fire, I hate this war",
    "tears in heaven, tears tears, alone and cold",
    "calm gentle breeze, quiet peace and a soft dream",
    "Love me baby, sunshine and joy",
    "fight fire with fire, scream and burn",
    "I cry alone in the rain, goodbye",
    "slow warm home, a quiet gentle night",
    "", "x é ü ÿ",
]
Y = np.array([0, 1, 2, 3, 0, 1, 2, 3, 2, 0])


@pytest.mark.parametrize("analyzer,ngrams", [("word", (1, 1)), ("word", (1, 2)), ("word", (2, 3)),
                                              ("char_wb", (2, 5)), ("char_wb", (3, 3))])
def test_analyzers_match_scikit_learn(analyzer, ngrams):
    reference = TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams).build_analyzer()
    for text in TEXTS + ["a", "ab  cd\t\tef", "Ça va? Très bien."]:
        assert analyze(text, analyzer, *ngrams) == reference(text)


def test_features_match_tfidf_vectorizer_blocks():
    model = LexicalModel.fit(TEXTS, Y, 4, LexicalConfig(min_df=1))
    ours = model.transform(TEXTS).toarray()
    blocks = [TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)]
    mats = [v.fit_transform(TEXTS).toarray() for v in blocks]
    # same features in another column order: map ours onto scikit-learn's by term
    for block, (vocab, mat, vec) in enumerate(zip(model.vocabularies, mats, blocks)):
        offset = sum(len(v) for v in model.vocabularies[:block])
        for term, col in vec.vocabulary_.items():
            np.testing.assert_allclose(ours[:, offset + vocab[term]], mat[:, col], rtol=1e-5, atol=1e-6)
    assert ours.shape[1] == sum(m.shape[1] for m in mats)
    np.testing.assert_allclose(ours.sum(), sum(m.sum() for m in mats), rtol=1e-5)


def test_fit_learns_and_round_trips_without_pickle(tmp_path, monkeypatch):
    model = LexicalModel.fit(TEXTS, Y, 4, LexicalConfig(min_df=1, C=100.0))
    assert (model.logits(TEXTS[:8]).argmax(1) == Y[:8]).all()
    model.fit_stack(np.eye(4)[Y] * 2.0, model.logits(TEXTS), Y)
    names = model.save(tmp_path / "lex")
    assert sorted(names) == ["model.safetensors", "vocab.json"]

    def refuse(*a, **k):
        raise AssertionError("loading the lexical model must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded = LexicalModel.load(tmp_path / "lex")
    np.testing.assert_array_equal(loaded.logits(TEXTS), model.logits(TEXTS))
    enc = np.random.default_rng(0).normal(size=(len(TEXTS), 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.stacked(enc, loaded.logits(TEXTS)), model.stacked(enc, model.logits(TEXTS)))
    assert loaded.logits([]).shape == (0, 4)


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_any_class_count_and_absent_classes(n_classes):
    y = np.arange(len(TEXTS)) % n_classes
    model = LexicalModel.fit(TEXTS, y, n_classes + 1, LexicalConfig(min_df=1))  # the last class never seen
    logits = model.logits(TEXTS)
    assert logits.shape == (len(TEXTS), n_classes + 1)
    assert (logits.argmax(1) != n_classes).all()
    model.fit_stack(logits, logits, y)
    assert model.stacked(logits, logits).shape == (len(TEXTS), n_classes + 1)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="at least 2 classes"):
        LexicalModel.fit(TEXTS, np.zeros(len(TEXTS), int), 4)
    with pytest.raises(ValueError, match="word or a char block"):
        LexicalConfig(word_ngrams=0, char_max=0)
    with pytest.raises(ValueError, match="unknown LexicalConfig"):
        LexicalConfig.from_dict({"C": 1.0, "bogus": 1})
    model = LexicalModel.fit(TEXTS, Y, 4, LexicalConfig(min_df=1))
    with pytest.raises(ValueError, match="no fitted stacker"):
        model.stacked(np.zeros((1, 4)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="stack weight"):
        model.set_stack(np.zeros((4, 4)), np.zeros(4))


def test_cross_fitted_stack_leaves_the_stacker_and_covers_every_row():
    rng = np.random.default_rng(0)
    y = np.arange(40) % 4
    enc = np.eye(4)[y] * 3 + rng.normal(size=(40, 4))
    lex = rng.normal(size=(40, 4))
    model = LexicalModel.fit(TEXTS, Y, 4, LexicalConfig(min_df=1))
    model.fit_stack(enc, lex, y)
    weight = model.stack_weight.copy()
    out = model.cross_fitted_stack(enc, lex, y)
    assert out.shape == (40, 4) and np.isfinite(out).all() and (out != 0).any(axis=1).all()
    np.testing.assert_array_equal(model.stack_weight, weight)
    assert (out.argmax(1) == y).mean() > 0.7  # the held-out parts are still predicted from the encoder logits


def test_transfer_learns_words_on_the_source_and_is_one_linear_model(tmp_path):
    """fit_transfer == TF-IDF + LR on the source, then LR from its logits to the target classes, folded
    into one ordinary model (same files, same labelling path)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    mood = {0: "sunshine dance joy", 1: "rage fire kill", 2: "tears cry alone", 3: "calm gentle quiet"}
    source_y = np.arange(120) % 4
    source = [f"{mood[c]} {' '.join(rng.choice(['la', 'oh', 'yeah', 'baby'], 3))}" for c in source_y]
    # a 3-class target taxonomy with 12 songs: 'bright' = Q1 words, 'dark' = Q2 or Q3 words, 'soft' = Q4 words
    target_src = np.array([0, 1, 2, 3] * 3)
    target_y = np.array([0, 1, 1, 2] * 3)
    target = [f"{mood[c]} na na" for c in target_src]
    config = LexicalConfig(min_df=1)
    model = LexicalModel.fit_transfer(source, source_y, 4, target, target_y, 3, config, seed=1)
    src = LexicalModel.fit(source, source_y, 4, config, seed=1)
    z = src.logits(target).astype(np.float64)
    lr = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=1).fit(z, target_y)
    new = [f"{mood[c]} hey" for c in (0, 1, 2, 3)]
    np.testing.assert_allclose(model.logits(new), lr.decision_function(src.logits(new).astype(np.float64)), rtol=1e-4, atol=1e-4)
    assert model.logits(new).argmax(1).tolist() == [0, 1, 1, 2]  # words it never saw with a target label
    assert model.n_classes == 3
    model.save(tmp_path / "lex")
    np.testing.assert_array_equal(LexicalModel.load(tmp_path / "lex").logits(new), model.logits(new))
    with pytest.raises(ValueError, match="at least 2 classes"):
        LexicalModel.fit_transfer(source, source_y, 4, target, np.zeros(12, int), 3, config)
