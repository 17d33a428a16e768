"""The `labeler` command: its help lists every subcommand; `labeler synth` writes valid contracts."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs import cli
from labeler.contracts.schemas import CATALOGUE, MANIFEST, check_unique_ids, validate
from labeler.io import storage
from tests.helpers import labeler_process

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_every_subcommand():
    result = labeler_process("--help")
    assert result.returncode == 0, result.stderr
    for name in cli.COMMANDS:
        assert name in result.stdout
    assert {"demo", "synth", "featurise", "prepare", "train", "evaluate", "label", "serve"} <= set(cli.COMMANDS)
    assert "emotion quadrants" in result.stdout


def test_no_subcommand_prints_help():
    result = labeler_process()
    assert result.returncode == 0 and "COMMAND" in result.stdout


def test_unknown_subcommand_is_a_usage_error():
    result = labeler_process("relabel")
    assert result.returncode == 2 and "invalid choice: 'relabel'" in result.stderr


def test_synth_writes_a_catalogue_and_a_manifest_that_validate(tmp_path):
    out = tmp_path / "synth"
    result = labeler_process("synth", "--songs", "6", "--output", str(out), "--seed", "3", "--seconds", "5",
                      "--formats", "wav,mp3", "--corrupt")
    assert result.returncode == 0, result.stderr
    assert "synth: 6 songs (10 catalogue rows, 4 broken)" in result.stdout
    catalogue = storage.read_parquet(str(out / "catalogue.parquet"))
    manifest = storage.read_parquet(str(out / "manifest.parquet"))
    validate(catalogue.schema, CATALOGUE)
    validate(manifest.schema, MANIFEST)
    check_unique_ids(catalogue)
    assert catalogue.num_rows == 10 and manifest.num_rows == 6
    assert sorted(p.suffix for p in (out / "audio").glob("synth-0*")) == [".mp3"] * 3 + [".wav"] * 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--songs", "0"], "songs must be at least 1, got 0"),
        (["--formats", "wav,aiff"], "aiff"),
        (["--lyrics-noise", "2"], "lyrics_noise must be a fraction"),
    ],
)
def test_synth_bad_arguments_are_one_line_errors(tmp_path, capsys, args, message):
    assert cli.main(["synth", "--output", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("labeler synth: error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()  # refused before any work


def test_main_in_process_runs_synth(tmp_path, capsys):
    assert cli.main(["synth", "--songs", "2", "--output", str(tmp_path), "--seconds", "5", "--formats", "flac"]) == 0
    assert "synth: 2 songs" in capsys.readouterr().out
    validate(storage.read_parquet_schema(str(tmp_path / "catalogue.parquet")), CATALOGUE)


def test_every_label_flag_reaches_its_config_field_by_name():
    """jobs.flags.config_from_flags: a flag whose dest is a field's name sets it; a dest that drifted from its
    field's name would leave the field at its default and fail here."""
    import argparse
    import dataclasses

    from jobs.commands import label
    from labeler.label_job.config import LabelJobConfig

    parser = argparse.ArgumentParser()
    label.configure_parser(parser)
    given = {"--address": "ray://h:1", "--featurise-batch-size": "3", "--predict-batch-size": "5",
             "--featurise-cpus": "0.5", "--min-actors": "2", "--max-actors": "4", "--rows-per-part": "7",
             "--lease-seconds": "9", "--expect-version": "0123456789abcdef", "--max-retries": "1",
             "--max-resumes": "0", "--stall-seconds": "30", "--plot": "p.png", "--timeline": "2.5", "--max-audio-seconds": "600",
             "--engine": "torch"}
    args = parser.parse_args(["--catalogue", "c", "--bundle", "b", "--output", "o", "--no-gpu", "--embeddings", "--tags",
                              *[x for pair in given.items() for x in pair]])
    config = label.config_from_args(args)
    assert config == LabelJobConfig(address="ray://h:1", featurise_batch_size=3, predict_batch_size=5, featurise_cpus=0.5,
                                    min_actors=2, max_actors=4, use_gpu=False, rows_per_part=7, plot="p.png",
                                    lease_seconds=9.0, embeddings=True, timeline_seconds=2.5, tags=True,
                                    expect_version="0123456789abcdef", max_retries=1, max_resumes=0,
                                    max_audio_seconds=600.0, stall_seconds=30.0, engine="torch")
    defaults = label.config_from_args(parser.parse_args(["--catalogue", "c", "--bundle", "b", "--output", "o"]))
    changed = {f.name for f in dataclasses.fields(LabelJobConfig) if getattr(config, f.name) != getattr(defaults, f.name)}
    assert changed == {f.name for f in dataclasses.fields(LabelJobConfig)}  # every field has a flag that reaches it


def test_featurise_flags_build_the_featurizer_config():
    import argparse

    from jobs.commands import featurise
    from labeler.audio import FeaturizerConfig

    parser = argparse.ArgumentParser()
    featurise.configure_parser(parser)
    args = parser.parse_args(["--catalogue", "c", "--output", "o", "--sample-rate", "44100", "--clip-seconds", "9",
                              "--chorus-search-seconds", "5", "--descriptors", "--batch-size", "4"])
    config = featurise.config_from_args(args)  # the chorus search is widened to the clip
    assert config == FeaturizerConfig(sample_rate=44100, clip_seconds=9.0, chorus_search_seconds=9.0, descriptors=True)
    # Below 28 kHz the default 14 kHz band edge would lie above Nyquist: it stops there unless --fmax says otherwise.
    low = featurise.config_from_args(parser.parse_args(["--catalogue", "c", "--output", "o", "--sample-rate", "16000"]))
    assert (low.sample_rate, low.fmax) == (16000, 8000.0)
    given = featurise.config_from_args(parser.parse_args(["--catalogue", "c", "--output", "o", "--sample-rate", "16000",
                                                          "--fmin", "20", "--fmax", "6000"]))
    assert (given.fmin, given.fmax) == (20.0, 6000.0)
