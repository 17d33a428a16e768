"""`labeler train` (and `python -m jobs.train_folds`): its flags, one `train.fit.run.train` call, the summary.

Every knob beyond the flags below is a preset field (`--set KEY=VALUE`, `train.fit.presets`); the
training driver itself is `train.fit.run.train`, which a notebook can call without argparse.
`format_result` is also the summary of `labeler recipe`.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

from labeler.io import storage
from train.fit.presets import AUDIO_MODELS, PRESETS, parse_overrides
from train.fit.run import TrainResult, train


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="training manifest (Parquet, local or s3://) with folds")
    parser.add_argument("--output", required=True, help="run output folder (local or s3://)")
    parser.add_argument("--branch", default="all", choices=("audio", "lyrics", "fusion", "all"))
    parser.add_argument("--mode", default="4Q", choices=("4Q", "Ar", "Va", "classes"),
                        help="4Q/Ar/Va: quadrant labels; classes: the manifest's own `label` classes (e.g. mirex clusters)")
    parser.add_argument("--preset", default="cpu-small", choices=tuple(PRESETS))
    parser.add_argument("--model", dest="audio_model", choices=AUDIO_MODELS,
                        help="audio branch network (default: the preset's; cpu-small: MusiCNN, the pretrained musicnn)")
    parser.add_argument("--lyrics-model", help="lyrics encoder: BERT, ALBERT, MiniLM, a HF id, a folder or s3://")
    parser.add_argument("--folds", default=None, help="'all' or e.g. '0,2' (default: the preset's folds)")
    parser.add_argument("--audio-run", help="--branch fusion: output of the audio run (per-fold bundles)")
    parser.add_argument("--lyrics-run", help="--branch fusion: output of the lyrics run")
    parser.add_argument("--storage", dest="storage_uri", help="Ray Train checkpoint storage (default OUTPUT/checkpoints)")
    parser.add_argument("--cache", dest="cache_uri", help="feature cache root (default OUTPUT/feature_cache)")
    parser.add_argument("--search", help="hyperparameter grid, e.g. 'lr_scale=0.5,1,2;batch_size=8,16;dropout=0.1,0.3'")
    parser.add_argument("--num-samples", type=int, default=1, help="repeats of the search grid (Tune num_samples)")
    parser.add_argument("--lexical-source", metavar="MANIFEST",
                        help="a larger labelled lyrics manifest (e.g. `labeler prepare --dataset moodylyrics4q=DIR`) "
                             "the lexical lyrics model learns its words from, mapped to this run's classes on the "
                             "training folds; its songs that are also in --manifest are left out")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a preset field (repeatable)")


def run_cli(args: argparse.Namespace, console=None) -> int:
    from labeler.runtime.console import Console  # noqa: PLC0415

    console = console or Console()
    overrides = parse_overrides(args.set)
    if args.lexical_source:
        overrides["lexical_source"] = args.lexical_source
    result = train(args.manifest, args.output, branch=args.branch, mode=args.mode, preset=args.preset,
                   folds=args.folds, audio_model=args.audio_model, lyrics_model=args.lyrics_model,
                   audio_run=args.audio_run, lyrics_run=args.lyrics_run, storage_uri=args.storage_uri,
                   cache_uri=args.cache_uri, search=args.search, num_samples=args.num_samples,
                   console=console, **overrides)
    console.print(format_result(result))
    return 0


def format_result(result: TrainResult) -> str:
    """The run's summary: test macro-F1 of every branch beside the baselines, and where the files are."""
    lines = [f"trained {', '.join(result.report['branches'])} in {result.seconds:.0f} s -> {storage.describe(result.output_uri)}"]
    for name, entry in itertools.chain(result.report["branches"].items(), result.report["baselines"].items()):
        f1 = [m["macro_f1"] for m in entry["folds"].values()]
        lines.append(f"  {name:22s} test macro-F1 {np.mean(f1):.3f} over {len(f1)} fold(s)")
    lines.append(f"bundle: {storage.describe(result.bundle_uri)}")
    lines.append(f"report: {storage.describe(storage.join(result.output_uri, 'report.md'))}")
    return "\n".join(lines)
