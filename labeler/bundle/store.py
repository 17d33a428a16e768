"""The model bundle: the one directory (local or S3) that training hands to labelling.

```
<bundle>/config.json          model/featuriser/lyrics configs, mode, classes, temperature, stats, files
<bundle>/model.safetensors    the EmotionModel state dict
<bundle>/encoder/config.json  the lyrics encoder's Hugging Face config (when there is a lyrics branch)
<bundle>/tokenizer/...        the tokenizer files (when there is a lyrics branch)
```

Contract: labelling computes exactly the features training saw (the featuriser config is in the
bundle, not in two places) and never runs code from a file it downloaded: weights are safetensors, configs
are JSON, the encoder is rebuilt from its config class (no `trust_remote_code`,
no hub access) and every file is checked against the sha256 recorded in config.json. `model_version`
is a content hash of what changes predictions (weights, model/featuriser/lyrics configs, classes,
temperature, encoder config and tokenizer files): the same model re-exported with new provenance or
metrics keeps its version, in every labels row. Reading and checking live in labeler.bundle.verified (no
torch), which every process loading a bundle goes through.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from labeler.bundle.verified import (  # noqa: F401 - re-exported: the bundle's names and checks live in labeler.bundle.verified
    CONFIG_FILE,
    ENCODER_CONFIG,
    ENCODER_DIR,
    FORMAT,
    LEXICAL_DIR,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
    BundleError,
    VerifiedBundle,
    canonical_json,
    check_names,
    compute_model_version,
    open_bundle,
    verify_bundle,
)
from labeler.bundle.verified import read_config as read_bundle_config  # noqa: F401
from labeler.contracts.labels import class_names
from labeler.io import storage
from labeler.models import EmotionModel, ModelConfig


@dataclass
class Bundle:
    """A loaded bundle: the model (eval mode, on its device) and everything needed to feed it."""

    model: EmotionModel
    config: dict
    featurizer: Any  # labeler.audio.FeaturizerConfig
    lyrics: Any  # labeler.lyrics.text.LyricsConfig
    tokenizer: Any | None
    model_id: str
    model_version: str
    mode: str
    classes: list[str]
    temperature: float = 1.0
    descriptor_stats: dict | None = None
    extra: dict = field(default_factory=dict)
    lexical: Any | None = None  # labeler.lyrics.lexical.LexicalModel with its stacker (stacked lyrics branch)


# ------------------------------------------------------------------------------------------ hashing


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ------------------------------------------------------------------------------------------- saving


def _dedup_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Contiguous CPU tensors, one per storage view; tied weights become `alias -> kept name`.

    safetensors refuses tensors that share memory; a tied pair is written once and restored on load.
    """
    kept: dict[str, torch.Tensor] = {}
    seen: dict[tuple, str] = {}
    aliases: dict[str, str] = {}
    for name in sorted(state):
        tensor = state[name].detach()
        key = (tensor.device, tensor.untyped_storage().data_ptr() if tensor.numel() else id(tensor),
               tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        kept[name] = tensor.to("cpu").contiguous().clone()
    return kept, aliases


def _load_tokenizer(tokenizer: Any) -> Any:
    if tokenizer is None or not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    from labeler.lyrics.pretrained import load_tokenizer  # noqa: PLC0415

    return load_tokenizer(str(tokenizer))


def _check_compatible(model: EmotionModel, featurizer: Any, lyrics: Any, tokenizer: Any, temperature: float) -> None:
    cfg = model.config
    if not (isinstance(temperature, (int, float)) and temperature > 0 and temperature < float("inf")):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    if cfg.uses_audio:
        if featurizer is None:
            raise ValueError("a model with an audio branch needs its FeaturizerConfig in the bundle")
        wanted = "musicnn" if cfg.audio.arch == "MusiCNN" else "panns"
        if getattr(featurizer, "frontend", "panns") != wanted:
            raise ValueError(f"the {cfg.audio.arch} audio branch reads the {wanted!r} front end, but the featurizer's "
                             f"is {getattr(featurizer, 'frontend', 'panns')!r}")
        if int(featurizer.n_mels) != int(cfg.audio.n_mels):
            raise ValueError(f"featurizer n_mels={featurizer.n_mels} but the audio model expects n_mels={cfg.audio.n_mels}")
        if bool(cfg.audio.descriptor_dim) != bool(getattr(featurizer, "descriptors", False)):
            raise ValueError(
                f"audio descriptor_dim={cfg.audio.descriptor_dim} but featurizer descriptors="
                f"{getattr(featurizer, 'descriptors', False)}: the Hybrid branch and descriptor featurising go together"
            )
    if cfg.uses_lyrics:
        if tokenizer is None:
            raise ValueError("a model with a lyrics branch needs its tokenizer in the bundle")
        if lyrics is None:
            raise ValueError("a model with a lyrics branch needs its LyricsConfig in the bundle")
        vocab = int(getattr(model.encoder_config, "vocab_size", 0) or 0)
        if vocab and len(tokenizer) > vocab:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens, the lyrics encoder only {vocab}")


def save_bundle(uri: str, model: EmotionModel, featurizer: Any, lyrics: Any, tokenizer: Any = None,
                model_id: str | None = None, provenance: dict | None = None, metrics: dict | None = None,
                temperature: float = 1.0, descriptor_stats: dict | None = None,
                ambiguous_threshold: float | None = None, lexical: Any = None) -> str:
    """Write a bundle to a local directory or an s3:// prefix; return its model_version.

    `ambiguous_threshold` (chosen on the validation fold, `train.select.calibration.ambiguity_threshold`):
    labels whose top calibrated probability is below it are flagged `ambiguous`; None: no flag.
    `embedding_dim` is recorded from the model: the length of the `embedding` column
    (`labeler label --embeddings`), `labeler.models.emotion.penultimate_dim`.

    `lexical` (a labeler.lyrics.lexical.LexicalModel with a fitted stacker) makes the stacked lyrics branch:
    its arrays go to lexical/ and are verified like every other file.
    `tokenizer` is a tokenizer object or anything `labeler.lyrics.pretrained.resolve_encoder` takes.
    `descriptor_stats` ({"mean": [...], "std": [...]}) is copied into the model's descriptor buffers
    before saving, so weights and config.json agree; without it the buffers' values are recorded.
    On S3 the files are written to a temporary directory and uploaded one by one, config.json last,
    so a reader never sees a config whose files are not there yet.
    `model_id` (default `ModelConfig.short_name()`) and the class names must be plain text
    (labeler.bundle.verified.check_names): a bundle that every reader would refuse is never written.
    """
    from labeler.models.emotion import penultimate_dim  # noqa: PLC0415

    tokenizer = _load_tokenizer(tokenizer)
    _check_compatible(model, featurizer, lyrics, tokenizer, temperature)
    if ambiguous_threshold is not None and not 0.0 <= float(ambiguous_threshold) <= 1.0:
        raise ValueError(f"ambiguous_threshold must be a probability in [0, 1], got {ambiguous_threshold!r}")
    cfg: ModelConfig = model.config
    model_id = model_id or cfg.short_name()
    check_names({"model_id": model_id, "classes": cfg.class_names()}, "bundle to export")  # as every reader will
    if cfg.uses_audio and cfg.audio is not None and cfg.audio.descriptor_dim > 0:
        if descriptor_stats is not None:
            model.audio_encoder.set_descriptor_stats(descriptor_stats["mean"], descriptor_stats["std"])
        descriptor_stats = {
            "mean": model.audio_encoder.descriptor_mean.tolist(),
            "std": model.audio_encoder.descriptor_std.tolist(),
        }
    elif descriptor_stats is not None:
        raise ValueError("descriptor_stats given, but the model has no Hybrid audio branch (descriptor_dim=0)")

    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        root = Path(tmp)
        state, aliases = _dedup_state_dict(model.state_dict())
        from safetensors.torch import save_file  # noqa: PLC0415

        save_file(state, str(root / WEIGHTS_FILE), metadata={"format": "pt"})
        if cfg.uses_lyrics:
            (root / ENCODER_DIR).mkdir()
            encoder_dict = model.encoder_config.to_dict()
            (root / ENCODER_DIR / "config.json").write_text(json.dumps(encoder_dict, indent=2, sort_keys=True))
            tokenizer.save_pretrained(str(root / TOKENIZER_DIR))
        if lexical is not None:
            if not cfg.uses_lyrics:
                raise ValueError("a lexical model needs a model with lyrics")
            if lexical.n_classes != model.n_classes or lexical.stack_weight is None:
                raise ValueError(f"the lexical model must have the model's {model.n_classes} classes and a fitted stacker")
            lexical.save(root / LEXICAL_DIR)
        files = {
            p.relative_to(root).as_posix(): sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file()
        }
        config: dict[str, Any] = {
            "format": FORMAT,
            "model_id": model_id,
            "mode": cfg.mode,
            "classes": cfg.class_names(),
            "model": cfg.to_dict(),
            "featurizer": featurizer.to_dict() if featurizer is not None else None,
            "lyrics": lyrics.to_dict() if lyrics is not None else None,
            "temperature": float(temperature),
            "ambiguous_threshold": None if ambiguous_threshold is None else float(ambiguous_threshold),
            "embedding_dim": penultimate_dim(model),
            "descriptor_stats": descriptor_stats,
            "lexical": {"stacked": True, **lexical.config.to_dict()} if lexical is not None else None,
            "tied_weights": aliases,
            "provenance": dict(provenance or {}),
            "metrics": dict(metrics or {}),
            "files": files,
        }
        try:
            canonical_json(config)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bundle config is not plain JSON (provenance/metrics must be JSON values, no NaN): {exc}") from exc
        config["model_version"] = compute_model_version(config)
        (root / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))

        stale = _stale_files(uri, set(files))
        if storage.is_remote(uri):
            for name in files:
                storage.write_bytes(storage.join(uri, name), (root / name).read_bytes())
            storage.write_bytes(storage.join(uri, CONFIG_FILE), (root / CONFIG_FILE).read_bytes())
            for name in stale:
                storage.remove(storage.join(uri, name))
        else:
            _copy_local(root, Path(storage.strip_scheme(uri)), [*files, CONFIG_FILE], stale)
    return config["model_version"]


