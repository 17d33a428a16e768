"""`labeler recipe` on the development slices: public datasets in their layouts -> manifest -> bundle + report."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from jobs.cli import main
from train.fit.recipe import RecipeConfig, cap_per_dataset, find_sources


def test_find_sources_takes_known_folders_and_says_what_it_skips(tmp_path):
    for name in ("4q", "moodylyrics4q", "mirex", "unrelated"):
        (tmp_path / name).mkdir()
    sources, notes = find_sources(RecipeConfig(output=str(tmp_path / "out"), data=str(tmp_path),
                                               datasets=(("pmemo", "/somewhere/pmemo"),)))
    assert [name for name, _, _ in sources] == ["4q", "moodylyrics4q", "pmemo"]
    assert sources[0][1] == str(tmp_path / "4q") and sources[2][1] == "/somewhere/pmemo"
    assert len(notes) == 1 and "mirex: skipped" in notes[0]  # no adapter yet, or clusters that are not quadrants


def test_find_sources_without_any_dataset_says_where_to_look(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected folders named 4q, mirex, moodylyrics4q"):
        find_sources(RecipeConfig(output=str(tmp_path / "out"), data=str(tmp_path)))


def test_cap_per_dataset_is_seeded_and_per_dataset():
    table = pa.table({"song_id": [f"s{i}" for i in range(30)], "dataset": ["a"] * 25 + ["b"] * 5})
    capped = cap_per_dataset(table, 10, seed=1)
    assert capped.column("dataset").to_pylist().count("a") == 10 and capped.column("dataset").to_pylist().count("b") == 5
    assert capped.equals(cap_per_dataset(table, 10, seed=1))


@pytest.mark.slow
def test_recipe_on_the_development_slices(ray_local, shared_data, tmp_path, capsys):
    """4Q audio + MoodyLyrics4Q lyrics, 40 songs of each, one fold, one epoch: a bundle and a report."""
    out = tmp_path / "real"
    assert main(["recipe", "--data", str(shared_data), "--output", str(out), "--max-songs", "40",
                 "--folds", "0", "--epochs", "1", "--set", "musicnn_clip_seconds=10"]) == 0  # CI: a third of the encoder
    printed = capsys.readouterr().out
    config = json.loads((out / "bundle" / "config.json").read_text())
    assert config["model"]["branch"] == "fusion" and config["mode"] == "4Q"
    assert config["featurizer"]["frontend"] == "musicnn"  # the pretrained MusiCNN: the real-music default
    assert config["model"]["audio"]["arch"] == "MusiCNN" and config["model"]["audio"]["tune_top"] is True
    assert config["featurizer"]["clip_seconds"] == 10.0  # --set reaches the recipe's preset
    report = (out / "report.md").read_text()
    assert "lyrics_tfidf_logreg" in report and "audio_logmel_logreg" in report
    for text in ("4q 40 songs", "moodylyrics4q 40 songs", "mirex: skipped", "test macro-F1",
                 "labeler label --catalogue", str(Path(out) / "bundle")):
        assert text in printed, text


def test_folder_catalogue_pairs_audio_with_lyrics(tmp_path):
    from labeler.contracts.schemas import CATALOGUE, validate
    from scripts.folder_catalogue import folder_catalogue

    (tmp_path / "Audio").mkdir()
    (tmp_path / "Lyrics").mkdir()
    for name in ("001.mp3", "002.wav", "notes.md"):
        (tmp_path / "Audio" / name).write_bytes(b"x")
    (tmp_path / "Lyrics" / "001.txt").write_text("la la la")
    (tmp_path / "Lyrics" / "003.txt").write_text("only words")
    table = folder_catalogue(str(tmp_path / "Audio"), str(tmp_path / "Lyrics"))
    validate(table.schema, CATALOGUE)
    rows = {r["song_id"]: r for r in table.to_pylist()}
    assert sorted(rows) == ["001", "002", "003"]
    assert rows["001"]["lyrics"] == "la la la" and rows["001"]["audio_uri"].endswith("001.mp3")
    assert rows["002"]["lyrics"] is None and rows["003"]["audio_uri"] is None
