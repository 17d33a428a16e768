"""labeler.runtime.console: progress lines (terminal and not), the session's log file and redirection."""

from __future__ import annotations

import io
import logging
import os
import sys

from labeler.runtime import console as con
from labeler.runtime import session as ses


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_format_progress_rate_eta_and_bar():
    assert con.format_progress("label", 120, 300, 12.0) == "label  120/300 songs  10.0 songs/s  ETA 18 s"
    line = con.format_progress("label", 150, 300, 15.0, bar_width=10)
    assert line.startswith("label  [#####-----]  150/300 songs")
    assert con.format_progress("label", 300, 300, 125.0).endswith("in 2:05")
    assert con.format_progress("train audio", 0, 6, 3.0, unit="epochs") == "train audio  0/6 epochs  3 s elapsed"
    assert con.format_progress("x", 1, 100, 120.0).endswith("0.5 songs/min  ETA 3:18:00")


def test_stage_prints_periodic_lines_when_not_a_terminal():
    out, clock = io.StringIO(), FakeClock()
    console = con.Console(out=out, err=out, tty=False, interval=10.0, clock=clock)
    with console.stage("label", total=100) as stage:
        for _ in range(30):
            clock.now += 1.0
            stage.advance(3)
        stage.event("an event line")
    lines = out.getvalue().splitlines()
    # the first line at 0 s, one every 10 s, the event, then the final line
    assert lines[0] == "label  0/100 songs  0 s elapsed"
    assert sum(line.startswith("label  ") for line in lines) == 5
    assert "an event line" in lines and lines[-1] == "label  90/100 songs  3.0 songs/s  in 30 s"
    assert "\r" not in out.getvalue()


def test_stage_redraws_one_line_on_a_terminal():
    out, clock = io.StringIO(), FakeClock()
    console = con.Console(out=out, err=out, tty=True, clock=clock)
    stage = console.stage("featurise", total=4)
    clock.now = 2.0
    stage.advance(2)
    console.print("a line above the bar")
    stage.close()
    text = out.getvalue()
    assert text.count("\n") == 2  # the printed line and the final progress line; redraws use \r only
    assert "a line above the bar\n" in text and text.rstrip().endswith("featurise  [" + "#" * 12 + "-" * 12 + "]  2/4 songs  1.0 songs/s  in 2 s")


def test_silent_console_asks_workers_for_nothing():
    stage = con.Console.silent().stage("label", total=3, remote=True)
    assert stage.sink is None
    con.report(None, 5)  # no-ops
    con.report_event(None, "x")
    stage.close()


def test_session_sends_logs_and_output_to_the_log_file(tmp_path, capfd):
    with ses.session(ses.SessionOptions("unit", log_dir=str(tmp_path))) as console:
        print("library chatter")
        logging.getLogger("ray.data").info("ray says something")
        logging.getLogger("labeler.x").info("our own log record")
        os.write(1, b"C++ line on fd 1\n")
        os.write(2, b"C++ line on fd 2\n")
        console.print("for the person")
        console.error("an error line")
    captured = capfd.readouterr()
    assert captured.out == "for the person\n" and captured.err == "an error line\n"
    log_text = open(console.log_path).read()  # noqa: SIM115
    for text in ("library chatter", "our own log record", "C++ line on fd 1", "C++ line on fd 2"):
        assert text in log_text
    assert console.log_path.startswith(str(tmp_path))
    print("after the session")
    assert capfd.readouterr().out == "after the session\n"  # descriptors and streams restored
    assert sys.stdout is not None and logging.getLogger().handlers is not None


def test_session_verbose_keeps_the_console(tmp_path, capfd):
    with ses.session(ses.SessionOptions("unit", verbose=True, log_dir=str(tmp_path))) as console:
        print("library chatter")
        logging.getLogger("labeler.x").info("our own log record")
    captured = capfd.readouterr()
    assert "library chatter" in captured.out and "our own log record" in captured.err
    assert "our own log record" in open(console.log_path).read()  # noqa: SIM115


def test_progress_sink_carries_counts_and_lines_from_ray_tasks(ray_local):
    sink = con.ProgressSink("test-stage")

    @ray_local.remote
    def work(i: int) -> None:
        con.report(sink, 3)
        con.report_event(sink, f"line {i}")

    ray_local.get([work.remote(i) for i in range(4)])
    count, events = sink.drain()
    assert count == 12 and sorted(events) == [f"line {i}" for i in range(4)]
    assert sink.drain() == (0, [])  # drained keys are gone
    sink.discard()
