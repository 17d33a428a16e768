"""The evaluation report of a cross-validated training run: report.json, report.md and PNG plots.

Written once per run (`write_report`), from the `results` dict the run produces: `report.json` holds
everything, machine-readable; `report.md` is what a person reads (each branch and baseline as
mean ± std over the test folds, per-class F1, pooled confusion matrices, calibration, provenance);
the plots show the confusion matrices, per-fold bars and training curves.

`results` — the dict that `write_report` takes and the training run produces (kept stable):

```
{
  "mode": "4Q",                              # Ar | Va | 4Q
  "classes": ["Q1", "Q2", "Q3", "Q4"],       # class names in probability-column order
  "branches": {                              # the trained networks: "audio", "lyrics", "fusion", ...
    "<branch>": {
      "folds": {"<k>": <metrics>, ...},      # test-fold metrics = classification_metrics(...); keys int or str
      "summary": {...},                      # optional: summarise_folds(list of fold metrics); filled in when absent
      "curves": {"<k>": {"epoch": [1, 2, ...], "train_loss": [...], "val_macro_f1": [...]}},   # optional
    },
  },
  "baselines": {"<name>": {"folds": {...}, "summary": {...}}},   # same shape as a branch (curves unused)
  "calibration": {...},                      # free-form, e.g. {"<branch>": {"<k>": {"temperature": 1.4,
                                             #   "ece_before": 0.12, "ece_after": 0.05}}}; shown as a table when
                                             #   it has that two-level shape, as JSON otherwise
  "provenance": {...},                       # free-form (manifest, preset, git commit, seed, times ...)
}
```

Fold metrics and summaries are `train.score.metrics`'s.

Class names come from the training labels, so report.md shows them escaped (labeler.runtime.display.markdown_cell:
one table row per class whatever a name holds) and the plots draw them escaped (`plot_label`: no
mathtext). A plot that cannot be drawn is logged as a warning and left out: report.md says which plot
is missing and why, report.json lists it under `plots_missing`, and `write_report` still succeeds.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labeler.io import storage
from labeler.runtime.display import markdown_cell, plain_text, plot_label
from train.score.metrics import ECE_BINS, pooled_per_class, summarise_folds

log = logging.getLogger(__name__)


REPORT_FILES = ("report.json", "report.md")


def jsonable(value: Any) -> Any:
    """numpy scalars/arrays -> Python; NaN -> None (JSON has no NaN); dict keys -> str."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fold_key(key: Any) -> tuple:
    """Folds sort numerically when their keys are numbers ("10" after "9")."""
    text = str(key)
    return (0, int(text), text) if text.lstrip("-").isdigit() else (1, 0, text)


def _complete(results: dict) -> dict:
    """Validate the results shape and fill in missing summaries; returns a JSON-safe copy."""
    for key in ("mode", "classes", "branches"):
        if key not in results:
            raise ValueError(f"results is missing {key!r} (see train.score.report's docstring for the shape)")
    out = jsonable(results)
    out.setdefault("baselines", {})
    out.setdefault("calibration", {})
    out.setdefault("provenance", {})
    for group in ("branches", "baselines"):
        for name, entry in out[group].items():
            if not isinstance(entry, dict) or "folds" not in entry:
                raise ValueError(f"results[{group!r}][{name!r}] has no 'folds' (see train.score.report's docstring)")
            entry["folds"] = {k: entry["folds"][k] for k in sorted(entry["folds"], key=_fold_key)}
            if entry["folds"] and not entry.get("summary"):
                entry["summary"] = summarise_folds(list(entry["folds"].values()))
            entry.setdefault("curves", {})
    return out


def _models(results: dict) -> list[tuple[str, str, dict]]:
    """(kind, name, entry) for every branch, then every baseline."""
    return [("branch", n, e) for n, e in results["branches"].items()] + [
        ("baseline", n, e) for n, e in results["baselines"].items()
    ]


