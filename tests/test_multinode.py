"""The jobs on a real multi-node Ray cluster, submitted through its job API, with real faults.

One cluster for the module (tests/cluster_harness.py): a head with the dashboard and job API on
127.0.0.1 and two worker nodes, one logical CPU each (as small as nodes get: a plan sized by the cluster's
total, not by a node, would wait for good), all on loopback only, every node its own
`ray start` process with its own temp dir. Jobs are submitted as `ray job submit` does (JobSubmissionClient + jobs/runtime_env.yaml with
the repository as working_dir) and run `python -m jobs.<name>` exactly as docs/cluster.md shows.

Faults are real: a worker node dies by SIGKILL of its raylet; a Ray Train worker dies by SIGKILL of
its process; another job holds every CPU. The labelling bundle is a MusiCNN audio model (the heavy Predictor
whose plan once asked for two CPUs) with random weights: these tests check that jobs finish with
complete, duplicate-free outputs, or fail in bounded time in one line, not accuracy.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import yaml

from labeler.bundle.info import read_bundle_info
from labeler.label_job import OutputLayout
from tests.cluster_harness import LocalCluster, job_status, start_cluster, wait_for_job

# Slow (a few minutes on two idle cores: a three-node cluster, six labelling jobs, one training job), and
# run by default, CI included. `-m "not slow"` leaves them out of a quick local run.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RUNTIME_ENV = REPO / "jobs" / "runtime_env.yaml"
SONGS = 12
WORKER_CPUS = 1
# Small parts and batches: the job commits a part every few songs, so a fault lands mid-run. The Predictor's
# size is the plan's own (labeler.label_job.resources), from the nodes it finds.
LABEL_FLAGS = "--rows-per-part 4 --featurise-batch-size 4 --predict-batch-size 4"
STALL_SECONDS = 20


@pytest.fixture(scope="module")
def cluster():
    cluster = start_cluster(num_workers=2, worker_cpus=WORKER_CPUS)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def runtime_env(cluster) -> dict:
    """jobs/runtime_env.yaml as `ray job submit --working-dir . --runtime-env ...` sends it, once the
    cluster has run a job with it: the first job on a fresh head also waits for its runtime-env agent
    and the working_dir upload, and a failure there should read as a cluster problem, not a test's."""
    env = {**yaml.safe_load(RUNTIME_ENV.read_text()), "working_dir": str(REPO)}
    client = cluster.job_client()
    job_id = submit(cluster, "python -c 'import jobs.label_catalogue, train.fit.run'", env)
    assert wait_for_job(client, job_id, timeout=300) == "SUCCEEDED", f"the cluster cannot run a job: {job_report(client, job_id)}"
    return env


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> str:
    """An audio-only MusiCNN bundle (random weights, built offline; 3-s clips: one MusiCNN patch a song)."""
    import torch

    from labeler.audio import FeaturizerConfig
    from labeler.bundle.store import save_bundle
    from labeler.models import AudioCnnConfig, EmotionModel, ModelConfig

    torch.manual_seed(0)
    audio = AudioCnnConfig(arch="MusiCNN", n_mels=96, embedding_dim=16)
    model = EmotionModel(ModelConfig(branch="audio", mode="4Q", lyrics=None, audio=audio, hidden_dim=16)).eval()
    uri = str(tmp_path_factory.mktemp("mn-bundle") / "bundle")
    save_bundle(uri, model, FeaturizerConfig.musicnn(clip_seconds=3.0), None, model_id="mn-musicnn")
    return uri


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> str:
    from synth import SynthConfig, synthesise

    root = tmp_path_factory.mktemp("mn-synth")
    return synthesise(SynthConfig(songs=SONGS, seconds=5.0, formats=("wav", "flac"), output=str(root))).catalogue_uri


def label_entrypoint(catalogue: str, bundle: str, output: str, flags: str = LABEL_FLAGS) -> str:
    return f"python -m jobs.label_catalogue --catalogue {catalogue} --bundle {bundle} --output {output} {flags}"


def submit(cluster: LocalCluster, entrypoint: str, runtime_env: dict) -> str:
    return cluster.job_client().submit_job(entrypoint=entrypoint, runtime_env=runtime_env)


def job_report(client, job_id: str, chars: int = 4000) -> str:
    """Why a job ended as it did: Ray's status message (which alone explains a job that failed before its
    entrypoint ran, e.g. in runtime_env setup) and the tail of its driver's log."""
    info = client.get_job_info(job_id)
    return f"job {job_id}: {info.status} - {info.message}\n{client.get_job_logs(job_id)[-chars:]}"


