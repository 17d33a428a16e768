"""What a person sees: one live progress line per stage, whole-line events, a summary.

A command runs inside labeler.runtime.session.session(), which sends everything else (Ray's logs and
progress, library output) to a log file and hands the command a `Console`:

- The command talks to the person through the `Console` it is given: `print()` for whole lines and
  `stage()` for a live progress line (songs done/total, songs/s, ETA): a redrawn bar on a terminal,
  a plain line every `interval` seconds when the output is a file or a pipe.
- `print()` and `error()` show every control character but the newline escaped
  (labeler.runtime.display.plain_text): a name read from a file or a bundle cannot drive the terminal.
- Work running in Ray tasks and actors reports to a stage through `stage.sink` (`ProgressSink`, keys
  in the cluster's GCS key-value store): `report(sink, n)` adds songs done, `report_event(sink, text)`
  prints a line (one per training epoch). The driver polls it twice a second. A sink of None reports nothing, so
  library code called without a console (tests, notebooks) needs no special case.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from labeler.runtime.display import plain_text

BAR_WIDTH = 24


# --------------------------------------------------------------------------------------------------
# formatting (pure)


def format_duration(seconds: float) -> str:
    """'42 s', '3:07', '1:02:03'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_progress(label: str, done: int, total: int | None, elapsed: float, unit: str = "songs",
                    bar_width: int = 0, final: bool = False) -> str:
    """One progress line: 'label [#####-----] 120/300 songs  10.1 songs/s  ETA 18 s' (no bar when bar_width=0)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    parts = [label]
    if bar_width and total:
        filled = min(bar_width, int(bar_width * done / total))
        parts.append("[" + "#" * filled + "-" * (bar_width - filled) + "]")
    parts.append(f"{done}/{total} {unit}" if total is not None else f"{done} {unit}")
    if done and elapsed > 0:
        parts.append(f"{rate:.1f} {unit}/s" if rate >= 0.1 else f"{60 * rate:.1f} {unit}/min")
    if final or (total and done >= total):
        parts.append(f"in {format_duration(elapsed)}")
    elif total and done and rate > 0:
        parts.append(f"ETA {format_duration((total - done) / rate)}")
    else:
        parts.append(f"{format_duration(elapsed)} elapsed")
    return "  ".join(parts)


# --------------------------------------------------------------------------------------------------
# the console


class Console:
    """Whole lines and live progress lines for a person, on `out` (errors on `err`)."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, tty: bool | None = None,
                 interval: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 log_path: str | None = None, verbose: bool = False, silent: bool = False) -> None:
        self.quiet = silent
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.tty = bool(tty if tty is not None else getattr(self.out, "isatty", lambda: False)())
        self.interval = interval
        self.clock = clock
        self.log_path = log_path
        self.verbose = verbose
        self._live: str | None = None  # the progress line now drawn (terminal only)
        self._lock = threading.RLock()

    @classmethod
    def silent(cls) -> Console:
        """A console that shows nothing and asks workers for nothing (library calls without a CLI)."""
        return cls(out=_Null(), err=_Null(), tty=False, silent=True)

    def print(self, text: str = "") -> None:
        """Whole lines; any control character in `text` but "\\n" is shown escaped (labeler.runtime.display)."""
        text = plain_text(text, newlines=True)
        with self._lock:
            self._clear_live()
            self.out.write(text + "\n")
            self._redraw_live()
            self.out.flush()

    def error(self, text: str) -> None:
        text = plain_text(text, newlines=True)
        with self._lock:
            self._clear_live()
            self.err.write(text + "\n")
            self.err.flush()

    def stage(self, label: str, total: int | None, unit: str = "songs", remote: bool = False) -> Stage:
        """A live progress line; with remote=True, `stage.sink` is an actor that Ray tasks report to."""
        return Stage(self, label, total, unit, remote and not self.quiet)

    # live line (terminal)
    def _draw(self, line: str) -> None:
        with self._lock:
            width = _terminal_width()
            self._live = line[: width - 1]
            self.out.write("\r\x1b[2K" + self._live)
            self.out.flush()

    def _clear_live(self) -> None:
        if self._live is not None and self.tty:
            self.out.write("\r\x1b[2K")

    def _redraw_live(self) -> None:
        if self._live is not None and self.tty:
            self.out.write(self._live)

    def _end_live(self, line: str) -> None:
        with self._lock:
            if self.tty:
                self.out.write("\r\x1b[2K")
            self._live = None
            self.out.write(line + "\n")
            self.out.flush()


class _Null(io.StringIO):
    def write(self, text: str) -> int:
        return len(text)


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 100
    except (OSError, ValueError):
        return 100


