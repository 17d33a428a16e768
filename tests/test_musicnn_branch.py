"""The MusiCNN audio branch: pretrained encoder (frozen, or its top Dense fine-tuned) + pooled head, in the model,
the bundle, training and labelling.

Uses the real musicnn weights (unpacked by scripts/setup.sh; skipped, naming that step, without them)
on few and short clips, to keep CI cheap.
"""

from __future__ import annotations

import pytest
import torch

from labeler.audio import FeaturizerConfig
from labeler.models import AudioCnnConfig, EmotionModel, ModelConfig
from labeler.musicnn import wheel


def _audio_config(**kw) -> ModelConfig:
    return ModelConfig(branch="audio", mode="4Q", audio=AudioCnnConfig(arch="MusiCNN", n_mels=96, embedding_dim=16, **kw),
                       lyrics=None)


def test_musicnn_config_checks_its_input_and_encoder():
    with pytest.raises(ValueError, match="96 mel bins, got n_mels=64"):
        AudioCnnConfig(arch="MusiCNN", n_mels=64)
    with pytest.raises(ValueError, match="unknown musicnn encoder 'MSD_vgg'"):
        AudioCnnConfig(arch="MusiCNN", n_mels=96, encoder="MSD_vgg")


def test_frozen_encoder_cached_embeddings_give_the_same_output(musicnn_available):
    torch.manual_seed(0)
    model = EmotionModel.from_pretrained_branches(_audio_config())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(".backbone." in n for n in trainable)  # the pretrained network stays frozen
    model.train()
    assert not model.audio_encoder.cnn.backbone.training  # and keeps MSD's BatchNorm statistics
    model.eval()
    log_mel = torch.rand(3, 2 * 187, 96) * 3
    with torch.inference_mode():
        direct = model(log_mel=log_mel).logits
        cached = model(patch_features=model.audio_encoder.cnn.patch_features(log_mel)).logits
    assert torch.allclose(direct, cached)
    with pytest.raises(ValueError, match="musicnn log-mel"):
        model(log_mel=torch.zeros(1, 200, 96))


def test_tuned_top_learns_while_the_backbone_and_its_taggram_stay_the_checkpoints(musicnn_available, tmp_path):
    """tune_top: a trainable copy of the Dense 1506 -> 200 starts as the checkpoint's, learns, and travels in
    the bundle; the backbone (trunk, its own Dense, the tag layer) does not move, so the taggram is musicnn's."""
    from labeler.bundle.store import load_bundle, save_bundle

    torch.manual_seed(0)
    model = EmotionModel.from_pretrained_branches(_audio_config(tune_top=True))
    encoder = model.audio_encoder.cnn
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "audio_encoder.cnn.top_dense.weight" in trainable and not any(".backbone." in n for n in trainable)
    assert torch.equal(encoder.top_dense.weight, encoder.backbone.dense.weight)
    log_mel = torch.rand(4, 2 * 187, 96) * 3
    features = encoder.patch_features(log_mel)
    with torch.inference_mode():
        taggram = encoder.taggram(features)
        expected_tags = torch.sigmoid(encoder.backbone(log_mel.reshape(8, 187, 96))).reshape(4, 2, -1).mean(dim=1)
    assert torch.allclose(taggram, expected_tags, atol=1e-6)
    backbone_before = {k: v.clone() for k, v in encoder.backbone.state_dict().items()}
    top_before = encoder.top_dense.weight.detach().clone()

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(3):
        loss = model(patch_features=features, labels=torch.tensor([0, 1, 2, 3])).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert not torch.equal(encoder.top_dense.weight, top_before)
    assert all(torch.equal(v, backbone_before[k]) for k, v in encoder.backbone.state_dict().items())
    with torch.inference_mode():
        assert torch.allclose(encoder.taggram(features), taggram)
        expected = model(log_mel=log_mel).logits
        assert torch.allclose(model(patch_features=features).logits, expected, atol=1e-5)

    save_bundle(str(tmp_path / "tuned"), model, FeaturizerConfig.musicnn(clip_seconds=6.0), None)
    bundle = load_bundle(str(tmp_path / "tuned"))
    assert bundle.model.config.audio.tune_top
    with torch.inference_mode():
        assert torch.allclose(bundle.model(log_mel=log_mel).logits, expected, atol=1e-5)


@pytest.mark.parametrize("tune_top", [False, True])
def test_silent_patches_are_left_out_of_the_pooling_and_the_taggram(tune_top):
    """A 12-s song in a 30-s clip (zero-padded: six patches of digital silence) pools, labels and tags as the
    same song in a 12-s clip; the silent patches are NaN in the (cached) trunk features."""
    torch.manual_seed(0)
    model = EmotionModel(_audio_config(tune_top=tune_top)).eval()
    encoder = model.audio_encoder.cnn
    song = torch.rand(2, 4 * 187, 96) * 3
    padded = torch.cat([song, torch.zeros(2, 6 * 187, 96)], dim=1)
    with torch.inference_mode():
        features = encoder.patch_features(padded)
        assert torch.isnan(features[:, 4:]).all() and torch.isfinite(features[:, :4]).all()
        short, long = model(log_mel=song).logits, model(log_mel=padded).logits
        assert torch.allclose(short, long, atol=1e-5)
        assert torch.allclose(model(patch_features=features).logits, long, atol=1e-6)
        assert torch.allclose(encoder.taggram(features), encoder.taggram(encoder.patch_features(song)), atol=1e-6)
        # a clip of nothing but silence (never labelled: the featuriser refuses silent tracks) stays finite
        assert torch.isfinite(model(log_mel=torch.zeros(1, 2 * 187, 96)).logits).all()
    model.train()  # one audible patch (zero spread) still trains: finite gradients
    model(patch_features=features[:, 3:], labels=torch.tensor([0, 1])).loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bundle_labels_without_the_wheel(musicnn_available, tmp_path, monkeypatch):
    """The converted weights travel in the bundle's safetensors: loading and predicting never read the wheel."""
    from labeler.bundle.store import load_bundle, save_bundle

    model = EmotionModel.from_pretrained_branches(_audio_config()).eval()
    log_mel = torch.rand(2, 187, 96) * 3
    with torch.inference_mode():
        expected = model(log_mel=log_mel).logits
    with pytest.raises(ValueError, match="reads the 'musicnn' front end"):
        save_bundle(str(tmp_path / "wrong"), model, FeaturizerConfig(n_mels=96), None)
    save_bundle(str(tmp_path / "bundle"), model, FeaturizerConfig.musicnn(clip_seconds=3.0), None)

    monkeypatch.setenv(wheel.DIR_ENV, str(tmp_path / "no-wheel-here"))
    with pytest.raises(wheel.MusicnnFilesError):
        wheel.checkpoint_prefix("MSD_musicnn")
    bundle = load_bundle(str(tmp_path / "bundle"))
    with torch.inference_mode():
        assert torch.allclose(bundle.model(log_mel=log_mel).logits, expected)
