"""Issue 21 end to end on the synthetic catalogue: train, then label with --embeddings and --timeline,
read the new columns with pandas, pyarrow and DuckDB, and compare two model versions.

Real Ray Train (the session's `trained_musicnn`: one fold of cpu-small's MusiCNN audio branch, small clips,
few epochs, sized for a shared 2-core machine), real Ray Data labelling, real Parquet. The module also checks what
that run is (`train --branch audio --preset cpu-small` trains MusiCNN with its Dense fine-tuned, on cached
trunk features) and that its bundle labels without the wheel's files: the module that reads a session
artefact is its only reader, so the two pytest-xdist workers never build it twice. The synthetic catalogue plants the quadrant
in the audio (the synth package), so a trained model's embeddings must put songs of one quadrant closer
together than songs of different ones. The second model version compared is another retained
training checkpoint of the fold (a real model of another epoch), labelled into the same output as a roll-back would be.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest

from labeler.musicnn import wheel
from tests.helpers import MUSICNN_SONGS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SONGS = MUSICNN_SONGS


@pytest.fixture(scope="module")
def trained(trained_musicnn):
    """The session's MusiCNN audio run (tests/conftest.py): (root, synth, manifest, result)."""
    return trained_musicnn


def _other_checkpoint_bundle(result) -> str:
    """A retained training checkpoint of fold 0 whose weights differ from the exported fold bundle's."""
    from labeler.bundle.store import read_bundle_config

    exported = read_bundle_config(result.fold_bundles["audio"][0])["files"]["model.safetensors"]
    bundles = sorted(Path(result.output_uri, "checkpoints").glob("*-audio-fold0-*/checkpoint_*/bundle"))
    other = [b for b in bundles if read_bundle_config(str(b))["files"]["model.safetensors"] != exported]
    assert bundles, "no checkpoint bundles"
    return str((other or bundles)[0])


@pytest.fixture(scope="module")
def labelled(trained):
    from labeler.label_job import LabelJobConfig, label_catalogue

    root, synth, manifest, result = trained
    config = LabelJobConfig(featurise_batch_size=8, predict_batch_size=16, max_actors=1, embeddings=True,
                            timeline_seconds=2.0)
    output = str(root / "labels")
    first = label_catalogue(synth.catalogue_uri, result.fold_bundles["audio"][0], output, config)
    second = label_catalogue(synth.catalogue_uri, _other_checkpoint_bundle(result), output, config)
    return output, first, second


def test_bundle_records_threshold_and_embedding_length_and_report_shows_both_accuracies(trained):
    from labeler.bundle.store import read_bundle_config

    root, _, _, result = trained
    config = read_bundle_config(result.bundle_uri)
    assert 0.0 <= config["ambiguous_threshold"] <= 1.0
    assert config["embedding_dim"] == config["model"]["audio"]["embedding_dim"]  # single branch: its embedding
    calibration = result.report["calibration"]["audio"]
    for fold in calibration.values():
        assert {"ambiguous_threshold", "accuracy_all", "accuracy_confident", "ambiguous_fraction"} <= set(fold)
        assert fold["accuracy_all"] == pytest.approx(fold["accuracy"])
    report = (root / "run" / "report.md").read_text()
    assert "accuracy_confident" in report and "ambiguous" in report


def test_embeddings_put_songs_of_one_quadrant_closer(trained, labelled):
    _, _, manifest, result = trained
    output, first, _ = labelled
    labels = pd.read_parquet(first.partition_uri)
    truth = dict(zip(manifest.column("song_id").to_pylist(), manifest.column("quadrant").to_pylist()))
    ok = labels[labels["error"].isna()]
    emb = np.stack(ok["embedding"].to_numpy())
    assert len(labels) == SONGS
    from labeler.bundle.store import read_bundle_config

    assert emb.shape[1] == read_bundle_config(result.fold_bundles["audio"][0])["embedding_dim"]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    quadrant = np.array([truth[s] for s in ok["song_id"]])
    cosine = emb @ emb.T
    same = quadrant[:, None] == quadrant[None, :]
    off_diagonal = ~np.eye(len(quadrant), dtype=bool)
    same_mean, diff_mean = cosine[same & off_diagonal].mean(), cosine[~same].mean()
    print(f"mean cosine: same quadrant {same_mean:.3f}, different quadrants {diff_mean:.3f}")
    assert same_mean > diff_mean


