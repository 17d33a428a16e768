"""The per-output-version lease: one winner among racing runs, expiry of a dead holder, release, loss.

Run on a real local directory, memory:// and the S3 test server (conditional PutObject on loopback).
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from labeler.io import storage
from labeler.io.lease import Lease, LeaseHeldError, LeaseLostError
from tests.helpers import bundle_info


@pytest.fixture(params=["local", "memory", "s3"])
def lease_dir(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "_lease" / "version=v1")
    if request.param == "memory":
        return f"memory://lease-{uuid.uuid4().hex[:8]}/_lease/version=v1"
    return storage.join(request.getfixturevalue("s3_bucket"), "labels", "_lease", "version=v1")


def test_create_exclusive_has_one_winner(lease_dir):
    uri = storage.join(lease_dir, "x.json")
    assert storage.create_exclusive(uri, b"first")
    assert not storage.create_exclusive(uri, b"second")
    assert storage.read_bytes(uri) == b"first"


def test_second_run_is_refused_while_the_first_holds_the_lease(lease_dir):
    with Lease(lease_dir, "run-a", ttl_seconds=60) as first:
        with pytest.raises(LeaseHeldError, match="run run-a") as refused:
            Lease(lease_dir, "run-b", ttl_seconds=60).acquire()
        assert refused.value.holder["run_id"] == "run-a" and refused.value.holder["generation"] == first.generation
        first.check_held()
    # Released on exit: the next run gets the next generation at once.
    with Lease(lease_dir, "run-b", ttl_seconds=60) as second:
        assert second.generation == first.generation + 1
    assert json.loads(storage.read_text(second.uri))["released"] is True


def test_racing_runs_get_exactly_one_lease(lease_dir):
    results: list = []
    barrier = threading.Barrier(6)

    def race(i: int) -> None:
        barrier.wait()
        try:
            results.append(Lease(lease_dir, f"run-{i}", ttl_seconds=60).acquire())
        except LeaseHeldError as exc:
            results.append(exc)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if isinstance(r, Lease)]
    assert len(winners) == 1 and len(results) == 6
    winners[0].release()


class FakeClock:
    """Time that moves only when a test says so (no sleeps)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_a_dead_holders_lease_expires_and_is_taken_over(lease_dir):
    clock = FakeClock()
    dead = Lease(lease_dir, "dead-run", ttl_seconds=4, clock=clock, background=False).acquire()
    # the holder stops renewing, as a SIGKILLed driver would (its file stays unreleased)
    with pytest.raises(LeaseHeldError):
        Lease(lease_dir, "eager-run", ttl_seconds=4, clock=clock, background=False).acquire()
    clock.advance(4.1)
    with Lease(lease_dir, "next-run", ttl_seconds=4, clock=clock, background=False) as taken:
        assert taken.generation == dead.generation + 1
        with pytest.raises(LeaseLostError, match="next-run"):
            dead.check_held()  # the old holder learns it lost the lease
        with pytest.raises(LeaseLostError, match="superseded"):
            dead.fence.check(clock)  # and its commits are fenced off
        taken.fence.check(clock)


def test_a_live_holder_keeps_its_lease_by_renewing(lease_dir):
    clock = FakeClock()
    with Lease(lease_dir, "long-run", ttl_seconds=4, clock=clock, background=False) as held:
        first_expiry = json.loads(storage.read_text(held.uri))["expires_at"]
        for _ in range(3):  # longer than the ttl in all: only the renewals keep it
            clock.advance(2)
            assert held.renew_once()
        with pytest.raises(LeaseHeldError):
            Lease(lease_dir, "other-run", ttl_seconds=4, clock=clock).acquire()
        assert json.loads(storage.read_text(held.uri))["expires_at"] > first_expiry
        held.check_held()
        held.fence.check(clock)


def test_the_background_thread_renews(lease_dir):
    """The real renewal thread (ttl 2 s, renewing every 0.5 s): the record is rewritten with a later expiry."""
    with Lease(lease_dir, "threaded", ttl_seconds=2) as held:
        first = json.loads(storage.read_text(held.uri))["expires_at"]
        assert held.renewed.wait(60), held.lost_reason
        assert not held.lost.is_set(), held.lost_reason
        assert json.loads(storage.read_text(held.uri))["expires_at"] > first


