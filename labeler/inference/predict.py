"""The predictor: what labelling actors (and a serving endpoint) run on featurised, tokenised batches.

A Ray Data callable class: `__init__` loads and verifies the bundle once per actor, `__call__` runs the
model under `torch.inference_mode()` on sub-batches of `batch_size`. Every row gets an answer: rows are
routed by the modalities they actually have (audio features without an `audio_error`; lyrics with
`has_lyrics`), a fused model labels a song from whichever of the two it has, and a row with neither
gets an `error` and NaN probabilities instead of failing the batch.

Three optional outputs, off by default because they cost storage or time:

- `embeddings=True`: `embedding` float32 (n, embedding_dim), the input of the head's last layer
  (for a fused model the hidden layer that mixes audio and lyrics, for a single-branch model the
  branch's embedding), L2-normalised so that a dot product is a cosine similarity. It is what the
  model itself separates the classes with, so songs of similar mood lie close together.
- `timeline_seconds=S`: `timeline`, per row a JSON list of windows (labeler.inference.timeline) labelled from
  the track's audio (`audio_uri`, or Serve's `audio_source`, must then reach the Predictor); "" where
  there is none. A track whose header the timeline refuses (longer than `max_audio_seconds`, or an
  absurd sample rate: labeler.audio.check_header) becomes a row error of that kind, never a crash.
- `tags=True` (a bundle whose audio branch is MusiCNN): `tags` float32 (n, 50), musicnn's taggram: the
  sigmoid of the pretrained tag layer on each 3-s patch, averaged over the clip's patches; NaN rows
  where no audio was used (no usable audio, or a fused model's lyrics-only row). The backbone runs
  once: its trunk features feed both the mood model (`patch_features=`) and the tag layer.

Engine (`engine=`, default `$MOOD_LABELER_ENGINE`, else "auto"): on CPU, "auto" and "onnxruntime" run the
frozen encoders through ONNX Runtime graphs made from the loaded weights (labeler.models.engine; a part
that cannot be exported keeps PyTorch, with one log line), "torch" keeps PyTorch; `self.engine` says which
ran. On CUDA the model is always PyTorch. Both engines give the same labels within the tolerance tested
in tests/test_engine.py.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import nullcontext
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from labeler.audio.config import MAX_AUDIO_SECONDS, check_max_seconds
from labeler.bundle.store import Bundle, load_bundle
from labeler.contracts.inputs import FEATURE_COLUMNS
from labeler.contracts.schemas import is_missing, nullable_strings
from labeler.models.emotion import penultimate_dim

log = logging.getLogger(__name__)
ENGINE_VAR = "MOOD_LABELER_ENGINE"  # the engine a Predictor built without `engine=` uses (auto, onnxruntime, torch)


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
    `input_ids`/`attention_mask`/`has_lyrics`/`lyrics_error`/`lyrics_text` from the LyricsTokenizer,
    `descriptors` for a Hybrid model. A bundle with a lexical model (the stacked lyrics branch) combines,
    for every row with lyrics, the network's logits with the lexical model's on `lyrics_text` through
    its stacker, before the temperature. Output: every input column except the heavy feature arrays, plus `probs`
    float32 (n, n_classes) = softmax(logits / temperature), `modalities`, `valence_score`,
    `arousal_score` (NaN without a regression head), `audio_error` and `error`; `embedding`,
    `timeline` and `tags` when asked for (see the module docstring).
    """

    def __init__(self, bundle_uri: str | Bundle, device: str | None = None, batch_size: int = 32,
                 num_threads: int | None = None, embeddings: bool = False,
                 timeline_seconds: float | None = None, expect_version: str | None = None, tags: bool = False,
                 max_audio_seconds: float | None = MAX_AUDIO_SECONDS, engine: str | None = None) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        engine = check_engine(engine if engine is not None else os.environ.get(ENGINE_VAR) or "auto")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cpu":
            configure_torch_threads(num_threads)
        self.bundle = bundle_uri if isinstance(bundle_uri, Bundle) else load_bundle(
            bundle_uri, device=self.device, expect_version=expect_version)
        self.model = self.bundle.model.to(self.device).eval()
        self.engine = self._set_engine(engine)
        self.batch_size = int(batch_size)
        cfg = self.model.config
        self.uses_audio = cfg.uses_audio
        self.uses_lyrics = cfg.uses_lyrics
        self.n_classes = self.model.n_classes
        self.temperature = float(self.bundle.temperature)
        self.model_id = self.bundle.model_id
        self.model_version = self.bundle.model_version
        self.embeddings = bool(embeddings)
        self.embedding_dim = penultimate_dim(self.model)
        self.timeline_seconds = check_timeline(timeline_seconds, self.uses_audio)
        self.max_audio_seconds = check_max_seconds(max_audio_seconds)
        self.tag_names: tuple[str, ...] | None = None
        if tags:
            from labeler.musicnn.tags import bundle_tags  # noqa: PLC0415

            audio = asdict(cfg.audio) if cfg.uses_audio and cfg.audio is not None else None
            self.tag_names = bundle_tags(cfg.branch, audio, f"bundle {self.model_id} {self.model_version}")

    def _set_engine(self, engine: str) -> str:
        """Install (or remove) the ONNX Runtime engine on the model's frozen encoders; the engine in use."""
        from labeler.models import engine as engines  # noqa: PLC0415

        if self.device.type != "cpu" or engine == "torch":
            engines.clear(self.model)  # a Bundle shared with another Predictor may carry hooks
        else:
            engines.accelerate(self.model, torch.get_num_threads())
        return engines.engine_name(self.model)

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
        embedding = np.full((n, self.embedding_dim), np.nan, dtype=np.float32)
        tags = np.full((n, len(self.tag_names or ())), np.nan, dtype=np.float32)
        va = np.full((n, 2), np.nan, dtype=np.float32)
        modalities = np.full(n, None, dtype=object)
        errors = np.full(n, None, dtype=object)
        for i in np.flatnonzero(~runnable):
            errors[i] = "; ".join(r for r in (audio_why[i], lyrics_why[i]) if r) or "model: no usable input"

        rows = np.flatnonzero(runnable)
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            try:
                p, v, used, e, t = self._predict(batch, chunk, audio_ok[chunk], lyrics_ok[chunk])
            except (RuntimeError, FloatingPointError) as exc:  # a failing sub-batch must not sink the others
                log.exception("model failed on %d rows", len(chunk))
                for i in chunk:
                    errors[i] = f"model: {type(exc).__name__}: {str(exc)[:200]}"
                continue
            probs[chunk] = p
            va[chunk] = v
            modalities[chunk] = used
            embedding[chunk] = e
            if t is not None:
                tags[chunk] = t

        timelines = None
        if self.timeline_seconds is not None:
            timelines, refused = self._timelines(batch, n, audio_ok)
            for row, reason in refused.items():  # a header past the limits: the row is an error, as in featurising
                errors[row] = audio_why[row] = reason
                probs[row], va[row], embedding[row], tags[row], modalities[row] = np.nan, np.nan, np.nan, np.nan, None

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
        if self.embeddings:
            out["embedding"] = embedding
        if timelines is not None:
            out["timeline"] = timelines
        if self.tag_names is not None:
            out["tags"] = tags
        return out

    def _timelines(self, batch: dict[str, np.ndarray], n: int, audio_ok: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
        """Per row: the track's timeline as JSON, "" without usable audio (never None: see pipeline); and the
        rows whose header the timeline refused (row -> "<kind>: detail")."""
        from labeler.audio.config import AudioError  # noqa: PLC0415

        out = np.full(n, "", dtype=object)
        refused: dict[int, str] = {}
        # `audio_source` (Serve: the upload's spooled file, or a URI) wins over the catalogue's `audio_uri`.
        sources = batch.get("audio_source", batch.get("audio_uri"))
        if sources is None:
            raise ValueError("a timeline needs the `audio_uri` (or `audio_source`) column in the Predictor's input")
        for i in np.flatnonzero(audio_ok):
            source = sources[i]
            if hasattr(source, "read") and hasattr(source, "seek"):
                source.seek(0)  # an upload, read from its start
            elif not isinstance(source, (bytes, bytearray)):
                if is_missing(source):
                    continue
                source = str(source)
            try:
                out[i] = json.dumps(self.timeline(source))
            except AudioError as exc:
                if exc.kind in ("too_long", "unsupported_format"):
                    refused[int(i)] = str(exc)
                log.warning("timeline of row %d refused: %s", i, exc)
            except Exception as exc:  # noqa: BLE001 - one track's timeline must not sink the batch; its label stands
                log.warning("timeline of row %d failed: %s: %s", i, type(exc).__name__, exc)
        return out, refused

    def timeline(self, source) -> list[dict[str, Any]]:
        """Label successive windows of one track (URI, bytes or a binary file object) with this model; see
        labeler.inference.timeline. Raises AudioError for a track past the limits (`max_audio_seconds`)."""
        from labeler.inference.timeline import track_timeline  # noqa: PLC0415

        if self.timeline_seconds is None:
            raise ValueError("this Predictor was built without timeline_seconds")

        def predict(log_mel: np.ndarray, descriptors: np.ndarray | None, usable: np.ndarray) -> np.ndarray:
            kwargs: dict[str, Any] = {"log_mel": torch.from_numpy(log_mel).to(self.device),
                                      "has_audio": torch.from_numpy(usable.copy()).to(self.device)}
            if descriptors is not None:
                kwargs["descriptors"] = torch.from_numpy(descriptors).to(self.device)
            if self.model.config.branch != "fusion":
                kwargs.pop("has_audio")
            return self._run(kwargs, len(log_mel))[0]

        return track_timeline(source, self.bundle.featurizer, self.timeline_seconds, self.bundle.mode,
                              self.bundle.classes, predict, chunk=self.batch_size, max_seconds=self.max_audio_seconds)

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
        texts = None
        if self.bundle.lexical is not None and self.uses_lyrics and lyrics_ok.any():
            if "lyrics_text" not in batch:
                raise ValueError("this bundle's lexical model needs a `lyrics_text` column (from the LyricsTokenizer)")
            column = np.asarray(batch["lyrics_text"], dtype=object)[rows]
            texts = [str(t) if ok else None for t, ok in zip(column, lyrics_ok)]
        return self._run(kwargs, len(rows), texts, tags=self.tag_names is not None)

    def _run(self, kwargs: dict[str, Any], n: int, texts: list[str | None] | None = None, tags: bool = False):
        """One model call: (probs, va, modalities, L2-normalised penultimate vectors, taggram or None).

        `texts` (the stacked lyrics branch): each row's cleaned lyrics, or None where the row has none;
        those rows' logits are stacked with the lexical model's (labeler.lyrics.lexical) before the temperature.
        """
        dev = self.device
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
        with torch.inference_mode(), autocast:
            taggram = self._taggram(kwargs) if tags else None
            out = self.model(**kwargs)
            penultimate = penultimate_vector(self.model, out.embedding) if self.embeddings else None
        logits = out.logits.float().cpu().numpy()
        if texts is not None:
            rows = np.array([t is not None for t in texts], dtype=bool)
            lexical = self.bundle.lexical
            if lexical is None:
                raise RuntimeError("lyrics texts were passed for a bundle without a lexical model")
            logits[rows] = lexical.stacked(logits[rows], lexical.logits([t for t in texts if t is not None]))
        probs = torch.softmax(torch.from_numpy(logits) / self.temperature, dim=-1).numpy().astype(np.float32)
        va = out.va.float().cpu().numpy() if out.va is not None else np.full((n, 2), np.nan, np.float32)
        if penultimate is None:
            emb = np.full((n, self.embedding_dim), np.nan, dtype=np.float32)
        else:
            emb = torch.nn.functional.normalize(penultimate.float(), dim=-1).cpu().numpy().astype(np.float32)
        return probs, va, np.array(out.modalities(), dtype=object), emb, taggram

    def _taggram(self, kwargs: dict[str, Any]) -> np.ndarray:
        """Run the MusiCNN trunk once on the rows with audio and return their taggram, (n, 50), NaN
        elsewhere; `kwargs`' log_mel is replaced by the same trunk features, so the model reuses them."""
        log_mel = kwargs["log_mel"]
        n = len(log_mel)
        has_audio = kwargs.get("has_audio")
        rows = torch.arange(n, device=log_mel.device) if has_audio is None else has_audio.nonzero(as_tuple=True)[0]
        if self.tag_names is None:
            raise RuntimeError("a taggram was asked of a Predictor built without tags")
        taggram = np.full((n, len(self.tag_names)), np.nan, dtype=np.float32)
        if len(rows) == 0:
            return taggram  # a fused model's lyrics-only rows: no audio to run, log_mel stays unread
        encoder = self.model.audio_encoder.cnn
        features = encoder.patch_features(log_mel[rows])                         # (rows, patches, 1506)
        full = features.new_zeros((n, *features.shape[1:]))
        full[rows] = features
        del kwargs["log_mel"]
        kwargs["patch_features"] = full  # rows without audio are never read (has_audio routes them)
        taggram[rows.cpu().numpy()] = encoder.taggram(features).float().cpu().numpy()  # the checkpoint's, even when tuned
        return taggram


def penultimate_vector(model, embedding: torch.Tensor) -> torch.Tensor:
    """What the model's last layer reads: for a fusion head, its hidden layer over the joined embeddings
    (eval mode: dropout is the identity); for a single-branch model, or a late/gated fusion whose
    branch heads read the branch embeddings themselves, the (joined) embedding."""
    head = getattr(model, "head", None)
    return embedding if head is None else head[:-1](embedding)


def check_engine(engine: str) -> str:
    """An engine name, checked: one of labeler.models.configuration.ENGINES."""
    from labeler.models.configuration import ENGINES  # noqa: PLC0415

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: expected one of {', '.join(ENGINES)}")
    return engine


def check_timeline(seconds: float | None, uses_audio: bool) -> float | None:
    """A timeline window length, checked: positive, finite, and only for a model that hears audio."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not np.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"timeline window must be a positive number of seconds, got {seconds!r}")
    if not uses_audio:
        raise ValueError("a timeline labels windows of the audio: this bundle's model has no audio branch")
    return float(seconds)


def _batch_len(batch: dict[str, np.ndarray]) -> int:
    for key in ("song_id", "log_mel", "input_ids", "audio_error"):
        if key in batch:
            return len(batch[key])
    if not batch:
        return 0
    return len(next(iter(batch.values())))
