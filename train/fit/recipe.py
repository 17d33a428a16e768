"""`labeler recipe`: from the public datasets, as their owners distribute them, to a real-music bundle.

The demo's model learnt synthetic songs; this is the next step (docs/real-music.md says where each
dataset is downloaded and what to expect). One command:

1. finds the datasets in a folder (`4q/`, `mirex/`, `moodylyrics4q/`, `pmemo/`, in their own
   layouts; `--dataset NAME=PATH` names others or overrides one) and prepares one manifest with
   cross-validation folds (`train.data.manifest.prepare`), optionally capped to `--max-songs` per dataset;
2. trains audio, lyrics and the fused model on it with the real-music defaults (`REAL_MUSIC`: the
   `cpu-small` preset with the pretrained MusiCNN audio branch, the best audio model on the 4Q slice,
   and the stacked lyrics branch; see README "Accuracy on real songs"), scored beside the baselines on
   the same folds;
3. leaves `<output>/manifest.parquet`, `<output>/bundle/`, `<output>/report.md` (+ json and plots).

A dataset this run cannot use is skipped with a line that says why, never silently: one whose
adapter this version lacks, and the MIREX-like set, whose five mood clusters are not quadrants (it
trains on its own, in the `classes` mode; docs/real-music.md). Songs without audio train the lyrics branch, songs
without lyrics the audio branch; the fused model sees every song (modality dropout).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from labeler.io import storage

# dataset adapter name -> the folder name the recipe looks for under --data
KNOWN_FOLDERS = {"4q": "4q", "mirex": "mirex", "moodylyrics4q": "moodylyrics4q", "pmemo": "pmemo"}
# datasets whose labels are their own classes, not quadrants: a 4Q manifest cannot take them
CLASS_DATASETS = {"mirex": "the five MIREX mood clusters"}
# The real-music defaults (what `labeler recipe` trains unless told otherwise).
REAL_MUSIC = {"preset": "cpu-small", "audio_model": "MusiCNN", "lyrics_model": None, "branch": "all", "mode": "4Q"}


@dataclass(frozen=True)
class RecipeConfig:
    output: str
    data: str | None = None  # a folder holding the datasets' folders (KNOWN_FOLDERS)
    datasets: tuple[tuple[str, str], ...] = ()  # explicit (name, path) pairs; override those found in `data`
    max_songs: int | None = None  # per dataset, drawn with the seed (a quick run, CI)
    folds: str = "all"
    epochs: int | None = None  # None: the preset's
    seed: int = 8848
    overrides: dict = field(default_factory=dict)  # preset fields (--set KEY=VALUE)

    def __post_init__(self) -> None:
        if not self.data and not self.datasets:
            raise ValueError("no datasets: pass --data DIR (holding 4q/, mirex/, moodylyrics4q/ ...) or --dataset NAME=PATH")
        if self.max_songs is not None and self.max_songs < 20:
            raise ValueError(f"--max-songs must be at least 20 (five folds of four quadrants), got {self.max_songs}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {self.epochs}")


def find_sources(config: RecipeConfig) -> tuple[list[tuple[str, str, dict]], list[str]]:
    """(sources for train.data.manifest.prepare, lines about what was found or skipped)."""
    from train.data.manifest import ADAPTERS  # noqa: PLC0415

    chosen: dict[str, str] = {}
    if config.data:
        root = Path(config.data).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"--data {root} is not a folder (expected one holding 4q/, mirex/, moodylyrics4q/ ...)")
        for name, folder in KNOWN_FOLDERS.items():
            if (root / folder).is_dir():
                chosen[name] = str(root / folder)
    chosen.update(dict(config.datasets))
    notes, sources = [], []
    for name, path in chosen.items():
        if name not in ADAPTERS:
            notes.append(f"      {name}: skipped ({path}): this version has no adapter for it")
        elif name in CLASS_DATASETS:
            notes.append(f"      {name}: skipped in this quadrant run ({path}): its labels are "
                         f"{CLASS_DATASETS[name]}, not Russell quadrants (docs/real-music.md trains it on its own)")
        else:
            sources.append((name, path, {}))
    if not sources:
        raise FileNotFoundError(f"no dataset found in {config.data or 'the --dataset list'}: expected folders named "
                                f"{', '.join(KNOWN_FOLDERS.values())} (see docs/real-music.md)")
    return sources, notes


def cap_per_dataset(table: pa.Table, max_songs: int, seed: int) -> pa.Table:
    """At most `max_songs` rows of each dataset, drawn at random with `seed` (folds are re-assigned after)."""
    rng = np.random.default_rng(seed)
    datasets = np.array(table.column("dataset").to_pylist(), dtype=object)
    keep = []
    for name in sorted(set(datasets)):
        rows = np.flatnonzero(datasets == name)
        keep.extend(sorted(rng.choice(rows, size=min(max_songs, len(rows)), replace=False).tolist()))
    return table.take(pa.array(sorted(keep), type=pa.int64()))


def run_recipe(config: RecipeConfig, console=None):
    """Prepare the manifest, train with the real-music defaults; return train.fit.run.TrainResult."""
    from labeler.runtime.console import Console  # noqa: PLC0415
    from train.data.folds import assign_folds  # noqa: PLC0415
    from train.data.manifest import prepare  # noqa: PLC0415
    from train.fit.run import train  # noqa: PLC0415

    console = console or Console.silent()
    output = storage.absolute_uri(config.output)
    sources, notes = find_sources(config)
    console.print(f"[1/2] preparing one manifest from {', '.join(n for n, _, _ in sources)} ...")
    for line in notes:
        console.print(line)
    manifest, report = prepare(sources, k=5, cv="ALL", seed=config.seed)
    if config.max_songs:
        manifest = assign_folds(cap_per_dataset(manifest, config.max_songs, config.seed), k=5, seed=config.seed)
    manifest_uri = storage.join(output, "manifest.parquet")
    storage.makedirs(output)
    storage.write_parquet(manifest, manifest_uri)
    counts = dict(zip(*np.unique(np.array(manifest.column("dataset").to_pylist(), dtype=object), return_counts=True)))
    console.print("      " + ", ".join(f"{name} {n} songs" for name, n in sorted(counts.items()))
                  + f" ({report.label_conflicts} label conflicts among merged duplicates) -> {storage.describe(manifest_uri)}")

    console.print(f"[2/2] training {REAL_MUSIC['branch']} branches with the real-music defaults "
                  f"({REAL_MUSIC['preset']}, audio {REAL_MUSIC['audio_model']}) on fold(s) {config.folds} ...")
    overrides = dict(config.overrides)
    if config.epochs:
        overrides["epochs"] = config.epochs
    return train(manifest_uri, output, branch=REAL_MUSIC["branch"], mode=REAL_MUSIC["mode"], preset=REAL_MUSIC["preset"],
                 folds=config.folds, audio_model=REAL_MUSIC["audio_model"], lyrics_model=REAL_MUSIC["lyrics_model"],
                 console=console, **overrides)
