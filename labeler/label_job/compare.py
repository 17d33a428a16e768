"""`labeler compare OUT --from VERSION --to VERSION`: what changes for the recommender if it switches model versions.

A new bundle labels the catalogue into its own partition (`OUT/version=<new>/`) beside the one ETL
reads now; before ETL is pointed at the new version, this compares the two partitions song by song:

- agreement (share of songs labelled by both whose label is the same) and Cohen's kappa;
- the transition matrix: how many songs go from each class to each class;
- per-class shifts: songs per class before and after, and how many of each class keep it;
- probability shift: mean total-variation distance between the two probability vectors;
- the songs that changed most (largest probability shift, label changes first);
- songs labelled by only one version, or with an error in one of them; `ambiguous` shares.

Works for any class set: the label column is `label` (the top class in the bundle's own classes)
where the partitions fill it, else `quadrant` (4Q), else the axis of an Ar/Va bundle; probabilities
are `class_probs` (map class -> P) where filled, else the `prob_*` columns, else the axis
probability as a two-class vector. Probability shifts are reported only when both versions have the
same classes.

Writes `report.md`, `report.json` and `transitions.png` to `--report` (default
`OUT/_compare/<from>_to_<to>/`; the leading underscore keeps it out of readers of OUT as a dataset).
Class names, song ids and versions come from the partitions' files, so the Markdown and the plot show
them escaped (labeler.runtime.display: one table row per class whatever a name holds, no mathtext). A plot
that fails is logged and left out (report.md says so); it never fails the comparison.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labeler.io import storage
from labeler.runtime.display import markdown_cell as md
from labeler.runtime.display import plain_text, plot_label

log = logging.getLogger(__name__)

PARTITION_KEY = "version"  # labeler.label_job.layout.PARTITION_KEY (not imported: the package pulls in the job engine)
SUCCESS_FILE = "_SUCCESS.json"
LABEL_COLUMNS = ("label", "quadrant", "arousal", "valence")  # first one a partition fills is the label
AXIS_PROB = {"arousal": "arousal_prob", "valence": "valence_prob"}


@dataclass
class Partition:
    """One version's labels as compared: label per song, probability vectors, errors, ambiguous flags."""

    version: str
    uri: str
    complete: bool
    label_column: str
    song_ids: np.ndarray  # object
    labels: np.ndarray  # object; None where the row has an error
    probs: np.ndarray  # float (n, k), NaN where unknown
    prob_names: list[str]
    errors: np.ndarray  # bool
    ambiguous: np.ndarray | None  # object (True/False/None) when the partition has the column


def list_versions(output_uri: str) -> list[str]:
    prefix = f"{PARTITION_KEY}="
    return [u.rstrip("/").rsplit("/", 1)[-1][len(prefix):] for u in storage.listdir(output_uri)
            if u.rstrip("/").rsplit("/", 1)[-1].startswith(prefix)]