def assert_complete(output: str, bundle: str, catalogue: str) -> dict:
    """Exactly one label row per catalogue song in the version's partition, and a valid completion record."""
    layout = OutputLayout(output, read_bundle_info(bundle).model_version)
    expected = set(pq.read_table(catalogue, columns=["song_id"]).column("song_id").to_pylist())
    labels = pads.dataset(layout.partition_uri, format="parquet").to_table(columns=["song_id", "error"])
    ids = labels.column("song_id").to_pylist()
    assert len(ids) == len(set(ids)), f"duplicate label rows: {len(ids) - len(set(ids))}"
    assert set(ids) == expected
    record = json.loads(Path(layout.success_uri).read_text())
    assert record["rows"] == record["catalogue_rows"] == len(expected)
    assert sorted(record["files"]) == sorted(Path(u).name for u in layout.part_uris())
    # The finishing run removes its own staging folder; a killed run's stays (runs delete only their own, #15).
    staging = Path(layout.staging_root)
    assert not staging.exists() or record["run_id"] not in os.listdir(staging)
    return record


def wait_for_parts(layout: OutputLayout, client, job_id: str, at_least: int = 1, timeout: float = 400.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = len(layout.part_uris()) if Path(layout.partition_uri).exists() else 0
        if n >= at_least:
            return n
        status = job_status(client, job_id)
        assert status in ("PENDING", "RUNNING"), f"before any part: {job_report(client, job_id)}"
        time.sleep(0.2)
    raise TimeoutError(f"no committed part after {timeout:.0f} s")


# ------------------------------------------------------------------------------------------- labelling


def test_labelling_job_runs_across_nodes(cluster, runtime_env, bundle, catalogue, tmp_path):
    from ray.util.state import list_tasks

    output = str(tmp_path / "labels")
    client = cluster.job_client()
    job_id = submit(cluster, label_entrypoint(catalogue, bundle, output), runtime_env)
    off_loopback: set[str] = set()  # sampled while the job's driver and workers are alive
    status = wait_for_job(client, job_id, timeout=600,
                          while_running=lambda: off_loopback.update(cluster.non_loopback_sockets()))
    logs = client.get_job_logs(job_id)
    assert status == "SUCCEEDED", job_report(client, job_id)
    record = assert_complete(output, bundle, catalogue)
    assert f"rows: {SONGS} in catalogue, 0 already labelled, {SONGS} written" in logs
    assert record["written_this_run"] == SONGS
    # The MusiCNN Predictor gets what one node has (the cluster's 3 CPUs alone gave it 2: pending for good).
    assert "Predictor on 1-1 actor(s), 1 CPU each (1 threads)" in record["plan"], record["plan"]

    # The work was spread over the cluster, not run on the head alone.
    ray_job_id = client.get_job_info(job_id).job_id
    tasks = list_tasks(address=cluster.dashboard_url, filters=[("job_id", "=", ray_job_id)], limit=1000, raise_on_missing_output=False)
    nodes = {t.node_id for t in tasks if t.node_id}
    worker_ids = {w.node_id() for w in cluster.workers}
    assert nodes & worker_ids, f"no task of job {job_id} ran on a worker node: {nodes}"

    # Every node registered on loopback, and no process of the cluster listens or talks off it.
    from ray.util.state import list_nodes

    assert {n.node_ip for n in list_nodes(address=cluster.dashboard_url)} == {"127.0.0.1"}
    assert sorted(off_loopback | set(cluster.non_loopback_sockets())) == []

    # Re-submitting the same job is a no-op: everything is labelled by this model version.
    job_id = submit(cluster, label_entrypoint(catalogue, bundle, output), runtime_env)
    assert wait_for_job(client, job_id, timeout=300) == "SUCCEEDED", job_report(client, job_id)
    assert "nothing new" in client.get_job_logs(job_id)
    assert_complete(output, bundle, catalogue)


def test_concurrent_runs_into_one_output(cluster, runtime_env, bundle, catalogue, tmp_path):
    """Two identical jobs, same output, at the same time: the lease lets one write; the other fails at once
    naming it (or, if it started after the first ended, finds nothing to do). No re-submission needed."""
    output = str(tmp_path / "labels")
    client = cluster.job_client()
    jobs = [submit(cluster, label_entrypoint(catalogue, bundle, output), runtime_env) for _ in range(2)]
    statuses = [wait_for_job(client, j, timeout=600) for j in jobs]
    logs = {j: client.get_job_logs(j) for j in jobs}
    assert "SUCCEEDED" in statuses, "\n".join(job_report(client, j, 3000) for j in jobs)
    for job_id, status in zip(jobs, statuses):
        if status != "SUCCEEDED":
            assert "LeaseHeldError" in logs[job_id] and "is being written by run" in logs[job_id], logs[job_id][-3000:]
    record = assert_complete(output, bundle, catalogue)
    assert record["written_this_run"] in (SONGS, 0)


# ------------------------------------------------------------------------------------------- faults


def cli_submit(cluster: LocalCluster, entrypoint: str) -> str:
    """`ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml --no-wait -- ...`, exactly as a user
    types it (docs/cluster.md), from the repository root; returns the job id it prints."""
    out = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", cluster.dashboard_url,
                          "--working-dir", ".", "--runtime-env", str(RUNTIME_ENV), "--no-wait", "--", *entrypoint.split()],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    match = re.search(r"Job '([^']+)' submitted successfully", out.stdout + out.stderr)
    assert match, out.stdout[-2000:] + out.stderr[-2000:]
    return match.group(1)


