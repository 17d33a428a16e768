"""The labelling job end to end on real Ray, real Parquet, real audio files and a real S3-API server.

Bundles here hold random weights (a quarter-width Cnn6 and a 2-layer BERT from tests/tiny_models.py):
the tests check plumbing, contracts and resumability, not accuracy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from labeler.audio.config import uses_musicnn_frontend
from labeler.bundle.info import BundleInfo
from labeler.bundle.verified import open_bundle
from labeler.contracts.labels import QUADRANTS, quadrant_probs_to_axes
from labeler.contracts.schemas import LABELS, SchemaError, validate
from labeler.inference.label_rows import error_kind, label_rows
from labeler.io import storage
from labeler.io.lease import Lease, LeaseHeldError
from labeler.label_job import LabelJobConfig, OutputLayout, label_catalogue, resolve_resources
from labeler.label_job.resume import infrastructure_failure
from tests.helpers import bundle_info, make_bundle
from tests.poison import sitecustomize as poison

REPO = Path(__file__).resolve().parents[1]
SMALL = LabelJobConfig(featurise_batch_size=4, predict_batch_size=8, rows_per_part=8, max_actors=1)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> str:
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """12 synthetic 6-s songs (WAV and FLAC) plus the synthesiser's broken rows."""
    from synth import SynthConfig, synthesise

    root = tmp_path_factory.mktemp("synth")
    return synthesise(SynthConfig(songs=12, seconds=6.0, formats=("wav", "flac"), corrupt=True, output=str(root)))


def _catalogue_with_edge_rows(synth, tmp_path: Path, shared_data: Path | None) -> tuple[str, pa.Table]:
    """The synthetic catalogue plus rows for every bad-row case (and a few real recordings when present)."""
    table = pq.read_table(synth.catalogue_uri)
    good_audio = synth.songs[0].audio_uri
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"ID3" + os.urandom(3000))
    extra = [
        {"song_id": "edge-both-missing", "audio_uri": None, "lyrics": None},
        {"song_id": "edge-empty-lyrics", "audio_uri": good_audio, "lyrics": ""},
        {"song_id": "edge-corrupt-audio", "audio_uri": str(corrupt), "lyrics": "love sunshine dance happy joy"},
        {"song_id": "edge-missing-file-no-lyrics", "audio_uri": str(tmp_path / "nope.wav"), "lyrics": "   "},
    ]
    if shared_data is not None:
        for path in sorted((shared_data / "4q").rglob("*.mp3"))[:2]:
            extra.append({"song_id": f"real-4q-{path.stem}", "audio_uri": str(path), "lyrics": None})
        for path in sorted((shared_data / "audio").glob("*.ogg"))[:1]:
            extra.append({"song_id": f"real-ogg-{path.stem}", "audio_uri": str(path), "lyrics": "tears alone cry"})
    rows = pa.Table.from_pylist(extra, schema=pa.schema([(n, pa.string()) for n in ("song_id", "audio_uri", "lyrics")]))
    rows = rows.append_column("chorus_start_s", pa.nulls(len(extra), pa.float64()))
    rows = rows.append_column("chorus_end_s", pa.nulls(len(extra), pa.float64()))
    table = pa.concat_tables([table.select(rows.column_names), rows.cast(table.select(rows.column_names).schema)])
    uri = str(tmp_path / "catalogue.parquet")
    pq.write_table(table, uri)
    return uri, table


@pytest.fixture()
def maybe_shared_data(request) -> Path | None:
    try:
        return request.getfixturevalue("shared_data")
    except pytest.skip.Exception:
        return None


# ------------------------------------------------------------------------------------- without Ray