def resolve_version(output_uri: str, wanted: str) -> str:
    """A full version, or a unique prefix of one, among OUT's partitions; ValueError naming the choices."""
    versions = list_versions(output_uri)
    matches = [v for v in versions if v == wanted] or [v for v in versions if v.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(versions) or "none"
    what = "matches several versions" if matches else "is not a version"
    raise ValueError(f"{wanted!r} {what} in {storage.describe(output_uri)} (versions: {known})")


def read_partition(output_uri: str, version: str) -> Partition:
    uri = storage.join(output_uri, f"{PARTITION_KEY}={version}")
    parts = [u for u in storage.listdir(uri) if u.rsplit("/", 1)[-1].startswith("part-") and u.endswith(".parquet")]
    if not parts:
        raise ValueError(f"{storage.describe(uri)} holds no label parts")
    names = set(storage.read_parquet_schema(parts[0]).names)
    table = storage.read_parquet(uri)
    label_column = next((c for c in LABEL_COLUMNS if c in names and table.column(c).null_count < table.num_rows), None)
    if label_column is None:
        raise ValueError(f"{storage.describe(uri)} has no filled label column (looked for {', '.join(LABEL_COLUMNS)})")
    prob_names = [c for c in sorted(names) if c.startswith("prob_") and table.column(c).null_count < table.num_rows]
    if "class_probs" in names and table.column("class_probs").null_count < table.num_rows:
        probs, prob_names = _map_probs(table.column("class_probs"))
    elif label_column in AXIS_PROB:
        p_high = _floats(table.column(AXIS_PROB[label_column]))
        probs, prob_names = np.stack([1 - p_high, p_high], axis=1), ["low", "high"]
    elif prob_names:
        probs = np.stack([_floats(table.column(c)) for c in prob_names], axis=1)
    else:
        probs = np.full((table.num_rows, 0), np.nan)
    return Partition(
        version=version, uri=uri, complete=storage.exists(storage.join(uri, SUCCESS_FILE)), label_column=label_column,
        song_ids=np.array(table.column("song_id").to_pylist(), dtype=object),
        labels=np.array(table.column(label_column).to_pylist(), dtype=object),
        probs=probs, prob_names=prob_names,
        errors=np.array([e is not None for e in table.column("error").to_pylist()], dtype=bool),
        ambiguous=np.array(table.column("ambiguous").to_pylist(), dtype=object) if "ambiguous" in names else None,
    )


def _map_probs(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """A `class_probs` map column (class -> P) as an (n, classes) matrix, classes sorted by name."""
    rows = [dict(r) if r is not None else None for r in column.to_pylist()]
    classes = sorted({k for r in rows if r for k in r})
    probs = np.full((len(rows), len(classes)), np.nan)
    for i, r in enumerate(rows):
        if r:
            probs[i] = [r.get(c, np.nan) for c in classes]
    return probs, classes


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(column.cast(pa.float64()), float("nan")).to_numpy(zero_copy_only=False), dtype=np.float64)


def _order(classes: set) -> list[str]:
    return sorted(str(c) for c in classes)


def compare(old: Partition, new: Partition, top: int = 20) -> dict:
    """The comparison as a JSON-ready dict (see the module docstring for what each part means)."""
    index_new = {s: i for i, s in enumerate(new.song_ids)}
    pairs = [(i, index_new[s]) for i, s in enumerate(old.song_ids) if s in index_new]
    a = np.array([p[0] for p in pairs], dtype=np.int64)
    b = np.array([p[1] for p in pairs], dtype=np.int64)
    both = ~old.errors[a] & ~new.errors[b] if len(pairs) else np.zeros(0, dtype=bool)
    la, lb = old.labels[a][both], new.labels[b][both]
    classes = _order(set(la) | set(lb) | set(old.labels[~old.errors]) | set(new.labels[~new.errors]))
    pos = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for x, y in zip(la, lb):
        matrix[pos[str(x)], pos[str(y)]] += 1
    n = int(both.sum())
    agreement = float(np.trace(matrix) / n) if n else None
    expected = float((matrix.sum(1) @ matrix.sum(0)) / n**2) if n else None
    kappa = ((agreement - expected) / (1 - expected)
             if agreement is not None and expected is not None and expected < 1 else None)

    comparable = old.prob_names == new.prob_names and old.probs.shape[1] > 0
    distance = np.full(len(pairs), np.nan)
    if comparable and len(pairs):
        distance = 0.5 * np.abs(old.probs[a] - new.probs[b]).sum(axis=1)
    distance[~both] = np.nan

    per_class = {}
    for c in classes:
        before, after = int(matrix[pos[c]].sum()), int(matrix[:, pos[c]].sum())
        per_class[c] = {
            "songs_from": before, "songs_to": after, "shift": after - before,
            "share_from": before / n if n else None, "share_to": after / n if n else None,
            "kept": int(matrix[pos[c], pos[c]]),
            "kept_share": float(matrix[pos[c], pos[c]] / before) if before else None,
        }

    changed = np.flatnonzero(both)
    key = [(-(str(old.labels[a[i]]) != str(new.labels[b[i]])), -np.nan_to_num(distance[i], nan=0.0)) for i in changed]
    ranked = [changed[j] for j in sorted(range(len(changed)), key=lambda j: key[j])]
    top_rows = []
    for i in ranked[:top]:
        ia, ib = a[i], b[i]
        top_rows.append({
            "song_id": str(old.song_ids[ia]), "from": str(old.labels[ia]), "to": str(new.labels[ib]),
            "from_prob": _top_prob(old, ia), "to_prob": _top_prob(new, ib),
            "prob_shift": None if np.isnan(distance[i]) else round(float(distance[i]), 4),
        })
    errors_a = old.errors[a] if len(pairs) else np.zeros(0, bool)
    errors_b = new.errors[b] if len(pairs) else np.zeros(0, bool)
    return {
        "from": {"version": old.version, "songs": len(old.song_ids), "complete": old.complete,
                 "errors": int(old.errors.sum()), "ambiguous": _ambiguous_share(old)},
        "to": {"version": new.version, "songs": len(new.song_ids), "complete": new.complete,
               "errors": int(new.errors.sum()), "ambiguous": _ambiguous_share(new)},
        "label_column": new.label_column,
        "songs_in_both": len(pairs),
        "labelled_by_both": n,
        "only_in_from": int(len(old.song_ids) - len(pairs)),
        "only_in_to": int(len(new.song_ids) - len(pairs)),
        "error_only_in_from": int((errors_a & ~errors_b).sum()),
        "error_only_in_to": int((~errors_a & errors_b).sum()),
        "agreement": agreement,
        "cohen_kappa": kappa,
        "label_changes": int(n - np.trace(matrix)),
        "mean_prob_shift": float(np.nanmean(distance)) if comparable and n else None,
        "classes": classes,
        "transitions": matrix.tolist(),
        "per_class": per_class,
        "changed_most": top_rows,
    }


def _top_prob(p: Partition, i: int) -> float | None:
    if p.probs.shape[1] == 0 or not np.isfinite(p.probs[i]).any():
        return None
    return round(float(np.nanmax(p.probs[i])), 4)


def _ambiguous_share(p: Partition) -> float | None:
    if p.ambiguous is None:
        return None
    flags = [bool(x) for x, e in zip(p.ambiguous, p.errors) if not e and x is not None]
    return float(np.mean(flags)) if flags else None


def fmt_value(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def to_markdown(result: dict, png_name: str | None = "transitions.png", plot_error: str | None = None) -> str:
    """report.md: every name from the partitions escaped (labeler.runtime.display.markdown_cell).

    `png_name` is linked when given; `plot_error` (the plot was not drawn) is said in its place.
    """
    f, t = result["from"], result["to"]
    classes = [md(c) for c in result["classes"]]
    fv, tv = md(f["version"]), md(t["version"])
    lines = [
        f"# Labels: version {fv} -> {tv}", "",
        f"Label column `{result['label_column']}`. Songs: {f['songs']} in {fv}"
        f"{'' if f['complete'] else ' (incomplete: no _SUCCESS.json)'}, {t['songs']} in {tv}"
        f"{'' if t['complete'] else ' (incomplete: no _SUCCESS.json)'}; {result['songs_in_both']} in both, "
        f"{result['labelled_by_both']} labelled by both.", "",
        "| figure | value |", "|---|---|",
        f"| agreement (same label) | {fmt_value(result['agreement'])} |",
        f"| Cohen's kappa | {fmt_value(result['cohen_kappa'])} |",
        f"| songs whose label changes | {result['label_changes']} |",
        f"| mean probability shift (total variation) | {fmt_value(result['mean_prob_shift'])} |",
        f"| ambiguous share, from -> to | {fmt_value(f['ambiguous'])} -> {fmt_value(t['ambiguous'])} |",
        f"| errors, from -> to | {f['errors']} -> {t['errors']} |",
        f"| error only in from / only in to | {result['error_only_in_from']} / {result['error_only_in_to']} |",
        f"| songs only in from / only in to | {result['only_in_from']} / {result['only_in_to']} |",
        "", "## Transitions (rows = from, columns = to)", "",
        "| from \\ to | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes),
    ]
    for c, row in zip(classes, result["transitions"]):
        lines.append(f"| {c} | " + " | ".join(str(v) for v in row) + " |")
    lines += ["", "## Per class", "", "| class | songs (from) | songs (to) | shift | share from -> to | kept |",
              "|---|---|---|---|---|---|"]
    for c in result["classes"]:
        p = result["per_class"][c]
        lines.append(f"| {md(c)} | {p['songs_from']} | {p['songs_to']} | {p['shift']:+d} | "
                     f"{fmt_value(p['share_from'])} -> {fmt_value(p['share_to'])} | {fmt_value(p['kept_share'])} |")
    lines += ["", f"## Songs that changed most ({len(result['changed_most'])})", "",
              "| song_id | from | to | top prob from | top prob to | prob shift |", "|---|---|---|---|---|---|"]
    for r in result["changed_most"]:
        lines.append(f"| {md(r['song_id'])} | {md(r['from'])} | {md(r['to'])} | {fmt_value(r['from_prob'])} | {fmt_value(r['to_prob'])} | "
                     f"{fmt_value(r['prob_shift'])} |")
    if png_name:
        lines += ["", f"![transitions]({png_name})"]
    elif plot_error:
        lines += ["", f"*The transitions plot is missing: it could not be drawn ({md(plot_error[:200])}).*"]
    return "\n".join(lines) + "\n"


def plot(result: dict) -> bytes:
    """PNG: the transition matrix (row-normalised shading, counts written) and songs per class before/after."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    classes = [plot_label(c) for c in result["classes"]]
    matrix = np.asarray(result["transitions"], dtype=float).reshape(len(classes), len(classes))
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, (ax_m, ax_b) = plt.subplots(1, 2, figsize=(11, 4.8))
    try:
        return _draw(fig, ax_m, ax_b, result, classes, matrix, shares)
    finally:
        plt.close(fig)


def _draw(fig, ax_m, ax_b, result: dict, classes: list[str], matrix: np.ndarray, shares: np.ndarray) -> bytes:
    """`plot`'s two panels drawn on `fig` (`classes` already escaped for matplotlib), as PNG bytes."""
    ax_m.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax_m.text(j, i, str(int(matrix[i, j])), ha="center", va="center",
                      color="white" if shares[i, j] > 0.6 else "black", fontsize=9)
    ax_m.set_xticks(range(len(classes)), classes, rotation=45 if len(classes) > 4 else 0)
    ax_m.set_yticks(range(len(classes)), classes)
    ax_m.set_xlabel(plot_label(f"to {result['to']['version']}"))
    ax_m.set_ylabel(plot_label(f"from {result['from']['version']}"))
    ax_m.set_title(f"transitions (agreement {fmt_value(result['agreement'])})")
    x = np.arange(len(classes))
    ax_b.bar(x - 0.2, [result["per_class"][c]["songs_from"] for c in result["classes"]], 0.4, label="from")
    ax_b.bar(x + 0.2, [result["per_class"][c]["songs_to"] for c in result["classes"]], 0.4, label="to")
    ax_b.set_xticks(x, classes, rotation=45 if len(classes) > 4 else 0)
    ax_b.set_ylabel("songs")
    ax_b.set_title("songs per class")
    ax_b.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def compare_versions(output_uri: str, from_version: str, to_version: str, report_uri: str | None = None,
                     top: int = 20) -> tuple[dict, dict[str, str]]:
    """Compare two versions of OUT, write report.md/.json/transitions.png; return (result, {kind: uri}).

    {kind: uri} has "markdown", "json" and, when the plot was drawn, "png".
    """
    output_uri = storage.absolute_uri(output_uri)
    old_v, new_v = resolve_version(output_uri, from_version), resolve_version(output_uri, to_version)
    if old_v == new_v:
        raise ValueError(f"--from and --to are the same version {old_v}")
    if top < 0:
        raise ValueError(f"--top must be >= 0, got {top}")
    result = compare(read_partition(output_uri, old_v), read_partition(output_uri, new_v), top=top)
    report_uri = storage.absolute_uri(report_uri) if report_uri else storage.join(output_uri, "_compare", f"{old_v}_to_{new_v}")
    files = {"markdown": storage.join(report_uri, "report.md"), "json": storage.join(report_uri, "report.json"),
             "png": storage.join(report_uri, "transitions.png")}
    storage.makedirs(report_uri)
    plot_error = None
    try:
        png = plot(result)
    except Exception as exc:  # noqa: BLE001 - a plot is an illustration: the comparison stands without it
        log.warning("the transitions plot could not be drawn: %s", plain_text(exc), exc_info=True)
        plot_error = f"{type(exc).__name__}: {str(exc).strip()}"
        del files["png"]
    else:
        storage.write_bytes(files["png"], png)
    storage.write_text(files["json"], json.dumps(result, indent=2))
    storage.write_text(files["markdown"], to_markdown(result, None if plot_error else "transitions.png", plot_error))
    return result, files
