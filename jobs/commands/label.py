"""`labeler label`: its flags, the typed config built from them, and the call into the driver.

The job itself is labeler.label_job, callable without argparse; this module only turns flags into that call.
"""

from __future__ import annotations

import argparse
import json

from jobs.flags import config_from_flags
from labeler.label_job.config import LabelJobConfig
from labeler.label_job.driver import label_catalogue
from labeler.models.configuration import ENGINES


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalogue", required=True, metavar="URI", help="catalogue Parquet file or directory (local or s3://)")
    parser.add_argument("--bundle", default="builtin", metavar="URI",
                        help="model bundle directory (local or s3://); default: the built-in real-music 4Q model")
    parser.add_argument("--output", required=True, metavar="URI", help="labels root; writes <output>/version=<model_version>/")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--featurise-batch-size", type=int, default=None, help="songs per featurise batch (default 16)")
    parser.add_argument("--predict-batch-size", type=int, default=None, help="songs per model call (default 64 GPU / 32 CPU)")
    parser.add_argument("--featurise-cpus", type=float, default=None, help="CPUs per featurise task (default: 1 with GPUs; CPU only, what fits one task per CPU beside the actors)")
    parser.add_argument("--min-actors", type=int, default=None, help="smallest Predictor pool (default 1)")
    parser.add_argument("--max-actors", type=int, default=None, help="largest Predictor pool (default: GPUs, or CPUs/8)")
    gpu = parser.add_mutually_exclusive_group()
    gpu.add_argument("--gpu", dest="use_gpu", action="store_const", const=True, default=None, help="Predictor on GPU actors")
    gpu.add_argument("--no-gpu", dest="use_gpu", action="store_const", const=False, help="Predictor on CPU actors")
    parser.add_argument("--rows-per-part", type=int, default=LabelJobConfig.rows_per_part,
                        help="rows per committed part file, the unit a killed run resumes from (default %(default)s)")
    parser.add_argument("--lease-seconds", type=float, default=LabelJobConfig.lease_seconds,
                        help="how long a killed run keeps other runs off this output version (default %(default)s)")
    parser.add_argument("--expect-version", default=None, metavar="V",
                        help="refuse the bundle unless its recomputed model_version is V (pins the model against tampering)")
    parser.add_argument("--max-retries", type=int, default=LabelJobConfig.max_retries,
                        help="retries of a task, actor or track whose process died before the track is isolated "
                             "as a worker_crash row or the run fails (default %(default)s)")
    parser.add_argument("--max-resumes", type=int, default=LabelJobConfig.max_resumes,
                        help="times a run whose plan the cluster failed (a lost node) labels the rest itself before "
                             "it fails; re-submitting then resumes too (default %(default)s)")
    parser.add_argument("--stall-seconds", type=float, default=LabelJobConfig.stall_seconds, metavar="SECONDS",
                        help="a run that makes no progress this long (something the cluster cannot schedule: an actor "
                             "larger than any node, resources held by other work) re-plans when its nodes changed, "
                             "else fails in one line naming the demand and the largest node, exit status 2; "
                             "committed parts are kept and a re-run resumes (default %(default)s)")
    parser.add_argument("--plot", default=None, metavar="PNG", help="also draw the quadrant distribution and V-A scatter")
    parser.add_argument("--embeddings", action="store_true",
                        help="also write `embedding`: the model's penultimate vector, L2-normalised, for similarity search")
    parser.add_argument("--timeline", dest="timeline_seconds", type=float, default=None, metavar="SECONDS",
                        help="also write `timeline`: labels of successive SECONDS-long windows of the whole track")
    parser.add_argument("--max-audio-seconds", type=float, default=LabelJobConfig.max_audio_seconds, metavar="SECONDS",
                        help="a longer track (by its file header) is not decoded: its row gets audio_error "
                             "too_long (default %(default)s)")
    parser.add_argument("--engine", choices=ENGINES, default=LabelJobConfig.engine,
                        help="how a CPU Predictor runs the frozen encoders: auto (ONNX Runtime where the part exports, "
                             "else PyTorch), onnxruntime or torch; CUDA always runs PyTorch (default %(default)s)")
    parser.add_argument("--tags", action="store_true",
                        help="also write `tags`: the MusiCNN encoder's 50 tag probabilities (genre, era, instruments, "
                             "mood words; a bundle with a MusiCNN audio branch)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def config_from_args(args: argparse.Namespace) -> LabelJobConfig:
    return config_from_flags(LabelJobConfig, args)  # every flag but the three URIs and --json is a field


def run_cli(args: argparse.Namespace, console=None) -> int:
    from labeler.builtin.assemble import resolve_bundle  # noqa: PLC0415
    from labeler.runtime.console import Console  # noqa: PLC0415

    console = console or Console()
    bundle, line = resolve_bundle(args.bundle)
    if line:
        console.print(line)
    summary = label_catalogue(args.catalogue, bundle, args.output, config_from_args(args), console=console)
    console.print(json.dumps(summary.to_dict(), indent=2) if args.json else summary.to_text())
    return 0