def test_worker_node_dies_during_labelling(cluster, runtime_env, bundle, catalogue, tmp_path):
    """SIGKILL a worker node's raylet after the job's first committed part; the same run ends complete.

    Submitted with `ray job submit --working-dir .` as users do: in that setting a run once committed every
    row, then failed with a bare '[Errno 2]' (its working dir's copy was gone; label_job recover_cwd) and no
    _SUCCESS.json."""
    output = str(tmp_path / "labels")
    layout = OutputLayout(output, read_bundle_info(bundle).model_version)
    client = cluster.job_client()
    job_id = cli_submit(cluster, label_entrypoint(catalogue, bundle, output))
    wait_for_parts(layout, client, job_id)
    victim = cluster.workers[0]
    try:
        raylet_pid = cluster.kill_node(victim)
        assert not victim.alive and not psutil.pid_exists(raylet_pid)  # the node is really gone
        # Ray Data retries the lost tasks and restarts the actors elsewhere, and where it cannot (its Parquet
        # listing actors are never restarted; CI once saw one placed on the dead node before the cluster
        # counted it dead) the driver resumes with what is still missing: one run labels every song.
        status = wait_for_job(client, job_id, timeout=600)
        logs = client.get_job_logs(job_id)
        assert status == "SUCCEEDED" and "No such file or directory" not in logs, job_report(client, job_id)
        assert assert_complete(output, bundle, catalogue)["written_this_run"] == SONGS
    finally:
        cluster.workers.remove(victim)
        cluster.add_worker(num_cpus=WORKER_CPUS)  # later tests get the full cluster again


# A tenant holding every CPU of the cluster (one bundle per node) until a file appears: nothing the labelling
# job asks for can be scheduled while it holds them.
_HOLD_ALL_CPUS = """
import os, sys, time, ray
ray.init()
pg = ray.util.placement_group([{"CPU": 1}] * int(sys.argv[1]), strategy="SPREAD")
ray.get(pg.ready(), timeout=120)
print("holding every CPU", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.2)
ray.util.remove_placement_group(pg)
"""


def test_a_cluster_that_cannot_take_the_job_fails_in_bounded_time_in_one_line(cluster, runtime_env, bundle, catalogue,
                                                                              tmp_path):
    """Every CPU held by another job: the labelling job's Predictor pool never starts. It fails after
    --stall-seconds with one line naming the demand and the largest node, exit status 2 (not a wait for good),
    and once the CPUs are free again the same job labels everything."""
    client = cluster.job_client()
    script, release = tmp_path / "hold.py", tmp_path / "release"
    script.write_text(_HOLD_ALL_CPUS)
    holder = submit(cluster, f"python {script} {len(cluster.nodes)} {release}", runtime_env)
    try:
        deadline = time.monotonic() + 300
        while "holding every CPU" not in client.get_job_logs(holder):
            assert job_status(client, holder) in ("PENDING", "RUNNING") and time.monotonic() < deadline, \
                job_report(client, holder)
            time.sleep(0.2)
        output = str(tmp_path / "labels")
        job_id = submit(cluster, label_entrypoint(catalogue, bundle, output, f"{LABEL_FLAGS} --stall-seconds {STALL_SECONDS}"),
                        runtime_env)
        assert wait_for_job(client, job_id, timeout=300) == "FAILED", job_report(client, job_id)
        info, logs = client.get_job_info(job_id), client.get_job_logs(job_id)
        assert "exit code 2" in info.message, job_report(client, job_id)
        errors = [line for line in logs.splitlines() if "labeler label: error:" in line]
        assert len(errors) == 1, logs[-3000:]
        assert (f"the labelling job made no progress for {STALL_SECONDS} s: a Predictor actor needs 1 CPU" in errors[0]
                and "the largest of the 3 alive node(s) has 1 CPU" in errors[0]), errors[0]
    finally:
        release.touch()
        wait_for_job(client, holder, timeout=120)
    job_id = submit(cluster, label_entrypoint(catalogue, bundle, output), runtime_env)
    assert wait_for_job(client, job_id, timeout=600) == "SUCCEEDED", job_report(client, job_id)
    assert assert_complete(output, bundle, catalogue)["written_this_run"] == SONGS


