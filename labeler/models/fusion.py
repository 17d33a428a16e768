"""Late and gated fusion: the two branches' calibrated log-probabilities combined, not their embeddings.

Why a module of its own: `LateFusion` is set from parameters fitted outside training
(train.select.fusion), and its math is mirrored in numpy there; a test checks the two agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LateFusion(nn.Module):
    """Late and gated fusion over two branches' calibrated log-probabilities.

    Why: on small real data a head trained on the branches' embeddings of the *training* fold learns
    from branches that have already fitted those songs (the lyrics encoder nearly memorises them), so
    it over-trusts them. Here the branch heads stay as trained, each branch's probabilities are
    calibrated by its own validation-fold temperature, and only a few combiner parameters are fitted,
    on the validation fold (train.select.fusion):

    * late:  z = W [log p_audio, log p_lyrics] + b   (a weighted average is W = [w I, (1 - w) I], b = 0;
             a multinomial logistic regression fills W and b freely);
    * gated: z = g log p_audio + (1 - g) log p_lyrics, g = sigmoid(u . [H_audio, H_lyrics] + c) per song,
             H the entropy of a branch's distribution: the less certain branch weighs less.

    A row with one modality gets that branch's calibrated log-probabilities.
    """

    temperature: torch.Tensor  # buffer: the (audio, lyrics) calibration temperatures

    def __init__(self, audio_dim: int, lyrics_dim: int, n_classes: int, kind: str, dropout: float = 0.0) -> None:
        super().__init__()
        if kind not in ("late", "gated"):
            raise ValueError(f"LateFusion kind must be 'late' or 'gated', got {kind!r}")
        self.kind, self.audio_dim, self.lyrics_dim, self.n_classes = kind, int(audio_dim), int(lyrics_dim), int(n_classes)
        self.audio_head = nn.Sequential(nn.Dropout(dropout), nn.Linear(audio_dim, n_classes))
        self.lyrics_head = nn.Sequential(nn.Dropout(dropout), nn.Linear(lyrics_dim, n_classes))
        self.register_buffer("temperature", torch.ones(2))
        if kind == "late":
            self.combiner = nn.Linear(2 * n_classes, n_classes)
            self.set_average(0.5)
        else:
            self.gate = nn.Linear(2, 1)
            self.set_gate([0.0, 0.0], 0.0)

    @torch.no_grad()
    def set_average(self, audio_weight: float) -> None:
        """z = w log p_audio + (1 - w) log p_lyrics."""
        eye = torch.eye(self.n_classes)
        self.combiner.weight.copy_(torch.cat([audio_weight * eye, (1.0 - audio_weight) * eye], dim=1))
        self.combiner.bias.zero_()

    @torch.no_grad()
    def set_linear(self, weight, bias) -> None:
        """z = W [log p_audio, log p_lyrics] + b (W: classes x 2 classes), e.g. a fitted logistic regression."""
        self.combiner.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).reshape(self.n_classes, 2 * self.n_classes))
        self.combiner.bias.copy_(torch.as_tensor(bias, dtype=torch.float32).reshape(self.n_classes))

    @torch.no_grad()
    def set_gate(self, weight, bias: float) -> None:
        """g = sigmoid(weight . [H_audio, H_lyrics] + bias)."""
        self.gate.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).reshape(1, 2))
        self.gate.bias.fill_(float(bias))

    def forward(self, audio_emb, text_emb, has_audio, has_lyrics):
        log_a = F.log_softmax(self.audio_head(audio_emb).float() / self.temperature[0], dim=-1)
        log_l = F.log_softmax(self.lyrics_head(text_emb).float() / self.temperature[1], dim=-1)
        if self.kind == "late":
            both = self.combiner(torch.cat([log_a, log_l], dim=-1))
        else:
            entropy = torch.stack([-(log_a.exp() * log_a).sum(-1), -(log_l.exp() * log_l).sum(-1)], dim=-1)
            g = torch.sigmoid(self.gate(entropy))
            both = g * log_a + (1.0 - g) * log_l
        a = has_audio.reshape(-1, 1).to(both.device)
        t = has_lyrics.reshape(-1, 1).to(both.device)
        logits = torch.where(a & t, both, torch.where(a, log_a, log_l))
        return logits, (log_a, log_l)