def test_label_rows_4q_fills_quadrant_axes_and_leaves_error_rows_empty():
    probs = np.array([[0.1, 0.2, 0.6, 0.1], [0.7, 0.1, 0.1, 0.1], [np.nan] * 4], dtype=np.float32)
    batch = {
        "song_id": np.array(["a", "b", "c"], dtype=object), "probs": probs,
        "modalities": np.array(["audio+lyrics", "lyrics", None], dtype=object),
        "audio_error": np.array([None, "corrupt: x", "no_audio: null"], dtype=object),
        "error": np.array([None, None, "no_audio: null; no_lyrics: null"], dtype=object),
        "valence_score": np.full(3, np.nan, np.float32), "arousal_score": np.full(3, np.nan, np.float32),
    }
    table = label_rows(batch, bundle_info("4Q"), datetime.now(UTC))
    validate(table.schema, LABELS)
    rows = table.to_pylist()
    assert [r["quadrant"] for r in rows] == ["Q3", "Q1", None]
    arousal, valence = quadrant_probs_to_axes(probs[0])
    assert rows[0]["arousal_prob"] == pytest.approx(arousal) and rows[0]["valence_prob"] == pytest.approx(valence)
    assert (rows[0]["arousal"], rows[0]["valence"]) == ("low", "low")  # Q3 = A-V-
    assert (rows[1]["arousal"], rows[1]["valence"]) == ("high", "high")
    assert rows[1]["modalities"] == "lyrics" and rows[1]["audio_error"] == "corrupt: x"
    assert rows[2]["error"].startswith("no_audio") and rows[2]["prob_q1"] is None and rows[2]["arousal"] is None
    assert rows[0]["arousal_score"] is None  # no regression head -> null, not NaN
    assert error_kind(rows[2]["error"]) == "no_audio"


def test_label_rows_axis_bundle_fills_only_its_axis():
    batch = {"song_id": np.array(["a"], dtype=object), "probs": np.array([[0.2, 0.8]], np.float32),
             "error": np.array([None], dtype=object)}
    row = label_rows(batch, bundle_info("Ar"), datetime.now(UTC)).to_pylist()[0]
    assert row["arousal"] == "high" and row["arousal_prob"] == pytest.approx(0.8)
    assert row["quadrant"] is None and row["valence"] is None and row["prob_q1"] is None


def test_label_rows_classes_bundle_fills_label_columns_and_leaves_quadrants_null(tmp_path):
    import duckdb
    import pandas as pd
    import pyarrow.parquet as pq

    classes = ("Cluster 1", "Cluster 2", "Cluster 3")
    info = BundleInfo(uri="/b", model_id="m", model_version="0123456789abcdef", mode="classes", classes=classes,
                      branch="fusion", featurizer={}, lyrics={})
    batch = {"song_id": np.array(["a", "b", "c"], dtype=object),
             "probs": np.array([[0.1, 0.7, 0.2], [np.nan] * 3, [0.5, 0.2, 0.3]], np.float32),
             "error": np.array([None, "no_audio: null; no_lyrics: null", None], dtype=object)}
    table = label_rows(batch, info, datetime.now(UTC))
    validate(table.schema, LABELS)
    rows = table.to_pylist()
    assert [r["label"] for r in rows] == ["Cluster 2", None, "Cluster 1"]
    assert rows[0]["label_prob"] == pytest.approx(0.7) and rows[1]["label_prob"] is None
    assert dict(rows[0]["class_probs"]) == pytest.approx({"Cluster 1": 0.1, "Cluster 2": 0.7, "Cluster 3": 0.2})
    assert rows[1]["class_probs"] is None
    assert all(r["quadrant"] is None and r["prob_q1"] is None and r["arousal"] is None and r["valence"] is None
               for r in rows)
    # The map column reads without custom code: pandas (list of pairs), DuckDB (MAP lookups).
    path = tmp_path / "labels.parquet"
    pq.write_table(table, path)
    df = pd.read_parquet(path)
    assert dict(df.loc[2, "class_probs"])["Cluster 1"] == pytest.approx(0.5)
    got = duckdb.sql(f"SELECT song_id, class_probs['Cluster 3'] FROM read_parquet('{path}') ORDER BY song_id").fetchall()
    assert got[0][1] == pytest.approx(0.2) and got[1][1] is None and got[2][1] == pytest.approx(0.3)


