"""labeler.models: shapes per arch x mode, masking, fusion with missing modalities, PANNs mapping, losses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig

from labeler.models import (
    AudioCnnConfig,
    EmotionModel,
    LyricsEncoderConfig,
    ModelConfig,
    load_panns_checkpoint,
    spec_augment,
)
from tiny_models import tiny_albert_dir, tiny_bert_dir

FRAMES = 64
MELS = 64


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    return {"BERT": tiny_bert_dir(root), "ALBERT": tiny_albert_dir(root)}


def audio_config(arch="Cnn6", **kw) -> AudioCnnConfig:
    return AudioCnnConfig(arch=arch, n_mels=MELS, width=0.25, embedding_dim=32, **kw)


def lyrics_batch(n=3, length=12, vocab=50):
    torch.manual_seed(0)
    ids = torch.randint(5, vocab, (n, length))
    mask = torch.ones(n, length, dtype=torch.long)
    mask[0, 8:] = 0
    ids[0, 8:] = 0
    return ids, mask


@pytest.mark.parametrize("arch", ["Cnn6", "Cnn10"])
@pytest.mark.parametrize("mode,n_classes", [("4Q", 4), ("Ar", 2), ("Va", 2)])
def test_audio_model_shapes(arch, mode, n_classes):
    model = EmotionModel(ModelConfig(branch="audio", mode=mode, audio=audio_config(arch), lyrics=None)).eval()
    out = model(log_mel=torch.randn(2, FRAMES, MELS))
    assert out.logits.shape == (2, n_classes)
    assert out.embedding.shape == (2, 32)
    assert out.loss is None and out.va is None
    assert out.modalities() == ["audio", "audio"]


def test_cnn_layer_names_follow_panns():
    names = set(EmotionModel(ModelConfig(branch="audio", audio=audio_config("Cnn10"), lyrics=None)).audio_encoder.cnn.state_dict())
    for key in ("bn0.running_mean", "conv_block1.conv1.weight", "conv_block1.bn1.weight", "conv_block4.conv2.weight",
                "conv_block4.bn2.running_var", "fc1.weight"):
        assert key in names


def test_training_forward_has_loss_and_gradients():
    torch.manual_seed(0)
    model = EmotionModel(ModelConfig(branch="audio", mode="4Q", audio=audio_config(), lyrics=None, regression=True)).train()
    va_targets = torch.tensor([[0.5, -0.2], [float("nan"), float("nan")], [0.1, 0.9]])
    out = model(log_mel=torch.randn(3, FRAMES, MELS), labels=torch.tensor([0, 2, 3]), va_targets=va_targets,
                class_weights=torch.tensor([1.0, 2.0, 1.0, 0.5]))
    assert out.va.shape == (3, 2)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.audio_encoder.cnn.conv_block1.conv1.weight.grad is not None
    assert model.va_head.weight.grad.abs().sum() > 0


def test_spec_augment_masks_stripes_and_keeps_shape():
    torch.manual_seed(1)
    x = torch.ones(4, 1, 100, 64)
    y = spec_augment(x, time_masks=2, time_width=20, freq_masks=2, freq_width=8)
    assert y.shape == x.shape
    assert (y == 0).any() and (y == 1).any()
    # masks are whole stripes: a zeroed time frame is zero across every mel bin, or a mel bin across frames
    zero = y[:, 0] == 0
    assert bool(((zero.all(dim=2, keepdim=True)) | (zero.all(dim=1, keepdim=True)) | ~zero).all())


def test_spec_augment_only_in_training():
    model = EmotionModel(ModelConfig(branch="audio", audio=audio_config(dropout=0.0), lyrics=None, dropout=0.0)).eval()
    x = torch.randn(2, FRAMES, MELS)
    assert torch.equal(model(log_mel=x).logits, model(log_mel=x).logits)


def test_unknown_mode_arch_branch_rejected():
    with pytest.raises(ValueError, match="mode"):
        EmotionModel(ModelConfig(branch="audio", mode="5Q", audio=audio_config(), lyrics=None))
    with pytest.raises(ValueError, match="Cnn14"):
        AudioCnnConfig(arch="Cnn14")
    with pytest.raises(ValueError, match="branch"):
        ModelConfig(branch="video")


def test_n_mels_checked():
    with pytest.raises(ValueError, match="n_mels=8"):
        AudioCnnConfig(n_mels=8)
    model = EmotionModel(ModelConfig(branch="audio", audio=audio_config(), lyrics=None))
    with pytest.raises(ValueError, match="64"):
        model(log_mel=torch.randn(2, FRAMES, 128))


@pytest.mark.parametrize("encoder", ["BERT", "ALBERT"])
@pytest.mark.parametrize("mode,n_classes", [("4Q", 4), ("Va", 2)])
def test_lyrics_model_shapes(encoders, encoder, mode, n_classes):
    config = ModelConfig(branch="lyrics", mode=mode, audio=None, lyrics=LyricsEncoderConfig(name_or_path=encoders[encoder]))
    model = EmotionModel(config, encoder_config=AutoConfig.from_pretrained(encoders[encoder])).eval()
    ids, mask = lyrics_batch()
    out = model(input_ids=ids, attention_mask=mask)
    assert out.logits.shape == (3, n_classes)
    assert out.embedding.shape == (3, 32)
    assert model.config.lyrics.hidden_size == 32


def test_lyrics_from_pretrained_loads_weights(encoders):
    from transformers import AutoModel

    config = ModelConfig(branch="lyrics", audio=None, lyrics=LyricsEncoderConfig(name_or_path=encoders["BERT"]))
    model = EmotionModel.from_pretrained_branches(config)
    reference = AutoModel.from_pretrained(encoders["BERT"])
    key = "embeddings.word_embeddings.weight"
    assert torch.equal(model.lyrics_encoder.encoder.state_dict()[key], reference.state_dict()[key])


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_padding_does_not_change_pooled_embedding(encoders, pooling):
    cfg = ModelConfig(branch="lyrics", audio=None, lyrics=LyricsEncoderConfig(name_or_path=encoders["BERT"], pooling=pooling))
    model = EmotionModel(cfg, encoder_config=AutoConfig.from_pretrained(encoders["BERT"])).eval()
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    padded = torch.cat([ids, torch.zeros(1, 7, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 5), torch.zeros(1, 7)], dim=1).long()
    short = model(input_ids=ids, attention_mask=torch.ones(1, 5, dtype=torch.long)).embedding
    long = model(input_ids=padded, attention_mask=mask).embedding
    torch.testing.assert_close(short, long, rtol=1e-4, atol=1e-5)


def test_windowed_encoder_averages_its_non_empty_windows(encoders):
    base = LyricsEncoderConfig(name_or_path=encoders["BERT"])
    windowed = LyricsEncoderConfig(name_or_path=encoders["BERT"], window_tokens=6)
    encoder_config = AutoConfig.from_pretrained(encoders["BERT"])
    single = EmotionModel(ModelConfig(branch="lyrics", audio=None, lyrics=base), encoder_config=encoder_config).eval()
    model = EmotionModel(ModelConfig(branch="lyrics", audio=None, lyrics=windowed), encoder_config=encoder_config).eval()
    model.load_state_dict(single.state_dict())
    w1, w2 = torch.tensor([2, 10, 11, 12, 13, 3]), torch.tensor([2, 14, 15, 3, 0, 0])
    ids = torch.stack([torch.cat([w1, w2, torch.zeros(6, dtype=torch.long)]), torch.cat([w2, torch.zeros(12, dtype=torch.long)])])
    mask = (ids != 0).long()
    with torch.inference_mode():
        got = model(input_ids=ids, attention_mask=mask).embedding
        e1 = single(input_ids=w1[None], attention_mask=torch.ones(1, 6, dtype=torch.long)).embedding
        e2 = single(input_ids=w2[None, :4], attention_mask=torch.ones(1, 4, dtype=torch.long)).embedding
        trimmed = model(input_ids=ids[:, :10], attention_mask=mask[:, :10]).embedding  # predictor-trimmed width
    torch.testing.assert_close(got[0], ((e1 + e2) / 2)[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[1], e2[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(trimmed, got, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="window_tokens"):
        LyricsEncoderConfig(window_tokens=-1)


def fusion_model(encoders, **kw) -> EmotionModel:
    cfg = ModelConfig(branch="fusion", mode="4Q", audio=audio_config(), hidden_dim=16,
                      lyrics=LyricsEncoderConfig(name_or_path=encoders["BERT"]), **kw)
    return EmotionModel(cfg, encoder_config=AutoConfig.from_pretrained(encoders["BERT"]))


def test_fusion_with_audio_only_lyrics_only_and_both(encoders):
    torch.manual_seed(0)
    model = fusion_model(encoders).eval()
    log_mel = torch.randn(3, FRAMES, MELS)
    ids, mask = lyrics_batch()
    both = model(log_mel=log_mel, input_ids=ids, attention_mask=mask)
    assert both.logits.shape == (3, 4) and both.modalities() == ["audio+lyrics"] * 3
    audio_only = model(log_mel=log_mel)
    lyrics_only = model(input_ids=ids, attention_mask=mask)
    assert audio_only.modalities() == ["audio"] * 3
    assert lyrics_only.modalities() == ["lyrics"] * 3
    # the missing branch is the learned placeholder, whatever the (ignored) input says
    flags = model(log_mel=log_mel, input_ids=ids, attention_mask=mask,
                  has_audio=torch.tensor([True, False, True]), has_lyrics=torch.tensor([False, True, True]))
    assert flags.modalities() == ["audio", "lyrics", "audio+lyrics"]
    torch.testing.assert_close(flags.logits[0], audio_only.logits[0])
    torch.testing.assert_close(flags.logits[1], lyrics_only.logits[1])
    torch.testing.assert_close(flags.logits[2], both.logits[2])
    emb = flags.embedding
    torch.testing.assert_close(emb[0, 32:], model.lyrics_placeholder.detach())
    torch.testing.assert_close(emb[1, :32], model.audio_placeholder.detach())


def test_fusion_modality_dropout_in_training_only(encoders):
    torch.manual_seed(0)
    model = fusion_model(encoders, modality_dropout=0.9).train()
    ids, mask = lyrics_batch(n=16)
    out = model(log_mel=torch.randn(16, FRAMES, MELS), input_ids=ids, attention_mask=mask, labels=torch.zeros(16, dtype=torch.long))
    used = out.modalities()
    assert "audio" in used and "lyrics" in used  # with p=0.9, 16 rows: some dropped either way
    out.loss.backward()
    assert model.audio_placeholder.grad is not None and model.lyrics_placeholder.grad is not None
    assert model.eval()(log_mel=torch.randn(16, FRAMES, MELS), input_ids=ids, attention_mask=mask).modalities() == ["audio+lyrics"] * 16


def test_fusion_from_branches_copies_encoders_and_freezes(encoders):
    audio = EmotionModel(ModelConfig(branch="audio", mode="Ar", audio=audio_config(), lyrics=None))
    lyrics_cfg = ModelConfig(branch="lyrics", mode="Ar", audio=None, lyrics=LyricsEncoderConfig(name_or_path=encoders["ALBERT"]))
    lyrics = EmotionModel(lyrics_cfg, encoder_config=AutoConfig.from_pretrained(encoders["ALBERT"]))
    fused = EmotionModel.fusion_from_branches(audio, lyrics, ModelConfig(branch="fusion", mode="4Q", freeze_branches=True))
    for name, tensor in audio.audio_encoder.state_dict().items():
        assert torch.equal(fused.audio_encoder.state_dict()[name], tensor)
    for name, tensor in lyrics.lyrics_encoder.state_dict().items():
        assert torch.equal(fused.lyrics_encoder.state_dict()[name], tensor)
    assert fused.config.audio.width == 0.25 and fused.config.lyrics.name_or_path == encoders["ALBERT"]
    assert not any(p.requires_grad for p in fused.audio_encoder.parameters())
    assert not any(p.requires_grad for p in fused.lyrics_encoder.parameters())
    assert all(p.requires_grad for p in fused.head.parameters())
    fused.train()
    assert not fused.audio_encoder.training and fused.head.training  # frozen BatchNorm stats stay put
    with pytest.raises(ValueError, match="audio model"):
        EmotionModel.fusion_from_branches(lyrics, lyrics, ModelConfig(branch="fusion"))


def test_hybrid_descriptors_are_standardised_by_buffers():
    model = EmotionModel(ModelConfig(branch="audio", audio=audio_config(descriptor_dim=5, dropout=0.0), lyrics=None)).eval()
    model.audio_encoder.set_descriptor_stats([10.0] * 5, [2.0, 2.0, 2.0, 2.0, 0.0])
    assert model.audio_encoder.descriptor_std.tolist() == [2.0, 2.0, 2.0, 2.0, 1.0]  # zero std guarded
    log_mel = torch.randn(2, FRAMES, MELS)
    at_mean = model(log_mel=log_mel, descriptors=torch.full((2, 5), 10.0)).logits
    nan = model(log_mel=log_mel, descriptors=torch.full((2, 5), float("nan"))).logits
    torch.testing.assert_close(at_mean, nan)  # non-finite descriptors -> the mean
    with pytest.raises(ValueError, match="descriptors"):
        model(log_mel=log_mel)
    with pytest.raises(ValueError, match="5"):
        model.audio_encoder.set_descriptor_stats([0.0] * 4, [1.0] * 4)


def _panns_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """A checkpoint laid out as PANNs publishes it (Cnn6_mAP=0.343.pth / Cnn10_mAP=0.380.pth), random values."""
    g = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {
        "spectrogram_extractor.stft.conv_real.weight": torch.randn(513, 1, 1024, generator=g),
        "logmel_extractor.melW": torch.randn(513, 64, generator=g),
        "fc_audioset.weight": torch.randn(527, 512, generator=g),
        "fc_audioset.bias": torch.randn(527, generator=g),
        "fc1.weight": torch.randn(512, 512, generator=g),
        "fc1.bias": torch.randn(512, generator=g),
    }

    def bn(prefix, n):
        sd.update({f"{prefix}.weight": torch.rand(n, generator=g), f"{prefix}.bias": torch.randn(n, generator=g),
                   f"{prefix}.running_mean": torch.randn(n, generator=g), f"{prefix}.running_var": torch.rand(n, generator=g) + 0.5,
                   f"{prefix}.num_batches_tracked": torch.tensor(1000)})

    bn("bn0", 64)
    in_ch = 1
    for i, out_ch in enumerate((64, 128, 256, 512), start=1):
        if arch == "Cnn6":
            sd[f"conv_block{i}.conv1.weight"] = torch.randn(out_ch, in_ch, 5, 5, generator=g)
            bn(f"conv_block{i}.bn1", out_ch)
        else:
            sd[f"conv_block{i}.conv1.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=g)
            sd[f"conv_block{i}.conv2.weight"] = torch.randn(out_ch, out_ch, 3, 3, generator=g)
            bn(f"conv_block{i}.bn1", out_ch)
            bn(f"conv_block{i}.bn2", out_ch)
        in_ch = out_ch
    return sd


@pytest.mark.parametrize("arch", ["Cnn6", "Cnn10"])
def test_load_panns_checkpoint(tmp_path, arch):
    sd = _panns_state_dict(arch)
    path = tmp_path / f"{arch}.pth"
    torch.save({"model": sd, "iteration": 1}, path)
    model = EmotionModel(ModelConfig(branch="audio", audio=AudioCnnConfig(arch=arch), lyrics=None))
    loaded = load_panns_checkpoint(model, str(path))
    cnn_keys = set(model.audio_encoder.cnn.state_dict())
    assert set(loaded) == cnn_keys  # every layer of ours is covered by the PANNs layout
    assert not any(k.startswith(("spectrogram_extractor", "logmel_extractor", "fc_audioset")) for k in loaded)
    assert torch.equal(model.audio_encoder.cnn.conv_block3.conv1.weight.detach(), sd["conv_block3.conv1.weight"])
    assert torch.equal(model.audio_encoder.cnn.bn0.running_var, sd["bn0.running_var"])


def test_load_panns_checkpoint_without_matches(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"encoder.layer.weight": torch.zeros(3)}}, path)
    model = EmotionModel(ModelConfig(branch="audio", audio=audio_config(), lyrics=None))
    with pytest.raises(ValueError, match="no tensor matches"):
        load_panns_checkpoint(model, str(path))
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a PANNs checkpoint"):
        load_panns_checkpoint(model, str(path))


_CONFIG_ONLY = """
import sys
from labeler.models import AudioCnnConfig, LyricsEncoderConfig, ModelConfig
from labeler.models.configuration import ModelConfig as Direct
assert ModelConfig is Direct
ModelConfig.from_dict(ModelConfig(branch="audio", lyrics=None).to_dict())
from train.fit.presets import TrainPreset  # its defaults are the library configs' (labeler.audio.config too)
assert TrainPreset().n_mels == __import__("labeler.audio", fromlist=["FeaturizerConfig"]).FeaturizerConfig().n_mels
print(sorted(m for m in ("torch", "transformers", "librosa", "labeler.models.emotion") if m in sys.modules))
"""


def test_the_configuration_imports_without_torch():
    """A bundle's config, the presets and the drivers read ModelConfig and FeaturizerConfig without building
    a network or loading librosa."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _CONFIG_ONLY], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
