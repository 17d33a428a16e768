"""Training presets: named settings, typed CLI overrides, and the per-branch epoch rule."""

from __future__ import annotations

import pytest

from train.presets import PRESETS, get_preset, markdown_table, parse_overrides


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
    ({"spec_augment": "maybe"}, "spec_augment expects true/false"),
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


def test_markdown_table_lists_every_preset():
    table = markdown_table()
    assert table.splitlines()[0] == "| field | becmer | cpu-small |"
    assert "| `audio_width` | 1.0 | 0.25 |" in table