def test_label_rows_4q_also_fills_label_and_class_probs():
    batch = {"song_id": np.array(["a"], dtype=object), "probs": np.array([[0.1, 0.2, 0.6, 0.1]], np.float32),
             "error": np.array([None], dtype=object)}
    row = label_rows(batch, bundle_info("4Q"), datetime.now(UTC)).to_pylist()[0]
    assert row["label"] == row["quadrant"] == "Q3" and row["label_prob"] == pytest.approx(0.6)
    assert [k for k, _ in row["class_probs"]] == ["Q1", "Q2", "Q3", "Q4"]


def test_resources_follow_the_cluster_and_flags():
    cpu = resolve_resources(LabelJobConfig(), {"CPU": 2})
    assert (cpu.use_gpu, cpu.min_actors, cpu.max_actors, cpu.featurise_cpus) == (False, 1, 1, 0.5)
    assert (cpu.featurise_batch_size, cpu.predict_batch_size) == (16, 32)
    assert resolve_resources(LabelJobConfig(), {"CPU": 32}).max_actors == 4
    # MusiCNN's network outweighs featurising on CPU: 3/4 of the CPUs go to actors of at most 4 CPUs (threads)
    assert uses_musicnn_frontend({"frontend": "musicnn"}) and not uses_musicnn_frontend({"frontend": "panns"})
    assert not uses_musicnn_frontend(None) and not uses_musicnn_frontend({})
    for cpus, actors, actor_cpus, threads, featurise_cpus in ((2, 1, 1.0, 2, 0.5), (4, 1, 3.0, 3, 0.25),
                                                             (16, 3, 4.0, 4, 0.25), (64, 12, 4.0, 4, 0.25)):
        heavy = resolve_resources(LabelJobConfig(), {"CPU": cpus}, heavy_predictor=True)
        assert (heavy.max_actors, heavy.actor_cpus, heavy.predictor_threads, heavy.featurise_cpus) == (
            actors, actor_cpus, threads, featurise_cpus), cpus
        # a whole CPU always stays free beside the actors (Ray Data's ListFiles task takes one): never waits forever
        assert heavy.max_actors * heavy.actor_cpus <= cpus - 1
    assert resolve_resources(LabelJobConfig(), {"CPU": 1}, heavy_predictor=True).predictor_threads is None
    # actors that would hold every CPU from the start would wait forever for Ray Data's ListFiles: refused
    with pytest.raises(ValueError, match="would wait forever: lower --min-actors"):
        resolve_resources(LabelJobConfig(min_actors=2), {"CPU": 2})
    pinned = resolve_resources(LabelJobConfig(max_actors=1, featurise_cpus=0.5), {"CPU": 2}, heavy_predictor=True)
    assert (pinned.max_actors, pinned.actor_cpus, pinned.featurise_cpus) == (1, 1.0, 0.5)  # flags win
    assert resolve_resources(LabelJobConfig(), {"CPU": 16, "GPU": 2}, heavy_predictor=True).actor_cpus == 1.0
    gpu = resolve_resources(LabelJobConfig(), {"CPU": 16, "GPU": 2})
    assert (gpu.use_gpu, gpu.max_actors, gpu.predict_batch_size, gpu.actor_cpus) == (True, 2, 64, 1.0)
    # as many GPUs as CPUs: the GPU actors must leave a CPU to the featurise tasks that feed them
    tight = resolve_resources(LabelJobConfig(), {"CPU": 2, "GPU": 2})
    assert (tight.max_actors, tight.featurise_cpus, tight.actor_cpus) == (2, 1.0, 0.5)
    assert "1 GPU and 0.5 CPU each" in tight.describe() and "featurise on CPU tasks (1 CPU each" in tight.describe()
    assert resolve_resources(LabelJobConfig(max_actors=3, featurise_cpus=0.5), {"CPU": 2}).max_actors == 3
    with pytest.raises(ValueError, match="no GPU"):
        resolve_resources(LabelJobConfig(use_gpu=True), {"CPU": 2})
    with pytest.raises(ValueError, match="rows_per_part"):
        LabelJobConfig(rows_per_part=0)
    with pytest.raises(ValueError, match="lease_seconds must be >= 4"):
        LabelJobConfig(lease_seconds=1)


