"""A bundle's verified file set: the only way any process reads a bundle's files.

Contract: never imports torch, so the labelling driver checks the whole bundle before it takes a
lease or starts Ray work; every process that loads a part of a bundle (the driver, featurise tasks that
tokenise lyrics, Serve replicas, Predictor actors) reads that part through the same checks. The rules:

- A bundle's files are exactly the names listed in config.json's `files`, each with its sha256.
  A listed name must look like one of the names a bundle holds (`model.safetensors`,
  `encoder/config.json`, `tokenizer/<file>`); `..`, absolute paths, hidden names and anything else
  are refused before any path is built from them. A remote bundle downloads only listed names.
- `model_version` is recomputed from the listed hashes and the prediction-relevant part of the
  config (`PREDICTIVE_KEYS`), must match `^[0-9a-f]{16}$` and must equal the recorded one; a caller
  may pin it (`expect_version`: tampering with a bundle then fails, not only corrupting it).
- Bytes are hashed as they are read and used only when they match: the tokenizer is loaded from a
  private folder holding only the verified tokenizer files, so nothing unlisted is ever read.

What does not change predictions (provenance, metrics, model_id) is outside the version: re-exporting
the same model with new metrics keeps its version, so a catalogue is not relabelled for nothing.
Anyone who can write the bundle can therefore change those without `--expect-version` noticing, so
what reaches people is checked instead (labeler.runtime.display's policy): `model_id` and the class names,
which go into every label row, /healthz and the console, must be plain text (no control or format
characters, `check_names`) or the bundle is refused; provenance and metrics are never shown raw.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labeler.io import storage
from labeler.runtime.display import check_plain

FORMAT = 2
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ENCODER_DIR = "encoder"
TOKENIZER_DIR = "tokenizer"
LEXICAL_DIR = "lexical"  # the stacked lyrics branch's lexical model (labeler.lyrics.lexical): two fixed names
ENCODER_CONFIG = f"{ENCODER_DIR}/config.json"
VERSION_PATTERN = re.compile(r"^[0-9a-f]{16}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# The names a bundle can hold; a tokenizer file is one plain name inside tokenizer/.
_LISTABLE = re.compile(r"^(?:model\.safetensors|encoder/config\.json|lexical/(?:vocab\.json|model\.safetensors)"
                       r"|tokenizer/[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$")
MAX_FILES = 64
# The config keys that change what the model predicts or the label rows it yields (with the files'
# hashes; ambiguous_threshold sets the `ambiguous` flag): the version covers these and nothing else.
PREDICTIVE_KEYS = ("format", "mode", "classes", "model", "featurizer", "lyrics", "temperature",
                   "descriptor_stats", "tied_weights", "ambiguous_threshold", "lexical")


class BundleError(ValueError):
    """A bundle that cannot be trusted or read; the message names the bundle and the file."""


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace: the same config always hashes the same."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def check_version(value: Any, what: str = "model_version") -> str:
    """`value` when it is 16 lowercase hex digits (the only thing ever used in an output path)."""
    if not isinstance(value, str) or not VERSION_PATTERN.match(value):
        raise BundleError(f"{what} must be 16 lowercase hex digits, got {str(value)[:40]!r}")
    return value


def compute_model_version(config: dict) -> str:
    """16 hex chars of sha256 over the listed files' sha256 and the canonical PREDICTIVE_KEYS of the config.

    Weights, encoder config and tokenizer files are all in `files`, so each changes the version;
    provenance, metrics and model_id do not.
    """
    files = config.get("files") or {}
    if WEIGHTS_FILE not in files:
        raise BundleError(f"{CONFIG_FILE} lists no {WEIGHTS_FILE}")
    body = {k: config.get(k) for k in PREDICTIVE_KEYS}
    listing = "".join(f"{name}={files[name]};" for name in sorted(files))
    return hashlib.sha256((listing + "|" + canonical_json(body)).encode("utf-8")).hexdigest()[:16]


def _where(uri: str) -> str:
    return f"bundle {storage.describe(uri)}"


def read_config(uri: str) -> dict:
    """config.json, parsed and shape-checked (format, model, mode, classes, a sane `files` listing)."""
    config_uri = storage.join(uri, CONFIG_FILE)
    try:
        text = storage.read_text(config_uri)
    except FileNotFoundError as exc:
        missing = "not found" if storage.exists(uri) else "not found (no such bundle)"
        raise BundleError(f"{_where(uri)}: {CONFIG_FILE} {missing}; is this a model bundle?") from exc
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise BundleError(f"{_where(uri)}: {CONFIG_FILE} is not a readable text file") from exc
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{_where(uri)}: {CONFIG_FILE} is not valid JSON ({str(exc)[:200]})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise BundleError(f"{_where(uri)}: {CONFIG_FILE} has format {found!r}, expected {FORMAT} "
                          f"(bundles of format 1 must be exported again)")
    for key in ("model", "files", "model_version", "mode", "model_id", "classes"):
        if key not in config:
            raise BundleError(f"{_where(uri)}: {CONFIG_FILE} has no {key!r}")
    if not isinstance(config["model"], dict) or not isinstance(config["model"].get("branch"), str):
        raise BundleError(f"{_where(uri)}: {CONFIG_FILE} 'model' names no branch")
    listed_files(uri, config)
    check_names(config, f"{_where(uri)}: {CONFIG_FILE}")
    return config


def check_names(config: dict, where: str) -> None:
    """model_id and every class name plain text (labeler.runtime.display.check_plain): BundleError otherwise.

    These are the bundle's words that go into label rows, /healthz and the console as they are; the
    version does not cover model_id, so this check (not --expect-version) is what keeps them safe.
    """
    classes = config.get("classes")
    if not isinstance(classes, list) or not classes:
        raise BundleError(f"{where} 'classes' must be a non-empty list of class names")
    try:
        check_plain(config.get("model_id"), "model_id")
        for name in classes:
            check_plain(name, "class name")
    except ValueError as exc:
        raise BundleError(f"{where}: {exc}") from exc


def listed_files(uri: str, config: dict) -> dict[str, str]:
    """config.json's `files`, each name checked against the bundle's naming rule and each hash's form."""
    files = config.get("files")
    if not isinstance(files, dict) or not files or len(files) > MAX_FILES:
        raise BundleError(f"{_where(uri)}: {CONFIG_FILE} 'files' must list 1 to {MAX_FILES} files")
    for name, digest in files.items():
        if not isinstance(name, str) or not _LISTABLE.match(name):
            raise BundleError(f"{_where(uri)}: {CONFIG_FILE} lists an unsafe or unknown path {str(name)[:80]!r}")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise BundleError(f"{_where(uri)}: {CONFIG_FILE} records no valid sha256 for {name}")
    return files


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose config and listed files were checked; `model_version` is the recomputed one."""

    uri: str
    config: dict
    model_version: str

    @property
    def files(self) -> dict[str, str]:
        return self.config["files"]

    def names(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self.files if n.startswith(prefix))

    def read(self, name: str) -> bytes:
        """The bytes of one listed file, returned only when they match its sha256."""
        if name not in self.files:
            raise BundleError(f"{_where(self.uri)}: {name} is not listed in {CONFIG_FILE}")
        try:
            data = storage.read_bytes(storage.join(self.uri, name))
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise BundleError(f"{_where(self.uri)}: {name} is missing") from exc
        _check_digest(self.uri, name, hashlib.sha256(data).hexdigest(), self.files[name])
        return data

    def hash_all(self) -> None:
        """Stream every listed file through sha256 (nothing kept in memory): the driver's whole check."""
        for name in self.names():
            try:
                with storage.open_file(storage.join(self.uri, name), "rb") as f:
                    # fsspec's files have the readinto() that file_digest needs; IO[bytes] does not declare it
                    digest = hashlib.file_digest(f, "sha256").hexdigest()  # type: ignore[arg-type]  # see above
            except (FileNotFoundError, IsADirectoryError) as exc:
                raise BundleError(f"{_where(self.uri)}: {name} is missing") from exc
            _check_digest(self.uri, name, digest, self.files[name])

    def refuse_unlisted(self) -> None:
        """Refuse files in encoder/, tokenizer/ and lexical/ that config.json does not list.

        They would never be read (every reader takes listed names only), but a bundle holding them
        was changed after export, so it is refused the same way everywhere.
        """
        for folder in (ENCODER_DIR, TOKENIZER_DIR, LEXICAL_DIR):
            for entry in storage.listdir(storage.join(self.uri, folder)):
                name = f"{folder}/{entry.rstrip('/').rsplit('/', 1)[-1]}"
                if name not in self.files:
                    raise BundleError(f"{_where(self.uri)}: unlisted file {name[:80]} (not in {CONFIG_FILE})")

    def materialise(self, prefix: str) -> Path:
        """A private folder holding only the verified files under `prefix` (e.g. the tokenizer's)."""
        folder = Path(tempfile.mkdtemp(prefix="bundle-verified-"))
        atexit.register(shutil.rmtree, folder, True)
        for name in self.names(prefix):
            target = storage.safe_join(folder, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.read(name))
        return folder / prefix.rstrip("/") if prefix else folder


