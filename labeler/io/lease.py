"""An exclusive, expiring lease on one output and model version, so that two labelling runs never write it at once.

Two runs into the same output and version (a job submitted twice, a retry racing the original) would
each discard the other's staging files and commit the same songs in differently chunked parts. A run
therefore takes the version's lease before it touches anything, and a second run fails at once with
an error naming the holder.

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

- The lease fails closed. Renewal survives any exception (an S3 outage raises botocore errors, not
  OSError); after `max_renew_failures` failures in a row, or once the lease's own expiry has passed
  without a successful renewal, the holder marks it lost (`lost` is set), stops renewing and
  `check_held` raises LeaseLostError. Every part commit checks the generation it was given
  (`Fence.check`: still the newest, not released, not expired; any error reading it also refuses),
  so a run that lost its lease stops before writing another part.
- A newest lease file that cannot be read (empty, truncated) expires by its modification time plus
  the ttl, so a broken file never blocks the output version for good.
- Time comes from an injectable clock (`clock`), so tests move time instead of sleeping.

Expiry compares `expires_at` (UTC, written by the holder) with the reader's clock: keep the ttl well
above the clock skew between machines (NTP keeps it under a second on cloud instances). Fencing
narrows, but cannot close, the window between a check and the rename that follows it (the store has
no conditional rename); a frozen driver's last commit may land just after its lease expired.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from labeler.io import storage

log = logging.getLogger(__name__)

LEASE_DIR = "_lease"
DEFAULT_TTL_SECONDS = 120.0
MAX_RENEW_FAILURES = 3
_NAME = re.compile(r"^lease-(\d{8})\.json$")
Clock = Callable[[], datetime]


class LeaseHeldError(RuntimeError):
    """Another run holds the lease (its record says who, where and until when)."""

    def __init__(self, where: str, holder: dict):
        self.holder = holder
        super().__init__(
            f"{where} is being written by run {holder.get('run_id')} (host {holder.get('host')}, pid {holder.get('pid')}, "
            f"since {holder.get('acquired_at')}); its lease expires at {holder.get('expires_at')} unless renewed. "
            "Wait for that run to finish, or, if it died, re-run after its lease expires.")


class LeaseLostError(RuntimeError):
    """This run no longer holds its lease: renewal failed, it expired, or a newer generation was taken."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def _generation(uri: str) -> int | None:
    match = _NAME.match(uri.rstrip("/").rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


def _generations(directory: str) -> dict[int, str]:
    """Every lease generation in the directory, by number (one listing, no file read)."""
    return {g: u for g, u in ((_generation(u), u) for u in storage.listdir(directory)) if g is not None}


def _read_record(uri: str, ttl_seconds: float) -> dict:
    """A generation's record; an unreadable one (empty, truncated) expires at its mtime plus the ttl."""
    try:
        record = json.loads(storage.read_text(uri))
        datetime.fromisoformat(record["expires_at"])
        return record
    except (OSError, ValueError, KeyError, TypeError):
        try:
            expires = storage.modified(uri) + timedelta(seconds=ttl_seconds)
        except (OSError, ValueError):
            expires = utc_now() + timedelta(seconds=ttl_seconds)  # not even a stat: held, for one ttl
        return {"run_id": "unknown (unreadable lease file)", "expires_at": expires.isoformat()}


@dataclass(frozen=True)
class Fence:
    """What a part commit checks before it writes: the lease generation its run holds (picklable)."""

    directory: str
    generation: int
    ttl_seconds: float

    def check(self, clock: Clock = utc_now) -> None:
        """Raise LeaseLostError unless `generation` is still the newest, unreleased and unexpired lease.

        Any failure to tell (storage down, a broken file) also raises: a commit that cannot prove
        its run holds the lease does not happen.
        """
        try:
            generations = _generations(self.directory)
            record = _read_record(generations[self.generation], self.ttl_seconds) if self.generation in generations else None
        except Exception as exc:  # noqa: BLE001 - fail closed, whatever the storage raised
            raise LeaseLostError(f"cannot check the lease on {storage.describe(self.directory)} "
                                 f"({type(exc).__name__}); not committing") from None
        newest = max(generations, default=0)
        if record is None or newest != self.generation:
            raise LeaseLostError(f"lease generation {self.generation} on {storage.describe(self.directory)} was "
                                 f"superseded by generation {newest}; not committing")
        if record.get("released") or datetime.fromisoformat(record["expires_at"]) <= clock():
            raise LeaseLostError(f"lease generation {self.generation} on {storage.describe(self.directory)} has "
                                 f"{'been released' if record.get('released') else 'expired'}; not committing")


@dataclass
class Lease:
    """One run's lease on `directory` (a `_lease/version=...` prefix); use as a context manager.

    `clock` gives the time (tests inject one); `background=False` leaves renewal to the caller
    (`renew_once`), which is how tests drive it without sleeping.
    """

    directory: str
    run_id: str
    ttl_seconds: float = DEFAULT_TTL_SECONDS
    generation: int = 0
    clock: Clock = utc_now
    max_renew_failures: int = MAX_RENEW_FAILURES
    background: bool = True
    lost: threading.Event = field(default_factory=threading.Event, repr=False)
    lost_reason: str = ""
    failures: int = 0
    renewed: threading.Event = field(default_factory=threading.Event, repr=False)  # set by each successful renewal
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _acquired_at: str = ""
    _valid_until: datetime | None = None

    @property
    def uri(self) -> str:
        return storage.join(self.directory, f"lease-{self.generation:08d}.json")

    @property
    def fence(self) -> Fence:
        return Fence(self.directory, self.generation, self.ttl_seconds)

    def _record(self, now: datetime, released: bool = False) -> bytes:
        return json.dumps({
            "run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(), "generation": self.generation,
            "acquired_at": self._acquired_at or now.isoformat(), "renewed_at": now.isoformat(),
            "expires_at": (now + timedelta(seconds=self.ttl_seconds)).isoformat(), "released": released,
        }, indent=2).encode("utf-8")

    def _latest(self) -> tuple[int, dict | None]:
        """The newest generation number and its record (0, None when there is none)."""
        generations = _generations(self.directory)
        if not generations:
            return 0, None
        latest = max(generations)
        return latest, _read_record(generations[latest], self.ttl_seconds)

    def _is_free(self, record: dict | None) -> bool:
        if record is None or record.get("released"):
            return True
        return datetime.fromisoformat(record["expires_at"]) <= self.clock()

    def acquire(self) -> Lease:
        """Take the lease or raise LeaseHeldError; starts renewing it in the background."""
        latest, record = self._latest()
        if record is not None and not self._is_free(record):
            raise LeaseHeldError(storage.describe(self.directory), record)
        if record is not None and not record.get("released"):
            log.warning("taking over the expired lease of run %s (expired at %s)", record.get("run_id"), record.get("expires_at"))
        self.generation = latest + 1
        now = self.clock()
        self._acquired_at = now.isoformat()
        if not storage.create_exclusive(self.uri, self._record(now)):
            _, winner = self._latest()  # another run created this generation first
            raise LeaseHeldError(storage.describe(self.directory), winner or {"run_id": "unknown"})
        self._valid_until = now + timedelta(seconds=self.ttl_seconds)
        for g, old in _generations(self.directory).items():  # superseded generations (keep the previous one)
            if g < self.generation - 1:
                storage.remove(old)
        if self.background:
            self._thread = threading.Thread(target=self._renew_until_stopped, name=f"lease-{self.run_id}", daemon=True)
            self._thread.start()
        log.info("lease %s taken by run %s (ttl %.0f s)", storage.describe(self.uri), self.run_id, self.ttl_seconds)
        return self

    def _mark_lost(self, reason: str) -> None:
        self.lost_reason = reason
        self.lost.set()
        log.error("lease %s lost: %s; this run stops before committing anything more", storage.describe(self.uri), reason)

    def renew_once(self) -> bool:
        """One renewal; never raises. False when it failed; marks the lease lost when it cannot recover."""
        if self.lost.is_set():
            return False
        now = self.clock()
        try:
            newest = max(_generations(self.directory), default=0)
            if newest != self.generation:
                self._mark_lost(f"generation {newest} was taken after this run's {self.generation}")
                return False
            storage.write_bytes(self.uri, self._record(now))
        except Exception as exc:  # noqa: BLE001 - an outage raises botocore/aiohttp errors, not only OSError
            self.failures += 1
            log.warning("could not renew lease %s (%d in a row): %s", storage.describe(self.uri), self.failures,
                        type(exc).__name__)
            expired = self._valid_until is not None and self.clock() >= self._valid_until
            if self.failures >= self.max_renew_failures or expired:
                self._mark_lost(f"{self.failures} renewal(s) failed in a row ({type(exc).__name__})"
                                + ("; its expiry has passed" if expired else ""))
            return False
        self.failures = 0
        self._valid_until = now + timedelta(seconds=self.ttl_seconds)
        self.renewed.set()
        return True

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.ttl_seconds / 4):
            self.renew_once()
            if self.lost.is_set():
                return

    def check_held(self) -> None:
        """Raise LeaseLostError if renewal gave up, the lease expired, or another run took a newer generation."""
        if self.lost.is_set():
            raise LeaseLostError(f"lease on {storage.describe(self.directory)} was lost: {self.lost_reason}")
        latest = max(_generations(self.directory), default=0)
        if latest != self.generation:
            _, record = self._latest()
            raise LeaseLostError(
                f"lease on {storage.describe(self.directory)} was lost: run {(record or {}).get('run_id')} took generation "
                f"{latest} after this run's (generation {self.generation}) expired; was this run's driver paused for "
                f"more than {self.ttl_seconds:.0f} s?")
        if self._valid_until is not None and self.clock() >= self._valid_until:
            raise LeaseLostError(f"lease on {storage.describe(self.directory)} expired at {self._valid_until.isoformat()} "
                                 "without a successful renewal")

    def release(self) -> None:
        """Stop renewing and mark the lease released, so that the next run may start at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            if self.generation and max(_generations(self.directory), default=0) == self.generation:
                storage.write_bytes(self.uri, self._record(self.clock(), released=True))
        except Exception as exc:  # noqa: BLE001 - the lease then simply expires; the run's own error matters more
            log.warning("could not release lease %s (%s); it expires by itself", storage.describe(self.uri), type(exc).__name__)

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
