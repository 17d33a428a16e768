"""Training presets: named settings, typed CLI overrides, and the per-branch epoch rule."""

from __future__ import annotations

import pytest

from train.fit.presets import PRESETS, get_preset, parse_overrides, presets_table


def test_cli_overrides_arrive_as_strings_and_take_the_fields_types():
    preset = get_preset("cpu-small", **parse_overrides(["epochs=2", "lr_head=3e-4", "spec_augment=yes", "folds=0,2",
                                                         "lyrics_encoder=bert-base-uncased"]))
    assert preset.epochs == 2 and preset.lr_head == pytest.approx(3e-4) and preset.spec_augment is True
    assert preset.folds == (0, 2) and preset.lyrics_encoder == "bert-base-uncased"
    assert get_preset("cpu-small", folds="all").folds is None
    assert PRESETS["cpu-small"].epochs == 5  # the named preset itself is untouched


def test_shortening_epochs_shortens_the_audio_branch_too():
    small = get_preset("cpu-small")
    assert (small.epochs_for("lyrics"), small.epochs_for("fusion"), small.epochs_for("audio")) == (5, 5, 15)
    quick = get_preset("cpu-small", **parse_overrides(["epochs=2"]))
    assert quick.epochs_for("audio") == 6 and quick.epochs_for("lyrics") == 2
    assert get_preset("becmer").epochs_for("audio") == get_preset("becmer").epochs == 30
    assert get_preset("cpu-small", epochs=1, audio_epoch_factor=0.2).epochs_for("audio") == 1


@pytest.mark.parametrize("overrides, message", [
    ({"epochs": "0"}, "epochs must be >= 1"),
    ({"audio_epoch_factor": "0"}, "audio_epoch_factor must be > 0"),
    ({"audio_arch": "ResNet"}, "audio_arch must be one of Cnn6, Cnn10, Hybrid, MusiCNN, MusiCNN-Hybrid"),
    ({"spec_augment": "maybe"}, "spec_augment expects true or false"),
    ({"epochs": "2.5"}, "epochs expects an integer, got .2.5."),
    ({"epoch": "3"}, "unknown preset field"),
])
def test_bad_overrides_are_refused_with_the_reason(overrides, message):
    with pytest.raises(ValueError, match=message):
        get_preset("cpu-small", **overrides)


def test_unknown_preset_and_malformed_override():
    with pytest.raises(ValueError, match="unknown preset 'tiny': expected one of becmer, cpu-small"):
        get_preset("tiny")
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        parse_overrides(["epochs"])


def test_presets_table_lists_every_preset():
    table = presets_table()
    assert table.splitlines()[0] == "| field | becmer | cpu-small |"
    assert "| `audio_width` | 1.0 | 0.25 |" in table


def test_the_loop_reads_the_typed_preset_and_it_pickles_to_the_workers():
    import pickle

    from labeler.models import AudioCnnConfig, EmotionModel, ModelConfig
    from train.fit.loop import make_optimizer, param_groups

    preset = get_preset("cpu-small", audio_arch="Cnn6", lr_audio="2e-3", lr_head="3e-3", weight_decay="0.01")
    assert pickle.loads(pickle.dumps(preset)) == preset  # Ray ships the fold config, preset included, by pickle
    model = EmotionModel(ModelConfig(branch="audio", lyrics=None, audio=AudioCnnConfig(width=0.125, embedding_dim=16),
                                     hidden_dim=8))
    groups = param_groups(model, preset, {"lr_scale": 0.5})
    assert {g["name"]: g["lr"] for g in groups} == pytest.approx({"audio": 1e-3, "head": 1.5e-3})
    optimizer = make_optimizer(groups, preset)
    assert type(optimizer).__name__ == "AdamW" and optimizer.defaults["weight_decay"] == 0.01


@pytest.mark.parametrize("model", ["MusiCNN", "MusiCNN-Hybrid", "Cnn6", "Hybrid", "Cnn10"])
def test_fusion_takes_its_branch_settings_back_from_the_branch_bundles(model):
    """branch_fields inverts the preset -> config mapping: a fusion preset that differs from the branches'
    gets their featuriser, lyrics policy, encoder and audio model back from the bundles' configs."""
    import dataclasses

    from train.fit.configs import branch_fields, featurizer_config, lyrics_config, model_config

    branches = get_preset("cpu-small", audio_arch=model, clip_seconds=4.0, musicnn_clip_seconds=6.0, max_tokens=64,
                          lyrics_windows=2, lyrics_window_overlap=8, long_policy="head", lyrics_encoder="BERT")
    audio_bundle = {"featurizer": featurizer_config(branches).to_dict(), "model": model_config(branches, "audio", "4Q")}
    lyrics_bundle = {"lyrics": lyrics_config(branches).to_dict(), "model": model_config(branches, "lyrics", "4Q")}
    fusion = dataclasses.replace(get_preset("becmer"), **branch_fields(audio_bundle, lyrics_bundle))
    assert featurizer_config(fusion) == featurizer_config(branches)
    assert lyrics_config(fusion) == lyrics_config(branches)
    assert (fusion.audio_arch, fusion.lyrics_encoder, fusion.musicnn_encoder) == (model, "BERT", "MSD_musicnn")
    fused = model_config(fusion, "fusion", "4Q")
    assert (fused["audio"]["arch"], fused["audio"]["descriptor_dim"] > 0) == (
        audio_bundle["model"]["audio"]["arch"], audio_bundle["model"]["audio"]["descriptor_dim"] > 0)
    assert fusion.lr_head == get_preset("becmer").lr_head  # only the branch settings come from the bundles