def test_every_actor_of_the_plan_fits_one_node():
    """Three one-CPU nodes (3 CPUs in all): the MusiCNN Predictor would ask for 2 CPUs, which no node has (Ray keeps
    such an actor pending for good); it gets one node's CPU and as many threads. GPU actors are sized by the GPU
    nodes, however many CPUs the CPU nodes add."""
    small = [{"CPU": 1.0}] * 3
    whole = resolve_resources(LabelJobConfig(), {"CPU": 3}, heavy_predictor=True)
    assert whole.actor_cpus == 2.0  # what the cluster's total alone gave
    fitted = resolve_resources(LabelJobConfig(), {"CPU": 3}, heavy_predictor=True, nodes=small)
    assert (fitted.max_actors, fitted.actor_cpus, fitted.predictor_threads) == (1, 1.0, 1)
    assert "1 CPU each (1 threads)" in fitted.describe()
    # GPU nodes of one CPU beside a large CPU node: the GPU actor asks for what a GPU node has
    gpu_nodes = [{"CPU": 16.0}, {"CPU": 0.5, "GPU": 1.0}, {"CPU": 0.5, "GPU": 1.0}]
    gpu = resolve_resources(LabelJobConfig(), {"CPU": 17, "GPU": 2}, nodes=gpu_nodes)
    assert (gpu.use_gpu, gpu.max_actors, gpu.actor_cpus) == (True, 2, 0.5)
    assert resolve_resources(LabelJobConfig(), {"CPU": 16, "GPU": 1}, nodes=[{"CPU": 16.0}, {"GPU": 1.0}]).actor_cpus == 0
    # one node of the whole cluster: the plan is the one the totals give
    assert resolve_resources(LabelJobConfig(), {"CPU": 16}, heavy_predictor=True, nodes=[{"CPU": 16.0}]) == \
        resolve_resources(LabelJobConfig(), {"CPU": 16}, heavy_predictor=True)
    with pytest.raises(ValueError, match="fit no node of this cluster \\(the largest has 1 CPU\\): lower --featurise-cpus"):
        resolve_resources(LabelJobConfig(featurise_cpus=2.0), {"CPU": 3}, nodes=small)


# ---------------------------------------------------------------------------------------- with Ray


_LOST_CWD = """
import os, sys
from labeler.io import storage
from labeler.label_job import driver
os.chdir(sys.argv[1]); os.rmdir(sys.argv[1])  # what Ray did to a --working-dir job's copy after a lost node
storage.remove(sys.argv[2], recursive=True)   # the staging cleanup that failed with a bare [Errno 2]
driver.recover_cwd()
print(os.getcwd())
"""


def test_a_driver_whose_working_directory_vanished_still_finishes(tmp_path):
    cwd, staging = tmp_path / "working_dir", tmp_path / "staging"
    cwd.mkdir()
    (staging / "run").mkdir(parents=True)
    (staging / "run" / "part-x.parquet").write_bytes(b"x")
    out = subprocess.run([sys.executable, "-c", _LOST_CWD, str(cwd), str(staging)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
    assert out.returncode == 0, out.stderr[-3000:]
    assert not staging.exists() and "working directory no longer exists" in out.stderr


def test_missing_column_fails_before_any_work(ray_local, bundle, tmp_path):
    catalogue = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"song_id": ["a"], "audio_uri": ["/x.wav"]}), catalogue)
    with pytest.raises(SchemaError, match="lyrics"):
        label_catalogue(str(catalogue), bundle, str(tmp_path / "out"), SMALL)
    assert not (tmp_path / "out").exists()


def _read_version(output: str, version: str) -> pd.DataFrame:
    return pd.read_parquet(os.path.join(output, f"version={version}"))


