"""Wall time of `labeler demo` on two cores, per stage, with the machine's load beside it.

    python bench/bench_demo.py [--cores 0,1] [--workdir /tmp/bench_demo] [--out /tmp/bench_demo.json] [-- demo flags]

Runs the real command in its own process (pinned to `--cores` with taskset when it exists, so the
demo's local Ray sees and uses two cores), and records its total wall time, the per-stage times it
prints ("time: synthesise .. s, train .. s, label .. s"), its console line count, and the 1-minute
load average before and after. A figure taken on a loaded machine says so in its load columns:
compare runs only at similar load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", default="0,1", help="CPU list for taskset (default %(default)s)")
    parser.add_argument("--workdir", default="bench/results/bench_demo")
    parser.add_argument("--out", default="bench/results/bench_demo.json")
    parser.add_argument("demo_args", nargs="*", help="extra `labeler demo` flags (after --)")
    args = parser.parse_args(argv)

    script = Path(sys.executable).parent / "labeler"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "jobs.cli"]
    command += ["demo", "--workdir", args.workdir, *args.demo_args]
    if shutil.which("taskset"):
        command = ["taskset", "-c", args.cores, *command]
    shutil.rmtree(args.workdir, ignore_errors=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)  # noqa: S603 - this venv's labeler, fixed argv
    seconds = time.perf_counter() - started
    out = result.stdout + result.stderr
    stages = {k: float(v) for k, v in re.findall(r"(synthesise|train|label) (\d+) s", out.split("time:")[-1])}
    record = {
        "command": " ".join(command), "returncode": result.returncode, "wall_s": round(seconds, 1),
        "stages_s": stages, "console_lines": len(out.splitlines()),
        "load1_before": round(load_before, 1), "load1_after": round(os.getloadavg()[0], 1),
        "cpus_on_machine": os.cpu_count(),
    }
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
    if result.returncode:
        print(out[-3000:], file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
