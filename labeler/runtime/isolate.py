"""Crash isolation: run a batch callable in a child process, and pin a crash on the one row that caused it.

A track can kill the process that featurises it (a segfault in a decoder or in JIT-compiled code,
an abort, the kernel's out-of-memory kill). In a Ray task that means a dead worker, which Ray retries
(forever, by default in Ray Data), so one poison track would hang or kill the whole job. Here
the task's own process never runs the crash-prone code: a child process does, and when it dies the
parent learns why (the signal or exit status), starts a fresh child and splits the batch in halves
until the row that crashes is alone. That row is retried `retries` more times (a crash of a neighbour,
say a transient out-of-memory kill, must not be pinned on it), then handed to `on_crash(rows, reason)`,
which returns its output row (IsolatedFeaturizer's: an `audio_error` of kind `worker_crash`). Every other
row gets its normal output, in the original order.

Cost: one child per process that uses it (a fresh interpreter: imports and JIT cache load, once), a pickle
of each batch both ways (log-mels of a batch are small next to decoding), and,
per poison row, about log2(batch) + 2 + retries child restarts.

The child is `python -P -m labeler.runtime.isolate FD`, talking over a socket pair with
multiprocessing.connection framing: a fresh interpreter, not a fork (forking a Ray worker's threads is
unsafe) and not multiprocessing's spawn (it would re-run the parent's `__main__`, a Ray worker script).
It sees the parent's sys.path (a Ray job's working_dir included) and nothing more: it starts with `-P`, so
the directory it happens to run in is not put first on its path (a `labeler/` planted there is never
imported), and it exits when the parent goes.
"""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from labeler.contracts.inputs import FEATURISER_INPUTS

log = logging.getLogger(__name__)

DEFAULT_RETRIES = 2  # attempts after the first, for a row alone that crashed (and for Ray tasks: see pipeline)
CRASH_KIND = "worker_crash"

Batch = dict[str, np.ndarray]


class WorkerCrash(RuntimeError):
    """The child process died while running a call; str() is the reason ('killed by SIGSEGV')."""


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "the process vanished"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _child_pythonpath() -> str:
    """The parent's import path (minus the interpreter's own), so the child imports the same code."""
    own = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    paths = [p for p in sys.path if p and os.path.isdir(p) and not any(os.path.realpath(p).startswith(o) for o in own)]
    paths += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in paths]
    return os.pathsep.join(paths)