def test_a_broken_newest_lease_file_expires_by_its_mtime(lease_dir):
    """An empty or truncated newest file blocked the version for good (held until 'now + ttl', recomputed
    on every read); it now counts as held for one ttl after it was written, then expires."""
    clock = FakeClock()
    for broken in (b"", b'{"run_id": "half'):
        storage.write_bytes(storage.join(lease_dir, "lease-00000001.json"), broken)
        with pytest.raises(LeaseHeldError, match="unreadable"):
            Lease(lease_dir, "careful-run", ttl_seconds=60, clock=clock, background=False).acquire()
    clock.advance(3600)  # one hour later: still broken, no longer blocking
    with Lease(lease_dir, "next-run", ttl_seconds=60, clock=clock, background=False) as taken:
        assert taken.generation == 2


@pytest.mark.parametrize("error", [RuntimeError("boom"), TypeError("bug"), OSError("disk")])
def test_renewal_survives_any_exception_then_fails_closed(lease_dir, monkeypatch, error):
    clock = FakeClock()
    lease = Lease(lease_dir, "fragile", ttl_seconds=40, clock=clock, background=False).acquire()
    real_write = storage.write_bytes

    def failing(uri, data):
        raise error

    monkeypatch.setattr(storage, "write_bytes", failing)
    assert lease.renew_once() is False and lease.renew_once() is False  # no exception escapes
    assert not lease.lost.is_set()
    lease.check_held()  # two failures, still within its ttl: held
    assert lease.renew_once() is False
    assert lease.lost.is_set() and "3 renewal(s) failed" in lease.lost_reason
    with pytest.raises(LeaseLostError, match="renewal"):
        lease.check_held()
    monkeypatch.setattr(storage, "write_bytes", real_write)
    assert lease.renew_once() is False  # a lost lease is never silently taken back
    clock.advance(41)
    with pytest.raises(LeaseLostError, match="expired"):
        lease.fence.check(clock)  # its record was not renewed: commits refuse


def test_fenced_commit_writes_nothing_after_the_lease_was_lost(tmp_path):
    from labeler.label_job.layout import commit_part

    clock = FakeClock()
    lease_dir = str(tmp_path / "_lease" / "version=x")
    first = Lease(lease_dir, "first", ttl_seconds=4, clock=clock, background=False).acquire()
    partition = tmp_path / "version=x"
    batch = {"song_id": np.array(["a", "b"], dtype=object), "probs": np.full((2, 4), 0.25, dtype=np.float32)}
    commit_part(batch, bundle_info("4Q"), str(tmp_path / "staging" / "one"), str(partition), fence=first.fence)
    assert len(list(partition.glob("part-*.parquet"))) == 1
    clock.advance(5)
    Lease(lease_dir, "second", ttl_seconds=4, clock=clock, background=False).acquire()
    batch["song_id"] = np.array(["c", "d"], dtype=object)
    with pytest.raises(LeaseLostError):
        commit_part(batch, bundle_info("4Q"), str(tmp_path / "staging" / "one"), str(partition), fence=first.fence)
    assert len(list(partition.glob("part-*.parquet"))) == 1  # the lost run committed nothing more


def test_s3_server_stopped_mid_run_fails_closed(monkeypatch):
    """The S3 server goes away while a run holds its lease: renewal keeps failing without killing its
    thread, the lease is marked lost, and a commit's fence check refuses instead of writing."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # one connection attempt per call: the test stays short
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="outage")
    clock = FakeClock()
    lease = Lease("s3://outage/labels/_lease/version=x", "victim-of-outage", ttl_seconds=60, clock=clock,
                  background=False).acquire()
    assert lease.renew_once()
    server.stop()
    try:
        for _ in range(lease.max_renew_failures):
            clock.advance(15)
            assert lease.renew_once() is False
        assert lease.lost.is_set()
        with pytest.raises(LeaseLostError):
            lease.check_held()
        with pytest.raises(LeaseLostError, match="cannot check the lease"):
            lease.fence.check(clock)
        lease.release()  # does not raise either: the lease expires by itself
    finally:
        server.stop()


def test_old_generations_are_cleaned_up(lease_dir):
    for i in range(4):
        with Lease(lease_dir, f"run-{i}", ttl_seconds=60):
            pass
    names = sorted(u.rsplit("/", 1)[-1] for u in storage.listdir(lease_dir))
    assert names == ["lease-00000003.json", "lease-00000004.json"]
