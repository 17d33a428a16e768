"""The entry points: the `labeler` command line (`jobs.cli`, one module per subcommand in
`jobs/commands/`, plus `jobs.demo`) and `ray job submit -- python -m jobs.<name> ...`.

Everything that reads argv is here, outside the library: `labeler/` (the runtime that labels) and
`train/` take typed configs, and `labeler/` never imports this package (tests/test_layout.py).
"""
