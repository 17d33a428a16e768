"""Shared fixtures: a real local Ray, a real S3-API server on loopback, the shared real-data slices."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.helpers import MUSICNN_SONGS, TRAIN_4Q, TRAIN_MUSICNN, free_port
from tests.loopback import sitecustomize as loopback
from tests.poison import sitecustomize as poison

# Ray reads these when it starts; set them before anything imports ray.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA_ENV = "MOOD_LABELER_DATA"

# Every Ray the tests start - in this process, in CLI subprocesses, the multi-node cluster - registers
# and listens on 127.0.0.1 only (Ray would take the machine's outward address): see the module.
loopback.export(os.environ)
loopback.install()


def pytest_configure(config):
    """Every process the tests start gets tests/poison's fault hooks (a featuriser that meets a file named
    poison.POISON_FILE dies with SIGSEGV; armed training and Predictor deaths), never a process that runs tests:
    under pytest-xdist the controller starts the workers, so the workers export the hooks, not the controller."""
    if os.environ.get("PYTEST_XDIST_WORKER") or not getattr(config.option, "numprocesses", None):
        poison.export(os.environ)


# The fast tier (`pytest -m "not slow"`, the edit loop) is the unit and contract tests: a test is `slow` when it
# starts a Ray (these fixtures, or a marker on the test for Ray in a process of its own) or trains.
STARTS_RAY = {"ray_local", "trained_4q", "trained_musicnn"}


# The whole suite runs in two pytest-xdist workers (`-n 2 --dist loadfile` in pyproject.toml): much of its time is
# spent waiting on Ray (process starts, scheduling), so two streams of tests fill the two cores. A module's tests
# run in one worker, so each module fixture is built once; a session artefact (`trained_4q`, `trained_musicnn`)
# is read by one module only, so it is built once too. Modules are handed out longest first (this order;
# `--no-loadscope-reorder` stops xdist from re-sorting them by their number of tests).
# Seconds each module took alone on an idle 2-core machine (--durations), for the longest-first order.
MODULE_SECONDS = {"test_train": 446, "test_multinode": 373, "test_classes_e2e": 220, "test_mood_outputs": 181,
                  "test_pipeline": 150, "test_recipe": 141, "test_demo": 128, "test_header_caps": 60,
                  "test_jit_cache": 33, "test_serve": 29}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if STARTS_RAY & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # Stable: within a module the order stays the file's.
    items.sort(key=lambda item: -MODULE_SECONDS.get(item.module.__name__.rsplit(".", 1)[-1], 0.0))


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server in-process on 127.0.0.1; S3 URIs in tests reach it through AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture()
def s3_bucket(s3_server) -> str:
    """A fresh bucket; returns its s3:// URI."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One real local Ray for the whole session (2 CPUs, no dashboard), which also sees the S3 server."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, found through $MOOD_LABELER_DATA; tests that need it skip cleanly without it."""
    root = os.environ.get(DATA_ENV)
    if not root or not Path(root).is_dir():
        pytest.skip(f"real-data slices not available (set {DATA_ENV} to ../shared/data)")
    return Path(root)


# ------------------------------------------------------------------ trained artefacts, built once per session
#
# A test trains only when training itself is what it tests; every other test that needs a trained model
# takes one of these, made through the product's own `train.fit.run.train` on the session's Ray.

def _synth_manifest(root: Path, songs: int, seed: int) -> tuple[object, object, str]:
    """`songs` synthetic 5-s songs (WAV and FLAC) and their 4-fold manifest: (synth result, manifest, its URI)."""
    from labeler.io import storage
    from synth import SynthConfig, synthesise
    from train.data.datasets.synth import prepare_synth
    from train.data.folds import assign_folds

    synth = synthesise(SynthConfig(songs=songs, output=str(root / "synth"), seconds=5.0, formats=("wav", "flac"),
                                   seed=seed))
    manifest = assign_folds(prepare_synth(synth.output), k=4, seed=8848)
    uri = str(root / "manifest.parquet")
    storage.write_parquet(manifest, uri)
    return synth, manifest, uri


@pytest.fixture(scope="session")
def synth_manifest(tmp_path_factory) -> str:
    """120 synthetic songs in a 4-fold manifest (the synthesised catalogue is `<dir>/synth/catalogue.parquet`)."""
    return _synth_manifest(tmp_path_factory.mktemp("synth4q"), songs=120, seed=3)[2]


@pytest.fixture(scope="session")
def musicnn_available():
    """Skips, naming the setup step, where scripts/setup.sh has not unpacked the musicnn checkpoints."""
    from labeler.musicnn import wheel

    try:
        wheel.checkpoint_prefix("MSD_musicnn")
    except wheel.MusicnnFilesError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def trained_4q(synth_manifest, ray_local, s3_server, tmp_path_factory):
    """`train --branch all --mode 4Q --folds 0,1` (Cnn6 audio, stacked lyrics, fusion) on `synth_manifest`.

    Its checkpoints go to S3 (the loopback server), and its first training worker dies once at epoch 2
    (tests/poison/sitecustomize.py): Ray Train restores that worker from its last S3 checkpoint, so the
    run also proves resumption. Returns (train result, the checkpoint storage URI).
    """
    import boto3

    from train.fit.run import train

    bucket = f"trained-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    storage_uri = f"s3://{bucket}/checkpoints"
    out = tmp_path_factory.mktemp("run4q") / "out"
    with poison.train_fails_once(at_epoch=2) as failed:
        result = train(synth_manifest, str(out), branch="all", mode="4Q", preset="cpu-small", folds="0,1",
                       storage_uri=storage_uri, **TRAIN_4Q)
    assert failed.exists(), "the injected training failure never fired"
    return result, storage_uri


@pytest.fixture(scope="session")
def trained_musicnn(ray_local, musicnn_available, tmp_path_factory):
    """`train --branch audio --preset cpu-small` (MusiCNN, its Dense fine-tuned) on 80 synthetic songs, fold 0.

    Returns (root, synth result, manifest table, train result).
    """
    from train.fit.run import train

    root = tmp_path_factory.mktemp("musicnn")
    synth, manifest, uri = _synth_manifest(root, songs=MUSICNN_SONGS, seed=5)
    result = train(uri, str(root / "run"), branch="audio", mode="4Q", preset="cpu-small", folds="0", **TRAIN_MUSICNN)
    return root, synth, manifest, result
