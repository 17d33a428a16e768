"""`labeler featurise`: its flags, turned into a `FeaturizerConfig` and one `featurise_catalogue` call.

The job itself is `labeler.label_job.featurise_job` (the training feature cache reuses it with its own config).
"""

from __future__ import annotations

import argparse

from jobs.flags import config_from_flags
from labeler.audio import FeaturizerConfig
from labeler.label_job.featurise_job import featurise_catalogue, format_summary


def configure_parser(parser: argparse.ArgumentParser) -> None:
    defaults = FeaturizerConfig()
    parser.add_argument("--catalogue", required=True, help="catalogue Parquet file or directory (local or s3://)")
    parser.add_argument("--output", required=True, help="output Parquet directory (local or s3://)")
    parser.add_argument("--clip-seconds", type=float, default=defaults.clip_seconds, help="chorus clip length in seconds")
    parser.add_argument("--sample-rate", type=int, default=defaults.sample_rate, help="model sample rate in Hz")
    parser.add_argument("--fmin", type=float, default=defaults.fmin, help="lowest mel band edge in Hz")
    parser.add_argument("--fmax", type=float, default=None,
                        help=f"highest mel band edge in Hz (default: {defaults.fmax:g} or half the sample rate, whichever is lower)")
    parser.add_argument("--chorus-search-seconds", type=float, default=defaults.chorus_search_seconds,
                        help="automatic chorus detection analyses at most this much of each track")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per Ray Data batch")
    parser.add_argument("--concurrency", type=int, default=None, help="featurizer actors (default: up to the cluster's CPUs)")
    parser.add_argument("--descriptors", action="store_true", help="also compute the handcrafted descriptor vector (Hybrid models)")
    parser.add_argument("--keep-columns", default="", help="comma-separated extra catalogue columns to pass through")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a local Ray)")


def config_from_args(args: argparse.Namespace) -> FeaturizerConfig:
    """The flags named after FeaturizerConfig fields; the chorus search covers at least the clip, and
    without --fmax the mel bands stop at Nyquist when the default edge lies above it (`--sample-rate 16000`)."""
    fmax = args.fmax if args.fmax is not None else min(FeaturizerConfig().fmax, args.sample_rate / 2)
    return config_from_flags(FeaturizerConfig, args, fmax=fmax,
                             chorus_search_seconds=max(args.chorus_search_seconds, args.clip_seconds))


def run_cli(args: argparse.Namespace) -> int:
    summary = featurise_catalogue(
        args.catalogue,
        args.output,
        config_from_args(args),
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        keep_columns=[c.strip() for c in args.keep_columns.split(",") if c.strip()],
        overwrite=args.overwrite,
        address=args.address,
    )
    print(format_summary(summary))
    return 0
