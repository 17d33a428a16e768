"""`labeler evaluate`: score a bundle on a manifest's test fold(s); stdout is only the metrics.

Scripts read evaluate's stdout as JSON (the default), so nothing else is printed there (jobs.cli
keeps its log-file notice off stdout for this command). The scoring is `train.score.evaluate`,
the Markdown table `train.score.report`'s.
"""

from __future__ import annotations

import argparse
import json

from train.score.evaluate import evaluate_bundle
from train.score.report import jsonable, metrics_markdown


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="model bundle directory (local or s3://), or `builtin`")
    parser.add_argument("--manifest", required=True, help="training manifest Parquet (local or s3://)")
    parser.add_argument("--fold", type=int, default=None, help="score only this test fold (default: all rows)")
    parser.add_argument("--format", choices=("json", "markdown"), default="json", help="output format on stdout")
    parser.add_argument("--batch-size", type=int, default=16, help="rows featurised and scored at a time")


def run_cli(args: argparse.Namespace, console=None) -> int:
    from labeler.builtin.assemble import resolve_bundle  # noqa: PLC0415
    from labeler.runtime.console import Console  # noqa: PLC0415

    console = console or Console()
    bundle, line = resolve_bundle(args.bundle)
    if line:  # stdout is only the metrics
        console.error(line)
    metrics = evaluate_bundle(bundle, args.manifest, fold=args.fold, batch_size=args.batch_size)
    if args.format == "json":
        console.print(json.dumps(jsonable(metrics), indent=2))
    else:
        where = f"fold {args.fold}" if args.fold is not None else "all rows"
        text = metrics_markdown(metrics, metrics["classes"], title=f"{args.bundle} on {args.manifest} ({where})")
        console.print(text + f"\nskipped rows: {metrics['skipped']} {metrics['skipped_by_kind'] or ''}")
    return 0
