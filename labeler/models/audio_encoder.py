"""The audio branch: PANNs-layout CNNs (Cnn6/Cnn10), or the musicnn encoder, plus the Hybrid descriptors.

The CNNs follow the PANNs layout (Kong et al. 2020, "PANNs: Large-Scale Pretrained Audio Neural
Networks") written from the architecture description. The module and parameter names are those of
PANNs (`bn0`, `conv_block1.conv1`, `conv_block1.bn1`, `fc1`) so an AudioSet checkpoint maps onto
them with `load_panns_checkpoint`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from labeler.models.configuration import AudioCnnConfig

if TYPE_CHECKING:
    from labeler.musicnn.encoder import MusicnnEncoder


def spec_augment(x: torch.Tensor, time_masks: int, time_width: int, freq_masks: int, freq_width: int) -> torch.Tensor:
    """SpecAugment masking (Park et al. 2019) on (batch, 1, frames, mels): zero random time and mel stripes.

    Each example gets its own stripes; widths are uniform in [0, width). The input comes after bn0,
    so zero is the per-bin mean. (torchaudio is not a dependency; this is the whole of what we need.)
    """
    batch, _, frames, mels = x.shape
    keep = torch.ones(batch, frames, mels, dtype=torch.bool, device=x.device)
    for n_masks, width, size, axis in ((time_masks, time_width, frames, 1), (freq_masks, freq_width, mels, 2)):
        width = min(int(width), size)
        if n_masks <= 0 or width <= 0:
            continue
        positions = torch.arange(size, device=x.device)
        for _ in range(int(n_masks)):
            w = torch.randint(0, width, (batch, 1), device=x.device)
            start = (torch.rand(batch, 1, device=x.device) * (size - w + 1).float()).long()
            stripe = (positions >= start) & (positions < start + w)  # (batch, size)
            keep &= ~(stripe.unsqueeze(2) if axis == 1 else stripe.unsqueeze(1))
    return x * keep.unsqueeze(1).to(x.dtype)


class ConvBlock(nn.Module):
    """One PANNs block: `n_convs` x (conv, BN, ReLU), then 2x2 average pooling.

    Cnn6 uses one 5x5 conv per block, Cnn10 two 3x3 convs; names conv1/bn1/conv2/bn2 as in PANNs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, n_convs: int) -> None:
        super().__init__()
        self.n_convs = n_convs
        for i in range(1, n_convs + 1):
            conv = nn.Conv2d(in_channels if i == 1 else out_channels, out_channels, kernel_size=kernel,
                             padding=kernel // 2, bias=False)
            nn.init.xavier_uniform_(conv.weight)
            setattr(self, f"conv{i}", conv)
            setattr(self, f"bn{i}", nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.n_convs + 1):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
        return F.avg_pool2d(x, kernel_size=2)


class PannsCnn(nn.Module):
    """Cnn6 / Cnn10 on log-mel (batch, frames, mels) -> embedding (batch, embedding_dim).

    bn0 normalises each mel bin (the PANNs trick of a BatchNorm2d over the mel axis); SpecAugment runs
    only in training; the global pooling is the mean over mel bins, then max + mean over time.
    """

    def __init__(self, config: AudioCnnConfig) -> None:
        super().__init__()
        self.config = config
        kernel, n_convs = (5, 1) if config.arch == "Cnn6" else (3, 2)
        channels = config.channels()
        self.bn0 = nn.BatchNorm2d(config.n_mels)
        in_ch = 1
        for i, out_ch in enumerate(channels, start=1):
            setattr(self, f"conv_block{i}", ConvBlock(in_ch, out_ch, kernel, n_convs))
            in_ch = out_ch
        self.fc1 = nn.Linear(in_ch, config.embedding_dim)
        nn.init.xavier_uniform_(self.fc1.weight)
        nn.init.zeros_(self.fc1.bias)
        self.engine = None  # labeler.models.engine: this network on another engine, used in eval mode (CPU labelling)
        if self.bn0.num_features != config.n_mels:  # pragma: no cover - guards future edits
            raise ValueError(f"bn0 has {self.bn0.num_features} mel bins, config says n_mels={config.n_mels}")

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        if log_mel.dim() != 3 or log_mel.shape[2] != self.config.n_mels:
            raise ValueError(
                f"{self.config.arch} expects log-mel (batch, frames, {self.config.n_mels}), got {tuple(log_mel.shape)}"
            )
        if log_mel.shape[1] < 16:
            raise ValueError(f"{self.config.arch} needs at least 16 frames, got {log_mel.shape[1]}")
        if self.engine is not None and not self.training:
            return self.engine(log_mel.float())
        x = log_mel.float().unsqueeze(1)                    # (b, 1, t, m)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)    # normalise per mel bin
        cfg = self.config
        if self.training and cfg.spec_augment:
            x = spec_augment(x, cfg.time_masks, cfg.time_mask_frames, cfg.freq_masks, cfg.freq_mask_bins)
        for i in range(1, 5):
            x = getattr(self, f"conv_block{i}")(x)
            x = F.dropout(x, p=cfg.dropout, training=self.training)
        x = x.mean(dim=3)                                   # (b, c, t)
        x = x.amax(dim=2) + x.mean(dim=2)                   # (b, c)
        x = F.dropout(x, p=0.5, training=self.training)
        x = F.relu(self.fc1(x))
        return F.dropout(x, p=0.5, training=self.training)


class AudioEncoder(nn.Module):
    """The audio branch: a PANNs CNN, plus (Hybrid) standardised descriptors mixed into the embedding.

    Descriptor standardisation statistics are buffers (`descriptor_mean`, `descriptor_std`) so they
    travel in the bundle's weights with the model that was trained on them; non-finite descriptor
    values become the mean (0 after standardisation).
    """

    descriptor_mean: torch.Tensor  # buffers, present when config.descriptor_dim > 0
    descriptor_std: torch.Tensor

    def __init__(self, config: AudioCnnConfig) -> None:
        super().__init__()
        self.config = config
        self.cnn: MusicnnEncoder | PannsCnn
        if config.arch == "MusiCNN":
            from labeler.musicnn.encoder import MusicnnEncoder  # noqa: PLC0415

            self.cnn = MusicnnEncoder(config.embedding_dim, config.dropout, config.encoder, config.tune_top)
        else:
            self.cnn = PannsCnn(config)
        self.embedding_dim = config.embedding_dim
        if config.descriptor_dim > 0:
            self.register_buffer("descriptor_mean", torch.zeros(config.descriptor_dim))
            self.register_buffer("descriptor_std", torch.ones(config.descriptor_dim))
            self.descriptor_mlp = nn.Sequential(
                nn.Linear(config.embedding_dim + config.descriptor_dim, config.embedding_dim), nn.ReLU(),
                nn.Dropout(config.dropout),
            )

    def set_descriptor_stats(self, mean, std) -> None:
        """Copy the training set's descriptor mean/std into the buffers (zero std becomes 1)."""
        if self.config.descriptor_dim <= 0:
            raise ValueError("this audio branch takes no descriptors (descriptor_dim=0)")
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        for name, t in (("mean", mean_t), ("std", std_t)):
            if t.numel() != self.config.descriptor_dim:
                raise ValueError(f"descriptor {name} has {t.numel()} values, expected {self.config.descriptor_dim}")
        std_t = torch.where(std_t > 0, std_t, torch.ones_like(std_t))
        self.descriptor_mean.copy_(mean_t)
        self.descriptor_std.copy_(std_t)

    def forward(self, log_mel: torch.Tensor | None, descriptors: torch.Tensor | None = None,
                patch_features: torch.Tensor | None = None) -> torch.Tensor:
        if patch_features is not None:
            if self.config.arch != "MusiCNN":
                raise ValueError(f"patch_features are musicnn features; {self.config.arch} reads log_mel")
            emb = self.cnn(None, patch_features)
        else:
            emb = self.cnn(log_mel)
        if self.config.descriptor_dim > 0:
            if descriptors is None:
                raise ValueError("the Hybrid audio branch needs `descriptors` (featurise with descriptors=True)")
            if descriptors.shape[-1] != self.config.descriptor_dim:
                raise ValueError(f"descriptors have {descriptors.shape[-1]} values, expected {self.config.descriptor_dim}")
            d = (descriptors.float() - self.descriptor_mean) / self.descriptor_std
            d = torch.nan_to_num(d, nan=0.0, posinf=0.0, neginf=0.0)
            emb = self.descriptor_mlp(torch.cat([emb, d], dim=1))
        return emb


def load_panns_checkpoint(model: nn.Module, path: str) -> list[str]:
    """Copy a PANNs AudioSet checkpoint's weights into a Cnn6/Cnn10 (or a model holding one).

    Loads with `weights_only=True` (no code runs from the file) and copies every tensor whose name
    exists here with the same shape; anything else (spectrogram extractor, AudioSet head, a width
    that is not 1.0) is skipped. Returns the loaded names; ValueError when nothing matched.
    """
    target = _find_cnn(model)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError(f"{path}: not a PANNs checkpoint (expected a dict with a 'model' state dict)")
    source = checkpoint["model"]
    own = target.state_dict()
    loadable = {k: v for k, v in source.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not loadable:
        raise ValueError(f"{path}: no tensor matches {target.config.arch} (width {target.config.width}); "
                         "PANNs checkpoints fit width 1.0 and 64 mel bins")
    target.load_state_dict(loadable, strict=False)
    return sorted(loadable)


def _find_cnn(model: nn.Module) -> PannsCnn:
    if isinstance(model, PannsCnn):
        return model
    for module in model.modules():
        if isinstance(module, PannsCnn):
            return module
    raise ValueError(f"{type(model).__name__} has no Cnn6/Cnn10 audio branch")
