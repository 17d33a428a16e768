"""A command's session: its log file, where Ray's and the libraries' output goes, and how Ray starts.

Ray, Ray Data, Ray Train and Tune each print their own progress and logs (progress bars of every
internal dataset, experiment tables, C++ core-worker lines, worker output streamed to the driver),
tens of thousands of lines for one `labeler demo`. A command therefore runs inside `session()`:

- Everything the process writes to stdout/stderr, and every Python log record, goes to a log file
  whose path is printed first (the file descriptors are redirected too, so C++ lines from Ray's core
  worker land there as well). `--verbose` leaves the console as it was and logs at DEBUG.
- The log lives in a directory private to the user (labeler.runtime.private_dir): `log_dir` when given, else
  `$MOOD_LABELER_LOG_DIR`, else `$XDG_STATE_HOME/mood-labeler/logs` (`~/.local/state/mood-labeler/logs`).
  It is created 0700 if missing; one that is a symbolic link, another user's, open to group or others or
  below a directory others may change is refused (UnsafePathError, one line), never used. The file is
  created 0600 and opened without following a symbolic link at its name.
- The command talks to the person through the labeler.runtime.console.Console the session gives it.
- `ensure_ray()` starts or joins Ray the same way for every command: worker output stays in Ray's
  log files unless verbose, a local Ray gets an explicit auth mode (token; Ray otherwise warns that
  it chose one) and no dashboard, and Ray Data's own progress bars are off.

This module is process plumbing (file descriptors, logging handlers, Ray's start-up);
labeler.runtime.console only draws lines, and library code reports progress without touching either.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from labeler.runtime.console import Console
from labeler.runtime.private_dir import open_private, private_dir, state_home

LOG_DIR_ENV = "MOOD_LABELER_LOG_DIR"  # where session logs go (default: <state home>/logs, see checked_log_dir())
AUTH_MODE_ENV = "RAY_AUTH_MODE"  # ray._private.authentication: 'token' or 'disabled'
OWN_LOGGERS = ("labeler", "train", "jobs")  # at DEBUG with --verbose
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# --------------------------------------------------------------------------------------------------
# the session: logs to a file, console for the person


@dataclass(frozen=True)
class SessionOptions:
    command: str
    verbose: bool = False
    log_dir: str | None = None  # None: $MOOD_LABELER_LOG_DIR, else <state home>/logs (see checked_log_dir())


def checked_log_dir(explicit: str | None = None) -> Path:
    """The checked, resolved log directory: `explicit`, else $MOOD_LABELER_LOG_DIR, else the state home's `logs`.

    Raises labeler.runtime.private_dir.UnsafePathError (one line) for a directory another user could control.
    """
    chosen = explicit or os.environ.get(LOG_DIR_ENV) or os.path.join(state_home(), "logs")
    return Path(private_dir(chosen, what="log directory",
                            hint=f"set {LOG_DIR_ENV} to a directory only you can use (mode 0700)"))


def log_path_for(command: str, log_dir: str | None = None) -> Path:
    """A new log file's path for `command` in the checked log directory (see checked_log_dir())."""
    return checked_log_dir(log_dir) / f"{command}-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"


