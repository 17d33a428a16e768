"""A string from a command line to a typed field: one rule set for every `KEY=VALUE` knob.

`labeler train --set KEY=VALUE`, `labeler prepare --option NAME.key=value` and
`serve run labeler.serve:app_builder key=value` all hand typed fields a string, and all three call
`coerce` with the field's annotation, so true and false have one spelling:

* a field that is optional (`X | None`) takes "", "none" or "null" as None;
* a tuple field (`tuple[int, ...]`) takes a comma-separated list, each item stripped and converted by
  the same rules;
* a `str` field takes the string as it is;
* anything else is pydantic's lax conversion (pydantic comes with Ray Serve and is pinned):
  bool from true/false, yes/no, on/off, 1/0 (any case), int from "3" (not "3.5"), float from "1e-3".

A value that is not a string (a keyword argument from Python) is returned as it is, except that a
list becomes a tuple. A string that does not convert raises ValueError naming the field, what it
expects and what it got: the CLIs turn that into their one-line error.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

NONE_WORDS = ("", "none", "null")
_EXPECTS = {bool: "true or false", int: "an integer", float: "a number"}


@cache
def _adapter(kind: Any) -> TypeAdapter:
    return TypeAdapter(kind)


def _optional(annotation: Any) -> tuple[bool, Any]:
    """(whether None is allowed, the annotation without None)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) < len(typing.get_args(annotation)):
            return True, rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007 - a Union built at run time
    return False, annotation


def coerce(name: str, raw: Any, annotation: Any) -> Any:
    """`raw` converted to `annotation` by the rules in the module docstring; ValueError naming `name` if it cannot be."""
    if not isinstance(raw, str):
        return tuple(raw) if isinstance(raw, list) else raw
    optional, kind = _optional(annotation)
    text = raw.strip()
    if optional and text.lower() in NONE_WORDS:
        return None
    if kind is str or kind is Any:
        return raw
    if typing.get_origin(kind) is tuple:
        item = next((a for a in typing.get_args(kind) if a is not Ellipsis), str)
        return tuple(coerce(name, part.strip(), item) for part in text.split(",") if part.strip())
    try:
        return _adapter(kind).validate_python(text)
    except ValidationError:
        expects = _EXPECTS.get(kind, f"a {getattr(kind, '__name__', kind)}")
        raise ValueError(f"{name} expects {expects}, got {raw!r}") from None


_FIELD_TYPES: dict[Any, dict[str, Any]] = {}


def field_types(owner: Any) -> dict[str, Any]:
    """A dataclass's or a function's resolved annotations, for `coerce` (string annotations resolved once)."""
    hints = _FIELD_TYPES.get(owner)
    if hints is None:
        hints = _FIELD_TYPES[owner] = typing.get_type_hints(owner)
    return hints


def config_from_dict(cls, d: dict):
    """A configuration dataclass from a bundle's or a run's JSON, refusing unknown keys (ValueError naming
    them: a newer bundle's settings must not be silently dropped). Values are passed as they are; the
    dataclass's own checks (`__post_init__`) judge them."""
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}")
    return cls(**d)