def _stale_files(uri: str, new_names: set[str]) -> list[str]:
    """Files that the bundle already at `uri` lists and the new one does not (e.g. a stacked lyrics
    model's lexical/ arrays when a late-fusion winner replaces the fusion head's bundle): left behind,
    they would make the new bundle refused as holding unlisted files. Only names the old config.json
    lists, each a safe relative name, are ever removed."""
    config_uri = storage.join(uri, CONFIG_FILE)
    if not storage.exists(config_uri):
        return []
    try:
        old = json.loads(storage.read_text(config_uri)).get("files") or {}
    except (OSError, ValueError, AttributeError):
        return []
    stale = []
    for name in old:
        if isinstance(name, str) and name not in new_names and name != CONFIG_FILE:
            storage.safe_join(Path("/bundle"), name)  # refuses '..', absolute and empty parts
            stale.append(name)
    return stale


def _copy_local(src: Path, dst: Path, names: list[str], stale: Sequence[str] = ()) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    config = dst / CONFIG_FILE
    if config.exists():
        config.unlink()  # a half-overwritten bundle must not look valid
    for name in stale:
        storage.safe_join(dst, name).unlink(missing_ok=True)
    for name in names:
        target = dst / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((src / name).read_bytes())


# ------------------------------------------------------------------------------------------- loading


