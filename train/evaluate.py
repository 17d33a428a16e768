"""Scoring, fold summaries and the evaluation report of a cross-validated training run.

Scoring functions return plain dicts and never log (the seed logged to wandb from inside its
scoring; here metrics are reported in one place, by whoever calls). The report is written once per
run as `report.json` (everything, machine-readable), `report.md` (what a person reads) and PNG plots.

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

<metrics> (one fold, from `classification_metrics`):
`{"n", "accuracy", "macro_f1", "weighted_f1", "ece", "per_class": {name: {"precision", "recall",
"f1", "support"}}, "confusion": [[...]] (rows = true class, columns = predicted)}`.

<summary> (from `summarise_folds`): `{"n_folds", "accuracy", "macro_f1", "weighted_f1", "ece":
{"mean", "std"}, "per_class_f1": {name: {"mean", "std"}}}`; std is the sample std (ddof=1), and
None with a single fold (a spread of one number is undefined, not zero).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from labeler import storage
from train.calibration import expected_calibration_error  # one ECE definition, shared with calibration

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "classification_metrics", "expected_calibration_error", "summarise_folds", "pooled_per_class",
    "write_report", "render_markdown", "metrics_markdown", "evaluate_bundle", "jsonable",
]

log = logging.getLogger(__name__)

ECE_BINS = 15
SUMMARY_METRICS = ("accuracy", "macro_f1", "weighted_f1", "ece")
REPORT_FILES = ("report.json", "report.md")


# --------------------------------------------------------------------------------------------
# Scoring


def _check_probs(y_true: np.ndarray, y_prob: np.ndarray, n_classes: int | None = None) -> None:
    if y_prob.ndim != 2:
        raise ValueError(f"y_prob must be 2-D (n, n_classes), got shape {y_prob.shape}")
    if y_true.ndim != 1 or len(y_true) != len(y_prob):
        raise ValueError(f"y_true must be 1-D with one entry per row of y_prob: shapes {y_true.shape} and {y_prob.shape}")
    if n_classes is not None and y_prob.shape[1] != n_classes:
        raise ValueError(f"y_prob has {y_prob.shape[1]} columns but there are {n_classes} classes")
    if len(y_true) and (y_true.min() < 0 or y_true.max() >= y_prob.shape[1]):
        bad = y_true[(y_true < 0) | (y_true >= y_prob.shape[1])][0]
        raise ValueError(f"class index {bad} out of range 0..{y_prob.shape[1] - 1}")


def classification_metrics(y_true: Sequence[int] | np.ndarray, y_prob: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, macro/weighted F1, per-class P/R/F1/support, confusion matrix and ECE of one test set.

    `y_true` holds class indices into `classes`, `y_prob` the (n, n_classes) probabilities; the
    prediction is the arg-max. Classes absent from both truth and prediction score 0 (zero_division=0),
    as in the seed's classification report, so a fold that never predicts a class is not flattered.
    """
    classes = [str(c) for c in classes]
    y_true = np.asarray(y_true).astype(np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    _check_probs(y_true, y_prob, len(classes))
    if len(y_true) == 0:
        raise ValueError("cannot score an empty test set (0 rows)")
    labels = list(range(len(classes)))
    y_pred = y_prob.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "ece": expected_calibration_error(y_prob, y_true),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).astype(int).tolist(),
    }


def _mean_std(values: Iterable[float]) -> dict:
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "std": None}
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else None}


def summarise_folds(fold_metrics: Sequence[dict]) -> dict:
    """Mean and sample std (ddof=1) over folds of accuracy, macro/weighted F1, ECE and per-class F1."""
    if not fold_metrics:
        raise ValueError("summarise_folds needs at least one fold's metrics, got none")
    summary: dict[str, Any] = {"n_folds": len(fold_metrics)}
    for key in SUMMARY_METRICS:
        summary[key] = _mean_std(m.get(key) for m in fold_metrics)
    names = list(fold_metrics[0].get("per_class", {}))
    summary["per_class_f1"] = {
        name: _mean_std(m["per_class"][name]["f1"] for m in fold_metrics if name in m.get("per_class", {}))
        for name in names
    }
    return summary


# --------------------------------------------------------------------------------------------
# Report


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
            raise ValueError(f"results is missing {key!r} (see train.evaluate's docstring for the shape)")
    out = jsonable(results)
    out.setdefault("baselines", {})
    out.setdefault("calibration", {})
    out.setdefault("provenance", {})
    for group in ("branches", "baselines"):
        for name, entry in out[group].items():
            if not isinstance(entry, dict) or "folds" not in entry:
                raise ValueError(f"results[{group!r}][{name!r}] has no 'folds' (see train.evaluate's docstring)")
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


