"""`labeler demo` end to end (synthesise, train cpu-small, label) at a reduced size, on the session Ray."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from labeler.cli import main
from labeler.demo import DemoConfig


@pytest.mark.slow
def test_demo_leaves_catalogue_bundle_and_labels(ray_local, tmp_path, capsys):
    workdir = tmp_path / "demo"
    assert main(["demo", "--workdir", str(workdir), "--songs", "40", "--seconds", "6", "--epochs", "1"]) == 0
    out = capsys.readouterr().out

    catalogue = pq.read_table(workdir / "catalogue.parquet")
    assert (workdir / "bundle" / "config.json").exists() and (workdir / "bundle" / "model.safetensors").exists()
    config = json.loads((workdir / "bundle" / "config.json").read_text())
    assert config["model"]["branch"] == "fusion" and config["mode"] == "4Q"
    partition = workdir / "labels" / f"version={config['model_version']}"
    record = json.loads((partition / "_SUCCESS.json").read_text())
    labels = pd.read_parquet(partition)
    assert len(labels) == catalogue.num_rows == record["rows"] and labels["song_id"].is_unique
    assert labels["error"].isna().sum() >= 40  # every synthetic song is labelled; broken rows fall back to lyrics
    assert (workdir / "labels.png").stat().st_size > 10_000
    for text in ("agreement with the planted quadrants", str(workdir / "bundle"), "labeler label --catalogue", "songs/s"):
        assert text in out


def test_demo_config_rejects_too_few_songs():
    with pytest.raises(ValueError, match="songs"):
        DemoConfig(songs=5)