def in_ray_job() -> bool:
    """True in a driver started by `ray job submit`: its output already is the job's log (`ray job logs`)."""
    return bool(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"))


_VERBOSE = {"on": False}  # the session's --verbose, read by ensure_ray (one process, one session)


@contextlib.contextmanager
def session(options: SessionOptions) -> Iterator[Console]:
    """Run a command with its console; route logs (and, unless verbose, all other output) to a log file."""
    log_path = log_path_for(options.command, options.log_dir)
    log_file = os.fdopen(open_private(log_path), "a", buffering=1, encoding="utf-8")  # closed below
    root = logging.getLogger()
    saved_logging = (root.level, list(root.handlers))
    saved_streams = (sys.stdout, sys.stderr)
    file_handler = logging.StreamHandler(log_file)
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.handlers = [file_handler]
    root.setLevel(logging.INFO)  # DEBUG of every library (numba, fsspec, urllib3) would bury the rest
    own_levels = {name: logging.getLogger(name).level for name in OWN_LOGGERS}
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if options.verbose else logging.NOTSET)
    redirected: list[tuple[int, int, TextIO]] = []
    if options.verbose:
        console_handler = logging.StreamHandler(sys.stderr)
        console_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(console_handler)
        console = Console(log_path=str(log_path), verbose=True)
    else:
        out, err = _private_streams(saved_streams, redirected, log_file)
        sys.stdout = sys.stderr = log_file
        console = Console(out=out, err=err, log_path=str(log_path))
    _VERBOSE["on"] = options.verbose
    try:
        yield console
    finally:
        _VERBOSE["on"] = False
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, saved_fd, stream in redirected:
            os.dup2(saved_fd, fd)
            os.close(saved_fd)
            stream.close()
        sys.stdout, sys.stderr = saved_streams
        root.handlers = saved_logging[1]
        root.setLevel(saved_logging[0])
        for name, level in own_levels.items():
            logging.getLogger(name).setLevel(level)
        file_handler.close()
        log_file.close()


def _private_streams(streams: tuple[TextIO, TextIO], redirected: list, log_file) -> tuple[TextIO, TextIO]:
    """The console's own copies of stdout/stderr; the process's descriptors 1 and 2 then point at the log.

    A stream that writes to descriptor 1 (2) gets a private duplicate of it first; a stream without
    one of its own (pytest's capture) is used as it is.
    """
    out: list[TextIO] = []
    for fd, stream in zip((1, 2), streams):
        try:
            on_fd = stream.fileno() == fd
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            on_fd = False
        try:
            os.fstat(fd)
        except OSError:
            out.append(stream)
            continue
        stream.flush()
        saved = os.dup(fd)
        own = os.fdopen(os.dup(fd), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8")
        out.append(own if on_fd else stream)
        os.dup2(log_file.fileno(), fd)
        redirected.append((fd, saved, own))
    return out[0], out[1]


# --------------------------------------------------------------------------------------------------
# Ray


def ensure_ray(address: str | None = None, include_dashboard: bool | None = False) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start a local Ray: quiet, token auth, and by
    default no dashboard (the batch jobs need none; `labeler serve` keeps Ray's default)."""
    import ray  # noqa: PLC0415

    if ray.is_initialized():
        return
    verbose = _VERBOSE["on"]
    local = address is None and not os.environ.get("RAY_ADDRESS")
    kwargs: dict = {"address": address, "log_to_driver": verbose}
    chose_auth = False
    if local:
        kwargs["include_dashboard"] = include_dashboard
        chose_auth = _choose_token_auth()
    try:
        ray.init(**kwargs)
    finally:
        if chose_auth:  # the local Ray's processes have it now; later subprocesses (other clusters) must not
            os.environ.pop(AUTH_MODE_ENV, None)
    quiet_ray_data(verbose)


def _choose_token_auth() -> bool:
    """Token auth for a new local Ray, chosen explicitly (Ray 2.60 chooses it too, with a warning).

    The mode must reach this process's cached Ray config as well as the environment the local Ray's
    processes inherit, which is what Ray's own `_enable_token_auth` does; a mode already set in the
    environment is left alone.
    """
    if os.environ.get(AUTH_MODE_ENV) is not None:
        return False
    try:
        from ray._private.authentication.authentication_token_setup import _enable_token_auth  # noqa: PLC0415
    except ImportError:  # another Ray: leave the choice (and its warning) to it
        return False
    _enable_token_auth()
    return True


def quiet_ray_data(verbose: bool = False) -> None:
    """Ray Data's own progress bars off (the stage line replaces them) unless verbose."""
    import ray.data  # noqa: PLC0415

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = verbose
    ctx.print_on_execution_start = verbose
