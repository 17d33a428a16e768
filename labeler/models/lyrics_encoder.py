"""The lyrics branch: any Hugging Face encoder through `AutoModel`, pooled into one embedding.

Pretrained weights are read only when asked (`pretrained=True`, through
`labeler.lyrics.pretrained.resolve_encoder`); a bundle rebuilds the encoder from its saved
`PretrainedConfig`, which never downloads anything.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from labeler.models.configuration import LyricsEncoderConfig

if TYPE_CHECKING:
    from transformers import PretrainedConfig


class LyricsEncoder(nn.Module):
    """A Hugging Face encoder with masked mean pooling (default) or the first ([CLS]) token.

    The attention mask is always passed, so padding never reaches the pooled vector (the seed padded
    to 512 tokens without one). The encoder's own pooler is not built: it is unused here and would be
    an untrained, gradient-less parameter set under DDP.
    """

    def __init__(self, config: LyricsEncoderConfig, encoder_config: PretrainedConfig | None = None,
                 pretrained: bool = False) -> None:
        super().__init__()
        from transformers import AutoModel  # noqa: PLC0415 - heavy import only when a lyrics branch exists

        self.config = config
        if pretrained:
            from labeler.lyrics.pretrained import resolve_encoder  # noqa: PLC0415

            self.encoder = _without_pooler(lambda **kw: AutoModel.from_pretrained(resolve_encoder(config.name_or_path), **kw))
        else:
            if encoder_config is None:
                raise ValueError("building a lyrics encoder without pretrained weights needs its encoder_config")
            self.encoder = _without_pooler(lambda **kw: AutoModel.from_config(copy.deepcopy(encoder_config), **kw))
        self.encoder.float()
        config.hidden_size = int(self.encoder.config.hidden_size)
        self.embedding_dim = config.hidden_size
        self.dropout = nn.Dropout(config.dropout)
        self.engine = None  # labeler.models.engine: the encoder on another engine, used in eval mode (CPU labelling)

    @property
    def encoder_config(self) -> PretrainedConfig:
        return self.encoder.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if attention_mask is None:
            raise ValueError("the lyrics encoder needs an attention_mask")
        input_ids = input_ids.long()
        attention_mask = attention_mask.long()
        if self.config.window_tokens:
            return self.dropout(pool_windows(*self.window_vectors(input_ids, attention_mask)))
        return self.dropout(self._pool(input_ids, attention_mask).float())

    def from_window_vectors(self, vectors: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
        """The embedding `forward` returns, from `window_vectors`' output (e.g. cached once per song by training
        while the encoder is frozen): the average of the used windows, then this module's dropout."""
        return self.dropout(pool_windows(vectors.float(), used))

    def window_vectors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen part's output per window: (vectors (n, windows, hidden) float32, used (n, windows) bool).

        Without `window_tokens` the whole sequence is one window. An unused window's vector is zeros.
        """
        input_ids = input_ids.long()
        attention_mask = attention_mask.long()
        if self.config.window_tokens:
            return self._windowed(input_ids, attention_mask, int(self.config.window_tokens))
        used = attention_mask.any(dim=1)
        return self._pool(input_ids, attention_mask).float().unsqueeze(1), used.unsqueeze(1)

    def _pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.engine is not None and not self.training:
            hidden = self.engine(input_ids, attention_mask)
        else:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.config.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def _windowed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, windows * width) -> (vectors (n, windows, hidden), used (n, windows)): encode only the non-empty windows.

        A row may arrive trimmed of trailing padding (the Predictor drops all-padding columns), so it
        is padded back to whole windows first; all-padding windows cost nothing.
        """
        n, total = input_ids.shape
        windows = -(-total // width)
        if windows * width != total:
            pad = windows * width - total
            input_ids = F.pad(input_ids, (0, pad))
            attention_mask = F.pad(attention_mask, (0, pad))
        ids = input_ids.reshape(n * windows, width)
        mask = attention_mask.reshape(n * windows, width)
        used = mask.any(dim=1)
        if not bool(used.any()):
            raise ValueError("every lyrics window is empty (no attention_mask set)")
        rows = used.nonzero(as_tuple=True)[0]
        span = int(mask[rows].any(dim=0).nonzero().max()) + 1  # drop columns no used window reaches
        pooled = self._pool(ids[rows, :span], mask[rows, :span]).float()
        per_window = pooled.new_zeros(n * windows, pooled.shape[1]).index_put((rows,), pooled)
        return per_window.reshape(n, windows, -1), used.reshape(n, windows)


def pool_windows(vectors: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    """(n, windows, hidden), (n, windows) -> (n, hidden): the mean of each song's used windows (zeros if none)."""
    weights = used.to(vectors.dtype)
    summed = (vectors * weights.unsqueeze(-1)).sum(dim=1)
    return summed / weights.sum(dim=1, keepdim=True).clamp(min=1.0)


def _without_pooler(build):
    """Build with add_pooling_layer=False where the architecture knows the flag (BERT, ALBERT, RoBERTa)."""
    try:
        return build(add_pooling_layer=False)
    except TypeError:
        return build()
