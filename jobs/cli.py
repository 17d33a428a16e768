"""The `labeler` command line.

Each subcommand has a module in `jobs/` (`jobs/commands/<name>.py`, and `jobs/demo.py`) that
provides two functions: `configure_parser(parser)` to add its flags and `run_cli(args)` (or
`run_cli(args, console)`) to run it, as one call into `labeler/` or `train/`. Modules are imported
only when their subcommand runs, so `labeler --help` stays fast and a subcommand's heavy
dependencies (torch, Ray) load only when needed. The command line lives here, outside the library,
so that `labeler/` (the runtime that labels) never depends on `train/` or on argument parsing
(tests/test_layout.py checks it).

Every command runs in a `labeler.runtime.session.session`: Ray's and the libraries' output goes to a log file
whose path is printed first; a command that takes a `console` talks to the person through it, and the
`print()`s of one that does not still reach the person. Failures end as one line (labeler.runtime.errors):
an expected one (bad flags or input, credentials, a bad bundle, a busy output) exits 2, a bug exits
1 and names the log holding its traceback; `--debug` also prints the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import logging
import sys
import traceback

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("jobs.demo", "synthesise a catalogue, train the cpu-small model on it, label it (no network)"),
    "synth": ("jobs.commands.synth", "write a synthetic catalogue, its audio and a labelled manifest"),
    "featurise": ("jobs.commands.featurise", "featurise a catalogue's chorus audio with Ray Data into Parquet"),
    "prepare": ("jobs.commands.prepare", "build a training manifest with folds from dataset folders"),
    "train": ("jobs.commands.train", "train audio, lyrics or fusion models over cross-validation folds with Ray Train"),
    "evaluate": ("jobs.commands.evaluate", "evaluate a model bundle on a manifest's test fold(s)"),
    "label": ("jobs.commands.label", "label a catalogue with a model bundle (Ray Data) and write labels Parquet"),
    "serve": ("jobs.commands.serve", "serve POST /label for single songs with Ray Serve"),
    "compare": ("jobs.commands.compare", "compare two model versions' labels of a catalogue before switching ETL to the new one"),
    "recipe": ("jobs.commands.recipe", "public datasets -> one manifest -> a real-music bundle and its report"),
}

log = logging.getLogger(__name__)


class OneLineParser(argparse.ArgumentParser):
    """Bad flags end in one line naming the fix (`--help`), exit status 2, not a usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _common_flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else False
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="show Ray's logs and progress here instead of only in the log file")
    parser.add_argument("--debug", action="store_true", default=default, help="print tracebacks of failures")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="labeler",
        description="Label a music catalogue with emotion quadrants (Q1 A+V+, Q2 A+V-, Q3 A-V-, Q4 A-V+).",
    )
    _common_flags(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name, (module, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        _common_flags(sub_parser, suppress=True)  # also accepted after the subcommand
        if name == command:
            importlib.import_module(module).configure_parser(sub_parser)
    return parser


def _run(module, args: argparse.Namespace, console) -> int:
    if "console" in inspect.signature(module.run_cli).parameters:
        return int(module.run_cli(args, console=console) or 0)
    with contextlib.redirect_stdout(console.out):  # its print()s are its summary: they go to the person
        return int(module.run_cli(args) or 0)


def main(argv: list[str] | None = None) -> int:
    from labeler.runtime import session as session_mod  # noqa: PLC0415
    from labeler.runtime.errors import explain  # noqa: PLC0415

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(command)
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exc:  # --help (0) or a bad flag (2, already printed in one line)
        return int(exc.code or 0)
    if extra:  # named for the subcommand they were given to, not for `labeler`
        prog = f"labeler {args.command}" if args.command else "labeler"
        print(f"{prog}: error: unrecognized arguments: {' '.join(extra)} (see `{prog} --help`)", file=sys.stderr)
        return 2
    if args.command is None:
        parser.print_help()
        return 0
    prog = f"labeler {args.command}"
    # Under `ray job submit` the job log is the place for Ray's output: keep it there, as --verbose does.
    verbose = args.verbose or session_mod.in_ray_job()
    with contextlib.ExitStack() as stack:
        try:
            console = stack.enter_context(session_mod.session(session_mod.SessionOptions(args.command, verbose=verbose)))
        except OSError as exc:  # no safe log file (labeler/runtime/private_dir.py): nothing ran yet, say why in one line
            print(f"{prog}: error: {explain(exc) or exc}", file=sys.stderr)
            return 2
        from labeler.io.storage import quiet_credential_loggers  # noqa: PLC0415

        quiet_credential_loggers()  # botocore and friends log credentials at DEBUG, even under -v
        # evaluate's stdout is its metrics (JSON by default, for scripts): nothing else may go there.
        if not verbose and args.command not in ("synth", "prepare", "evaluate"):
            console.print(f"{prog}: Ray's logs and progress go to {console.log_path} (--verbose shows them here)")
        try:
            module = importlib.import_module(COMMANDS[args.command][0])
            return _run(module, args, console)
        except KeyboardInterrupt:
            console.error(f"{prog}: interrupted")
            return 130
        except Exception as exc:  # noqa: BLE001 - every failure ends in one line; tracebacks go to the log
            log.error("%s failed", prog, exc_info=True)
            if args.debug:
                console.error(traceback.format_exc().rstrip())
            message = explain(exc)
            if message is not None:
                console.error(f"{prog}: error: {message}")
                return 2
            console.error(f"{prog}: internal error: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                          f" (traceback in {console.log_path}; --debug prints it)")
            return 1


if __name__ == "__main__":
    sys.exit(main())
