"""Helpers the test files share: the one home for each (no test file imports another).

- `free_port()`: a free TCP port on 127.0.0.1.
- `labeler_process(*args)`: the `labeler` command in a real process of its own.
- `make_bundle(root)`: a fused bundle with random weights (quarter-width Cnn6 + a 2-layer BERT), for tests of
  plumbing, contracts and security, not accuracy.
- `bundle_info(mode)`: a `BundleInfo` for pure functions that only read its mode and classes.
- `tiny_featurizer()`: the small featuriser configuration the timeline and tag tests save into bundles.
- `make_audio_bundle(root, featurizer)`: an audio-only quarter-width Cnn6 bundle with random weights.
- `hang_guard(seconds, what)`: fails a block that runs past `seconds` (SIGALRM): a guard against a hang or a
  super-linear algorithm, not a timing assertion.

Trained artefacts (a 4Q run, a MusiCNN run, a `classes` run) are session fixtures in `tests/conftest.py`,
built through the product's own commands.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# 4Q, every branch: the Ray Train machinery (folds, resume, selection, calibration, fusion) with floors measured
# for the quarter-width Cnn6 on this synthetic set (cpu-small's MusiCNN branch is `trained_musicnn`).
TRAIN_4Q = dict(audio_arch="Cnn6", clip_seconds=4.0, epochs=4, audio_epoch_factor=4.0, patience=4, max_tokens=64,
                batch_size=8)
# MusiCNN (cpu-small's default audio branch) on short clips, few epochs: sized for a shared 2-core machine.
TRAIN_MUSICNN = dict(clip_seconds=4.0, musicnn_clip_seconds=3.0, epochs=2, audio_epoch_factor=2.0, patience=4,
                     max_tokens=64, batch_size=8)
MUSICNN_SONGS = 80


def tiny_featurizer():
    """The small featuriser configuration (16 kHz, 2-s clips, 32 mels) the timeline and tag tests save into bundles."""
    from labeler.audio import FeaturizerConfig

    return FeaturizerConfig(sample_rate=16000, clip_seconds=2.0, window_size=512, n_mels=32, fmax=8000.0,
                            min_seconds=0.5, chorus_search_seconds=30.0)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def labeler_process(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script when there is one, else the module: a real process either way."""
    script = Path(sys.executable).parent / "labeler"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "jobs.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})})


def make_bundle(root: Path, mode: str = "4Q", model_id: str = "test-fusion", seed: int = 0) -> str:
    """A fused bundle with random weights under `root` (the seed makes a different model_version)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from labeler.audio import FeaturizerConfig
    from labeler.bundle.store import save_bundle
    from labeler.lyrics.text import LyricsConfig
    from labeler.models import AudioCnnConfig, EmotionModel, LyricsEncoderConfig, ModelConfig
    from tests.tiny_models import tiny_bert_dir

    bert = tiny_bert_dir(root)
    torch.manual_seed(seed)
    config = ModelConfig(
        branch="fusion", mode=mode,
        audio=AudioCnnConfig(arch="Cnn6", n_mels=32, width=0.125, embedding_dim=16),
        lyrics=LyricsEncoderConfig(name_or_path=bert), hidden_dim=16,
    )
    model = EmotionModel(config, encoder_config=AutoConfig.from_pretrained(bert))
    featurizer = FeaturizerConfig(sample_rate=16000, clip_seconds=4.0, window_size=512, n_mels=32, fmax=8000.0,
                                  chorus_search_seconds=30.0)
    uri = str(Path(root) / f"bundle-{mode}-{model_id}-{seed}")
    save_bundle(uri, model, featurizer, LyricsConfig(max_tokens=32), tokenizer=AutoTokenizer.from_pretrained(bert),
                model_id=model_id)
    return uri


def bundle_info(mode: str):
    """A BundleInfo of `mode` ("4Q" or an axis) for pure functions: no files behind it."""
    from labeler.bundle.info import BundleInfo

    classes = ("Q1", "Q2", "Q3", "Q4") if mode == "4Q" else ("low", "high")
    return BundleInfo(uri="/b", model_id="m", model_version="0123456789abcdef", mode=mode, classes=classes,
                      branch="fusion", featurizer={}, lyrics={})


def make_audio_bundle(root: Path, featurizer, **save_kwargs) -> str:
    """An audio-only 4Q bundle (quarter-width Cnn6, 32 mels, random weights, seed 0) at `root`/bundle."""
    import torch

    from labeler.bundle.store import save_bundle
    from labeler.models import AudioCnnConfig, EmotionModel, ModelConfig

    torch.manual_seed(0)
    model = EmotionModel(ModelConfig(branch="audio", mode="4Q", lyrics=None,
                                     audio=AudioCnnConfig(n_mels=32, width=0.125, embedding_dim=16))).eval()
    uri = str(Path(root) / "bundle")
    save_bundle(uri, model, featurizer, None, **save_kwargs)
    return uri


@contextmanager
def hang_guard(seconds: int, what: str):
    """Raise TimeoutError in the block once it has run `seconds` (SIGALRM, main thread): `what` says what a hang means."""
    def fail(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: {what}")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
