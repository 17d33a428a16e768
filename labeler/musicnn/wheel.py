"""Where the musicnn checkpoints are, and proof that they are the pinned ones.

The PyPI wheel `musicnn==0.1.0` (ISC licence; Pons & Serra 2019) ships TensorFlow-1 checkpoints of
its models. Its code needs TensorFlow 1 and numpy<1.17, so it is never installed as a package nor
imported: `scripts/setup.sh` downloads the wheel with `pip download --no-deps`, checks the wheel's
sha256 and unpacks it under `<venv>/share/mood-labeler/musicnn-0.1.0/` (`sys.prefix`, so every
process of the venv, Ray workers included, finds it). `MOOD_LABELER_MUSICNN_DIR` points elsewhere
(a folder holding `MSD_musicnn/`, `MTT_musicnn/`, ...).

Only training needs these files: a bundle holds the converted weights as safetensors, so labelling
never looks here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from labeler.musicnn.checkpoint import CheckpointError

WHEEL = "musicnn==0.1.0"
WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
DIR_ENV = "MOOD_LABELER_MUSICNN_DIR"
INSTALL_STEP = "bash scripts/setup.sh (it fetches the musicnn==0.1.0 wheel's checkpoints without TensorFlow)"
DATA_FILE = ".data-00000-of-00001"
# sha256 of each model's checkpoint files in musicnn 0.1.0 (also in the wheel's RECORD, base64-encoded).
PINNED: dict[str, dict[str, str]] = {
    "MSD_musicnn": {
        ".index": "87f3e0f3550c8d3bafc840374003e5c8af5eeb5ecf6add61af09a7822d3282c8",
        DATA_FILE: "8579734ee6388f799ed0def4bbd0d1fdcbeaf213ef2a9dc860917bd76a303de6",
    },
    "MTT_musicnn": {
        ".index": "da2d7bb670b2b31e9bc441bb1bd75eca31b5b061f963cc1f9630c1aff3238f57",
        DATA_FILE: "041f3935e981a65cea739842d30c188d3a7d2adf4410955c8668eb3de4a5acab",
    },
}
MODEL_IDS: tuple[str, ...] = tuple(PINNED)


class MusicnnFilesError(CheckpointError):
    """The musicnn checkpoint files are absent or not the pinned ones; the message says what to run."""


def default_dir() -> Path:
    """`$MOOD_LABELER_MUSICNN_DIR`, else `<sys.prefix>/share/mood-labeler/musicnn-0.1.0/musicnn`."""
    override = os.environ.get(DIR_ENV)
    if override:
        return Path(override)
    return Path(sys.prefix) / "share" / "mood-labeler" / "musicnn-0.1.0" / "musicnn"


def checkpoint_prefix(model_id: str, root: str | Path | None = None) -> str:
    """The checked checkpoint prefix of `model_id` (`<root>/<model_id>/`, files `.index` and `.data-*`).

    Raises ValueError for an unknown id, MusicnnFilesError naming the install step when the files are
    missing, and naming the file and both hashes when one is not the pinned build.
    """
    if model_id not in PINNED:
        raise ValueError(f"unknown musicnn model {model_id!r}: expected one of {', '.join(MODEL_IDS)}")
    from labeler.lyrics.pretrained import file_sha256  # noqa: PLC0415 - shared, per-process cached hashing

    folder = Path(root) if root is not None else default_dir()
    folder = folder / model_id
    missing = [name for name in PINNED[model_id] if not (folder / name).is_file()]
    if missing:
        raise MusicnnFilesError(
            f"the {model_id} checkpoint is not at {folder} (missing {', '.join(missing)}): run `{INSTALL_STEP}`"
            f", or set {DIR_ENV} to the unpacked wheel's musicnn/ folder")
    for name, pinned in PINNED[model_id].items():
        actual = file_sha256(folder / name)
        if actual != pinned:
            raise MusicnnFilesError(
                f"refusing {folder / name}: sha256 {actual} does not match the pinned {pinned} of {WHEEL} "
                f"(run `{INSTALL_STEP}` again after deleting {folder.parent})")
    return str(folder) + os.sep
