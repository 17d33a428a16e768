"""`labeler serve`: its flags, the bundle checked once, and Serve kept up until Ctrl-C or SIGTERM.

The application itself is labeler.serve (also reachable without argparse through
`serve run labeler.serve:app_builder`); this module turns flags into a ServeConfig and runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import time

from ray import serve

from jobs.flags import config_from_flags
from labeler.io import storage
from labeler.serve import ServeConfig, start


def configure_parser(parser: argparse.ArgumentParser) -> None:
    d = ServeConfig(bundle="-")
    parser.add_argument("--bundle", default="builtin", metavar="URI",
                        help="model bundle directory (local or s3://); default: the built-in real-music 4Q model")
    parser.add_argument("--host", default=d.host, help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=d.port, help="port (default %(default)s)")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--replicas", type=int, default=d.replicas, help="replicas (the minimum when autoscaling; default %(default)s)")
    parser.add_argument("--max-replicas", type=int, default=None, help="autoscale up to this many replicas")
    parser.add_argument("--replica-cpus", type=float, default=d.replica_cpus, help="CPUs per replica (default %(default)s)")
    parser.add_argument("--featurise-threads", type=int, default=d.featurise_threads, help="featurising threads per replica")
    parser.add_argument("--max-batch-size", type=int, default=d.max_batch_size, help="songs per model call (default %(default)s)")
    parser.add_argument("--batch-wait-timeout-s", type=float, default=d.batch_wait_timeout_s,
                        help="seconds a model call waits to fill its batch (default %(default)s)")
    parser.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb, help="request body limit (default %(default)s)")
    parser.add_argument("--max-json-kb", type=float, default=d.max_json_kb, help="JSON body limit (default %(default)s)")
    parser.add_argument("--max-audio-seconds", type=float, default=d.max_audio_seconds,
                        help="longest audio accepted (default %(default)s)")
    parser.add_argument("--allow-uri-prefix", action="append", default=[], metavar="PREFIX",
                        help="accept JSON audio_uri under this local folder or s3:// prefix (repeatable; default: none)")
    parser.add_argument("--embeddings", action="store_true", help="answer with the `embedding` column (as labeler label --embeddings)")
    parser.add_argument("--timeline", dest="timeline_seconds", type=float, default=None, metavar="SECONDS",
                        help="answer with the `timeline` column (as labeler label --timeline)")
    parser.add_argument("--tags", action="store_true", help="answer with the `tags` column (as labeler label --tags)")
    parser.add_argument("--expect-version", default=None, metavar="V",
                        help="refuse the bundle unless its recomputed model_version is V")


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    return config_from_flags(ServeConfig, args, bundle=storage.absolute_uri(args.bundle),
                             allow_uri_prefixes=tuple(args.allow_uri_prefix))


def run_cli(args: argparse.Namespace) -> int:
    from labeler.builtin.assemble import resolve_bundle  # noqa: PLC0415
    from labeler.bundle.info import read_bundle_info  # noqa: PLC0415
    from labeler.runtime.session import ensure_ray  # noqa: PLC0415

    args.bundle, line = resolve_bundle(args.bundle)
    if line:
        print(line, flush=True)
    config = config_from_args(args)
    # The whole bundle is verified here (one line on failure, not inside a replica), and the replicas
    # are pinned to the version checked.
    info = read_bundle_info(config.bundle, config.expect_version)
    config = dataclasses.replace(config, expect_version=info.model_version)
    if config.timeline_seconds is not None and not info.uses_audio:
        raise ValueError(f"--timeline labels windows of the audio, but bundle {storage.describe(info.uri)} "
                         f"is a {info.branch} model without an audio branch")
    if config.tags:
        info.tag_names()  # one line here for a bundle without a MusiCNN audio branch, not inside a replica
    # Ctrl-C, and SIGTERM from a process manager, both end in serve.shutdown(); SIGINT is set
    # explicitly because a shell starts background jobs with it ignored. Short sleeps: the signal may
    # land on one of Ray's threads, and Python runs the handler only when the main thread wakes up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    ensure_ray(args.address, include_dashboard=None)  # a local Ray keeps its dashboard for Serve
    try:
        start(config)
        print(f"serving {info.model_id} {info.model_version} on http://{config.host}:{config.port}"
              f" (POST /label, GET /healthz); Ctrl-C stops", flush=True)
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("stopping: shutting Serve down", flush=True)
    finally:
        serve.shutdown()
    return 0


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
