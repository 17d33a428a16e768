"""`labeler compare OUT --from VERSION --to VERSION`: its flags and its console summary.

The comparison itself (`compare_versions`, the report files) is `labeler.label_job.compare`, which a notebook
or an ETL check can call without argparse; this module only turns flags into that call and prints
one line per report.
"""

from __future__ import annotations

import argparse
import json

from labeler.io import storage
from labeler.label_job.compare import compare_versions, fmt_value
from labeler.runtime.display import plain_text


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", metavar="OUT", help="labels root written by `labeler label --output` (local or s3://)")
    parser.add_argument("--from", dest="from_version", required=True, metavar="VERSION",
                        help="the version ETL reads now (full model_version or a unique prefix)")
    parser.add_argument("--to", dest="to_version", required=True, metavar="VERSION", help="the candidate version")
    parser.add_argument("--report", default=None, metavar="DIR",
                        help="where to write report.md/.json/transitions.png (default OUT/_compare/<from>_to_<to>)")
    parser.add_argument("--top", type=int, default=20, help="songs listed under 'changed most' (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")


def run_cli(args: argparse.Namespace) -> int:
    result, files = compare_versions(args.output, args.from_version, args.to_version, args.report, args.top)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{plain_text(result['from']['version'])} -> {plain_text(result['to']['version'])}: agreement "
              f"{fmt_value(result['agreement'])} over {result['labelled_by_both']} songs, {result['label_changes']} "
              f"label change(s), mean probability shift {fmt_value(result['mean_prob_shift'])}")
        others = "report.json, transitions.png" if "png" in files else "report.json; the plot could not be drawn: see the log"
        print(f"report: {storage.describe(files['markdown'])} (+ {others})")
    return 0
