"""An exclusive, expiring lease on one output and model version, so that two labelling runs never write it at once.

Why: two runs into the same output and version (a job submitted twice, a retry racing the original)
would each discard the other's staging files and commit the same songs in differently chunked parts,
leaving duplicate label rows that no later run can certify. A run therefore takes the version's
lease before it touches anything, and a second run fails at once with an error naming the holder.

How, with nothing but the storage the labels already live in (a local disk, S3, memory://):

    <output>/_lease/version=<model_version>/lease-00000007.json

- Leases are numbered generations. Taking the lease means creating generation n+1 with an exclusive
  create (`storage.create_exclusive`: O_EXCL locally, a conditional PutObject on S3), which exactly
  one of any number of racing runs wins; it is allowed only when generation n is released or expired.
- The holder renews its file (a new `expires_at`) from a daemon thread every `ttl/4` seconds, so a
  run lasting hours keeps its lease, while a run that was SIGKILLed, or whose driver node died,
  stops renewing and its lease expires after `ttl` seconds (default 120): re-running the job after
  that resumes the output. A run that ends, well or not, releases its lease at once.
- Generations only grow (a release rewrites the file, it never deletes it), so a holder can tell that
  it lost its lease (a driver frozen for longer than the ttl) by a newer generation appearing; the
  labelling job then refuses to write its completion record.

Expiry compares `expires_at` (UTC, written by the holder) with the reader's clock: keep the ttl well
above the clock skew between machines (NTP keeps it under a second on cloud instances).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from labeler import storage

log = logging.getLogger(__name__)

LEASE_DIR = "_lease"
DEFAULT_TTL_SECONDS = 120.0
_NAME = re.compile(r"^lease-(\d{8})\.json$")


class LeaseHeldError(RuntimeError):
    """Another run holds the lease (its record says who, where and until when)."""

    def __init__(self, where: str, holder: dict):
        self.holder = holder
        super().__init__(
            f"{where} is being written by run {holder.get('run_id')} (host {holder.get('host')}, pid {holder.get('pid')}, "
            f"since {holder.get('acquired_at')}); its lease expires at {holder.get('expires_at')} unless renewed. "
            "Wait for that run to finish, or, if it died, re-run after its lease expires.")


class LeaseLostError(RuntimeError):
    """The lease expired while its holder ran (a newer generation was taken by another run)."""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _generation(uri: str) -> int | None:
    match = _NAME.match(uri.rstrip("/").rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


@dataclass
class Lease:
    """One run's lease on `directory` (a `_lease/version=...` prefix); use as a context manager."""

    directory: str
    run_id: str
    ttl_seconds: float = DEFAULT_TTL_SECONDS
    generation: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _acquired_at: str = ""

    @property
    def uri(self) -> str:
        return storage.join(self.directory, f"lease-{self.generation:08d}.json")

    def _record(self, released: bool = False) -> bytes:
        now = _now()
        return json.dumps({
            "run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(), "generation": self.generation,
            "acquired_at": self._acquired_at or now.isoformat(), "renewed_at": now.isoformat(),
            "expires_at": (now + timedelta(seconds=self.ttl_seconds)).isoformat(), "released": released,
        }, indent=2).encode("utf-8")

    def _generations(self) -> dict[int, str]:
        """Every lease generation in the directory, by number (one listing, no file read)."""
        return {g: u for g, u in ((_generation(u), u) for u in storage.listdir(self.directory)) if g is not None}

    def _newest_generation(self) -> int:
        return max(self._generations(), default=0)

    def _latest(self) -> tuple[int, dict | None]:
        """The newest generation number and its record (0, None when there is none)."""
        generations = self._generations()
        if not generations:
            return 0, None
        latest = max(generations)
        try:
            record = json.loads(storage.read_text(generations[latest]))
        except (OSError, ValueError):  # half-visible or unreadable: treat as held until proven otherwise
            record = {"run_id": "unknown", "expires_at": (_now() + timedelta(seconds=self.ttl_seconds)).isoformat()}
        return latest, record

    @staticmethod
    def _is_free(record: dict | None) -> bool:
        if record is None or record.get("released"):
            return True
        return datetime.fromisoformat(record["expires_at"]) <= _now()

    def acquire(self) -> "Lease":
        """Take the lease or raise LeaseHeldError; starts renewing it in the background."""
        latest, record = self._latest()
        if not self._is_free(record):
            raise LeaseHeldError(storage.describe(self.directory), record)
        if record is not None and not record.get("released"):
            log.warning("taking over the expired lease of run %s (expired at %s)", record.get("run_id"), record.get("expires_at"))
        self.generation = latest + 1
        self._acquired_at = _now().isoformat()
        if not storage.create_exclusive(self.uri, self._record()):
            _, winner = self._latest()  # another run created this generation first
            raise LeaseHeldError(storage.describe(self.directory), winner or {"run_id": "unknown"})
        for g, old in self._generations().items():  # superseded generations (keep the previous one)
            if g < self.generation - 1:
                storage.remove(old)
        self._thread = threading.Thread(target=self._renew_until_stopped, name=f"lease-{self.run_id}", daemon=True)
        self._thread.start()
        log.info("lease %s taken by run %s (ttl %.0f s)", storage.describe(self.uri), self.run_id, self.ttl_seconds)
        return self

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.ttl_seconds / 4):
            try:
                storage.write_bytes(self.uri, self._record())
            except OSError as exc:  # a storage hiccup: the next renewal may succeed well before expiry
                log.warning("could not renew lease %s: %s", storage.describe(self.uri), exc)

    def check_held(self) -> None:
        """Raise LeaseLostError if another run took a newer generation (this one had expired)."""
        latest = self._newest_generation()
        if latest != self.generation:
            _, record = self._latest()
            raise LeaseLostError(
                f"lease on {storage.describe(self.directory)} was lost: run {(record or {}).get('run_id')} took generation "
                f"{latest} after this run's (generation {self.generation}) expired; was this run's driver paused for "
                f"more than {self.ttl_seconds:.0f} s?")

    def release(self) -> None:
        """Stop renewing and mark the lease released, so that the next run may start at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.generation and self._newest_generation() == self.generation:
            storage.write_bytes(self.uri, self._record(released=True))

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
