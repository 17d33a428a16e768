"""Ray job entry point for cross-validated training.

    ray job submit --working-dir . -- python -m jobs.train_folds \\
        --manifest s3://bucket/manifest.parquet --output s3://bucket/runs/r1 --branch all --preset becmer --folds all

Takes exactly the flags of `labeler train` (see jobs/commands/train.py) and runs it.
"""

from __future__ import annotations

import sys

from jobs.cli import main


def run(argv: list[str] | None = None) -> int:
    return main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(run())
