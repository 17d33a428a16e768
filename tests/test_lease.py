"""The per-output-version lease: one winner among racing runs, expiry of a dead holder, release, loss.

Run on a real local directory, memory:// and the S3 test server (conditional PutObject on loopback).
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from labeler import storage
from labeler.lease import Lease, LeaseHeldError, LeaseLostError


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


def test_a_dead_holders_lease_expires_and_is_taken_over(lease_dir):
    dead = Lease(lease_dir, "dead-run", ttl_seconds=4).acquire()
    dead._stop.set()  # the holder stops renewing, as a SIGKILLed driver would (its file stays unreleased)
    with pytest.raises(LeaseHeldError):
        Lease(lease_dir, "eager-run", ttl_seconds=4).acquire()
    time.sleep(4.2)
    with Lease(lease_dir, "next-run", ttl_seconds=4) as taken:
        assert taken.generation == dead.generation + 1
        with pytest.raises(LeaseLostError, match="next-run"):
            dead.check_held()  # the old holder learns it lost the lease


def test_a_live_holder_keeps_its_lease_by_renewing(lease_dir):
    with Lease(lease_dir, "long-run", ttl_seconds=4) as held:
        first_expiry = json.loads(storage.read_text(held.uri))["expires_at"]
        time.sleep(5)  # longer than the ttl: only the renewals keep it
        with pytest.raises(LeaseHeldError):
            Lease(lease_dir, "other-run", ttl_seconds=4).acquire()
        assert json.loads(storage.read_text(held.uri))["expires_at"] > first_expiry
        held.check_held()


def test_an_unreadable_lease_file_counts_as_held(lease_dir):
    """A half-written or corrupt lease must not let a second run in: it is held until its ttl passes."""
    storage.write_bytes(storage.join(lease_dir, "lease-00000001.json"), b"{not json")
    with pytest.raises(LeaseHeldError, match="run unknown"):
        Lease(lease_dir, "careful-run", ttl_seconds=60).acquire()


def test_old_generations_are_cleaned_up(lease_dir):
    for i in range(4):
        with Lease(lease_dir, f"run-{i}", ttl_seconds=60):
            pass
    names = sorted(u.rsplit("/", 1)[-1] for u in storage.listdir(lease_dir))
    assert names == ["lease-00000003.json", "lease-00000004.json"]
