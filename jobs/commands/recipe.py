"""`labeler recipe`: its flags, turned into a `RecipeConfig` and one `run_recipe` call.

The recipe (finding the datasets, one manifest, training with the real-music defaults) is
`train.fit.recipe`; this module parses `--dataset NAME=PATH` and `--set`, and prints the run's summary
and the next command.
"""

from __future__ import annotations

import argparse

from jobs.commands.train import format_result
from labeler.io import storage
from train.fit.presets import parse_overrides
from train.fit.recipe import KNOWN_FOLDERS, RecipeConfig, run_recipe


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="folder holding the datasets' folders: " + ", ".join(KNOWN_FOLDERS.values()))
    parser.add_argument("--dataset", action="append", default=[], metavar="NAME=PATH",
                        help="a dataset folder by adapter name (repeatable; overrides the one found in --data)")
    parser.add_argument("--output", required=True, help="run folder: manifest.parquet, bundle/, report.md (local or s3://)")
    parser.add_argument("--max-songs", type=int, default=None, help="at most this many songs per dataset (a quick run)")
    parser.add_argument("--folds", default="all", help="folds to train: 'all' (default) or e.g. '0'")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's)")
    parser.add_argument("--seed", type=int, default=8848)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a preset field (repeatable)")


def run_cli(args: argparse.Namespace, console=None) -> int:
    from labeler.runtime.console import Console  # noqa: PLC0415

    console = console or Console()
    pairs = []
    for item in args.dataset:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"bad --dataset {item!r}: expected NAME=PATH")
        pairs.append((name.strip(), path.strip()))
    config = RecipeConfig(output=args.output, data=args.data, datasets=tuple(pairs), max_songs=args.max_songs,
                          folds=args.folds, epochs=args.epochs, seed=args.seed, overrides=parse_overrides(args.set))
    result = run_recipe(config, console=console)
    console.print(format_result(result))
    console.print("next: label a catalogue with it:\n"
                  f"  labeler label --catalogue my_catalogue.parquet --bundle {storage.describe(result.bundle_uri)} --output my_labels/")
    return 0