def test_timeline_covers_each_track_and_ambiguous_follows_the_threshold(trained, labelled):
    from labeler.bundle.store import read_bundle_config

    _, _, _, result = trained
    output, first, _ = labelled
    labels = pd.read_parquet(first.partition_uri)
    ok = labels[labels["error"].isna()]
    for timeline in ok["timeline"]:
        windows = list(timeline)
        # 5-s songs, 2-s windows: [0, 2), [2, 4), [4, 5) (a 1-s tail is not shorter than min_seconds)
        assert [w["start"] for w in windows] == [0.0, 2.0, 4.0] and windows[-1]["end"] == pytest.approx(5.0, abs=0.05)
        assert all(a["end"] == b["start"] for a, b in zip(windows, windows[1:]))
        for w in windows:
            assert w["label"] in {"Q1", "Q2", "Q3", "Q4"} and 0.25 <= w["label_prob"] <= 1.0
            assert 0.0 <= w["arousal_prob"] <= 1.0 and 0.0 <= w["valence_prob"] <= 1.0
    threshold = read_bundle_config(result.fold_bundles["audio"][0])["ambiguous_threshold"]
    top = ok[["prob_q1", "prob_q2", "prob_q3", "prob_q4"]].max(axis=1)
    assert (ok["ambiguous"] == (top < threshold)).all()


def test_new_columns_read_without_custom_code(labelled):
    import duckdb

    output, first, second = labelled
    dataset = pads.dataset(output, format="parquet", partitioning="hive")
    assert {"embedding", "timeline", "ambiguous"} <= set(dataset.schema.names)
    table = dataset.to_table(columns=["song_id", "embedding", "timeline", "ambiguous"])
    assert table.num_rows == 2 * SONGS
    # the README's query: the songs closest in mood to one song, within one version
    version = first.model_version
    rows = duckdb.sql(f"""
        WITH labels AS (SELECT * FROM read_parquet('{output}/*/*.parquet', hive_partitioning = true)
                        WHERE version = '{version}' AND error IS NULL)
        SELECT b.song_id, list_cosine_similarity(a.embedding::DOUBLE[], b.embedding::DOUBLE[]) AS similarity
        FROM labels a, labels b WHERE a.song_id = 'synth-00000' AND b.song_id <> a.song_id
        ORDER BY similarity DESC LIMIT 5""").fetchall()
    assert len(rows) == 5 and all(-1.0001 <= s <= 1.0001 for _, s in rows)
    windows = duckdb.sql(f"""SELECT song_id, w.start, w."end", w.label FROM
        (SELECT song_id, unnest(timeline) AS w FROM read_parquet('{first.partition_uri}/*.parquet')) LIMIT 3""").fetchall()
    assert len(windows) == 3
    frame = pd.read_parquet(first.partition_uri)
    assert frame["ambiguous"].dtype == bool or str(frame["ambiguous"].dtype) in ("boolean", "object")


def test_compare_two_versions_from_the_command_line(labelled, tmp_path):
    output, first, second = labelled
    report = tmp_path / "cmp"
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "compare", output, "--from", first.model_version[:8],
                           "--to", second.model_version, "--report", str(report)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "agreement" in proc.stdout
    result = json.loads((report / "report.json").read_text())
    assert result["labelled_by_both"] == SONGS and result["songs_in_both"] == SONGS
    assert sum(map(sum, result["transitions"])) == SONGS
    assert 0.0 <= result["agreement"] <= 1.0
    assert (report / "transitions.png").stat().st_size > 5_000
    assert "## Transitions" in (report / "report.md").read_text()


def test_cpu_small_trains_musicnn_by_default_and_its_bundle_labels_without_the_wheel(trained_musicnn, monkeypatch):
    """`train --branch audio --preset cpu-small` (no --model; the session's `trained_musicnn`) trains MusiCNN on
    cached embeddings; the bundle then labels songs in a process where the wheel's files are absent."""
    import pyarrow.parquet as pq

    from labeler.audio import Featurizer
    from labeler.inference.predict import Predictor

    root, synth, _, result = trained_musicnn
    config = json.loads((Path(result.bundle_uri) / "config.json").read_text())
    assert config["model"]["audio"]["arch"] == "MusiCNN" and config["model"]["audio"]["encoder"] == "MSD_musicnn"
    assert config["model"]["audio"]["tune_top"] is True  # cpu-small fine-tunes the Dense on top of the frozen trunk
    assert config["featurizer"]["frontend"] == "musicnn" and config["featurizer"]["clip_seconds"] == 3.0
    cache = next(Path(result.output_uri, "feature_cache").glob("*/"))
    assert "patch_features" in pq.read_schema(next(cache.glob("*.parquet"))).names
    f1 = next(iter(result.report["branches"]["audio"]["folds"].values()))["macro_f1"]
    assert f1 > 0.25, f1  # above chance (4 classes) on 20 test songs

    monkeypatch.setenv(wheel.DIR_ENV, str(root / "no-wheel-here"))
    rows = pq.read_table(synth.catalogue_uri).slice(0, 6).to_pydict()
    batch = {k: np.asarray(v, dtype=object) for k, v in rows.items() if k in ("song_id", "audio_uri", "lyrics")}
    features = Featurizer(config["featurizer"])(batch)
    out = Predictor(result.bundle_uri)(features)
    labelled = [e is None for e in out["error"]]
    assert sum(labelled) >= 5, out["error"]
    assert np.allclose(out["probs"][labelled].sum(axis=1), 1.0, atol=1e-4)