def pooled_per_class(confusion: np.ndarray, classes: Sequence[str]) -> dict:
    """Per-class precision/recall/F1 of a (summed) confusion matrix: every song scored once across folds."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(actual[i])}
        for i, name in enumerate(classes)
    }


def _confusion_markdown(confusion: np.ndarray, classes: Sequence[str]) -> list[str]:
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
        lines.append(f"| {name} | {pc['precision']:.3f} | {pc['recall']:.3f} | {pc['f1']:.3f} | {pc['support']} |")
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


def render_markdown(results: dict, plots: dict[str, str]) -> str:
    """report.md from completed results (see `_complete`) and the plot file names written beside it."""
    classes = results["classes"]
    lines = ["# Evaluation report", "", f"Mode **{results['mode']}**, classes {', '.join(classes)}.", ""]
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
    if "macro_f1_bars" in plots:
        lines += ["", f"![macro-F1 per fold]({plots['macro_f1_bars']})"]

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
                f"| {c} | {p['precision']:.3f} | {p['recall']:.3f} | {p['f1']:.3f} | {_pm(f1_stats.get(c))} | {p['support']} |"
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
            if key in plots:
                lines += ["", f"![{name} {caption}]({plots[key]})"]

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
    ax.set_xticks(range(len(classes)), labels=classes)
    ax.set_yticks(range(len(classes)), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
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
    ax.set_xticks(range(len(models)), labels=[n for n, _ in models])
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
    loss_ax.set(title=f"{name}: training loss", xlabel="epoch", ylabel="loss")
    f1_ax.set(title=f"{name}: validation macro-F1", xlabel="epoch", ylabel="macro-F1", ylim=(0, 1))
    for ax in (loss_ax, f1_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return True


def _write_plots(out_dir: Path, results: dict) -> dict[str, str]:
    """PNG plots into `out_dir`; returns {plot key: file name}."""
    classes = results["classes"]
    plots: dict[str, str] = {}
    if any(e["folds"] for _, _, e in _models(results)):
        plots["macro_f1_bars"] = "macro_f1_per_fold.png"
        _plot_fold_bars(out_dir / plots["macro_f1_bars"], results)
    for name, entry in results["branches"].items():
        if entry["folds"]:
            file = f"confusion_{_safe_name(name)}.png"
            _plot_confusion(out_dir / file, _summed_confusion(entry, len(classes)), classes, f"{name}: confusion (summed over folds)")
            plots[f"confusion_{name}"] = file
        if entry.get("curves"):
            file = f"curves_{_safe_name(name)}.png"
            if _plot_curves(out_dir / file, entry["curves"], name):
                plots[f"curves_{name}"] = file
    return plots


def write_report(run_dir_uri: str, results: dict) -> dict[str, str]:
    """Write report.json, report.md and PNG plots under `run_dir_uri` (local or s3://).

    Files are rendered into a temporary directory, then copied with labeler.storage, so the same
    code serves a local run directory and an S3 prefix. Returns {file name: URI written}.
    """
    complete = _complete(results)
    written: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        tmp_dir = Path(tmp)
        plots = _write_plots(tmp_dir, complete)
        complete["plots"] = plots
        (tmp_dir / "report.json").write_text(json.dumps(complete, indent=2, sort_keys=False, allow_nan=False))
        (tmp_dir / "report.md").write_text(render_markdown(complete, plots))
        for file in sorted(os.listdir(tmp_dir)):
            uri = storage.join(run_dir_uri, file)
            storage.write_bytes(uri, (tmp_dir / file).read_bytes())
            written[file] = uri
    log.info("report written to %s (%d files)", storage.describe(run_dir_uri), len(written))
    return written


# --------------------------------------------------------------------------------------------
# Evaluating a bundle on a manifest


def _manifest_rows(manifest_uri: str, fold: int | None) -> "pa.Table":
    import pyarrow.compute as pc  # noqa: PLC0415

    from labeler.schemas import MANIFEST, validate  # noqa: PLC0415

    table = storage.read_parquet(manifest_uri)
    validate(table.schema, MANIFEST, where=storage.describe(manifest_uri))
    if fold is not None:
        folds = sorted(set(pc.unique(table.column("fold")).to_pylist()))
        if fold not in folds:
            raise ValueError(f"fold {fold} is not in the manifest {storage.describe(manifest_uri)} (folds: {folds})")
        table = table.filter(pc.equal(table.column("fold"), fold))
    return table


def _batch_columns(table: "pa.Table", start: int, stop: int) -> dict[str, np.ndarray]:
    """Manifest rows [start, stop) as the numpy batch the Featurizer and LyricsTokenizer take."""
    part = table.slice(start, stop - start)
    batch: dict[str, np.ndarray] = {}
    for name in ("song_id", "audio_uri", "lyrics"):
        batch[name] = np.asarray(part.column(name).to_pylist(), dtype=object)
    for name in ("chorus_start_s", "chorus_end_s"):
        if name in part.column_names:
            batch[name] = np.asarray([np.nan if v is None else v for v in part.column(name).to_pylist()], dtype=np.float64)
    return batch


def _targets(table: "pa.Table", mode: str, classes: list[str], manifest_uri: str) -> list[int]:
    """Each row's class index for a bundle of `mode`: from `label` in mode classes, else from the quadrant."""
    from labeler.labels import class_index, target_for_mode  # noqa: PLC0415
    from train.manifest import label_kind  # noqa: PLC0415

    kind, _ = label_kind(table, storage.describe(manifest_uri))
    if (kind == "classes") != (mode == "classes"):
        raise ValueError(f"the bundle predicts {'its own classes' if mode == 'classes' else 'quadrant mode ' + mode} "
                         f"but {storage.describe(manifest_uri)} has {'classes' if kind == 'classes' else 'quadrant'} labels")
    if mode == "classes":
        try:
            return [class_index(v, classes) for v in table.column("label").to_pylist()]
        except ValueError as exc:
            raise ValueError(f"{storage.describe(manifest_uri)}: {exc} (the bundle's classes)") from None
    return [target_for_mode(int(q), mode) for q in table.column("quadrant").to_pylist()]


def evaluate_bundle(bundle_uri: str, manifest_uri: str, fold: int | None = None, batch_size: int = 16) -> dict:
    """Score a model bundle on a manifest's test fold `fold` (or on all rows), in-process and in batches.

    The bundle's own featuriser and tokenizer settings are used, exactly as labelling uses them.
    Rows the model cannot label (no audio for an audio model, undecodable audio, ...) are counted in
    `skipped` by error kind and left out of the metrics. Returns classification_metrics plus
    `mode`, `classes`, `fold`, `skipped` (total), `skipped_by_kind`, `seconds`.
    """
    from labeler.audio import Featurizer  # noqa: PLC0415 - heavy imports only when evaluating
    from labeler.bundle import load_bundle  # noqa: PLC0415
    from labeler.lyrics import LyricsTokenizer  # noqa: PLC0415
    from labeler.predict import Predictor  # noqa: PLC0415

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    started = time.perf_counter()
    bundle = load_bundle(bundle_uri)  # the whole bundle verified before any work; the Predictor reuses it
    table = _manifest_rows(manifest_uri, fold)
    if table.num_rows == 0:
        raise ValueError(f"no rows to evaluate in {storage.describe(manifest_uri)}" + (f" fold {fold}" if fold is not None else ""))
    mode, classes = bundle.mode, list(bundle.classes)
    model_config = bundle.model.config
    featurizer = Featurizer(bundle.featurizer) if model_config.uses_audio else None
    lyrics_tokenizer = LyricsTokenizer(bundle.tokenizer, bundle.lyrics) if model_config.uses_lyrics else None
    predictor = Predictor(bundle, device="cpu", batch_size=batch_size)

    targets = _targets(table, mode, classes, manifest_uri)
    y_true: list[int] = []
    probs: list[np.ndarray] = []
    skipped: dict[str, int] = {}
    for start in range(0, table.num_rows, batch_size):
        stop = min(start + batch_size, table.num_rows)
        batch = _batch_columns(table, start, stop)
        if featurizer is not None:
            batch = featurizer(batch)
        if lyrics_tokenizer is not None:
            batch = lyrics_tokenizer(batch)
        out = predictor(batch)
        for i, error in enumerate(out["error"]):
            if error:
                kind = str(error).split(":", 1)[0]
                skipped[kind] = skipped.get(kind, 0) + 1
                continue
            y_true.append(targets[start + i])
            probs.append(np.asarray(out["probs"][i], dtype=np.float64))
        log.info("evaluated %d/%d rows", stop, table.num_rows)
    if not probs:
        raise ValueError(f"every one of the {table.num_rows} rows failed ({skipped}); nothing to score")
    metrics = classification_metrics(np.asarray(y_true), np.stack(probs), classes)
    metrics.update(
        model_id=bundle.model_id,
        model_version=bundle.model_version,
        mode=mode,
        classes=classes,
        fold=fold,
        skipped=int(sum(skipped.values())),
        skipped_by_kind=skipped,
        seconds=round(time.perf_counter() - started, 3),
    )
    return metrics