class ChildProcess:
    """One persistent child interpreter that builds `target(**kwargs)` once and calls it on batches."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self.starts = 0

    def _start(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=_child_pythonpath())
        # -P: no working directory (or script folder) on the child's path; it imports only what the parent's path has
        self._proc = subprocess.Popen([sys.executable, "-P", "-m", "labeler.runtime.isolate", str(child_sock.fileno())],  # noqa: S603 - fixed argv
                                      pass_fds=(child_sock.fileno(),), env=env, stdin=subprocess.DEVNULL)
        child_sock.close()
        self._conn = Connection(parent_sock.detach())
        self.starts += 1

    def call(self, target: str, kwargs: dict, batch: Batch) -> Batch:
        """target(**kwargs)(batch) in the child; raises WorkerCrash if the child dies, re-raises its exceptions."""
        if self._proc is None or self._proc.poll() is not None:
            self._start()
        conn = self._conn
        if conn is None:  # never: _start() connects; narrows the type
            raise RuntimeError("the isolation child did not connect")
        try:
            conn.send((target, json.dumps(kwargs, sort_keys=True), batch))
            status, payload = conn.recv()
        except (EOFError, OSError) as exc:
            reason = describe_exit(self._reap())
            raise WorkerCrash(reason) from exc
        if status == "error":
            raise RuntimeError(f"{target} failed in the isolation child:\n{payload}")
        return payload

    def _reap(self) -> int | None:
        proc, self._proc = self._proc, None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if proc is None:
            return None
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None and self._conn is not None:
            self._conn.close()  # the child reads EOF and exits
            self._conn = None
        self._reap()


def _take(batch: Batch, rows: slice) -> Batch:
    return {k: v[rows] for k, v in batch.items()}


def _concat(parts: list[Batch]) -> Batch:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _batch_len(batch: Batch) -> int:
    return len(next(iter(batch.values()))) if batch else 0


class Isolated:
    """Calls `target(**kwargs)` (a 'module:Class' whose instances map a numpy batch to a numpy batch)
    in a child process, isolating crashing rows as described in the module docstring."""

    def __init__(self, target: str, kwargs: dict, on_crash: Callable[[Batch, str], Batch],
                 retries: int = DEFAULT_RETRIES, child: ChildProcess | None = None):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.target, self.kwargs, self.on_crash, self.retries = target, kwargs, on_crash, retries
        self.child = child  # None: the process's shared child
        self.crashes = 0

    def __call__(self, batch: Batch) -> Batch:
        return self._run(batch, attempts_alone=1 + self.retries)

    def _run(self, batch: Batch, attempts_alone: int) -> Batch:
        n = _batch_len(batch)
        try:
            return (self.child or _child()).call(self.target, self.kwargs, batch)
        except WorkerCrash as exc:
            self.crashes += 1
            reason = str(exc)
        if n > 1:
            log.warning("isolation child %s on a batch of %d rows; splitting it", reason, n)
            half = n // 2
            return _concat([self._run(_take(batch, slice(0, half)), attempts_alone),
                            self._run(_take(batch, slice(half, n)), attempts_alone)])
        if attempts_alone > 1:
            return self._run(batch, attempts_alone - 1)
        log.error("row %s crashed its process %d time(s) (%s); isolating it",
                  batch.get("song_id", ["?"])[0], 1 + self.retries, reason)
        return self.on_crash(batch, reason)


class IsolatedFeaturizer:
    """labeler.audio.Featurizer's contract (same columns in and out), run in the isolation child; a row
    that crashes it gets `audio_error = 'worker_crash: <uri>: killed by SIGSEGV'` (or whatever killed it)."""

    INPUTS = FEATURISER_INPUTS

    def __init__(self, config: dict, retries: int = DEFAULT_RETRIES, backend: str | None = None,
                 child: ChildProcess | None = None, max_audio_seconds: float | None = None):
        self.config = dict(config)
        kwargs: dict[str, Any] = {"config": self.config}
        if backend is not None:
            kwargs["backend"] = backend
        if max_audio_seconds is not None:  # None: Featurizer's default cap
            kwargs["max_audio_seconds"] = max_audio_seconds
        self.isolated = Isolated("labeler.audio:Featurizer", kwargs, self._crashed, retries, child)

    def __call__(self, batch: Batch) -> Batch:
        out = self.isolated({k: batch[k] for k in self.INPUTS if k in batch})
        return {**batch, **out}

    def _crashed(self, rows: Batch, reason: str) -> Batch:
        """The row as Featurizer returns a track it cannot use: built from a null URI, so nothing is decoded here."""
        from labeler.audio import Featurizer  # noqa: PLC0415
        from labeler.io import storage  # noqa: PLC0415

        uri = rows["audio_uri"][0]
        out = Featurizer(self.config)({**rows, "audio_uri": np.array([None], dtype=object)})
        out["audio_uri"] = rows["audio_uri"]
        out["audio_error"] = np.array([f"{CRASH_KIND}: {storage.describe(str(uri))}: {reason}"], dtype=object)
        return out


class TrackFeaturiser:
    """Child-side target for one track (Serve): {"source", "start", "end"} -> {"features"} or {"kind", "detail"}.

    Errors come back as data, not exceptions, so that the parent can tell an expected AudioError
    (its kind decides the HTTP status) from a crash of the child (WorkerCrash). A track longer than
    `max_audio_seconds` (None: featurise_track's default cap) comes back as kind `too_long`.
    """

    def __init__(self, config: dict, max_audio_seconds: float | None = None):
        from labeler.audio import MAX_AUDIO_SECONDS, FeaturizerConfig, warm_up_jit  # noqa: PLC0415
        from labeler.runtime import jit_cache  # noqa: PLC0415

        self.config = FeaturizerConfig.from_dict(config)
        self.max_seconds = MAX_AUDIO_SECONDS if max_audio_seconds is None else max_audio_seconds
        jit_cache.ensure_compiled(warm_up_jit)

    def __call__(self, request: dict) -> dict:
        from labeler.audio.featurizer import AudioError, featurise_track  # noqa: PLC0415

        try:
            return {"features": featurise_track(request["source"], request["start"], request["end"], self.config,
                                                max_seconds=self.max_seconds)}
        except AudioError as exc:
            return {"kind": exc.kind, "detail": exc.detail}
        except Exception as exc:  # noqa: BLE001 - a decoder failure on one file is that file's fault (as in Featurizer)
            log.warning("unexpected failure featurising %s", request.get("name"), exc_info=True)
            return {"kind": "corrupt", "detail": f"{type(exc).__name__}: {exc}"}


_CHILD: ChildProcess | None = None


def _child() -> ChildProcess:
    """One child per process, shared by every Isolated in it (they run one call at a time)."""
    global _CHILD  # noqa: PLW0603 - a per-process resource, like a connection pool
    if _CHILD is None:
        _CHILD = ChildProcess()
        atexit.register(_CHILD.close)
    return _CHILD


# --------------------------------------------------------------------------------------------------
# the child's side


def _resolve(target: str) -> Callable:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def serve(fd: int) -> None:
    """Child loop: receive (target, kwargs JSON, batch), answer ('ok', output) or ('error', traceback)."""
    import traceback  # noqa: PLC0415

    conn = Connection(fd)
    instances: dict[tuple[str, str], Any] = {}
    while True:
        try:
            target, kwargs_json, batch = conn.recv()
        except EOFError:
            return
        try:
            key = (target, kwargs_json)
            if key not in instances:
                instances[key] = _resolve(target)(**json.loads(kwargs_json))
            conn.send(("ok", instances[key](batch)))
        except Exception:  # noqa: BLE001 - reported to the parent, which raises it there
            conn.send(("error", traceback.format_exc()))


if __name__ == "__main__":
    serve(int(sys.argv[1]))
