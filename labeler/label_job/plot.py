"""The optional PNG of a labelling run (`--plot`): quadrant counts and the valence-arousal scatter."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa

from labeler.contracts.labels import QUADRANT_DESCRIPTIONS, QUADRANTS
from labeler.io import storage
from labeler.runtime.display import plot_label


def plot_labels(table: pa.Table, path: str, title: str) -> str:
    """PNG: the quadrant distribution and the valence-arousal scatter of the labelled songs."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    quadrants = [q for q in table.column("quadrant").to_pylist()]
    counts = Counter(q for q in quadrants if q is not None)
    valence = np.array(table.column("valence_prob").to_pylist(), dtype=float)
    arousal = np.array(table.column("arousal_prob").to_pylist(), dtype=float)
    colours = {"Q1": "tab:orange", "Q2": "tab:red", "Q3": "tab:blue", "Q4": "tab:green"}
    fig, (ax_bar, ax_sc) = plt.subplots(1, 2, figsize=(11, 4.8))
    ax_bar.bar(list(QUADRANTS), [counts.get(q, 0) for q in QUADRANTS], color=[colours[q] for q in QUADRANTS])
    ax_bar.set_title("songs per quadrant")
    ax_bar.set_ylabel("songs")
    for i, q in enumerate(QUADRANTS):
        ax_bar.annotate(str(counts.get(q, 0)), (i, counts.get(q, 0)), ha="center", va="bottom")
    both = ~np.isnan(valence) & ~np.isnan(arousal)
    for q in QUADRANTS:
        sel = both & np.array([x == q for x in quadrants], dtype=bool)
        ax_sc.scatter(valence[sel], arousal[sel], s=12, alpha=0.7, color=colours[q], label=q)
    for q, (x, y) in {"Q1": (0.98, 0.98), "Q2": (0.02, 0.98), "Q3": (0.02, 0.02), "Q4": (0.98, 0.02)}.items():
        ax_sc.text(x, y, f"{q} {QUADRANT_DESCRIPTIONS[q].split()[0]}", transform=ax_sc.transAxes, fontsize=8,
                   color=colours[q], ha="right" if x > 0.5 else "left", va="top" if y > 0.5 else "bottom")
    ax_sc.axhline(0.5, color="grey", lw=0.8)
    ax_sc.axvline(0.5, color="grey", lw=0.8)
    ax_sc.set_xlim(0, 1)
    ax_sc.set_ylim(0, 1)
    ax_sc.set_xlabel("P(valence high)")
    ax_sc.set_ylabel("P(arousal high)")
    ax_sc.set_title("valence-arousal")
    if both.any():
        ax_sc.legend(loc="center right", fontsize=8)
    fig.suptitle(plot_label(f"labels: {title} ({table.num_rows} songs, {int(both.sum())} with both axes)"))
    fig.tight_layout()
    if storage.is_remote(path):
        import io  # noqa: PLC0415

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        storage.write_bytes(path, buf.getvalue())
    else:
        storage.makedirs(storage.parent(storage.absolute_uri(path)))
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
