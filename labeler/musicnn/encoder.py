"""The MusiCNN audio branch: a frozen pretrained MusiCNN over a chorus clip's 3-s patches, pooled.

A clip's musicnn log-mel (patches x 187 frames, 96 mels; `FeaturizerConfig.musicnn`) is cut into
its patches, every patch of every song in the batch goes through the frozen network at once (one
batched forward, so songs share the work), and the 200-d penultimate embeddings are pooled per song
by their mean and standard deviation (the pooling that scored 0.788 macro-F1 with a logistic regression
on held-out 4Q songs, issue 17). A BatchNorm standardises the 400 pooled values and a Linear + ReLU
maps them to the branch's embedding, which the model's head (or the fusion head) reads.

The network stays frozen and in eval mode (its BatchNorm statistics are MSD's), so the per-patch
embeddings of a song never change during training: `forward` takes them precomputed
(`patch_embeddings`, from the feature cache) as well as the log-mel, with the same result.
"""

from __future__ import annotations

import torch
from torch import nn

from labeler.musicnn.model import EMBEDDING_DIM, N_MELS, PATCH_FRAMES, MusiCNN


class MusicnnEncoder(nn.Module):
    """log-mel (batch, patches*187, 96) or patch embeddings (batch, patches, 200) -> (batch, embedding_dim)."""

    def __init__(self, embedding_dim: int, dropout: float = 0.0, encoder: str = "MSD_musicnn") -> None:
        super().__init__()
        self.encoder = encoder
        self.backbone = MusiCNN()
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.norm = nn.BatchNorm1d(2 * EMBEDDING_DIM)
        self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * EMBEDDING_DIM, embedding_dim), nn.ReLU())

    def load_pretrained(self) -> None:
        """Copy the wheel's checkpoint (sha256-checked) into the backbone; only training calls this."""
        from labeler.musicnn.model import load_musicnn  # noqa: PLC0415

        self.backbone.load_state_dict(load_musicnn(self.encoder).state_dict())

    def train(self, mode: bool = True) -> "MusicnnEncoder":
        super().train(mode)
        self.backbone.eval()  # frozen: its BatchNorm keeps the pretrained statistics
        return self

    def patch_embeddings(self, log_mel: torch.Tensor) -> torch.Tensor:
        """(batch, patches, 200) penultimate embeddings of every 187-frame patch, in one batched forward."""
        if log_mel.dim() != 3 or log_mel.shape[2] != N_MELS or log_mel.shape[1] % PATCH_FRAMES:
            raise ValueError(f"MusiCNN expects the musicnn log-mel (batch, patches x {PATCH_FRAMES}, {N_MELS}), "
                             f"got {tuple(log_mel.shape)}: featurise with FeaturizerConfig.musicnn")
        batch, patches = log_mel.shape[0], log_mel.shape[1] // PATCH_FRAMES
        with torch.no_grad():
            emb = self.backbone.embed(log_mel.float().reshape(batch * patches, PATCH_FRAMES, N_MELS))
        return emb.reshape(batch, patches, EMBEDDING_DIM)

    def forward(self, log_mel: torch.Tensor | None = None, patch_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        if patch_embeddings is None:
            if log_mel is None:
                raise ValueError("MusicnnEncoder needs log_mel or patch_embeddings")
            patch_embeddings = self.patch_embeddings(log_mel)
        if patch_embeddings.dim() != 3 or patch_embeddings.shape[2] != EMBEDDING_DIM:
            raise ValueError(f"patch_embeddings must be (batch, patches, {EMBEDDING_DIM}), got {tuple(patch_embeddings.shape)}")
        e = patch_embeddings.float()
        pooled = torch.cat([e.mean(dim=1), e.std(dim=1, unbiased=False)], dim=1)
        return self.proj(self.norm(pooled))
