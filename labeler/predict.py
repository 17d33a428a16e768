"""The predictor: what labelling actors (and a serving endpoint) run on featurised, tokenised batches.

A Ray Data callable class: `__init__` loads and verifies the bundle once per actor, `__call__` runs the
model under `torch.inference_mode()` on sub-batches of `batch_size`. Every row gets an answer: rows are
routed by the modalities they actually have (audio features without an `audio_error`; lyrics with
`has_lyrics`), a fused model labels a song from whichever of the two it has, and a row with neither
gets an `error` and NaN probabilities instead of failing the batch.
"""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from labeler.bundle import Bundle, load_bundle
from labeler.schemas import nullable_strings

log = logging.getLogger(__name__)

# Heavy feature columns consumed here and not passed on to the labels writer.
FEATURE_COLUMNS = ("log_mel", "descriptors", "input_ids", "attention_mask", "has_lyrics")


def ray_cpu_allocation() -> int | None:
    """CPUs Ray assigned to this worker/actor, or None outside a Ray worker."""
    try:
        import ray  # noqa: PLC0415

        if not ray.is_initialized():
            return None
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # noqa: BLE001 - not in Ray, or an older runtime context: no policy to apply
        return None
    return max(1, int(round(cpus))) if cpus else None


def configure_torch_threads(num_threads: int | None = None) -> int:
    """Thread policy: never use more intra-op threads than the CPUs this process was given.

    Ray packs several actors on one node, each told its CPU share; torch by default starts one thread
    per core of the machine, so N actors would run N x cores threads and thrash. Order: an explicit
    `num_threads`, else Ray's CPU allocation, else OMP_NUM_THREADS, else torch's own default.
    Returns the number of threads now in use.
    """
    chosen = num_threads or ray_cpu_allocation()
    if chosen is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        chosen = int(os.environ["OMP_NUM_THREADS"])
    if chosen:
        torch.set_num_threads(max(1, int(chosen)))
    return torch.get_num_threads()


