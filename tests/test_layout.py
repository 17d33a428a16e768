"""The layout's promises, checked statically (ast; nothing is imported or run).

- `labeler/` is the runtime library that labels: it never imports `train/`, `jobs/`, `bench/` or the
  development tool `synth/`, so a labelling worker needs none of them and the dependency arrows
  point one way (jobs -> train -> labeler). A lazy import inside a function counts too: it is
  still a dependency.
- Command-line parsing lives in `jobs/`: no module of labeler/, train/ or synth/ imports argparse.
- Modules have one job: every module in labeler/, train/, jobs/ and synth/ is under MAX_LINES lines.
- Test helpers have one home (tests/helpers.py, tests/conftest.py and the harness modules beside them):
  no test file imports another test file.

The modules still too long are listed by name, each with the step that removes it; one that is no
longer needed fails the test, so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400
FORBIDDEN_IN_LIBRARY = ("train", "jobs", "bench", "synth")

# Modules still over MAX_LINES, until the split named beside each lands.
TOO_LONG_FOR_NOW = {
}


def _modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _imported_roots(path: Path) -> set[str]:
    """Top-level names of every absolute import in the module, at any depth (lazy imports included)."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_library_imports_neither_train_nor_jobs_nor_bench_nor_synth():
    offenders = {
        _rel(path): sorted(roots)
        for path in _modules("labeler")
        if (roots := _imported_roots(path) & set(FORBIDDEN_IN_LIBRARY))
    }
    assert not offenders, f"labeler/ must not import {FORBIDDEN_IN_LIBRARY}: {offenders}"


def test_command_line_parsing_lives_in_jobs():
    parsing = sorted(_rel(path) for path in _modules("labeler", "train", "synth") if "argparse" in _imported_roots(path))
    assert not parsing, f"move these parsers to jobs/commands/: {parsing}"


@pytest.mark.parametrize("package", ["labeler", "train", "jobs", "synth"])
def test_every_module_is_short(package):
    lengths = {_rel(path): len(path.read_text().splitlines()) for path in _modules(package)}
    too_long = {name: n for name, n in lengths.items() if n >= MAX_LINES and name not in TOO_LONG_FOR_NOW}
    assert not too_long, f"modules of {MAX_LINES}+ lines (split them by job): {too_long}"
    fixed = sorted(name for name in TOO_LONG_FOR_NOW if name in lengths and lengths[name] < MAX_LINES)
    gone = sorted(name for name in TOO_LONG_FOR_NOW if name.startswith(package + "/") and name not in lengths)
    assert not fixed and not gone, f"drop these from TOO_LONG_FOR_NOW (short now or moved): {fixed + gone}"


def test_the_guard_sees_lazy_imports(tmp_path):
    """The check reads imports inside functions too: `labeler/cli.py` once reached train/ that way."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from train.run import train\n    import jobs.cli\n")
    assert _imported_roots(module) == {"train", "jobs"}


def _imported_modules(path: Path) -> set[str]:
    """Full dotted names of every absolute import in the module, at any depth."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_test_file_imports_another():
    offenders = {
        _rel(path): sorted(name for name in _imported_modules(path)
                           if name.split(".")[-1].startswith("test_") and name.split(".")[0] in ("tests", name))
        for path in sorted((ROOT / "tests").glob("*.py"))
    }
    offenders = {name: imports for name, imports in offenders.items() if imports}
    assert not offenders, f"move what these share to tests/helpers.py: {offenders}"