# ------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> str:
    """40 synthetic songs in 4 folds: fold 0 trains on 20 of them."""
    from labeler.io import storage
    from synth import SynthConfig, synthesise
    from train.data.datasets.synth import prepare_synth
    from train.data.folds import assign_folds

    root = tmp_path_factory.mktemp("mn-train")
    result = synthesise(SynthConfig(songs=40, seconds=5.0, formats=("wav",), seed=5, output=str(root / "synth")))
    uri = str(root / "manifest.parquet")
    storage.write_parquet(assign_folds(prepare_synth(result.output), k=4, seed=8848), uri)
    return uri


def train_entrypoint(manifest: str, output: str, epochs: int) -> str:
    overrides = f"epochs={epochs} audio_epoch_factor=1 patience={epochs} clip_seconds=4.0 batch_size=8 max_failures=2"
    return (f"python -m jobs.train_folds --manifest {manifest} --output {output} --branch audio --folds 0 "
            + " ".join(f"--set {kv}" for kv in overrides.split()))


def live_train_workers(cluster: LocalCluster) -> list:
    from ray.util.state import list_actors

    return list_actors(address=cluster.dashboard_url, limit=1000, raise_on_missing_output=False,
                       filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])


def test_training_job_survives_a_killed_train_worker(cluster, runtime_env, manifest, tmp_path):
    """SIGKILL the Ray Train worker process after its first checkpoint: Ray Train restarts the worker
    group from that checkpoint (FailureConfig) and the job still trains every epoch and succeeds."""
    epochs = 3
    output = tmp_path / "run"
    client = cluster.job_client()
    job_id = submit(cluster, train_entrypoint(manifest, str(output), epochs), runtime_env)

    # Idle, the first checkpoint comes after ~1 min (featurising 40 songs, one epoch); the wait is for a
    # loaded CI machine.
    deadline = time.monotonic() + 600
    killed = None
    while killed is None:
        assert time.monotonic() < deadline, "no checkpoint within 600 s: " + job_report(client, job_id, 3000)
        status = job_status(client, job_id)
        assert status in ("PENDING", "RUNNING"), f"before the fault: {job_report(client, job_id, 3000)}"
        # Not merely a checkpoint_* folder (it appears while the checkpoint is still being persisted,
        # and a worker killed then restarts from scratch): Ray Train's checkpoint manager snapshot,
        # written once the controller has registered a reported checkpoint.
        if any(output.rglob("checkpoint_manager_snapshot.json")):
            workers = live_train_workers(cluster)
            if workers:
                killed = workers[0]
                os.kill(killed.pid, signal.SIGKILL)
                break
        time.sleep(0.2)

    status = wait_for_job(client, job_id, timeout=900)
    logs = client.get_job_logs(job_id)
    assert status == "SUCCEEDED", job_report(client, job_id)
    assert "ActorDiedError" in logs  # Ray Train saw the worker die (and retried: FailureConfig)
    report = json.loads((output / "report.json").read_text())
    selection = report["selection"]["audio"]["0"]  # JSON: fold keys are strings
    assert selection["resumed_from_epoch"] >= 1, selection  # restored from a checkpoint, not from scratch
    assert selection["epochs_run"] == epochs
    assert report["branches"]["audio"]["curves"]["0"]["epoch"] == list(range(1, epochs + 1))
    assert killed.pid not in {w.pid for w in live_train_workers(cluster)}