def test_end_to_end_bad_rows_rerun_and_new_version(ray_local, bundle, synth, tmp_path, maybe_shared_data):
    catalogue, table = _catalogue_with_edge_rows(synth, tmp_path, maybe_shared_data)
    output = str(tmp_path / "labels")
    plot = str(tmp_path / "labels.png")
    summary = label_catalogue(catalogue, bundle, output, LabelJobConfig(**{**SMALL.__dict__, "plot": plot}))
    print(summary.to_text())

    n = table.num_rows
    assert summary.written == n and summary.already_labelled == 0
    layout = OutputLayout(storage.absolute_uri(output), summary.model_version)
    labels = _read_version(output, summary.model_version).set_index("song_id")
    assert len(labels) == n and labels.index.is_unique and set(labels.index) == set(table.column("song_id").to_pylist())
    validate(pq.read_schema(layout.part_uris()[0]), LABELS)

    both = labels.loc["edge-both-missing"]
    assert error_kind(both["error"]) == "no_audio" and pd.isna(both["quadrant"]) and pd.isna(both["modalities"])
    assert labels.loc["edge-empty-lyrics", "modalities"] == "audio"
    corrupt = labels.loc["edge-corrupt-audio"]
    assert corrupt["modalities"] == "lyrics" and corrupt["quadrant"] in {"Q1", "Q2", "Q3", "Q4"}
    assert error_kind(corrupt["audio_error"]) in {"corrupt", "unsupported_format"}
    assert error_kind(labels.loc["edge-missing-file-no-lyrics", "error"]) == "missing_file"
    # the synthesiser's broken rows carry lyrics: labelled from them, with the audio's error kept
    for song_id in synth.corrupt_ids:
        assert labels.loc[song_id, "modalities"] == "lyrics" and labels.loc[song_id, "audio_error"]
    ok = labels[labels["error"].isna()]
    assert ok["quadrant"].isin(["Q1", "Q2", "Q3", "Q4"]).all()
    assert np.allclose(ok[["prob_q1", "prob_q2", "prob_q3", "prob_q4"]].sum(axis=1), 1.0, atol=1e-4)
    assert np.allclose(ok["arousal_prob"], ok["prob_q1"] + ok["prob_q2"], atol=1e-5)
    if maybe_shared_data is not None:
        real = labels[labels.index.str.startswith("real-")]
        assert len(real) == 3 and (real["modalities"].notna()).all()

    assert summary.errors == {"missing_file": 1, "no_audio": 1}
    assert summary.labelled == n - 2 and sum(summary.quadrants.values()) == n - 2
    record = json.loads(Path(layout.success_uri).read_text())
    assert record["rows"] == n and record["model_version"] == summary.model_version and record["errors"] == 2
    assert sorted(record["files"]) == sorted(os.path.basename(u) for u in layout.part_uris())
    assert json.loads(Path(output, "_SUCCESS.json").read_text())["run_id"] == summary.run_id
    assert not os.listdir(layout.staging_root)  # the run's staging directory is gone
    assert Path(plot).stat().st_size > 10_000

    # readable as one dataset by pyarrow (and DuckDB when installed), staging and records ignored
    dataset = pads.dataset(output, format="parquet", partitioning="hive")
    assert dataset.count_rows() == n and "version" in dataset.schema.names
    try:
        import duckdb
    except ImportError:
        pass
    else:
        assert duckdb.sql(f"select count(*) from read_parquet('{output}/*/*.parquet', hive_partitioning=true)").fetchall()[0][0] == n

    # an unchanged re-run writes nothing
    before = {u: os.stat(u).st_mtime_ns for u in [*layout.part_uris(), layout.success_uri]}
    again = label_catalogue(catalogue, bundle, output, SMALL)
    assert again.nothing_new and again.already_labelled == n and "nothing new" in again.to_text()
    assert {u: os.stat(u).st_mtime_ns for u in [*layout.part_uris(), layout.success_uri]} == before

    # new catalogue rows: only they are labelled, the result still has one row per song
    grown = pa.concat_tables([table, pa.Table.from_pylist(
        [{"song_id": "new-1", "audio_uri": synth.songs[1].audio_uri, "lyrics": "calm gentle breeze",
          "chorus_start_s": None, "chorus_end_s": None}], schema=table.schema)])
    pq.write_table(grown, catalogue)
    more = label_catalogue(catalogue, bundle, output, SMALL)
    assert (more.written, more.already_labelled) == (1, n) and len(more.files) == 1
    assert _read_version(output, summary.model_version)["song_id"].is_unique
    assert json.loads(Path(layout.success_uri).read_text())["rows"] == n + 1

    # a new model version labels everything again, side by side
    other = make_bundle(tmp_path, model_id="test-fusion", seed=1)
    second = label_catalogue(catalogue, other, output, SMALL)
    assert second.model_version != summary.model_version and second.written == n + 1
    everything = pd.read_parquet(output)
    assert len(everything) == 2 * (n + 1)
    assert everything.groupby("model_version")["song_id"].nunique().to_dict() == {
        summary.model_version: n + 1, second.model_version: n + 1}