def _encoder_config(bundle: VerifiedBundle):
    """Rebuild the HF config from JSON through the built-in config class of its model_type (no code, no hub)."""
    from transformers import AutoConfig  # noqa: PLC0415

    try:
        d = json.loads(bundle.read(ENCODER_CONFIG))
    except ValueError as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError(f"bundle {storage.describe(bundle.uri)}: {ENCODER_CONFIG} is not valid JSON") from exc
    if not isinstance(d, dict):
        raise BundleError(f"bundle {storage.describe(bundle.uri)}: {ENCODER_CONFIG} is not a JSON object")
    model_type = d.pop("model_type", None)
    d.pop("auto_map", None)
    try:
        return AutoConfig.for_model(model_type, **d)
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"bundle {storage.describe(bundle.uri)}: {ENCODER_CONFIG} has model_type "
                          f"{model_type!r}, not a built-in transformers architecture") from exc


def load_bundle(uri: str, device: str | torch.device = "cpu", expect_version: str | None = None) -> Bundle:
    """Load a verified bundle; the model comes back in eval mode on `device`.

    Through labeler.bundle.verified: the listing is checked, model_version recomputed (and compared with
    `expect_version` when given), and every file is used only from bytes that matched their sha256
    (weights parsed from those bytes, the tokenizer from a private folder of its verified files).
    Any failure raises BundleError naming the file. Weights load with safetensors (never pickle), strict.
    """
    bundle = open_bundle(uri, expect_version)
    bundle.refuse_unlisted()
    config = bundle.config
    try:
        model_config = ModelConfig.from_dict(config["model"])
    except (TypeError, ValueError, KeyError) as exc:
        raise BundleError(f"bundle {storage.describe(uri)}: model config is invalid: {exc}") from exc
    encoder_config = _encoder_config(bundle) if model_config.uses_lyrics else None
    from safetensors import SafetensorError  # noqa: PLC0415
    from safetensors.torch import load as load_safetensors  # noqa: PLC0415

    try:
        state = load_safetensors(bundle.read(WEIGHTS_FILE))
    except SafetensorError as exc:
        raise BundleError(f"bundle {storage.describe(uri)}: {WEIGHTS_FILE} is not a safetensors file: {exc}") from exc
    model = EmotionModel(model_config, encoder_config=encoder_config)
    for alias, name in (config.get("tied_weights") or {}).items():
        if name not in state:
            raise BundleError(f"bundle {storage.describe(uri)}: tied weight {alias!r} names a missing tensor")
        state[alias] = state[name]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"bundle {storage.describe(uri)}: {WEIGHTS_FILE} does not fit the model config: {exc}") from exc
    model.to(device).eval()

    tokenizer = None
    if model_config.uses_lyrics:
        from labeler.bundle.verified import load_bundle_tokenizer  # noqa: PLC0415

        tokenizer = load_bundle_tokenizer(uri, bundle.model_version)
    lexical = None
    if config.get("lexical") is not None:
        from labeler.lyrics.lexical import LexicalModel  # noqa: PLC0415

        try:
            lexical = LexicalModel.from_bytes(bundle.read(f"{LEXICAL_DIR}/vocab.json"),
                                              bundle.read(f"{LEXICAL_DIR}/model.safetensors"))
        except BundleError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"bundle {storage.describe(uri)}: {LEXICAL_DIR}/ is unreadable: {exc}") from exc
    featurizer = lyrics = None
    if config.get("featurizer") is not None:
        from labeler.audio import FeaturizerConfig  # noqa: PLC0415

        featurizer = FeaturizerConfig.from_dict(config["featurizer"])
    if config.get("lyrics") is not None:
        from labeler.lyrics.text import LyricsConfig  # noqa: PLC0415

        lyrics = LyricsConfig.from_dict(config["lyrics"])
    return Bundle(
        model=model, config=config, featurizer=featurizer, lyrics=lyrics, tokenizer=tokenizer,
        model_id=config["model_id"], model_version=bundle.model_version, mode=config["mode"],
        classes=list(config.get("classes") or class_names(config["mode"])),
        temperature=float(config.get("temperature", 1.0)), descriptor_stats=config.get("descriptor_stats"),
        extra={"provenance": config.get("provenance", {}), "metrics": config.get("metrics", {})},
        lexical=lexical,
    )
