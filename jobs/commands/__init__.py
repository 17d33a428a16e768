"""One module per `labeler` subcommand: its flags (`configure_parser`) and `run_cli(args[, console])`.

Each turns flags into a typed config and one call into `labeler/` or `train/`, then prints the
result; no work happens here. `jobs.cli` imports a command's module only when it runs.
"""