class Stage:
    """One stage's progress line. Count with `advance()` on the driver or `report(stage.sink, n)` remotely."""

    POLL_SECONDS = 0.5

    def __init__(self, console: Console, label: str, total: int | None, unit: str, remote: bool) -> None:
        self.console, self.label, self.total, self.unit = console, label, total, unit
        self.done = 0
        self.started = console.clock()
        self._last_line_at = self.started
        self._closed = False
        self.sink: ProgressSink | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if remote:
            self.sink = ProgressSink(uuid.uuid4().hex)
            self._thread = threading.Thread(target=self._poll, name=f"progress-{label}", daemon=True)
            self._thread.start()
        self._show(force=True)

    def advance(self, n: int = 1) -> None:
        self.done += int(n)
        self._show()

    def event(self, text: str) -> None:
        self.console.print(text)

    def close(self, summary: str | None = None) -> None:
        """End the line (final counts), then print `summary` if given."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._drain()
        if self.sink is not None:
            self.sink.discard()
        elapsed = self.console.clock() - self.started
        self.console._end_live(format_progress(self.label, self.done, self.total, elapsed, self.unit, final=True,
                                               bar_width=BAR_WIDTH if self.console.tty else 0))
        if summary:
            self.console.print(summary)

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _show(self, force: bool = False) -> None:
        now = self.console.clock()
        elapsed = now - self.started
        if self.console.tty:
            self.console._draw(format_progress(self.label, self.done, self.total, elapsed, self.unit, bar_width=BAR_WIDTH))
        elif force or now - self._last_line_at >= self.console.interval:
            self._last_line_at = now
            self.console.print(format_progress(self.label, self.done, self.total, elapsed, self.unit))

    def _drain(self) -> None:
        if self.sink is None:
            return
        count, events = self.sink.drain()
        for text in events:
            self.console.print(text)
        if count:
            self.advance(count)

    def _poll(self) -> None:
        while not self._stop.wait(self.POLL_SECONDS):
            try:
                self._drain()
            except Exception:  # noqa: BLE001 - progress must never break the job it watches
                logging.getLogger(__name__).debug("progress poll failed", exc_info=True)
                return
            self._show()  # a terminal's line keeps its elapsed time fresh; elsewhere, one line per interval


def report(sink: ProgressSink | None, n: int) -> None:
    """From a Ray task or actor: `n` more songs are done in the sink's stage (no-op for None)."""
    if sink is not None and n:
        sink.add(int(n))


def report_event(sink: ProgressSink | None, text: str) -> None:
    """From a Ray task or actor: print `text` as a whole line above the sink's stage (no-op for None)."""
    if sink is not None:
        sink.event(text)


@dataclass(frozen=True)
class ProgressSink:
    """Where Ray tasks and actors report to a driver's stage: keys in the cluster's GCS key-value store.

    No actor: an actor needs a worker process of its own, whose start competes with the job's own
    workers on a small or busy cluster; the GCS is already there. A report is one small put under a unique
    key (counts ride in the key,
    so the driver need not read values); the driver lists the stage's keys, reads the events, and
    deletes what it read. Reporting never raises: progress must not break the work it watches.
    """

    stage_id: str

    NAMESPACE = "mood-labeler-progress"

    def _key(self, kind: str, suffix: str) -> bytes:
        return f"{self.stage_id}/{kind}/{suffix}/{uuid.uuid4().hex[:12]}".encode()

    def add(self, n: int) -> None:
        self._put(self._key("n", str(int(n))), b"")

    def event(self, text: str) -> None:
        self._put(self._key("e", f"{time.time_ns():020d}"), text.encode("utf-8"))

    def _put(self, key: bytes, value: bytes) -> None:
        try:
            from ray.experimental.internal_kv import _internal_kv_put  # noqa: PLC0415

            _internal_kv_put(key, value, namespace=self.NAMESPACE)
        except Exception:  # noqa: BLE001
            logging.getLogger(__name__).debug("progress report failed", exc_info=True)

    def drain(self) -> tuple[int, list[str]]:
        """(songs reported since the last drain, event lines in the order they were reported)."""
        from ray.experimental import internal_kv as kv  # noqa: PLC0415

        count, events = 0, []
        for key in sorted(kv._internal_kv_list(f"{self.stage_id}/", namespace=self.NAMESPACE)):
            _, kind, suffix, _ = key.decode().split("/", 3)
            if kind == "n":
                count += int(suffix)
            else:
                events.append((kind, suffix, kv._internal_kv_get(key, namespace=self.NAMESPACE) or b""))
            kv._internal_kv_del(key, namespace=self.NAMESPACE)
        return count, [value.decode("utf-8", errors="replace") for _, _, value in events]

    def discard(self) -> None:
        from ray.experimental.internal_kv import _internal_kv_del  # noqa: PLC0415

        _internal_kv_del(f"{self.stage_id}/".encode(), del_by_prefix=True, namespace=self.NAMESPACE)
