"""`labeler demo` end to end (synthesise, train cpu-small, label) at a reduced size, in its own process."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from jobs.demo import DemoConfig
from tests.helpers import labeler_process


@pytest.mark.slow
def test_demo_leaves_catalogue_bundle_and_labels_and_a_short_console(tmp_path):
    """`labeler demo` as a person runs it (its own process and local Ray), at a reduced size.

    Its console must stay readable: progress lines per stage, epoch lines and the summary, well under
    200 lines; Ray's own output goes to the log file it names.
    """
    workdir = tmp_path / "demo"
    result = labeler_process("demo", "--workdir", str(workdir), "--songs", "40", "--seconds", "6", "--epochs", "1",
                      env={"MOOD_LABELER_LOG_DIR": str(tmp_path / "logs"), "XDG_CACHE_HOME": str(tmp_path / "cache")},
                      timeout=1500)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    lines = out.splitlines()
    assert len(lines) < 200, out
    for noise in ("Token authentication", "deprecated", "core_worker", "logging_progress", "Traceback",
                  "(pid=", "Configuration for experiment"):
        assert noise not in out, noise
    (log,) = (tmp_path / "logs").glob("demo-*.log")
    assert str(log) in lines[0] and log.stat().st_size > 0

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
    for text in ("featurise ", "audio fold 0 epoch 1/", "label  ", "agreement with the planted quadrants",
                 str(workdir / "bundle"), "songs/s", "labeler recipe --data", "docs/real-music.md"):
        assert text in out, text
    assert lines[-1].startswith("  labeler label --catalogue")
    # it ends on real music: every shipped recording with its quadrant and confidence from the built-in model
    from labeler.builtin.examples import recordings

    assert "model: built-in mood-4q-builtin" in out
    for rec in recordings():
        assert any(line.strip().startswith(rec.name) and " confidence " in line for line in lines), rec.name
    # the label line counts songs labelled (by the Predictor), and ends with every catalogue row
    n = catalogue.num_rows
    assert any(line.startswith("label ") and f" {n}/{n} songs" in line for line in lines), out


def test_demo_config_rejects_too_few_songs():
    with pytest.raises(ValueError, match="songs"):
        DemoConfig(songs=5)