def _check_digest(uri: str, name: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise BundleError(f"{_where(uri)}: {name} has sha256 {actual[:16]}..., {CONFIG_FILE} records "
                          f"{expected[:16]}... (tampered or corrupted)")


def open_bundle(uri: str, expect_version: str | None = None) -> VerifiedBundle:
    """config.json checked and its model_version recomputed (files are hashed as they are read).

    Raises BundleError naming the file for a missing bundle, a non-bundle, an unsafe listing, an
    edited config, or a version other than `expect_version`.
    """
    config = read_config(uri)
    recorded = check_version(config["model_version"], f"{_where(uri)}: {CONFIG_FILE} model_version")
    version = compute_model_version(config)
    if version != recorded:
        raise BundleError(f"{_where(uri)}: {CONFIG_FILE} does not match its model_version {recorded} "
                          f"(recomputed {version}): the config was edited")
    if expect_version is not None and version != check_version(expect_version, "expected version"):
        raise BundleError(f"{_where(uri)}: model_version is {version}, expected {expect_version}")
    return VerifiedBundle(uri=uri, config=config, model_version=version)


def verify_bundle(uri: str, expect_version: str | None = None) -> VerifiedBundle:
    """open_bundle plus every listed file hashed: what a driver runs before any work."""
    bundle = open_bundle(uri, expect_version)
    bundle.refuse_unlisted()
    bundle.hash_all()
    return bundle


@functools.lru_cache(maxsize=4)
def tokenizer_dir(uri: str, expect_version: str) -> str:
    """The bundle's tokenizer files, verified, in a private folder (one per process, bundle and version)."""
    bundle = open_bundle(uri, expect_version)
    if not bundle.names(TOKENIZER_DIR + "/"):
        raise BundleError(f"{_where(uri)}: lists no {TOKENIZER_DIR}/ files")
    return str(bundle.materialise(TOKENIZER_DIR + "/"))


@dataclass(frozen=True)
class TokenizerSource:
    """What a worker needs to load a bundle's tokenizer: the bundle and the version the driver verified."""

    bundle_uri: str
    model_version: str

    def load(self):
        return load_bundle_tokenizer(self.bundle_uri, self.model_version)


def load_bundle_tokenizer(uri: str, expect_version: str):
    """The bundle's tokenizer, loaded only from its verified files (no remote code, no hub)."""
    from transformers import AutoTokenizer  # noqa: PLC0415 - heavy import, only where a tokenizer is loaded

    folder = tokenizer_dir(uri, expect_version)
    try:
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{_where(uri)}: the tokenizer files do not load ({str(exc).splitlines()[0][:200]})") from exc

