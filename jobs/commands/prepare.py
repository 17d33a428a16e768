"""`labeler prepare`: dataset folders -> one training manifest with folds (Parquet, local or S3).

`train.data.manifest.prepare` does the work and returns the table and its report; this module parses
`--dataset NAME=PATH` / `--option NAME.key=value` into its sources (`parse_sources`: an option's
value takes the type of the adapter's keyword), writes the manifest and prints the report.
"""

from __future__ import annotations

import argparse
import inspect
import json
from collections.abc import Callable
from typing import Any

from labeler.contracts.coerce import coerce, field_types
from labeler.io import storage
from train.data.manifest import ADAPTERS, Source, prepare


def _coerce(func: Callable[..., Any], name: str, key: str, value: str) -> Any:
    """A --option value as the adapter's keyword expects it (`labeler.contracts.coerce`'s rules, by its type hint)."""
    params = inspect.signature(func).parameters
    if key not in params or key == "path":
        valid = ", ".join(p for p in params if p != "path")
        raise ValueError(f"unknown option {name}.{key}: {name} takes {valid}")
    return coerce(f"option {name}.{key}", value, field_types(func).get(key, str))


def parse_sources(datasets: list[str], options: list[str]) -> list[Source]:
    """['4q=/data/4q'], ['4q.lyrics=/data/4q_lyrics'] -> [('4q', '/data/4q', {'lyrics': ...})]."""
    sources: list[Source] = []
    for item in datasets:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--dataset expects NAME=PATH, got {item!r}")
        if name not in ADAPTERS:
            raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(ADAPTERS)}")
        sources.append((name, path, {}))
    by_name = {name: opts for name, _, opts in sources}
    for item in options:
        target, sep, value = item.partition("=")
        name, dot, key = target.partition(".")
        if not sep or not dot or not key:
            raise ValueError(f"--option expects NAME.key=value, got {item!r}")
        if name not in by_name:
            raise ValueError(f"--option {item!r}: dataset {name!r} is not among --dataset")
        by_name[name][key] = _coerce(ADAPTERS[name], name, key, value)
    return sources


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", action="append", default=[], metavar="NAME=PATH", required=True,
                        help=f"a dataset folder (or table, for generic); NAME one of {', '.join(ADAPTERS)}; repeatable, first wins on duplicates")
    parser.add_argument("--option", action="append", default=[], metavar="NAME.key=value",
                        help="an adapter option, e.g. deezer.join=lyrics.parquet, generic.song_id=id, pmemo.require_inputs=false")
    parser.add_argument("--folds", type=int, default=5, help="number of cross-validation folds k (>= 3)")
    parser.add_argument("--cv", default="ALL", help="ALL (each dataset split into k folds), PME or holdout:<dataset> (that dataset is fold 0)")
    parser.add_argument("--seed", type=int, default=8848, help="seed of the fold shuffle")
    parser.add_argument("--output", required=True, help="manifest Parquet URI (local path or s3://)")
    parser.add_argument("--report", default=None, help="optional JSON report URI")


def run_cli(args: argparse.Namespace) -> int:
    sources = parse_sources(args.dataset, args.option)
    table, report = prepare(sources, k=args.folds, cv=args.cv, seed=args.seed)
    storage.write_parquet(table, args.output)
    if args.report:
        storage.write_text(args.report, json.dumps(report.to_dict(), indent=2))
    print(report.format())
    print(f"wrote {table.num_rows} rows to {storage.describe(args.output)}")
    return 0
