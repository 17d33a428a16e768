"""A hostile model_id, class name or song id (issue 30, findings 7 and 8): each test reproduces what the old code let through.

- model_id is outside model_version, so an edited one passed `--expect-version` and went raw into every
  label row, /healthz and the console: terminal escape codes and newlines included;
- class names and song ids went raw into the Markdown of `labeler compare` and of the training report
  (a `|` or a newline broke the tables);
- matplotlib read `$...$` in a class name as mathtext: `labeler compare` failed with ValueError, and the
  training run drew its report before exporting its bundle, so a hostile label could cost the bundle.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labeler.bundle.info import BundleInfo, read_bundle_info
from labeler.bundle.verified import BundleError, compute_model_version, open_bundle, verify_bundle
from labeler.runtime.display import check_plain, markdown_cell, plain_text, plot_label
from tests.helpers import make_bundle

REPO = Path(__file__).resolve().parents[1]
ESC = "\x1b[31m"
HOSTILE_ID = f"evil{ESC}\nmood|$x$"
# `|` and `$` are ordinary text in data; these break Markdown tables and mathtext where shown raw.
HOSTILE_CLASSES = ["calm|quiet", "$x^$", "$x$", "tense*`<b>`"]
RAW_CONTROL = [chr(c) for c in range(32) if chr(c) != "\n"] + ["\x7f", "\u202e", "\u2028"]


def _no_raw_control(text: str, newlines_allowed: bool = True) -> bool:
    return not any(ch in text for ch in RAW_CONTROL) and (newlines_allowed or "\n" not in text)


# ------------------------------------------------------------------------------- the policy's functions


def test_plain_text_shows_control_characters_escaped_and_keeps_the_rest():
    assert plain_text(f"a{ESC}b\r\n\u202ec") == "a\\x1b[31mb\\r\\n\\u202ec"
    assert plain_text("line one\nline two\ttab", newlines=True) == "line one\nline two\\ttab"
    assert plain_text("Fröhlich 😀 | $x$") == "Fröhlich 😀 | $x$"  # printable text is left as it is


def test_markdown_cell_is_one_literal_line():
    cell = markdown_cell("a|b\nc`d`[x](http://e)<img>&#8238;$m$*_~\\")
    assert "\n" not in cell
    assert cell == "a\\|b\\\\nc\\`d\\`\\[x\\](http://e)\\<img\\>\\&#8238;\\$m\\$\\*\\_\\~\\\\"


def test_plot_label_is_never_mathtext():
    from matplotlib import cbook

    for name in HOSTILE_CLASSES + ["a\\$b$c$"]:
        assert not cbook.is_math_text(plot_label(name)), name
    assert plot_label("a\\$b$c$").replace("\\$", "$") == "a\\$b$c$"  # what matplotlib then draws: the name


def test_check_plain_refuses_control_characters_and_allows_markdown_specials():
    for bad in (HOSTILE_ID, "a\nb", "a\u202eb", "", "x" * 201, None, 3):
        with pytest.raises(ValueError) as caught:
            check_plain(bad, "model_id")
        assert _no_raw_control(str(caught.value), newlines_allowed=False)
    for good in HOSTILE_CLASSES + ["Cluster 3", "mood-4q-fusion-cnn6-minilm", "Fröhlich"]:
        assert check_plain(good, "class name") == good


# ------------------------------------------------------ model_id and classes: refused where a bundle is read


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> str:
    return make_bundle(tmp_path_factory.mktemp("bundles"))


def _edited(bundle: str, dst: Path, resign: bool, **changes) -> str:
    shutil.copytree(bundle, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(changes)
    if resign:
        config["model_version"] = compute_model_version(config)
    (dst / "config.json").write_text(json.dumps(config))
    return str(dst)


def test_edited_model_id_passes_the_version_pin_but_is_refused_by_every_reader(bundle, tmp_path):
    """The old code returned the raw id: it went into every label row, /healthz and the summary line."""
    from labeler.bundle.store import load_bundle

    version = verify_bundle(bundle).model_version
    root = _edited(bundle, tmp_path / "b", resign=False, model_id=HOSTILE_ID)
    assert compute_model_version(json.loads(Path(root, "config.json").read_text())) == version  # outside the hash
    # the driver (label job, serve's run_cli), Serve's replica (/healthz) and the Predictor all read through these
    for read in (lambda: read_bundle_info(root, expect_version=version),
                 lambda: BundleInfo.from_verified(open_bundle(root, version)),
                 lambda: load_bundle(root, expect_version=version)):
        with pytest.raises(BundleError, match="model_id") as caught:
            read()
        assert _no_raw_control(str(caught.value), newlines_allowed=False)


def test_cli_refuses_a_hostile_model_id_in_one_clean_line(bundle, tmp_path):
    root = _edited(bundle, tmp_path / "b", resign=False, model_id=HOSTILE_ID)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "label", "--catalogue", str(tmp_path / "c.parquet"),
                           "--bundle", root, "--output", str(tmp_path / "labels")], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "model_id" in lines[0] and "\x1b" not in proc.stderr + proc.stdout, proc.stderr
    assert not (tmp_path / "labels").exists()


def test_resigned_bundle_with_control_characters_in_a_class_name_is_refused(bundle, tmp_path):
    root = _edited(bundle, tmp_path / "b", resign=True, classes=["Q1", f"Q2{ESC}", "Q3\nQ5", "Q4"])
    with pytest.raises(BundleError, match="class name"):
        read_bundle_info(root)


def test_export_refuses_what_every_reader_would_refuse(tmp_path):
    with pytest.raises(BundleError, match="model_id"):
        make_bundle(tmp_path, model_id=f"m{ESC}")
    assert not any(p.name.startswith("bundle-") and (p / "config.json").exists() for p in tmp_path.iterdir())


def test_manifest_class_names_with_control_characters_stop_prepare_and_train_before_any_work():
    from train.data.manifest import label_kind

    def table(labels):
        return pa.table({"dataset": ["d"] * len(labels), "quadrant": pa.nulls(len(labels), pa.int8()), "label": labels})

    assert label_kind(table(HOSTILE_CLASSES))[1] == sorted(HOSTILE_CLASSES)  # | and $ are fine in data
    with pytest.raises(ValueError, match="class name") as caught:
        label_kind(table(["calm", f"sad{ESC}\nrow"]))
    assert _no_raw_control(str(caught.value), newlines_allowed=False)


def test_console_lines_carry_no_raw_control_characters():
    from labeler.runtime.console import Console

    out, err = io.StringIO(), io.StringIO()
    console = Console(out=out, err=err, tty=False)
    console.print(f"labels of model {HOSTILE_ID}\nsecond line")
    console.error(f"labeler label: error: {HOSTILE_ID}")
    # a newline only starts a line (model_id and class names never hold one: refused above); nothing
    # reaches the terminal that drives it
    assert "\x1b" not in out.getvalue() + err.getvalue() and "\\x1b[31m" in out.getvalue() + err.getvalue()
    assert out.getvalue().endswith("second line\n")


# ------------------------------------------------------------------------------ labeler compare


def _write_classes_version(output: Path, version: str, classes: list[str], top: list[int], ids: list[str]) -> None:
    info = BundleInfo(uri="/b", model_id="m", model_version=version, mode="classes", classes=tuple(classes),
                      branch="audio", featurizer={}, lyrics={})
    probs = np.full((len(top), len(classes)), 0.1 / (len(classes) - 1), np.float32)
    probs[np.arange(len(top)), top] = 0.9
    batch = {"song_id": np.array(ids, dtype=object), "probs": probs, "error": np.array([None] * len(top), dtype=object)}
    from labeler.inference.label_rows import label_rows

    part = output / f"version={version}"
    part.mkdir(parents=True)
    pq.write_table(label_rows(batch, info, datetime.now(UTC)), part / "part-0.parquet")
    (part / "_SUCCESS.json").write_text("{}")


def _table_after(markdown: str, heading: str) -> list[str]:
    lines = markdown.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    first = next(i for i in range(start, len(lines)) if lines[i].startswith("|"))  # the heading may be the table's
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[first:end]


def _cells(row: str) -> int:
    """Cells of a GFM table row: `|` not escaped by a backslash separates them."""
    count, escaped = 0, False
    for ch in row:
        if ch == "|" and not escaped:
            count += 1
        escaped = ch == "\\" and not escaped
    return count - 1


def test_compare_with_hostile_class_names_and_song_ids_draws_and_keeps_one_row_per_class(tmp_path):
    from labeler.label_job.compare import compare_versions

    classes = HOSTILE_CLASSES
    ids = [f"song{ESC}|{i}\n" if i % 2 else f"s{i}" for i in range(8)]
    _write_classes_version(tmp_path, "aaaa1111", classes, [0, 1, 2, 3, 0, 1, 2, 3], ids)
    _write_classes_version(tmp_path, "bbbb2222", classes, [1, 1, 2, 0, 0, 3, 2, 3], ids)
    result, files = compare_versions(str(tmp_path), "aaaa", "bbbb", top=8)  # the old plot raised ValueError
    assert os.path.getsize(files["png"]) > 5_000
    assert set(result["classes"]) == set(classes)  # the JSON keeps the names as they are
    md = Path(files["markdown"]).read_text()
    assert _no_raw_control(md)
    transitions = _table_after(md, "## Transitions")
    assert len(transitions) == 2 + len(classes) and {_cells(r) for r in transitions} == {1 + len(classes)}
    per_class = _table_after(md, "## Per class")
    assert len(per_class) == 2 + len(classes) and {_cells(r) for r in per_class} == {6}
    changed = _table_after(md, "## Songs that changed most")
    assert len(changed) == 2 + len(result["changed_most"]) and {_cells(r) for r in changed} == {6}
    assert "calm\\|quiet" in md and "\\$x^\\$" in md


def test_compare_plot_that_fails_is_left_out_and_said(tmp_path, monkeypatch, capsys):
    from jobs.commands import compare as command
    from labeler.label_job import compare

    _write_classes_version(tmp_path, "aaaa1111", ["a", "b"], [0, 1], ["s0", "s1"])
    _write_classes_version(tmp_path, "bbbb2222", ["a", "b"], [1, 1], ["s0", "s1"])

    def broken(result):
        raise ValueError("no font")

    monkeypatch.setattr(compare, "plot", broken)
    result, files = compare.compare_versions(str(tmp_path), "aaaa", "bbbb")
    assert "png" not in files and result["label_changes"] == 1
    md = Path(files["markdown"]).read_text()
    assert "plot is missing" in md and "no font" in md and "![transitions]" not in md
    args = argparse.Namespace(output=str(tmp_path), from_version="aaaa", to_version="bbbb", report=None,
                                      top=20, json=False)
    assert command.run_cli(args) == 0
    assert "the plot could not be drawn" in capsys.readouterr().out


# ------------------------------------------------------------------------------ the training report


def _results(classes: list[str]) -> dict:
    from train.score.metrics import classification_metrics

    rng = np.random.default_rng(0)
    k = len(classes)

    def fold():
        y = rng.integers(0, k, 30)
        probs = rng.dirichlet(np.ones(k), 30)
        probs[np.arange(30), y] += 1.0
        return classification_metrics(y, probs / probs.sum(axis=1, keepdims=True), classes)

    return {"mode": "classes", "classes": classes,
            "branches": {"audio": {"folds": {0: fold(), 1: fold()},
                                   "curves": {0: {"epoch": [1, 2], "train_loss": [1.0, 0.8], "val_macro_f1": [0.3, 0.4]}}}},
            "baselines": {}, "calibration": {}, "provenance": {"manifest": f"m{ESC}\n```\nx"}}


def test_training_report_with_hostile_class_names_draws_and_keeps_one_row_per_class(tmp_path):
    from train.score.report import write_report

    classes = HOSTILE_CLASSES
    written = write_report(str(tmp_path), _results(classes))  # the old plots raised ValueError on "$x^$"
    assert {"confusion_audio.png", "macro_f1_per_fold.png", "curves_audio.png"} <= set(written)
    assert json.loads((tmp_path / "report.json").read_text())["plots_missing"] == {}
    md = (tmp_path / "report.md").read_text()
    assert _no_raw_control(md)
    per_class = _table_after(md, "Per class, pooled")
    assert len(per_class) == 2 + len(classes) and {_cells(r) for r in per_class} == {6}
    confusion = _table_after(md, "Confusion matrix summed")
    assert len(confusion) == 2 + len(classes) and {_cells(r) for r in confusion} == {1 + len(classes)}
    assert sum(line.startswith("```") for line in md.splitlines()) == 2  # the provenance block stays one block


def test_metrics_markdown_escapes_class_names():
    from train.score.report import metrics_markdown

    results = _results(["a|b", "c\nd"])
    text = metrics_markdown(results["branches"]["audio"]["folds"][0], ["a|b", "c\nd"])
    rows = _table_after(text, "| class | precision")
    assert len(rows) == 4 and {_cells(r) for r in rows} == {5}


def test_a_plot_that_fails_is_left_out_and_the_report_says_so(tmp_path, monkeypatch):
    from train.score import report

    def broken(*args, **kwargs):
        raise ValueError("mathtext says no")

    monkeypatch.setattr(report, "_plot_confusion", broken)
    written = report.write_report(str(tmp_path), _results(["a", "b"]))
    assert "confusion_audio.png" not in written and "macro_f1_per_fold.png" in written
    assert json.loads((tmp_path / "report.json").read_text())["plots_missing"]["confusion_audio"].startswith("ValueError")
    md = (tmp_path / "report.md").read_text()
    assert "Plot missing: audio confusion could not be drawn" in md and "mathtext says no" in md


# ------------------------------------------------------------ the end of a training run: bundle first


def _fake_export(calls: list):
    def export_best(entry, branch, bundle_uri, provenance, results):
        calls.append("export")
        Path(bundle_uri).mkdir(parents=True)
        (Path(bundle_uri) / "config.json").write_text("{}")
        return bundle_uri

    return export_best


def test_finished_run_exports_its_bundle_before_the_report_and_survives_a_failing_plot(tmp_path, monkeypatch):
    from train.fit import run
    from train.score import report

    calls: list = []
    monkeypatch.setattr(run, "export_best", _fake_export(calls))

    def broken(*args, **kwargs):
        calls.append("plot")
        raise ValueError("bad class name")

    monkeypatch.setattr(report, "_plot_fold_bars", broken)
    results = _results(["$x^$", "b"])
    result = run.finish(str(tmp_path), {}, "audio", {}, results, {"audio": {0: "f0"}}, started=0.0)
    assert calls == ["export", "plot"]
    assert (tmp_path / "bundle" / "config.json").exists() and result.bundle_uri.endswith("bundle")
    assert "Plot missing: macro-F1 per fold" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "train_result.json").read_text())["bundle_uri"] == result.bundle_uri


def test_a_report_that_fails_outright_still_leaves_the_bundle(tmp_path, monkeypatch):
    from train.fit import run
    from train.score import report

    calls: list = []
    monkeypatch.setattr(run, "export_best", _fake_export(calls))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(report, "write_report", broken)
    with pytest.raises(OSError, match="disk full"):
        run.finish(str(tmp_path), {}, "audio", {}, _results(["a", "b"]), {}, started=0.0)
    assert calls == ["export"] and (tmp_path / "bundle" / "config.json").exists()


def test_a_labels_plot_that_fails_does_not_fail_the_labelling_run(tmp_path, monkeypatch):
    from labeler.contracts.schemas import LABELS, conform
    from labeler.label_job import summary as summary_mod
    from labeler.label_job.layout import OutputLayout

    version = "0123456789abcdef"
    layout = OutputLayout(str(tmp_path / "labels"), version)
    Path(layout.partition_uri).mkdir(parents=True)
    ids = ["s0", "s1"]
    cols = {"song_id": pa.array(ids), "quadrant": pa.array(["Q1", "Q2"]), "model_id": pa.array(["m"] * 2),
            "model_version": pa.array([version] * 2),
            "labelled_at": pa.array([datetime.now(UTC)] * 2, pa.timestamp("us", tz="UTC"))}
    table = pa.table({f.name: cols.get(f.name, pa.nulls(2, f.type)) for f in LABELS.schema})
    pq.write_table(conform(table, LABELS), str(Path(layout.partition_uri) / "part-test-0000.parquet"))

    def broken(*args, **kwargs):
        raise ValueError(f"bad{ESC} title")

    monkeypatch.setattr(summary_mod, "plot_labels", broken)
    summary = summary_mod.LabelSummary(catalogue_uri="c.parquet", output_uri=layout.output_uri,
                                       partition_uri=layout.partition_uri, model_id="m", model_version=version,
                                       run_id="r", catalogue_rows=2, already_labelled=0)
    done = summary_mod.finish(layout, summary, pa.array(ids), datetime.now(UTC), str(tmp_path / "p.png"), None)
    assert done.plot is None and "ValueError" in done.plot_error and "\x1b" not in done.plot_error
    assert "plot: not drawn" in done.to_text()
