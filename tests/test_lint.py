"""The code is clean under the pinned linter (ruff: pyflakes, bugbear, isort, pyupgrade and bandit's security
rules) and the pinned type checker (mypy on labeler/), both configured in pyproject.toml; part of the fast tier,
so a lint or type finding fails the edit loop too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).parent / "ruff"
MYPY = Path(sys.executable).parent / "mypy"


def test_ruff_finds_nothing():
    assert RUFF.exists(), f"{RUFF} is missing: run `bash scripts/setup.sh --test` (ruff is a pinned test dependency)"
    out = subprocess.run([str(RUFF), "check", "--no-cache", "--output-format", "concise", "labeler", "train", "jobs",
                          "synth", "bench", "scripts", "tests"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]


def test_ruff_sees_a_planted_finding(tmp_path):
    """The check really runs the security rules: a hard-coded /tmp path and a shell subprocess are findings."""
    module = tmp_path / "planted.py"
    module.write_text('import subprocess\n\nsubprocess.run("ls", shell=True)\nWORKDIR = "/tmp/shared"\n')
    out = subprocess.run([str(RUFF), "check", "--no-cache", "--output-format", "concise", "--config",
                          str(ROOT / "pyproject.toml"), str(module)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "S602" in out.stdout and "S108" in out.stdout, out.stdout + out.stderr


def test_mypy_finds_nothing():
    """`mypy` with pyproject.toml's [tool.mypy] (packages = labeler); its cache (.mypy_cache) makes reruns fast."""
    assert MYPY.exists(), f"{MYPY} is missing: run `bash scripts/setup.sh --test` (mypy is a pinned test dependency)"
    out = subprocess.run([str(MYPY)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:]


def test_mypy_sees_a_planted_finding(tmp_path):
    """The check really type-checks: a str passed where an int is declared is a finding."""
    module = tmp_path / "planted.py"
    module.write_text('def double(n: int) -> int:\n    return 2 * n\n\n\ndouble("2")\n')
    out = subprocess.run([str(MYPY), "--config-file", str(ROOT / "pyproject.toml"), "--no-incremental", str(module)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "[arg-type]" in out.stdout, out.stdout + out.stderr
