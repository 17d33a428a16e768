"""The Ray Train worker loop: one fold of one branch, with DDP, bf16 autocast, resumable checkpoints.

`train_loop_per_worker(config)` is what `TorchTrainer` runs on every worker. Everything it needs
arrives in `config` (the fold's config built by `train.fit.branch`: the typed `TrainPreset` itself under
"preset", the branch's epoch count under "epochs", the model and featuriser configs, the split) or
through Ray Train: the fold's data
shards (`ray.train.get_dataset_shard("train"|"val")`, streamed from the feature cache, never
loaded whole), the last checkpoint after a failure (`ray.train.get_checkpoint()`), and the way out
for metrics and checkpoints (`ray.train.report`). No globals, no tracker imports.

A checkpoint is a directory holding `bundle/` (a model bundle, exactly what labelling loads) and
`train_state.pt` (optimizer, scheduler, epoch, best score, early-stop counter, curves). Only the
checkpoint holds torch-pickled optimizer state, and it is read back with `weights_only=True`; the
exported bundle is pickle-free.

Selection and stopping use the validation split's macro-F1 only (val = fold (test+1) % k; see
`train.data.folds.split_for`): the test fold is not read here at all.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time

import numpy as np
import torch

from train.fit.presets import TrainPreset
from train.fit.step import EarlyStopping, plan_batches, predict, selection_score, train_epoch, validate_epoch

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
BUNDLE_DIR = "bundle"


# ---------------------------------------------------------------------------------------- labels


def targets_for_mode(quadrant: np.ndarray, mode: str) -> np.ndarray:
    """Vectorised labeler.contracts.labels.target_for_mode: quadrants 1..4 -> class indices of `mode`.

    In mode `classes` the values are already class indices (the cache's `label_index`); a row without
    one (-1) is a data error, not a class.
    """
    q = np.asarray(quadrant).astype(np.int64)
    if mode == "classes":
        if len(q) and q.min() < 0:
            raise ValueError("mode 'classes': some rows have no label (label_index -1): is this a classes manifest?")
        return q
    if mode == "4Q":
        return q - 1
    if mode == "Ar":
        return np.isin(q, (1, 2)).astype(np.int64)
    if mode == "Va":
        return np.isin(q, (1, 4)).astype(np.int64)
    raise ValueError(f"unknown mode {mode!r}: expected one of Ar, Va, 4Q, classes")


def class_weights_from_counts(counts: np.ndarray) -> np.ndarray:
    """Inverse-frequency weights normalised to mean 1 (sklearn's 'balanced'); absent classes get 0."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


# ---------------------------------------------------------------------------------------- model


def build_model(config: dict):
    """The fold's model: fresh audio CNN, pretrained lyrics encoder, or fusion from the fold's two branches."""
    from labeler.models import EmotionModel, ModelConfig  # noqa: PLC0415

    model_config = ModelConfig.from_dict(dict(config["model"]))
    if model_config.branch == "fusion":
        from labeler.bundle.store import load_bundle  # noqa: PLC0415

        audio = load_bundle(config["audio_bundle"]).model
        lyrics = load_bundle(config["lyrics_bundle"]).model
        model = EmotionModel.fusion_from_branches(audio, lyrics, model_config)
    else:  # the lyrics encoder, or a MusiCNN audio branch, starts from its pretrained weights
        model = EmotionModel.from_pretrained_branches(model_config)
    stats = config.get("descriptor_stats")
    if stats and model.audio_encoder is not None and model.audio_encoder.config.descriptor_dim > 0:
        model.audio_encoder.set_descriptor_stats(stats["mean"], stats["std"])
    freeze_lyrics_layers(model, config["preset"])
    return model


class CachedLyricsModel(torch.nn.Module):
    """A lyrics model whose encoder is frozen, trained on the feature cache's window vectors instead of text.

    `forward(lyrics_windows, lyrics_window_used)` gives the `ModelOutput` that `model(input_ids, attention_mask)`
    gives on the text those vectors came from (LyricsEncoder.window_vectors): the same pooling, dropout, head
    and loss, without running the encoder. `model` (an EmotionModel of branch lyrics with `freeze_branches`) is
    held, not copied: its weights are what training updates and what the checkpoint saves.
    """

    def __init__(self, model) -> None:
        super().__init__()
        if model.config.branch != "lyrics" or not model.config.freeze_branches:
            raise ValueError("cached lyrics vectors train only a lyrics model whose encoder is frozen "
                             f"(branch {model.config.branch!r}, freeze_branches {model.config.freeze_branches})")
        self.model = model

    def forward(self, lyrics_windows: torch.Tensor, lyrics_window_used: torch.Tensor, labels: torch.Tensor | None = None,
                class_weights: torch.Tensor | None = None):
        from labeler.models.emotion import ModelOutput  # noqa: PLC0415

        m = self.model
        embedding = m.lyrics_encoder.from_window_vectors(lyrics_windows, lyrics_window_used.bool())
        logits = m.head(embedding)
        va = m.va_head(embedding) if m.va_head is not None else None
        n = int(logits.shape[0])
        return ModelOutput(logits=logits, embedding=embedding, loss=m._loss(logits, va, labels, None, class_weights),
                           va=va, has_audio=torch.zeros(n, dtype=torch.bool), has_lyrics=torch.ones(n, dtype=torch.bool))


def freeze_lyrics_layers(model, preset: TrainPreset) -> list[str]:
    """Freeze the lyrics encoder's embeddings and its lowest `freeze_lower_layers` layers.

    Why: on small data the lower layers of a pretrained encoder carry general language and are the
    first to be damaged by fine-tuning; freezing them also halves the backward pass on CPU.
    Works for encoders with `embeddings` and `encoder.layer` (BERT, RoBERTa, MiniLM); ALBERT shares one
    layer across depth, so only its embeddings can be frozen. Returns the frozen module names.
    """
    enc = getattr(model, "lyrics_encoder", None)
    if enc is None or model.config.freeze_branches:
        return []
    hf = enc.encoder
    frozen: list[str] = []
    if preset.freeze_embeddings and hasattr(hf, "embeddings"):
        hf.embeddings.requires_grad_(False)
        frozen.append("embeddings")
    n = preset.freeze_lower_layers
    layers = getattr(getattr(hf, "encoder", None), "layer", None)
    if n > 0 and layers is not None:
        for i, layer in enumerate(layers):
            if i < n:
                layer.requires_grad_(False)
                frozen.append(f"layer.{i}")
    elif n > 0:
        log.warning("encoder %s has no encoder.layer list: lower layers not frozen", type(hf).__name__)
    return frozen


def param_groups(model, preset: TrainPreset, hparams: dict) -> list[dict]:
    """Per-branch learning rates: the pretrained lyrics encoder learns slower than the CNN and heads."""
    scale = float(hparams.get("lr_scale", 1.0))
    head_lr = preset.lr_fusion if model.config.branch == "fusion" else preset.lr_head
    groups = {
        "audio": (model.audio_encoder, preset.lr_audio),
        "lyrics": (model.lyrics_encoder, preset.lr_encoder),
    }
    seen: set[int] = set()
    out = []
    for name, (module, lr) in groups.items():
        if module is None:
            continue
        params = [p for p in module.parameters() if p.requires_grad]
        seen.update(id(p) for p in module.parameters())
        if params:
            out.append({"name": name, "params": params, "lr": lr * scale})
    rest = [p for p in model.parameters() if id(p) not in seen and p.requires_grad]
    out.append({"name": "head", "params": rest, "lr": head_lr * scale})
    return out


def make_optimizer(groups: list[dict], preset: TrainPreset) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if preset.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, weight_decay=float(preset.weight_decay))


def make_scheduler(optimizer, total_steps: int, warmup_fraction: float):
    """Linear warmup then cosine decay, stepped per optimizer step (torch's own schedulers, chained)."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR  # noqa: PLC0415

    total_steps = max(1, int(total_steps))
    warmup = int(total_steps * warmup_fraction)
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup))
    if warmup <= 0:
        return cosine
    linear = LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
    return SequentialLR(optimizer, [linear, cosine], milestones=[warmup])


# ---------------------------------------------------------------------------------------- batches


def forward_kwargs(batch: dict, branch: str, device) -> dict:
    """The forward() keyword arguments of a batch from the feature cache, for one branch."""
    out: dict = {}
    if branch in ("audio", "fusion"):
        if "patch_features" in batch:  # MusiCNN: the frozen trunk's output, cached once per song
            out["patch_features"] = batch["patch_features"].to(device, non_blocking=True).float()
        else:
            out["log_mel"] = batch["log_mel"].to(device, non_blocking=True).float()
        if "descriptors" in batch:
            out["descriptors"] = batch["descriptors"].to(device).float()
    if "lyrics_windows" in batch:  # a frozen lyrics encoder's output, cached once per song (CachedLyricsModel)
        out["lyrics_windows"] = batch["lyrics_windows"].to(device).float()
        out["lyrics_window_used"] = batch["lyrics_window_used"].to(device).bool()
    elif branch in ("lyrics", "fusion"):
        out["input_ids"] = batch["input_ids"].to(device).long()
        out["attention_mask"] = batch["attention_mask"].to(device).long()
    if branch == "fusion":
        out["has_audio"] = batch["has_audio"].to(device).bool()
        out["has_lyrics"] = batch["has_lyrics"].to(device).bool()
    return out


def batch_targets(batch: dict, mode: str, device) -> torch.Tensor:
    return torch.from_numpy(targets_for_mode(batch[_target(mode)].cpu().numpy(), mode)).to(device)


def _target(mode: str) -> str:
    from train.cache.feature_cache import target_column  # noqa: PLC0415

    return target_column(mode)


def step_batches(batches, branch: str, mode: str, device):
    """Feature-cache batches as the (forward kwargs, targets) pairs `train.fit.step` takes."""
    return ((forward_kwargs(batch, branch, device), batch_targets(batch, mode, device)) for batch in batches)


def predict_logits(model, batches, branch: str, mode: str, device, amp: bool) -> tuple[np.ndarray, np.ndarray]:
    """(logits, targets) over an iterable of feature-cache batches, in eval mode, without gradients."""
    return predict(model, step_batches(batches, branch, mode, device), device, amp)


# ---------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(directory: str, model, config: dict, tokenizer, state: dict) -> None:
    """bundle/ (pickle-free, labelling-ready) + train_state.pt (optimizer etc., checkpoint-only)."""
    from labeler.audio import FeaturizerConfig  # noqa: PLC0415
    from labeler.bundle.store import save_bundle  # noqa: PLC0415
    from labeler.lyrics.text import LyricsConfig  # noqa: PLC0415

    save_bundle(
        os.path.join(directory, BUNDLE_DIR), model,
        featurizer=FeaturizerConfig.from_dict(config["featurizer"]),
        lyrics=LyricsConfig.from_dict(config["lyrics"]),
        tokenizer=tokenizer,
        model_id=config.get("model_id", "mood"),
        provenance={"fold": config["fold"], "branch": config["branch"], "epoch": state["epoch"], "checkpoint": True},
        metrics={"val_macro_f1": state["last_val_macro_f1"]},
        descriptor_stats=config.get("descriptor_stats"),
    )
    torch.save(state, os.path.join(directory, STATE_FILE))


def restore_checkpoint(checkpoint, model, optimizer, scheduler) -> dict:
    """Load weights, optimizer and scheduler from a Ray checkpoint; return the saved loop state."""
    from labeler.bundle.store import load_bundle  # noqa: PLC0415

    with checkpoint.as_directory() as directory:
        bundle = load_bundle(os.path.join(directory, BUNDLE_DIR))
        model.load_state_dict(bundle.model.state_dict())
        state = torch.load(os.path.join(directory, STATE_FILE), map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state.pop("optimizer"))
    scheduler.load_state_dict(state.pop("scheduler"))
    return state


# ---------------------------------------------------------------------------------------- the loop


def train_loop_per_worker(config: dict) -> None:
    """Train one fold of one branch; report per epoch {epoch, train_loss, val_macro_f1, ...} + checkpoint."""
    import ray.train  # noqa: PLC0415
    import ray.train.torch  # noqa: PLC0415

    preset: TrainPreset = config["preset"]
    hparams = config.get("hparams", {})
    branch, mode, n_classes = config["branch"], config["mode"], int(config["n_classes"])
    torch.manual_seed(preset.seed + int(config["fold"]))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = max(1, int(preset.cpus_per_worker))
    torch.set_num_threads(threads)
    device = ray.train.torch.get_device()
    amp = preset.use_gpu

    if "dropout" in hparams:
        config = {**config, "model": {**config["model"], "dropout": float(hparams["dropout"])}}
    model = build_model(config)
    tokenizer = None
    if config.get("tokenizer_dir") and model.lyrics_encoder is not None:
        from labeler.lyrics.pretrained import load_tokenizer  # noqa: PLC0415

        tokenizer = load_tokenizer(config["tokenizer_dir"])
    raw_model = model  # what checkpoints save; the cached-vector wrapper only changes what a step reads
    model = ray.train.torch.prepare_model(
        CachedLyricsModel(model) if config.get("lyrics_vectors") else model, parallel_strategy_kwargs={"find_unused_parameters": branch == "fusion"})

    batch_size = int(hparams.get("batch_size", preset.batch_size))
    epochs, patience = int(config["epochs"]), preset.patience  # the branch's epochs (TrainPreset.epochs_for)
    n_train = int(config["n_train"])
    drop_last, steps_per_epoch = plan_batches(n_train, batch_size, world)
    optimizer = make_optimizer(param_groups(raw_model, preset, hparams), preset)
    scheduler = make_scheduler(optimizer, epochs * steps_per_epoch, preset.warmup_fraction)
    weights = torch.tensor(config["class_weights"], dtype=torch.float32, device=device) if config.get("class_weights") else None

    state = {"epoch": 0, "best_val_macro_f1": -1.0, "bad_epochs": 0, "resumed_from_epoch": 0,
             "last_val_macro_f1": 0.0, "history": []}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        state = restore_checkpoint(checkpoint, raw_model, optimizer, scheduler)
        state["resumed_from_epoch"] = state["epoch"]
        log.info("fold %s %s: resumed from epoch %d", config["fold"], branch, state["epoch"])

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    grad_clip = float(preset.grad_clip or 0.0)
    stopping = EarlyStopping(patience, best=state["best_val_macro_f1"], bad_epochs=state["bad_epochs"])
    for epoch in range(state["epoch"] + 1, epochs + 1):
        if stopping.stop:
            break
        started = time.perf_counter()
        shard = train_shard.iter_torch_batches(
            batch_size=batch_size, drop_last=drop_last,
            local_shuffle_buffer_size=max(4 * batch_size, 64), local_shuffle_seed=preset.seed + epoch,
        )
        train_loss, seen = train_epoch(model, step_batches(shard, branch, mode, device), optimizer, scheduler,
                                       class_weights=weights, grad_clip=grad_clip, device=device, amp=amp)
        # Every worker scores the whole validation split (it is not split), so all agree on stopping.
        val_f1, _, _ = validate_epoch(
            model, step_batches(val_shard.iter_torch_batches(batch_size=max(batch_size, 32)), branch, mode, device),
            n_classes, device, amp)
        improved = stopping.update(val_f1)
        state.update(epoch=epoch, last_val_macro_f1=val_f1, best_val_macro_f1=stopping.best,
                     bad_epochs=stopping.bad_epochs)
        state["history"] = [*state["history"], {"epoch": epoch, "train_loss": train_loss, "val_macro_f1": val_f1}]
        metrics = {
            "history": state["history"], "epoch": epoch, "fold": int(config["fold"]), "train_loss": train_loss,
            "val_macro_f1": val_f1, "best_val_macro_f1": state["best_val_macro_f1"], "improved": improved,
            "val_selection": selection_score(val_f1, epoch),
            "resumed_from_epoch": state["resumed_from_epoch"], "train_rows": seen,
            "epoch_seconds": time.perf_counter() - started, "lr_head": optimizer.param_groups[-1]["lr"],
        }
        with tempfile.TemporaryDirectory(prefix="ckpt-") as tmp:
            ckpt = None
            if rank == 0:
                save_checkpoint(tmp, raw_model, config, tokenizer,
                                {**state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)
