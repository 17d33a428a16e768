"""One training step, in one place: an epoch of training, an epoch of validation, early stopping.

The Ray Train worker loop (`train.fit.loop.train_loop_per_worker`) and the in-process real-data
benchmarks (`bench/realdata_cv.py`) both train with these functions, so a benchmark's figure comes
from the production step and not from a second copy with rules of its own. The rules:

- batches: `plan_batches` decides whether the last, partial batch is dropped (when there are at
  least two full batches per worker) and how many optimiser steps an epoch takes, which is what the
  warmup + cosine schedule is built for; a batch of fewer than `MIN_BATCH` rows is skipped anyway
  (BatchNorm cannot train on one row).
- a step: forward with the class weights, backward, gradients clipped to `grad_clip` (L2 norm over
  the optimiser's parameters) when it is > 0, optimiser step, scheduler step (per optimiser step).
- validation: macro-F1 over every class of the mode (a class absent from the split counts as 0).
- early stopping: an epoch improves when its validation macro-F1 beats the best so far by more than
  1e-9; training stops after `patience` epochs without improvement (`EarlyStopping`, whose two
  numbers the loop keeps in its checkpoint so a resumed run stops where it would have).

A batch is a pair (the model's forward keyword arguments, the class-index targets): each caller
turns its own data (feature-cache shards, in-memory arrays) into those.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from train.score.metrics import macro_f1

MIN_BATCH = 2  # BatchNorm cannot train on a batch of one
Batch = tuple[dict[str, torch.Tensor], torch.Tensor]


def plan_batches(n_rows: int, batch_size: int, workers: int = 1) -> tuple[bool, int]:
    """(drop the last partial batch?, optimiser steps per epoch) for `n_rows` over `workers`."""
    drop_last = n_rows >= 2 * batch_size * workers
    per_worker = n_rows / workers
    steps = int(per_worker // batch_size) if drop_last else math.ceil(per_worker / batch_size)
    return drop_last, max(1, steps)


def autocast(device: torch.device | None, amp: bool):
    """bf16 autocast on CUDA (the becmer preset on GPU); a no-op context elsewhere."""
    if amp and device is not None and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type if device is not None else "cpu", enabled=False)


def train_epoch(model, batches: Iterable[Batch], optimizer, scheduler, class_weights: torch.Tensor | None = None,
                grad_clip: float = 0.0, device: torch.device | None = None, amp: bool = False) -> tuple[float, int]:
    """Train one pass over `batches`; returns (mean training loss per row, rows trained on)."""
    model.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    total, seen = 0.0, 0
    for inputs, targets in batches:
        if len(targets) < MIN_BATCH:
            continue
        with autocast(device, amp):
            out = model(**inputs, labels=targets, class_weights=class_weights)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if grad_clip and grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        scheduler.step()
        total += float(out.loss.detach()) * len(targets)
        seen += len(targets)
    return total / max(1, seen), seen


def predict(model, batches: Iterable[Batch], device: torch.device | None = None,
            amp: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(logits, targets) over `batches`, in eval mode, without gradients."""
    model.eval()
    logits, targets = [], []
    with torch.inference_mode(), autocast(device, amp):
        for inputs, y in batches:
            logits.append(model(**inputs).logits.float().cpu().numpy())
            targets.append(np.asarray(y.cpu().numpy() if isinstance(y, torch.Tensor) else y, dtype=np.int64))
    if not logits:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(logits), np.concatenate(targets)


def validate_epoch(model, batches: Iterable[Batch], n_classes: int, device: torch.device | None = None,
                   amp: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
    """(validation macro-F1, logits, targets) over `batches`."""
    logits, y = predict(model, batches, device, amp)
    return macro_f1(y, logits, n_classes), logits, y


def selection_score(val_macro_f1: float, epoch: int) -> float:
    """The score a fold's checkpoint is chosen by: validation macro-F1, an equal score going to the earlier
    epoch, as EarlyStopping counts it (no improvement). Ray's checkpoint manager ranks by this one number;
    ranking by macro-F1 alone let a later epoch that only tied (often more overfit: the demo's fusion tied at
    1.0 from epoch 2 to 5 and the exported checkpoint was epoch 4) stand for the fold."""
    return float(val_macro_f1) - 1e-9 * int(epoch)


@dataclass
class EarlyStopping:
    """The best validation score so far and the epochs since it improved; `stop` after `patience` of them."""

    patience: int
    best: float = -1.0
    bad_epochs: int = 0

    def update(self, score: float) -> bool:
        """Record an epoch's validation score; True when it is a new best (keep this epoch's weights)."""
        improved = score > self.best + 1e-9
        self.best = max(score, self.best)
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        return improved

    @property
    def stop(self) -> bool:
        return self.bad_epochs >= self.patience
