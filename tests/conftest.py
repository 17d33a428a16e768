"""Shared fixtures: a real local Ray, a real S3-API server on loopback, the shared real-data slices."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

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
# ... and a featuriser that meets a file named poison.POISON_FILE dies with SIGSEGV (crash-isolation tests).
poison.export(os.environ)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server in-process on 127.0.0.1; S3 URIs in tests reach it through AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
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
