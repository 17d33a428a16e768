"""The MusiCNN audio branch: a pretrained MusiCNN over a chorus clip's 3-s patches, pooled.

A clip's musicnn log-mel (patches x 187 frames, 96 mels; `FeaturizerConfig.musicnn`) is cut into
its patches, every patch of every song in the batch goes through the network's frozen trunk at once
(one batched forward, so songs share the work) to its 1506 pooled features (`MusiCNN.trunk`). Its
top (BatchNorm, Dense 1506 -> 200 + ReLU, BatchNorm) makes the 200-d penultimate embedding of each
patch, which is pooled per song by its mean and standard deviation (the pooling that scored 0.788
macro-F1 with a logistic regression on held-out 4Q songs, issue 17). A BatchNorm standardises the
400 pooled values and a Linear + ReLU maps them to the branch's embedding, which the model's head (or
the fusion head) reads.

`tune_top=False`: the whole network is frozen. `tune_top=True`: a trainable copy of the Dense
1506 -> 200 layer (`top_dense`, initialised from the checkpoint's) replaces it in the branch's path;
the original stays in the backbone, so `taggram` is always musicnn's own taggram. Why only that layer:
it holds most of the top's weights and adapts the embedding to moods on a few hundred songs, while the
trunk (what costs CPU) stays frozen, so its features are still computed once per song in the feature
cache and training stays cheap (issue 17, bench/README.md: 0.636 -> 0.670 macro-F1 on 30-s 4Q clips,
mean over 5 folds x 5 seeds).

The backbone stays in eval mode (its BatchNorm statistics are MSD's), so the trunk features of a song
never change during training: `forward` takes them precomputed (`patch_features`, from the feature
cache) as well as the log-mel, with the same result.

Patches of digital silence (all log-mel values 0: the zero padding of a track shorter than the clip,
or a silent gap) carry no mood: `patch_features` marks them NaN, and the pooling and the taggram read
only the other patches. Without this a 12-s track in a 30-s clip would be pooled with six patches of
silence and its embedding would say "silence" more than anything the song does.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from labeler.musicnn.model import EMBEDDING_DIM, N_MELS, PATCH_FRAMES, TRUNK_DIM, MusiCNN

# Patches per trunk forward: songs share the work (speed), but a 32-song batch of 30-s clips is 320 patches
# and ~3 GB of activations in one forward (bench/bench_label.py peaked at 8.4 GB on 2 CPUs); 32 keep it <0.3 GB.
PATCH_CHUNK = 32


class MusicnnEncoder(nn.Module):
    """log-mel (batch, patches*187, 96) or trunk features (batch, patches, 1506) -> (batch, embedding_dim)."""

    def __init__(self, embedding_dim: int, dropout: float = 0.0, encoder: str = "MSD_musicnn",
                 tune_top: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.backbone = MusiCNN()
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        # A separate, trainable copy: the backbone's own Dense stays the checkpoint's (for the taggram).
        self.top_dense = copy.deepcopy(self.backbone.dense).requires_grad_(True) if tune_top else None
        self.norm = nn.BatchNorm1d(2 * EMBEDDING_DIM)
        self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * EMBEDDING_DIM, embedding_dim), nn.ReLU())
        self.trunk_engine = None  # labeler.models.engine: the frozen trunk on another engine (CPU labelling)

    def load_pretrained(self) -> None:
        """Copy the wheel's checkpoint (sha256-checked) into the backbone (and the tuned top's starting
        point); only training calls this."""
        from labeler.musicnn.model import load_musicnn  # noqa: PLC0415

        self.backbone.load_state_dict(load_musicnn(self.encoder).state_dict())
        if self.top_dense is not None:
            self.top_dense.load_state_dict(self.backbone.dense.state_dict())

    def train(self, mode: bool = True) -> MusicnnEncoder:
        super().train(mode)
        self.backbone.eval()  # frozen statistics: its BatchNorms keep the pretrained ones
        return self

    def patch_features(self, log_mel: torch.Tensor) -> torch.Tensor:
        """(batch, patches, 1506) frozen trunk features of every 187-frame patch, in one batched forward."""
        if log_mel.dim() != 3 or log_mel.shape[2] != N_MELS or log_mel.shape[1] % PATCH_FRAMES:
            raise ValueError(f"MusiCNN expects the musicnn log-mel (batch, patches x {PATCH_FRAMES}, {N_MELS}), "
                             f"got {tuple(log_mel.shape)}: featurise with FeaturizerConfig.musicnn")
        batch, patches = log_mel.shape[0], log_mel.shape[1] // PATCH_FRAMES
        flat = log_mel.float().reshape(batch * patches, PATCH_FRAMES, N_MELS)
        with torch.no_grad():  # bounded chunks: one timbral conv map is ~9 MB a patch before its max over mel
            trunk = self.trunk_engine or self.backbone.trunk
            pooled = torch.cat([trunk(chunk) for chunk in flat.split(PATCH_CHUNK)])
        silent = (flat == 0).flatten(1).all(dim=1)
        pooled[silent] = float("nan")  # no audio in this patch: left out of the pooling (see the module docstring)
        return pooled.reshape(batch, patches, TRUNK_DIM)

    def taggram(self, patch_features: torch.Tensor) -> torch.Tensor:
        """(batch, 50) musicnn's tag probabilities: the checkpoint's sigmoid outputs averaged over the patches
        that hold audio."""
        flat, weights = _flatten(patch_features)
        tags = torch.sigmoid(self.backbone.tags(self.backbone.top(flat)))
        return (tags.reshape(*weights.shape, -1) * weights.unsqueeze(2)).sum(dim=1)

    def forward(self, log_mel: torch.Tensor | None = None, patch_features: torch.Tensor | None = None) -> torch.Tensor:
        if patch_features is None:
            if log_mel is None:
                raise ValueError("MusicnnEncoder needs log_mel or patch_features")
            patch_features = self.patch_features(log_mel)
        flat, weights = _flatten(patch_features)
        e = self.backbone.top(flat, self.top_dense).reshape(*weights.shape, EMBEDDING_DIM)
        w = weights.unsqueeze(2)
        mean = (e * w).sum(dim=1)
        std = ((e - mean.unsqueeze(1)).square() * w).sum(dim=1).clamp_min(1e-12).sqrt()  # finite gradient at 0
        return self.proj(self.norm(torch.cat([mean, std], dim=1)))


def _flatten(patch_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch * patches, 1506) features with silent (NaN) patches zeroed, and (batch, patches) pooling weights:
    1 / (patches with audio) on those, 0 on silent ones (a clip with none: every patch weighs the same)."""
    if patch_features.dim() != 3 or patch_features.shape[2] != TRUNK_DIM:
        raise ValueError(f"patch_features must be (batch, patches, {TRUNK_DIM}) MusiCNN trunk features, "
                         f"got {tuple(patch_features.shape)}")
    features = patch_features.float()
    audible = torch.isfinite(features).all(dim=2)
    audible = torch.where(audible.any(dim=1, keepdim=True), audible, torch.ones_like(audible))
    weights = audible.float() / audible.sum(dim=1, keepdim=True)
    flat = torch.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0).reshape(-1, TRUNK_DIM)
    return flat, weights