@pytest.mark.slow
def test_a_track_that_crashes_its_worker_is_one_row_error_and_the_job_ends(ray_local, bundle, synth, tmp_path):
    """A real SIGSEGV in the featuriser on one file (tests/poison/sitecustomize.py, exported by conftest into
    every process the tests start): the job ends, the two rows naming that file carry `worker_crash` (one
    labelled from its lyrics, one without lyrics as a row error), every other row is labelled, and a re-run
    changes nothing."""
    poisoned = tmp_path / poison.POISON_FILE
    shutil.copy(synth.songs[0].audio_uri, poisoned)
    good = [s for s in synth.songs if s.song_id not in synth.corrupt_ids][:5]
    rows = [{"song_id": s.song_id, "audio_uri": s.audio_uri, "lyrics": "sunshine dance"} for s in good]
    rows += [{"song_id": "poison-lyrics", "audio_uri": str(poisoned), "lyrics": "tears alone cry"},
             {"song_id": "poison-bare", "audio_uri": str(poisoned), "lyrics": None}]
    catalogue = str(tmp_path / "catalogue.parquet")
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([(n, pa.string()) for n in ("song_id", "audio_uri", "lyrics")])),
                   catalogue)
    output = str(tmp_path / "labels")
    config = LabelJobConfig(**{**SMALL.__dict__, "max_retries": 1})
    summary = label_catalogue(catalogue, bundle, output, config)

    labels = _read_version(output, summary.model_version).set_index("song_id")
    assert len(labels) == len(rows) and summary.written == len(rows)
    assert labels.loc["poison-lyrics", "modalities"] == "lyrics" and labels.loc["poison-lyrics", "quadrant"] in QUADRANTS
    assert labels.loc["poison-lyrics", "audio_error"].startswith(f"worker_crash: {poisoned}: killed by SIGSEGV")
    assert error_kind(labels.loc["poison-bare", "error"]) == "worker_crash" and pd.isna(labels.loc["poison-bare", "quadrant"])
    assert (labels.loc[[s.song_id for s in good], "modalities"] == "audio+lyrics").all()
    assert summary.errors == {"worker_crash": 1} and summary.audio_errors["worker_crash"] == 2
    record = json.loads(Path(OutputLayout(output, summary.model_version).success_uri).read_text())
    assert record["errors_by_kind"] == {"worker_crash": 1} and record["rows"] == len(rows)

    again = label_catalogue(catalogue, bundle, output, config)
    assert again.nothing_new and again.already_labelled == len(rows)


_GPU_PLAN = """
import json, sys, ray
from ray.util.state import list_actors
from labeler.label_job import LabelJobConfig, label_catalogue
context = ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=True, log_to_driver=False)  # the state API needs it
ray.data.DataContext.get_current().enable_progress_bars = False
summary = label_catalogue(sys.argv[1], sys.argv[2], sys.argv[3], LabelJobConfig(featurise_batch_size=2, predict_batch_size=4, min_actors=2))
actors = [a for a in list_actors(address="http://" + context.dashboard_url, limit=1000, detail=True, raise_on_missing_output=False)
          if "Predictor" in (a.class_name or "")]
print(json.dumps({"summary": summary.to_dict(), "text": summary.to_text(),
                  "predictor_gpus": sorted((a.required_resources or {}).get("GPU", 0) for a in actors)}))
"""


