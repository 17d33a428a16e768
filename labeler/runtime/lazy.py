"""Lazy re-exports for a package (PEP 562), as transformers' lazy modules do.

`labeler.audio` and `labeler.models` re-export their public names so callers write
`from labeler.audio import Featurizer`; contract: reading a config (the CLI, train.fit.presets, a
driver) never imports librosa, numba or torch. The configuration names are imported eagerly; the heavy
ones are imported from their module on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, names: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: names[name] is the submodule that defines `name`; a
    submodule's own name imports it. The value found is cached in the package's `namespace`."""
    submodules = set(names.values())

    def __getattr__(name: str) -> Any:
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    return __getattr__
