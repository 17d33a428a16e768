"""The `labeler` command line.

Each subcommand lives in the module that owns its work, which provides two functions:
`configure_parser(parser)` to add its flags and `run_cli(args) -> int` to run it. Modules are
imported only when their subcommand runs, so `labeler --help` stays fast and a subcommand's heavy
dependencies (torch, Ray) load only when needed. This is the wiring layer: it is the one place in
`labeler/` that may reach into `train/` (for prepare, train and evaluate).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("labeler.demo", "synthesise a catalogue, train the cpu-small model on it, label it (no network)"),
    "synth": ("labeler.synth", "write a synthetic catalogue, its audio and a labelled manifest"),
    "featurise": ("labeler.featurise_job", "featurise a catalogue's chorus audio with Ray Data into Parquet"),
    "prepare": ("train.manifest", "build a training manifest with folds from dataset folders"),
    "train": ("train.run", "train audio, lyrics or fusion models over cross-validation folds with Ray Train"),
    "evaluate": ("train.evaluate", "evaluate a model bundle on a manifest's test fold(s)"),
    "label": ("labeler.pipeline", "label a catalogue with a model bundle (Ray Data) and write labels Parquet"),
    "serve": ("labeler.serve", "serve POST /label for single songs with Ray Serve"),
    "compare": ("labeler.compare", "compare two model versions' labels of a catalogue before switching ETL to the new one"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labeler",
        description="Label a music catalogue with emotion quadrants (Q1 A+V+, Q2 A+V-, Q3 A-V-, Q4 A-V+).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).configure_parser(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from labeler.storage import quiet_credential_loggers  # noqa: PLC0415

    quiet_credential_loggers()  # botocore and friends log credentials at DEBUG, even under -v
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run_cli(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        # Expected user errors (bad input, bad contract, unknown mode): one clear line, no traceback.
        print(f"labeler {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