@pytest.mark.slow
def test_gpu_plan_on_a_ray_that_declares_two_gpus(bundle, synth, tmp_path):
    """The plan a GPU cluster runs, simulated: a local Ray declaring 2 GPUs (none here), so the job puts one
    Predictor actor on each GPU (they fall back to CPU without CUDA) and featurises on CPU tasks."""
    table = pq.read_table(synth.catalogue_uri).select(["song_id", "audio_uri", "lyrics"])
    catalogue = str(tmp_path / "catalogue.parquet")
    pq.write_table(table, catalogue)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", _GPU_PLAN, catalogue, bundle, str(tmp_path / "labels")], env=env,
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    summary = result["summary"]
    assert summary["written"] == table.num_rows and summary["partition_rows"] == table.num_rows
    # 2 CPUs for 2 GPU actors and their featurise tasks: the actors leave one CPU to featurising (else: a hang)
    assert "Predictor on 2-2 actor(s), 1 GPU and 0.5 CPU each" in summary["plan"], summary["plan"]
    assert "featurise on CPU tasks (1 CPU each" in summary["plan"]
    assert "plan: featurise on CPU tasks" in result["text"]
    assert result["predictor_gpus"] == [1.0, 1.0]


def test_catalogue_audio_and_output_on_s3(ray_local, bundle, synth, s3_bucket, tmp_path):
    songs = synth.songs[:5]
    rows = []
    for s in songs:
        uri = f"{s3_bucket}/audio/{os.path.basename(s.audio_uri)}"
        storage.write_bytes(uri, Path(s.audio_uri).read_bytes())
        rows.append({"song_id": s.song_id, "audio_uri": uri, "lyrics": s.catalogue_lyrics})
    rows.append({"song_id": "s3-missing", "audio_uri": f"{s3_bucket}/audio/missing.wav", "lyrics": None})
    catalogue = f"{s3_bucket}/in/catalogue.parquet"
    storage.write_parquet(pa.Table.from_pylist(rows), catalogue)
    output = f"{s3_bucket}/labels"

    summary = label_catalogue(catalogue, bundle, output, SMALL)
    assert summary.written == 6 and summary.errors == {"missing_file": 1}
    labels = storage.read_parquet(storage.join(output, f"version={summary.model_version}")).to_pandas()
    assert sorted(labels["song_id"]) == sorted(r["song_id"] for r in rows)
    assert (labels.set_index("song_id").loc[[s.song_id for s in songs], "modalities"].str.contains("audio")).all()
    record = json.loads(storage.read_text(storage.join(output, f"version={summary.model_version}", "_SUCCESS.json")))
    assert record["rows"] == 6
    assert not [u for u in storage.listdir(storage.join(output, "_staging")) if storage.listdir(u)]
    assert label_catalogue(catalogue, bundle, output, SMALL).nothing_new


def test_killed_run_resumes_to_exactly_one_row_per_song(ray_local, bundle, synth, tmp_path):
    """Kill a real `python -m jobs.label_catalogue` driver after its first committed part, then re-run."""
    table = pq.read_table(synth.catalogue_uri).select(["song_id", "audio_uri", "lyrics"])
    catalogue = str(tmp_path / "catalogue.parquet")
    pq.write_table(table, catalogue)
    output = str(tmp_path / "labels")
    version = open_bundle(bundle).model_version
    layout = OutputLayout(output, version)

    # PYTHONPATH keeps what conftest put there (the loopback patch): without it this driver would look
    # for the session's Ray on the machine's outward address, where nothing listens.
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address, "PYTHONPATH": pythonpath}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.label_catalogue", "--catalogue", catalogue, "--bundle", bundle, "--output", output,
         "--rows-per-part", "2", "--featurise-batch-size", "2", "--predict-batch-size", "2", "--max-actors", "1",
         "--lease-seconds", "5"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while not layout.part_uris():
        assert proc.poll() is None, f"labelling job exited early: {proc.stderr.read().decode()[-2000:]}"
        assert time.time() < deadline, "no part committed within 120 s"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # let the dead driver's workers go (a part a worker was committing may still land): wait for quiet
    stable_since, seen = time.time(), len(layout.part_uris())
    while time.time() - stable_since < 3:
        time.sleep(0.25)
        if len(layout.part_uris()) != seen:
            stable_since, seen = time.time(), len(layout.part_uris())
    committed = pq.read_table(layout.partition_uri).num_rows
    assert 0 < committed < table.num_rows and not Path(layout.success_uri).exists()

    # The killed driver never released its lease: the output stays closed to other runs until it expires.
    killed_lease = json.loads(storage.read_text(storage.listdir(layout.lease_dir)[-1]))
    assert killed_lease["released"] is False
    if datetime.fromisoformat(killed_lease["expires_at"]) > datetime.now(UTC) + timedelta(seconds=0.5):
        with pytest.raises(LeaseHeldError, match=killed_lease["run_id"]):
            label_catalogue(catalogue, bundle, output, SMALL)
    time.sleep(max(0.0, (datetime.fromisoformat(killed_lease["expires_at"]) - datetime.now(UTC)).total_seconds()) + 0.2)
    summary = label_catalogue(catalogue, bundle, output, SMALL)
    assert summary.already_labelled == committed and summary.written == table.num_rows - committed
    labels = _read_version(output, version)
    assert len(labels) == table.num_rows and labels["song_id"].is_unique
    assert json.loads(Path(layout.success_uri).read_text())["rows"] == table.num_rows
    # the resumed run removed its own staging folder and nothing else (the killed run's may remain, ignored)
    assert summary.run_id not in os.listdir(layout.staging_root) and len(os.listdir(layout.staging_root)) <= 1


