"""The layout's promises, checked statically (ast; nothing is imported or run).

- `labeler/` is the runtime library that labels: it never imports `train/`, `jobs/`, `bench/` or the
  development tool `synth/`, so a labelling worker needs none of them and the dependency arrows
  point one way (jobs -> train -> labeler). A lazy import inside a function counts too: it is
  still a dependency.
- Command-line parsing lives in `jobs/`: no module of labeler/, train/ or synth/ imports argparse.
- Modules have one job: every module in labeler/, train/, jobs/ and synth/ is under MAX_LINES lines.
- No import circles among the modules of labeler/, train/, jobs/ and synth/ (lazy and type-only imports
  count: a circle means a concept lives in the wrong module).
- The folders follow the data: labeler/ and train/ hold only stage packages (each with a docstring that
  says what the stage does) beside their `__init__.py`, no loose modules.
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


@pytest.mark.parametrize("package", ["labeler", "train"])
def test_packages_hold_stage_folders_not_loose_modules(package):
    loose = sorted(p.name for p in (ROOT / package).glob("*.py") if p.name != "__init__.py")
    assert not loose, f"{package}/ keeps its modules in stage folders: move {loose} into one"
    undocumented = sorted(_rel(init) for init in (ROOT / package).glob("*/__init__.py")
                          if not ast.get_docstring(ast.parse(init.read_text())))
    assert not undocumented, f"each stage package says what it does in its docstring: {undocumented}"


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
    module.write_text("def f():\n    from train.fit.run import train\n    import jobs.cli\n")
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


def _module_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """{module: modules of `packages` it imports} (any depth, relative imports resolved; a package's
    __init__ importing its own submodules is not an edge)."""
    paths = {}
    for path in sorted(p for package in packages for p in (root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def known(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(known(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                targets.update(known(f"{base}.{alias.name}") or known(base) for alias in node.names)
        graph[name] = {t for t in targets if t and t != name and not (path.name == "__init__.py" and t.startswith(name + "."))}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles():
    circles = _circles(_module_graph(ROOT, ("labeler", "train", "jobs", "synth")))
    assert not circles, f"import circles (move the shared concept to the module it belongs to): {circles}"


def test_the_circle_guard_sees_lazy_relative_and_type_only_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from pkg import a\n")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import f\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    assert _circles(_module_graph(tmp_path, ("pkg",))) == [["pkg.a", "pkg.b"]]
