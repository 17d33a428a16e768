"""Parsed flags to a typed config, by name: the one rule every `labeler` command follows.

A flag whose argparse `dest` is a config dataclass field's name reaches that field; the command passes only
what it converts or computes. A new knob is then a field
and a flag (whose default is read from the dataclass), and a dest that drifts from its field's name
is caught by the parser tests (tests/test_cli.py, tests/test_serve.py).
"""

from __future__ import annotations

import argparse
import dataclasses


def config_from_flags(cls, args: argparse.Namespace, **values):
    """`cls` built from the flags named after its fields; `values` (converted or computed ones) win."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{**{name: value for name, value in vars(args).items() if name in fields}, **values})