def test_a_run_whose_predictor_dies_resumes_itself_and_ends_complete(ray_local, bundle, synth, tmp_path):
    """The Predictor actor's process is SIGKILLed on its first batch and may not restart (max_retries=0), so
    Ray Data fails the plan with Ray's own error: the run resumes with the songs still to label and ends
    complete, in one run. With --max-resumes 0 the same death fails the run (no completion record), and a
    re-run labels the rest."""
    table = pq.read_table(synth.catalogue_uri).select(["song_id", "audio_uri", "lyrics"])
    catalogue = str(tmp_path / "catalogue.parquet")
    pq.write_table(table, catalogue)
    fragile = dataclasses.replace(SMALL, max_retries=0)

    output = str(tmp_path / "resumed")
    with poison.predictor_dies_once() as died:
        summary = label_catalogue(catalogue, bundle, output, fragile)
    assert died.exists(), "the armed Predictor never died: the test proves nothing"
    assert summary.resumes == 1 and summary.written == table.num_rows, summary.to_text()
    assert "resumed 1 time(s)" in summary.to_text()
    labels = _read_version(output, summary.model_version)
    assert len(labels) == table.num_rows and labels["song_id"].is_unique
    assert Path(OutputLayout(output, summary.model_version).success_uri).exists()

    output = str(tmp_path / "not-resumed")
    layout = OutputLayout(output, summary.model_version)
    with poison.predictor_dies_once() as died, pytest.raises(Exception) as failure:
        label_catalogue(catalogue, bundle, output, dataclasses.replace(fragile, max_resumes=0))
    assert died.exists() and infrastructure_failure(failure.value, [], []), repr(failure.value)
    assert not Path(layout.success_uri).exists()
    summary = label_catalogue(catalogue, bundle, output, SMALL)
    assert summary.resumes == 0 and summary.already_labelled + summary.written == table.num_rows


def test_a_run_into_an_output_being_written_fails_at_once_and_writes_nothing(ray_local, bundle, synth, tmp_path):
    output = str(tmp_path / "labels")
    version = open_bundle(bundle).model_version
    layout = OutputLayout(output, version)
    with Lease(layout.lease_dir, "the-other-run", ttl_seconds=60):
        with pytest.raises(LeaseHeldError, match="the-other-run"):
            label_catalogue(synth.catalogue_uri, bundle, output, SMALL)
        # refused before any work: no partition, no staging
        assert not Path(layout.partition_uri).exists() and not Path(layout.staging_root).exists()
    # Another model version writes beside it: leases are per version.
    other = OutputLayout(output, "f" * 16 if version != "f" * 16 else "e" * 16)
    with Lease(other.lease_dir, "other-version-run", ttl_seconds=60):
        summary = label_catalogue(synth.catalogue_uri, bundle, output, SMALL)
    assert summary.written == summary.catalogue_rows and Path(layout.success_uri).exists()
