"""The built-in bundle's shipped parts and their manifest (no torch: the driver reads this first).

Layout of the package data `labeler/builtin/parts/`:

```
manifest.json        {"format": 1, "model_version", "model_id", "parts": {name: sha256}, "wheel_tensors": [...],
                      "wheels": [...]}
config.json          the bundle's config.json as the recipe exported it, with the build's provenance
trained.safetensors  the model tensors the recipe trained (heads, fine-tuned layers, calibration buffers)
encoder/config.json, tokenizer/<file>, lexical/<file>   the bundle's own files, unchanged
```

`wheel_tensors` names the model tensors that are the pretrained encoders' own, unchanged by training:
they are not shipped, assembly takes them from the pinned wheels (labeler.builtin.assemble).

Contract of `read_manifest(root)`: the Manifest, after every listed part was hashed; a missing,
unreadable or changed part, an unsafe name or a manifest that is not the expected shape raises
BuiltinError, one line naming the part and the fix. `describe(config)` is the one console line that
says which model labels (id, version, what it was trained on).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from labeler.bundle.verified import BundleError

PARTS_DIR = Path(__file__).resolve().parent / "parts"
MANIFEST_FILE = "manifest.json"
CONFIG_FILE = "config.json"
TRAINED_FILE = "trained.safetensors"
FORMAT = 1
BUILTIN_NAME = "builtin"  # `--bundle builtin`
REBUILD = "bash scripts/build_builtin.sh"
_PART = re.compile(r"^(?:config\.json|trained\.safetensors|encoder/config\.json|lexical/(?:vocab\.json|model\.safetensors)"
                   r"|tokenizer/[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BuiltinError(BundleError):
    """The shipped parts or the wheels cannot make the built-in bundle; str() is one line with the fix."""


@dataclass(frozen=True)
class Manifest:
    """The checked manifest of the shipped parts (`root` is the folder holding them)."""

    root: Path
    model_version: str
    model_id: str
    parts: dict[str, str]
    wheel_tensors: tuple[str, ...]
    wheels: tuple[str, ...]

    def path(self, name: str) -> Path:
        return self.root / name

    def config(self) -> dict:
        return json.loads(self.path(CONFIG_FILE).read_text(encoding="utf-8"))


def _refuse(root: Path, what: str) -> BuiltinError:
    return BuiltinError(f"the built-in model's shipped parts in {root} are not usable: {what} "
                        f"(reinstall the package, or rebuild them with `{REBUILD}`)")


def sha256_path(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_manifest(root: str | Path | None = None) -> Manifest:
    """The manifest of the parts in `root` (default PARTS_DIR), every part's sha256 checked (module doc)."""
    root = Path(root) if root is not None else PARTS_DIR
    try:
        data = json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise _refuse(root, f"{MANIFEST_FILE} is missing") from exc
    except (OSError, ValueError) as exc:
        raise _refuse(root, f"{MANIFEST_FILE} is not readable JSON") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("parts"), dict):
        raise _refuse(root, f"{MANIFEST_FILE} is not a format-{FORMAT} manifest")
    parts = data["parts"]
    for name in (CONFIG_FILE, TRAINED_FILE):
        if name not in parts:
            raise _refuse(root, f"{MANIFEST_FILE} lists no {name}")
    for name, digest in parts.items():
        if not isinstance(name, str) or not _PART.match(name) or not isinstance(digest, str) or not _SHA256.match(digest):
            raise _refuse(root, f"{MANIFEST_FILE} lists an unsafe name or hash {str(name)[:80]!r}")
        try:
            actual = sha256_path(root / name)
        except OSError as exc:
            raise _refuse(root, f"{name} is missing or unreadable") from exc
        if actual != digest:
            raise _refuse(root, f"{name} has sha256 {actual[:16]}..., the manifest records {digest[:16]}... "
                                f"(tampered or corrupted)")
    return Manifest(root=root, model_version=str(data.get("model_version", "")), model_id=str(data.get("model_id", "")),
                    parts=dict(parts), wheel_tensors=tuple(data.get("wheel_tensors") or ()),
                    wheels=tuple(data.get("wheels") or ()))


def trained_on(config: dict) -> str:
    """'160 4q clips + 1,393 moodylyrics4q lyrics' from the build's provenance ('' when unknown)."""
    datasets = ((config.get("provenance") or {}).get("builtin") or {}).get("datasets") or []
    words = []
    for d in datasets:
        if isinstance(d, dict) and isinstance(d.get("songs"), int) and isinstance(d.get("name"), str):
            words.append(f"{d['songs']:,} {d['name']} {d.get('unit', 'songs')}")
    return " + ".join(words)


def describe(config: dict, model_version: str) -> str:
    """The console line naming the built-in model: id, version, what it was trained on."""
    on = trained_on(config)
    return (f"model: built-in {config.get('model_id')} {model_version} (4Q, audio + lyrics; trained on "
            f"{on or 'the development data'}, research datasets: docs/real-music.md)")