class Predictor:
    """Label featurised batches with a bundle's model.

    Input columns (numpy batch): `log_mel` (n, frames, mels) and `audio_error` from the Featurizer,
    `input_ids`/`attention_mask`/`has_lyrics`/`lyrics_error` from the LyricsTokenizer, `descriptors`
    for a Hybrid model. Output: every input column except the heavy feature arrays, plus `probs`
    float32 (n, n_classes) = softmax(logits / temperature), `modalities`, `valence_score`,
    `arousal_score` (NaN without a regression head), `audio_error` and `error`.
    """

    def __init__(self, bundle_uri: str | Bundle, device: str | None = None, batch_size: int = 32,
                 num_threads: int | None = None) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cpu":
            configure_torch_threads(num_threads)
        self.bundle = bundle_uri if isinstance(bundle_uri, Bundle) else load_bundle(bundle_uri, device=self.device)
        self.model = self.bundle.model.to(self.device).eval()
        self.batch_size = int(batch_size)
        cfg = self.model.config
        self.uses_audio = cfg.uses_audio
        self.uses_lyrics = cfg.uses_lyrics
        self.n_classes = self.model.n_classes
        self.temperature = float(self.bundle.temperature)
        self.model_id = self.bundle.model_id
        self.model_version = self.bundle.model_version

    # ---- routing

    def _usable(self, batch: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray, list[str | None], list[str | None]]:
        """Per row: can audio be used, can lyrics be used, and why not (as '<kind>: detail')."""
        audio_errors = nullable_strings(batch.get("audio_error"), n)
        lyrics_errors = nullable_strings(batch.get("lyrics_error"), n)
        audio_ok = np.zeros(n, dtype=bool)
        audio_why: list[str | None] = [None] * n
        if self.uses_audio:
            if "log_mel" not in batch:
                audio_why = [e or "no_audio: no log_mel features in the batch" for e in audio_errors]
            else:
                log_mel = batch["log_mel"]
                n_mels = self.model.config.audio.n_mels
                if log_mel.ndim != 3 or log_mel.shape[2] != n_mels:
                    raise ValueError(f"log_mel has shape {log_mel.shape}, the model expects (n, frames, {n_mels})")
                finite = np.isfinite(log_mel.reshape(n, -1)).all(axis=1) if n else np.zeros(0, dtype=bool)
                for i in range(n):
                    if audio_errors[i]:
                        audio_why[i] = str(audio_errors[i])
                    elif not finite[i]:
                        audio_why[i] = "corrupt: non-finite log-mel features"
                    else:
                        audio_ok[i] = True
        lyrics_ok = np.zeros(n, dtype=bool)
        lyrics_why: list[str | None] = [None] * n
        if self.uses_lyrics:
            has_lyrics = np.asarray(batch["has_lyrics"], dtype=bool) if "has_lyrics" in batch else np.zeros(n, bool)
            if "input_ids" not in batch:
                has_lyrics = np.zeros(n, dtype=bool)
            for i in range(n):
                if has_lyrics[i]:
                    lyrics_ok[i] = True
                else:
                    lyrics_why[i] = str(lyrics_errors[i]) if lyrics_errors[i] else "no_lyrics: no lyrics"
        return audio_ok, lyrics_ok, audio_why, lyrics_why

    # ---- inference

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = _batch_len(batch)
        audio_ok, lyrics_ok, audio_why, lyrics_why = self._usable(batch, n)
        if self.model.config.branch == "fusion":
            runnable = audio_ok | lyrics_ok
        elif self.uses_audio:
            runnable = audio_ok
        else:
            runnable = lyrics_ok

        probs = np.full((n, self.n_classes), np.nan, dtype=np.float32)
        va = np.full((n, 2), np.nan, dtype=np.float32)
        modalities = np.full(n, None, dtype=object)
        errors = np.full(n, None, dtype=object)
        for i in np.flatnonzero(~runnable):
            errors[i] = "; ".join(r for r in (audio_why[i], lyrics_why[i]) if r) or "model: no usable input"

        rows = np.flatnonzero(runnable)
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            try:
                p, v, used = self._predict(batch, chunk, audio_ok[chunk], lyrics_ok[chunk])
            except (RuntimeError, FloatingPointError) as exc:  # a failing sub-batch must not sink the others
                log.exception("model failed on %d rows", len(chunk))
                for i in chunk:
                    errors[i] = f"model: {type(exc).__name__}: {str(exc)[:200]}"
                continue
            probs[chunk] = p
            va[chunk] = v
            modalities[chunk] = used

        out: dict[str, np.ndarray] = {k: v for k, v in batch.items() if k not in FEATURE_COLUMNS}
        out.update(
            probs=probs,
            modalities=modalities,
            valence_score=va[:, 0].copy(),
            arousal_score=va[:, 1].copy(),
            # A model without audio passes the featuriser's verdict through; one with audio gives its own.
            audio_error=np.array(audio_why if self.uses_audio else nullable_strings(batch.get("audio_error"), n),
                                 dtype=object),
            error=errors,
        )
        return out

    def _predict(self, batch, rows: np.ndarray, audio_ok: np.ndarray, lyrics_ok: np.ndarray):
        kwargs: dict[str, Any] = {}
        dev = self.device
        if self.uses_audio:
            kwargs["log_mel"] = torch.from_numpy(np.ascontiguousarray(batch["log_mel"][rows], dtype=np.float32)).to(dev)
            kwargs["has_audio"] = torch.from_numpy(audio_ok.copy()).to(dev)
            if self.model.config.audio.descriptor_dim > 0:
                if "descriptors" not in batch:
                    raise ValueError("this Hybrid model needs a `descriptors` column (featurise with descriptors=True)")
                kwargs["descriptors"] = torch.from_numpy(np.asarray(batch["descriptors"][rows], dtype=np.float32)).to(dev)
        if self.uses_lyrics:
            ids = np.asarray(batch["input_ids"][rows])
            mask = np.asarray(batch["attention_mask"][rows])
            used = np.flatnonzero(mask.any(axis=0))  # drop all-padding columns: attention cost is quadratic
            width = int(used[-1]) + 1 if len(used) else 1
            kwargs["input_ids"] = torch.from_numpy(ids[:, :width].astype(np.int64)).to(dev)
            kwargs["attention_mask"] = torch.from_numpy(mask[:, :width].astype(np.int64)).to(dev)
            kwargs["has_lyrics"] = torch.from_numpy(lyrics_ok.copy()).to(dev)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
        with torch.inference_mode(), autocast:
            out = self.model(**kwargs)
        logits = out.logits.float() / self.temperature
        probs = torch.softmax(logits, dim=-1).cpu().numpy().astype(np.float32)
        va = out.va.float().cpu().numpy() if out.va is not None else np.full((len(rows), 2), np.nan, np.float32)
        return probs, va, np.array(out.modalities(), dtype=object)


def _batch_len(batch: dict[str, np.ndarray]) -> int:
    for key in ("song_id", "log_mel", "input_ids", "audio_error"):
        if key in batch:
            return len(batch[key])
    if not batch:
        return 0
    return len(next(iter(batch.values())))