def _summed_confusion(entry: dict, n_classes: int) -> np.ndarray:
    total = np.zeros((n_classes, n_classes), dtype=np.int64)
    for metrics in entry["folds"].values():
        total += np.asarray(metrics["confusion"], dtype=np.int64).reshape(n_classes, n_classes)
    return total


def _pm(stat: dict | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    text = f"{stat['mean']:.{digits}f}"
    return text + (f" ± {stat['std']:.{digits}f}" if stat.get("std") is not None else "")


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _confusion_markdown(confusion: np.ndarray, classes: Sequence[str]) -> list[str]:
    classes = [markdown_cell(c) for c in classes]
    lines = ["| true \\ predicted | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for name, row in zip(classes, confusion):
        lines.append(f"| **{name}** | " + " | ".join(str(int(v)) for v in row) + " |")
    return lines


def metrics_markdown(metrics: dict, classes: Sequence[str], title: str = "Evaluation") -> str:
    """One test set's metrics as Markdown (what `labeler evaluate --format markdown` prints)."""
    lines = [f"## {title}", "", f"rows scored: {metrics['n']}", ""]
    lines += ["| accuracy | macro-F1 | weighted F1 | ECE |", "|---|---|---|---|"]
    ece = metrics.get("ece")
    lines.append(
        f"| {metrics['accuracy']:.3f} | {metrics['macro_f1']:.3f} | {metrics['weighted_f1']:.3f} | "
        f"{'—' if ece is None else f'{ece:.3f}'} |"
    )
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name in classes:
        pc = metrics["per_class"][name]
        lines.append(f"| {markdown_cell(name)} | {pc['precision']:.3f} | {pc['recall']:.3f} | {pc['f1']:.3f} | {pc['support']} |")
    lines += ["", "Confusion (rows = true class):", ""]
    lines += _confusion_markdown(np.asarray(metrics["confusion"]), classes)
    return "\n".join(lines) + "\n"


def _calibration_markdown(calibration: dict) -> list[str]:
    """A table when calibration is {model: {fold: {field: number}}}, else a JSON block."""
    rows: list[tuple[str, str, dict]] = []
    try:
        for model, per_fold in calibration.items():
            for fold, fields in per_fold.items():
                if not isinstance(fields, dict) or not all(isinstance(v, (int, float)) or v is None for v in fields.values()):
                    raise TypeError
                rows.append((model, fold, fields))
    except (AttributeError, TypeError):
        return ["```json", json.dumps(calibration, indent=2), "```"]
    columns = sorted({k for _, _, fields in rows for k in fields})
    lines = ["| model | fold | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for model, fold, fields in rows:
        cells = ["—" if fields.get(c) is None else f"{fields[c]:.4g}" for c in columns]
        lines.append(f"| {model} | {fold} | " + " | ".join(cells) + " |")
    return lines


def _plot_lines(key: str, alt: str, plots: dict[str, str], missing: dict[str, str]) -> list[str]:
    """The image link of plot `key`, or the line that says it is missing and why."""
    if key in plots:
        return ["", f"![{alt}]({plots[key]})"]
    if key in missing:
        return ["", f"*Plot missing: {markdown_cell(alt)} could not be drawn ({markdown_cell(missing[key][:200])}).*"]
    return []


def render_markdown(results: dict, plots: dict[str, str], missing: dict[str, str] | None = None) -> str:
    """report.md from completed results (see `_complete`), the plot file names written beside it and the
    plots that could not be drawn ({key: reason})."""
    missing = missing or {}
    classes = results["classes"]
    lines = ["# Evaluation report", "",
             f"Mode **{results['mode']}**, classes {', '.join(markdown_cell(c) for c in classes)}.", ""]
    lines += [
        "Every fold is scored on its test fold, which played no part in training or in choosing the",
        "checkpoint. Values are mean ± sample std over folds; ECE is the expected calibration error",
        f"({ECE_BINS} bins) of the top-class probability.",
        "",
        "## Summary",
        "",
        "| model | kind | folds | accuracy | macro-F1 | weighted F1 | ECE |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, name, entry in _models(results):
        s = entry.get("summary") or {}
        lines.append(
            f"| {name} | {kind} | {s.get('n_folds', 0)} | {_pm(s.get('accuracy'))} | {_pm(s.get('macro_f1'))} | "
            f"{_pm(s.get('weighted_f1'))} | {_pm(s.get('ece'))} |"
        )
    lines += _plot_lines("macro_f1_bars", "macro-F1 per fold", plots, missing)

    for kind, name, entry in _models(results):
        if not entry["folds"]:
            continue
        confusion = _summed_confusion(entry, len(classes))
        pooled = pooled_per_class(confusion, classes)
        f1_stats = (entry.get("summary") or {}).get("per_class_f1", {})
        lines += ["", f"## {name} ({kind})", "", "Per class, pooled over all test folds (each song scored once):", ""]
        lines += ["| class | precision | recall | F1 | F1 over folds | support |", "|---|---|---|---|---|---|"]
        for c in classes:
            p = pooled[c]
            lines.append(
                f"| {markdown_cell(c)} | {p['precision']:.3f} | {p['recall']:.3f} | {p['f1']:.3f} | {_pm(f1_stats.get(c))} | {p['support']} |"
            )
        lines += ["", "| fold | n | accuracy | macro-F1 | weighted F1 | ECE |", "|---|---|---|---|---|---|"]
        for fold, m in entry["folds"].items():
            ece = m.get("ece")
            lines.append(
                f"| {fold} | {m['n']} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {m['weighted_f1']:.3f} | "
                f"{'—' if ece is None else f'{ece:.3f}'} |"
            )
        lines += ["", "Confusion matrix summed over folds (rows = true class):", ""]
        lines += _confusion_markdown(confusion, classes)
        for key, caption in ((f"confusion_{name}", "confusion"), (f"curves_{name}", "training curves")):
            lines += _plot_lines(key, f"{name} {caption}", plots, missing)

    if results["calibration"]:
        lines += ["", "## Calibration", ""] + _calibration_markdown(results["calibration"])
        if "ambiguous_threshold" in json.dumps(results["calibration"]):
            lines += ["", "Temperature and `ambiguous_threshold` are fitted on the validation fold; the other "
                      "figures are the test fold's. A song is *ambiguous* when its top probability is below the "
                      "threshold (where the top class is right less than half the time on validation): "
                      "`accuracy_all` counts every song, `accuracy_confident` only the others, "
                      "`accuracy_ambiguous` only the ambiguous ones (`ambiguous_fraction` of the fold)."]
    if results["provenance"]:
        lines += ["", "## Provenance", "", "```json", json.dumps(results["provenance"], indent=2, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"


def _plot_confusion(path: Path, confusion: np.ndarray, classes: Sequence[str], title: str) -> None:
    from matplotlib.figure import Figure  # noqa: PLC0415 - Figure renders with Agg, no pyplot state

    rows = confusion.sum(axis=1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros(confusion.shape, dtype=float), where=rows > 0)
    fig = Figure(figsize=(1.2 * len(classes) + 2.2, 1.1 * len(classes) + 1.6), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_xticks(range(len(classes)), labels=[plot_label(c) for c in classes])
    ax.set_yticks(range(len(classes)), labels=[plot_label(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(plot_label(title))
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(confusion[i, j])})", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path)


def _plot_fold_bars(path: Path, results: dict) -> None:
    from matplotlib.figure import Figure  # noqa: PLC0415

    models = [(name, entry) for _, name, entry in _models(results) if entry["folds"]]
    folds = sorted({k for _, e in models for k in e["folds"]}, key=_fold_key)
    fig = Figure(figsize=(max(7.0, 0.4 * len(models) * max(1, len(folds)) + 4), 4.2), dpi=100)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(folds))
    for fi, fold in enumerate(folds):
        heights = [e["folds"][fold]["macro_f1"] if fold in e["folds"] else 0.0 for _, e in models]
        ax.bar(np.arange(len(models)) + (fi - (len(folds) - 1) / 2) * width, heights, width, label=f"fold {fold}")
    ax.axhline(1.0 / len(results["classes"]), color="grey", linestyle="--", linewidth=1, label="chance (uniform)")
    ax.set_xticks(range(len(models)), labels=[plot_label(n) for n, _ in models])
    ax.set_ylim(0, 1)
    ax.set_ylabel("macro-F1 (test fold)")
    ax.set_title("macro-F1 per fold")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)


def _plot_curves(path: Path, curves: dict, name: str) -> bool:
    from matplotlib.figure import Figure  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    fig = Figure(figsize=(10, 3.8), dpi=100)
    loss_ax, f1_ax = fig.subplots(1, 2)
    drawn = False
    for fold in sorted(curves, key=_fold_key):
        c = curves[fold]
        epochs = c.get("epoch") or list(range(1, 1 + max(len(c.get("train_loss", [])), len(c.get("val_macro_f1", [])))))
        for ax, key in ((loss_ax, "train_loss"), (f1_ax, "val_macro_f1")):
            values = c.get(key) or []
            if values:
                ax.plot(epochs[: len(values)], [np.nan if v is None else v for v in values], marker=".", label=f"fold {fold}")
                drawn = True
    if not drawn:
        return False
    loss_ax.set(title=plot_label(f"{name}: training loss"), xlabel="epoch", ylabel="loss")
    f1_ax.set(title=plot_label(f"{name}: validation macro-F1"), xlabel="epoch", ylabel="macro-F1", ylim=(0, 1))
    for ax in (loss_ax, f1_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return True


def _write_plots(out_dir: Path, results: dict) -> tuple[dict[str, str], dict[str, str]]:
    """PNG plots into `out_dir`; returns ({plot key: file name}, {plot key: why it is missing}).

    Each plot is drawn on its own: one that raises is logged, its half-written file removed, and the
    others are still drawn.
    """
    classes = results["classes"]
    plots: dict[str, str] = {}
    missing: dict[str, str] = {}

    def draw(key: str, file: str, plot, *args) -> None:
        try:
            if plot(out_dir / file, *args) is not False:
                plots[key] = file
        except Exception as exc:  # noqa: BLE001 - a plot is an illustration: the report stands without it
            log.warning("report plot %s could not be drawn: %s", file, plain_text(exc), exc_info=True)
            (out_dir / file).unlink(missing_ok=True)
            missing[key] = f"{type(exc).__name__}: {str(exc).strip()}"

    if any(e["folds"] for _, _, e in _models(results)):
        draw("macro_f1_bars", "macro_f1_per_fold.png", _plot_fold_bars, results)
    for name, entry in results["branches"].items():
        if entry["folds"]:
            draw(f"confusion_{name}", f"confusion_{_safe_name(name)}.png", _plot_confusion,
                 _summed_confusion(entry, len(classes)), classes, f"{name}: confusion (summed over folds)")
        if entry.get("curves"):
            draw(f"curves_{name}", f"curves_{_safe_name(name)}.png", _plot_curves, entry["curves"], name)
    return plots, missing


def write_report(run_dir_uri: str, results: dict) -> dict[str, str]:
    """Write report.json, report.md and PNG plots under `run_dir_uri` (local or s3://).

    Files are rendered into a temporary directory, then copied with labeler.io.storage, so the same
    code serves a local run directory and an S3 prefix. Returns {file name: URI written}.
    A plot that fails is left out (see the module docstring); it never fails the report.
    """
    complete = _complete(results)
    written: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        tmp_dir = Path(tmp)
        plots, missing = _write_plots(tmp_dir, complete)
        complete["plots"], complete["plots_missing"] = plots, missing
        (tmp_dir / "report.json").write_text(json.dumps(complete, indent=2, sort_keys=False, allow_nan=False))
        (tmp_dir / "report.md").write_text(render_markdown(complete, plots, missing))
        for file in sorted(os.listdir(tmp_dir)):
            uri = storage.join(run_dir_uri, file)
            storage.write_bytes(uri, (tmp_dir / file).read_bytes())
            written[file] = uri
    log.info("report written to %s (%d files)", storage.describe(run_dir_uri), len(written))
    return written
