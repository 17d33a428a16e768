"""A frozen lyrics encoder run once per song: training on cached window vectors (train.fit.loop.CachedLyricsModel)
gives the logits, loss and updates that the text path (EmotionModel on input_ids) gives for the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

LYRICS = [
    "the sun is shining and we dance all night " * 6,
    "tears fall slowly in the empty room",
    "",  # no lyrics: never reaches the model (has_lyrics False), cached as zeros
    "rage against the broken walls we scream and fight " * 3,
    "quiet river calm and slow under the evening sky " * 4,
]


def _setup(tmp_path, window_tokens: int):
    from labeler.lyrics.pretrained import load_tokenizer
    from labeler.lyrics.text import LyricsConfig, tokenize
    from labeler.models import EmotionModel, LyricsEncoderConfig, ModelConfig
    from tiny_models import tiny_bert_dir

    enc_dir = tiny_bert_dir(tmp_path)
    windows = 4 if window_tokens else 1
    lyrics = LyricsConfig(max_tokens=window_tokens or 32, max_windows=windows, window_overlap=4 if windows > 1 else 16)
    ids, mask = tokenize(load_tokenizer(enc_dir), LYRICS, lyrics)
    config = ModelConfig(branch="lyrics", mode="4Q", freeze_branches=True,
                         lyrics=LyricsEncoderConfig(name_or_path=enc_dir, window_tokens=window_tokens))
    torch.manual_seed(0)
    model = EmotionModel.from_pretrained_branches(config)
    has_lyrics = np.array([bool(t) for t in LYRICS])
    return model, ids, mask, has_lyrics


@pytest.mark.parametrize("window_tokens", [16, 0])
def test_cached_vectors_give_the_text_paths_logits_and_loss(tmp_path, window_tokens):
    from train.cache.feature_cache import lyrics_window_vectors
    from train.fit.loop import CachedLyricsModel

    model, ids, mask, has_lyrics = _setup(tmp_path, window_tokens)
    cached = lyrics_window_vectors(model.lyrics_encoder, ids, mask, has_lyrics)  # what the feature cache stores
    rows = np.flatnonzero(has_lyrics)
    assert cached["lyrics_windows"].dtype == np.float32 and cached["lyrics_window_used"].dtype == bool
    assert not cached["lyrics_window_used"][~has_lyrics].any() and not cached["lyrics_windows"][~has_lyrics].any()
    if window_tokens:  # the long lyric fills several windows, the short one one
        assert cached["lyrics_window_used"][0].sum() > cached["lyrics_window_used"][1].sum() >= 1
    labels = torch.tensor([0, 2, 1, 3])
    model.eval()
    with torch.no_grad():
        text = model(input_ids=torch.from_numpy(ids[rows]), attention_mask=torch.from_numpy(mask[rows]), labels=labels)
        vec = CachedLyricsModel(model)(torch.from_numpy(cached["lyrics_windows"][rows]),
                                       torch.from_numpy(cached["lyrics_window_used"][rows]), labels=labels)
    np.testing.assert_allclose(vec.logits.numpy(), text.logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vec.embedding.numpy(), text.embedding.numpy(), rtol=1e-5, atol=1e-6)
    assert abs(float(vec.loss) - float(text.loss)) < 1e-5
    assert vec.has_lyrics.all() and not vec.has_audio.any()


def test_a_training_step_on_cached_vectors_updates_the_head_as_the_text_path_does(tmp_path):
    """Same weights, same seed, one epoch of train.fit.step.train_epoch each way: the same head afterwards (the
    frozen encoder is in eval mode, so the head's dropout draws the same masks on both paths)."""
    import copy

    from train.cache.feature_cache import lyrics_window_vectors
    from train.fit.loop import CachedLyricsModel, forward_kwargs
    from train.fit.step import train_epoch

    model, ids, mask, has_lyrics = _setup(tmp_path, 16)
    rows = np.flatnonzero(has_lyrics)
    cached = lyrics_window_vectors(model.lyrics_encoder, ids[rows], mask[rows], has_lyrics[rows])
    labels = torch.tensor([0, 2, 1, 3])
    text_batch = {"input_ids": torch.from_numpy(ids[rows]), "attention_mask": torch.from_numpy(mask[rows])}
    vec_batch = {k: torch.from_numpy(v) for k, v in cached.items()}
    heads = []
    for wrap, batch in ((lambda m: m, text_batch), (CachedLyricsModel, vec_batch)):
        m = copy.deepcopy(model)
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
        torch.manual_seed(7)
        kwargs = forward_kwargs(batch, "lyrics", torch.device("cpu"))
        train_epoch(wrap(m), [(kwargs, labels)] * 3, opt, sched)
        assert not any(p.requires_grad for p in m.lyrics_encoder.parameters())
        heads.append(m.head[-1].weight.detach().clone())
    assert not torch.equal(heads[0], model.head[-1].weight)  # the step did train
    torch.testing.assert_close(heads[1], heads[0], rtol=1e-5, atol=1e-6)


def test_only_a_frozen_lyrics_model_trains_on_cached_vectors(tmp_path):
    from dataclasses import replace

    from labeler.models import EmotionModel
    from train.fit.loop import CachedLyricsModel

    model, *_ = _setup(tmp_path, 16)
    tuned = EmotionModel(replace(model.config, freeze_branches=False), encoder_config=model.encoder_config)
    with pytest.raises(ValueError, match="frozen"):
        CachedLyricsModel(tuned)
