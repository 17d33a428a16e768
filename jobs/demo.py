"""`labeler demo`: the whole product on a laptop, offline, in a few minutes.

1. Synthesise a catalogue whose emotion is planted in audio and lyrics (the `synth` package), with a
   few broken rows, so the labelling summary has errors to report; its manifest comes from the
   corpus's dataset adapter (train.data.datasets.synth).
2. Assign folds and train the `cpu-small` audio, lyrics and fused models on it (train.fit.run, Ray Train),
   on one cross-validation fold by default so that it stays within minutes on two CPU cores.
3. Label the catalogue with the fused bundle (labeler.label_job, Ray Data) and print the summary, the
   agreement with the planted quadrants, and where every file is.
4. End on real music: label the recordings shipped with the project (labeler.builtin.examples: CC-BY and
   public-domain excerpts) with the built-in real-music model (labeler.builtin) and print each one's
   quadrant and confidence. When the built-in model cannot be assembled (e.g. the musicnn checkpoints
   were never fetched), this step says why in one line and the demo still ends normally.

What it leaves in the work directory:

    catalogue.parquet   the catalogue (labeler.contracts.schemas.CATALOGUE) with audio/ beside it
    manifest.parquet    the labelled training manifest with folds
    training/           the training run: per-branch fold bundles, report.md/json and plots, caches
    bundle/             the fused model bundle (a copy of training/bundle)
    labels/             labels: version=<model_version>/part-*.parquet and _SUCCESS.json
    labels.png          quadrant distribution and valence-arousal scatter
    real_music/         the shipped recordings' catalogue and their labels by the built-in model

The agreement figure counts songs the model was trained on, so it is optimistic; the training
report's test-fold scores are the honest ones.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from labeler.contracts.labels import QUADRANT_DESCRIPTIONS, QUADRANTS
from labeler.io import storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    workdir: str = "demo_output"
    songs: int = 150  # with the real-music step, 150 leave room in the 5-minute target (bench/bench_demo.py)
    seconds: float = 12.0  # length of each synthetic song
    folds: str = "0"  # cross-validation folds to train ("all" for every fold of k=5)
    epochs: int | None = None  # None: the cpu-small preset's epochs
    seed: int = 0

    def __post_init__(self) -> None:
        if self.songs < 20:
            raise ValueError(f"songs must be at least 20 (five folds of four quadrants), got {self.songs}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")


@dataclass
class DemoResult:
    workdir: str
    catalogue_uri: str
    bundle_uri: str
    labels_uri: str
    plot: str
    summary: object  # labeler.label_job.LabelSummary
    agreement: float  # fraction of labelled synthetic songs whose quadrant is the planted one
    test_macro_f1: float | None  # the fused model's mean test-fold macro-F1 from the training report
    seconds: dict
    real_music: list = field(default_factory=list)  # RealMusicLabel rows of the shipped recordings
    real_music_note: str = ""  # the built-in model's console line, or why the step was skipped


@dataclass(frozen=True)
class RealMusicLabel:
    """One shipped recording as the built-in model labelled it."""

    name: str
    quadrant: str | None
    confidence: float | None  # the label's probability
    credit: str  # title, author, licence (the first line of its licence file)
    error: str | None = None


def _agreement(manifest_uri: str, partition_uri: str) -> float:
    import pandas as pd  # noqa: PLC0415

    truth = pd.read_parquet(storage.strip_scheme(manifest_uri), columns=["song_id", "quadrant"])
    labels = pd.read_parquet(storage.strip_scheme(partition_uri), columns=["song_id", "quadrant"]).dropna()
    both = truth.merge(labels, on="song_id", suffixes=("_true", "_label"))
    if both.empty:
        return float("nan")
    return float((both["quadrant_label"] == "Q" + both["quadrant_true"].astype(str)).mean())


def _fusion_test_f1(report: dict) -> float | None:
    folds = report.get("branches", {}).get("fusion", {}).get("folds", {})
    scores = [m["macro_f1"] for m in folds.values() if "macro_f1" in m]
    return sum(scores) / len(scores) if scores else None


def label_real_music(workdir: Path, console) -> tuple[list[RealMusicLabel], str]:
    """Label the shipped recordings with the built-in model into `workdir`; (rows, the model's line).

    A built-in model that cannot be assembled (a ValueError or OSError: one line saying why) gives no rows
    and that line; the labelling job itself fails as `labeler label` would.
    """
    import pandas as pd  # noqa: PLC0415

    from labeler.builtin.assemble import resolve_bundle  # noqa: PLC0415
    from labeler.builtin.examples import write_catalogue  # noqa: PLC0415
    from labeler.label_job import LabelJobConfig, label_catalogue  # noqa: PLC0415
    from labeler.runtime.errors import explain  # noqa: PLC0415

    try:
        bundle, line = resolve_bundle(None)
    except (ValueError, OSError) as exc:
        return [], f"skipped: the built-in model is not available ({explain(exc) or exc})"
    console.print(f"      {line}")
    workdir.mkdir(parents=True, exist_ok=True)
    catalogue = str(workdir / "catalogue.parquet")
    shipped = write_catalogue(catalogue)
    summary = label_catalogue(catalogue, bundle, str(workdir / "labels"), LabelJobConfig(), console=console)
    labels = pd.read_parquet(storage.strip_scheme(summary.partition_uri)).set_index("song_id")
    rows = []
    for rec in shipped:
        row = labels.loc[rec.name] if rec.name in labels.index else None
        ok = row is not None and pd.isna(row["error"])
        rows.append(RealMusicLabel(
            name=rec.name, quadrant=row["quadrant"] if ok else None,
            confidence=float(row["label_prob"]) if ok else None, credit=rec.credit,
            error=None if ok else (str(row["error"]) if row is not None else "no label row")))
    return rows, line


def run_demo(config: DemoConfig, console=None) -> DemoResult:
    """Synthesise, train, label; return where everything is and how it went (progress on `console`)."""
    from labeler.label_job import LabelJobConfig, label_catalogue  # noqa: PLC0415
    from labeler.runtime.console import Console  # noqa: PLC0415
    from labeler.runtime.session import ensure_ray  # noqa: PLC0415
    from synth import SynthConfig, synthesise  # noqa: PLC0415
    from train.data.datasets.synth import prepare_synth  # noqa: PLC0415
    from train.data.folds import assign_folds  # noqa: PLC0415
    from train.fit.presets import get_preset  # noqa: PLC0415
    from train.fit.run import train  # noqa: PLC0415

    console = console or Console.silent()
    workdir = Path(config.workdir).expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    console.print(f"[1/4] synthesising {config.songs} songs of {config.seconds:g} s (audio with planted emotion, lyrics) ...")
    t0 = time.perf_counter()
    synth = synthesise(SynthConfig(songs=config.songs, seconds=config.seconds, seed=config.seed, output=str(workdir),
                                   corrupt=True))
    manifest_uri = str(workdir / "manifest.parquet")
    storage.write_parquet(assign_folds(prepare_synth(synth.output), k=5, seed=config.seed), manifest_uri)
    seconds["synthesise"] = time.perf_counter() - t0
    console.print(f"      synthesised {len(synth.songs)} songs (+{len(synth.corrupt_ids)} broken rows) "
                  f"in {seconds['synthesise']:.0f} s")

    console.print("[2/4] training the audio, lyrics and fused models (Ray Train, cpu-small preset) ...")
    t0 = time.perf_counter()
    ensure_ray()  # a local Ray for training and labelling
    overrides = {"epochs": config.epochs} if config.epochs else {}
    # Songs shorter than cpu-small's chorus clip (30 s): clip the whole song instead of padding it with
    # silence (silent patches are left out of the pooling, but still cost the encoder).
    overrides["musicnn_clip_seconds"] = min(get_preset("cpu-small").musicnn_clip_seconds, config.seconds)
    trained = train(manifest_uri, str(workdir / "training"), branch="all", mode="4Q", preset="cpu-small",
                    folds=config.folds, console=console, **overrides)
    bundle = workdir / "bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    shutil.copytree(storage.strip_scheme(trained.bundle_uri), bundle)
    seconds["train"] = time.perf_counter() - t0
    test_f1 = _fusion_test_f1(trained.report)
    f1_text = f", fused test macro-F1 {test_f1:.2f}" if test_f1 is not None else ""
    console.print(f"      trained in {seconds['train']:.0f} s{f1_text}")

    console.print("[3/4] labelling the catalogue with the fused bundle (Ray Data) ...")
    t0 = time.perf_counter()
    plot = str(workdir / "labels.png")
    summary = label_catalogue(synth.catalogue_uri, str(bundle), str(workdir / "labels"), LabelJobConfig(plot=plot),
                              console=console)
    seconds["label"] = time.perf_counter() - t0
    agreement = _agreement(manifest_uri, summary.partition_uri)

    console.print("[4/4] labelling real recordings shipped with the project with the built-in real-music model ...")
    t0 = time.perf_counter()
    real, note = label_real_music(workdir / "real_music", console)
    seconds["real music"] = time.perf_counter() - t0
    return DemoResult(
        workdir=str(workdir), catalogue_uri=synth.catalogue_uri, bundle_uri=str(bundle),
        labels_uri=str(workdir / "labels"), plot=plot, summary=summary, agreement=agreement,
        test_macro_f1=test_f1, seconds=seconds, real_music=real, real_music_note=note,
    )


def format_real_music(result: DemoResult) -> list[str]:
    """The demo's real-music lines: each shipped recording's quadrant and confidence, or why there are none."""
    if not result.real_music:
        return ["Real music: " + (result.real_music_note or "no shipped recordings were labelled")]
    lines = ["Real music: recordings shipped with the project (CC-BY / public domain, excerpts), labelled by the",
             f"built-in model ({result.real_music_note.removeprefix('model: ')}):"]
    width = max(len(r.name) for r in result.real_music)
    for r in result.real_music:
        if r.quadrant is None:
            lines.append(f"  {r.name:<{width}}  not labelled: {r.error}")
        else:
            lines.append(f"  {r.name:<{width}}  {r.quadrant} {QUADRANT_DESCRIPTIONS.get(r.quadrant, ''):<22} "
                         f"confidence {r.confidence:.2f}   {r.credit}")
    lines.append(f"  (labels: {Path(result.workdir) / 'real_music' / 'labels'}; licences beside the recordings "
                 "in labeler/builtin/music/)")
    return lines


def format_result(result: DemoResult) -> str:
    s = result.summary
    lines = [
        "",
        s.to_text(),
        f"agreement with the planted quadrants: {100 * result.agreement:.0f}% "
        f"(training songs included: see training/report.md for held-out scores)",
        "",
        f"catalogue: {result.catalogue_uri}",
        f"bundle:    {result.bundle_uri}   (model {s.model_id}, version {s.model_version})",
        f"labels:    {s.partition_uri}   (read all versions: pandas.read_parquet('{result.labels_uri}'))",
        f"record:    {storage.join(s.partition_uri, '_SUCCESS.json')}",
        f"report:    {Path(result.workdir) / 'training' / 'report.md'}",
        f"plot:      {result.plot}",
        "time:      " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items()),
        "",
        "quadrants: " + ", ".join(f"{q} {QUADRANT_DESCRIPTIONS[q]}" for q in QUADRANTS),
        "",
        "The model trained above learnt synthetic songs: it says nothing about real music.",
        "",
        *format_real_music(result),
        "",
        "Train a real-music bundle of your own from the public datasets or your labels (docs/real-music.md):",
        "  labeler recipe --data DIR_WITH_THE_DATASETS --output real_music/",
        "Label your own catalogue (columns " + ", ".join(("song_id", "audio_uri", "lyrics"))
        + ") with the built-in model, or add --bundle real_music/bundle:",
        "  labeler label --catalogue my_catalogue.parquet --output my_labels/",
    ]
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    defaults = DemoConfig()
    parser.add_argument("--workdir", default=defaults.workdir, help="where everything goes (default ./%(default)s)")
    parser.add_argument("--songs", type=int, default=defaults.songs, help="synthetic songs (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="length of each song (default %(default)s)")
    parser.add_argument("--folds", default=defaults.folds, help="folds to train, e.g. '0', '0,1' or 'all' (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the cpu-small preset's)")
    parser.add_argument("--seed", type=int, default=defaults.seed)


def run_cli(args: argparse.Namespace, console=None) -> int:
    from labeler.runtime.console import Console  # noqa: PLC0415

    console = console or Console()
    config = DemoConfig(workdir=args.workdir, songs=args.songs, seconds=args.seconds, folds=args.folds,
                        epochs=args.epochs, seed=args.seed)
    console.print(format_result(run_demo(config, console=console)))
    return 0
