"""Networks: the audio CNNs (Cnn6/Cnn10), the lyrics encoder and the emotion model that joins them.

Each piece is built from a typed config and returns an embedding; `EmotionModel` puts a head on one
branch (audio or lyrics) or on both (fusion) and returns a `ModelOutput` dataclass. Heads emit
logits: the loss is a cross-entropy on logits (the seed fed sigmoid outputs into CrossEntropyLoss).

Audio: the CNNs follow the PANNs layout (Kong et al. 2020, "PANNs: Large-Scale Pretrained Audio
Neural Networks") written from the architecture description. The module and parameter names are
those of PANNs (`bn0`, `conv_block1.conv1`, `conv_block1.bn1`, `fc1`) so an AudioSet checkpoint maps
onto them with `load_panns_checkpoint`.

Lyrics: any Hugging Face encoder through `AutoModel`; pretrained weights are read only by
`EmotionModel.from_pretrained_branches` (through `labeler.pretrained.resolve_encoder`); a bundle
rebuilds the encoder from its saved `PretrainedConfig`, which never downloads anything.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from labeler.labels import CLASSES_MODE, check_mode, class_names, num_classes

if TYPE_CHECKING:
    from transformers import PretrainedConfig

AUDIO_ARCHS: tuple[str, ...] = ("Cnn6", "Cnn10", "MusiCNN")
PANNS_ARCHS: tuple[str, ...] = ("Cnn6", "Cnn10")
BRANCHES: tuple[str, ...] = ("audio", "lyrics", "fusion")
# How a fusion model joins its branches: "head" learns a head on the concatenated embeddings; "late"
# combines the branches' calibrated log-probabilities linearly (a weighted average or a logistic
# regression); "gated" mixes them with a per-song weight from the two branches' entropies.
FUSIONS: tuple[str, ...] = ("head", "late", "gated")
POOLINGS: tuple[str, ...] = ("mean", "cls")
# Four pooling stages of 2x2 halve the mel axis four times: fewer than 16 bins leaves nothing to pool.
MIN_MELS = 16
MIN_CHANNELS = 8


# --------------------------------------------------------------------------------------------- configs


@dataclass
class AudioCnnConfig:
    """Hyperparameters of the audio branch.

    `width` scales every block's channel count (64, 128, 256, 512), never below 8 channels, so
    `cpu-small` can run a quarter-width Cnn6; only width 1.0 matches a PANNs checkpoint.
    `descriptor_dim > 0` makes the Hybrid branch: the CNN embedding concatenated with the
    standardised handcrafted descriptors, mixed by one Linear+ReLU back to `embedding_dim`.
    `arch="MusiCNN"` is the frozen pretrained musicnn encoder (`encoder`: MSD_musicnn or
    MTT_musicnn) with mean+std pooling of its patch embeddings (labeler.musicnn.encoder); it reads
    the musicnn front end (96 mels) and ignores `width` and the SpecAugment fields.
    """

    arch: str = "Cnn6"
    n_mels: int = 64
    width: float = 1.0
    embedding_dim: int = 512
    dropout: float = 0.2
    spec_augment: bool = True
    descriptor_dim: int = 0
    time_masks: int = 2
    time_mask_frames: int = 64
    freq_masks: int = 2
    freq_mask_bins: int = 8
    encoder: str = "MSD_musicnn"

    def __post_init__(self) -> None:
        if self.arch not in AUDIO_ARCHS:
            raise ValueError(f"unknown audio arch {self.arch!r}: expected one of {', '.join(AUDIO_ARCHS)}")
        if self.arch == "MusiCNN":
            from labeler.musicnn.model import N_MELS  # noqa: PLC0415
            from labeler.musicnn.wheel import MODEL_IDS  # noqa: PLC0415

            if int(self.n_mels) != N_MELS:
                raise ValueError(f"MusiCNN reads the musicnn front end's {N_MELS} mel bins, got n_mels={self.n_mels}")
            if self.encoder not in MODEL_IDS:
                raise ValueError(f"unknown musicnn encoder {self.encoder!r}: expected one of {', '.join(MODEL_IDS)}")
        if int(self.n_mels) < MIN_MELS:
            raise ValueError(f"n_mels={self.n_mels} is too small for {self.arch}: need at least {MIN_MELS} mel bins")
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if int(self.embedding_dim) <= 0:
            raise ValueError(f"embedding_dim must be > 0, got {self.embedding_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if int(self.descriptor_dim) < 0:
            raise ValueError(f"descriptor_dim must be >= 0, got {self.descriptor_dim}")

    def channels(self) -> list[int]:
        return [max(MIN_CHANNELS, int(round(c * self.width))) for c in (64, 128, 256, 512)]


@dataclass
class LyricsEncoderConfig:
    """The lyrics branch: which encoder, how to pool its tokens.

    `name_or_path` is an alias ("MiniLM", "BERT", "ALBERT"), a Hugging Face id, a local directory or an
    S3 URI (see labeler.pretrained). `hidden_size` is filled from the encoder's config when built.
    `window_tokens > 0`: inputs are whole-lyric windows of that many tokens side by side in a row
    (labeler.lyrics, `max_windows > 1`); each non-empty window is pooled, then the windows are averaged.
    """

    name_or_path: str = "MiniLM"
    pooling: str = "mean"
    dropout: float = 0.1
    hidden_size: int = 0
    window_tokens: int = 0

    def __post_init__(self) -> None:
        if int(self.window_tokens) < 0:
            raise ValueError(f"window_tokens must be >= 0, got {self.window_tokens}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}: expected one of {', '.join(POOLINGS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass
class ModelConfig:
    """The whole model: which branch, which label mode, the branch configs and the head.

    `classes` names the outputs in mode `classes` (a catalogue's own taxonomy, in logit order); the
    other modes take their fixed classes from labeler.labels and leave it None.
    """

    branch: str = "fusion"
    mode: str = "4Q"
    audio: AudioCnnConfig | None = field(default_factory=AudioCnnConfig)
    lyrics: LyricsEncoderConfig | None = field(default_factory=LyricsEncoderConfig)
    hidden_dim: int = 256
    dropout: float = 0.3
    modality_dropout: float = 0.2
    regression: bool = False
    freeze_branches: bool = False
    classes: list[str] | None = None
    fusion: str = "head"

    def __post_init__(self) -> None:
        if isinstance(self.audio, dict):
            self.audio = AudioCnnConfig(**self.audio)
        if isinstance(self.lyrics, dict):
            self.lyrics = LyricsEncoderConfig(**self.lyrics)
        check_mode(self.mode)
        if self.mode == CLASSES_MODE:
            self.classes = class_names(self.mode, self.classes)
        elif self.classes is not None:
            raise ValueError(f"classes are given only in mode 'classes', not in mode {self.mode!r}")
        if self.branch not in BRANCHES:
            raise ValueError(f"unknown branch {self.branch!r}: expected one of {', '.join(BRANCHES)}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r}: expected one of {', '.join(FUSIONS)}")
        if self.fusion != "head" and self.branch != "fusion":
            raise ValueError(f"fusion={self.fusion!r} is for branch 'fusion', not {self.branch!r}")
        if self.uses_audio and self.audio is None:
            raise ValueError(f"branch {self.branch!r} needs an audio config")
        if self.uses_lyrics and self.lyrics is None:
            raise ValueError(f"branch {self.branch!r} needs a lyrics config")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {self.modality_dropout}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def uses_audio(self) -> bool:
        return self.branch in ("audio", "fusion")

    def class_names(self) -> list[str]:
        """The output classes in logit order."""
        return class_names(self.mode, self.classes)

    @property
    def uses_lyrics(self) -> bool:
        return self.branch in ("lyrics", "fusion")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.uses_audio:
            d["audio"] = None
        if not self.uses_lyrics:
            d["lyrics"] = None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig key(s): {', '.join(unknown)}")
        return cls(**d)

    def short_name(self) -> str:
        """Human-readable model id part, e.g. 'mood-4q-fusion-cnn6-minilm'."""
        parts = ["mood", self.mode.lower(), self.branch]
        if self.uses_audio:
            parts.append(self.audio.arch.lower() + ("-hybrid" if self.audio.descriptor_dim else ""))
        if self.uses_lyrics:
            name = self.lyrics.name_or_path.rstrip("/").split("/")[-1]
            parts.append("".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-") or "encoder")
        return "-".join(parts)


@dataclass
class ModelOutput:
    """What every model returns; `loss` only when labels were given, `va` only with a regression head."""

    logits: torch.Tensor
    embedding: torch.Tensor
    loss: torch.Tensor | None = None
    va: torch.Tensor | None = None
    has_audio: torch.Tensor | None = None
    has_lyrics: torch.Tensor | None = None
    branch_logprobs: tuple[torch.Tensor, torch.Tensor] | None = None  # late/gated fusion: (audio, lyrics)

    def modalities(self) -> list[str | None]:
        """Per row: 'audio+lyrics', 'audio', 'lyrics' (what the prediction actually used)."""
        n = self.logits.shape[0]
        a = self.has_audio.tolist() if self.has_audio is not None else [False] * n
        t = self.has_lyrics.tolist() if self.has_lyrics is not None else [False] * n
        names = {(True, True): "audio+lyrics", (True, False): "audio", (False, True): "lyrics", (False, False): None}
        return [names[(bool(x), bool(y))] for x, y in zip(a, t)]


# ----------------------------------------------------------------------------------------------- audio


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
        if self.bn0.num_features != config.n_mels:  # pragma: no cover - guards future edits
            raise ValueError(f"bn0 has {self.bn0.num_features} mel bins, config says n_mels={config.n_mels}")

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        if log_mel.dim() != 3 or log_mel.shape[2] != self.config.n_mels:
            raise ValueError(
                f"{self.config.arch} expects log-mel (batch, frames, {self.config.n_mels}), got {tuple(log_mel.shape)}"
            )
        if log_mel.shape[1] < 16:
            raise ValueError(f"{self.config.arch} needs at least 16 frames, got {log_mel.shape[1]}")
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

    def __init__(self, config: AudioCnnConfig) -> None:
        super().__init__()
        self.config = config
        if config.arch == "MusiCNN":
            from labeler.musicnn.encoder import MusicnnEncoder  # noqa: PLC0415

            self.cnn = MusicnnEncoder(config.embedding_dim, config.dropout, config.encoder)
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
                patch_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        if patch_embeddings is not None:
            if self.config.arch != "MusiCNN":
                raise ValueError(f"patch_embeddings are musicnn features; {self.config.arch} reads log_mel")
            emb = self.cnn(None, patch_embeddings)
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


# ---------------------------------------------------------------------------------------------- lyrics


class LyricsEncoder(nn.Module):
    """A Hugging Face encoder with masked mean pooling (default) or the first ([CLS]) token.

    The attention mask is always passed, so padding never reaches the pooled vector (the seed padded
    to 512 tokens without one). The encoder's own pooler is not built: it is unused here and would be
    an untrained, gradient-less parameter set under DDP.
    """

    def __init__(self, config: LyricsEncoderConfig, encoder_config: "PretrainedConfig | None" = None,
                 pretrained: bool = False) -> None:
        super().__init__()
        from transformers import AutoModel  # noqa: PLC0415 - heavy import only when a lyrics branch exists

        self.config = config
        if pretrained:
            from labeler.pretrained import resolve_encoder  # noqa: PLC0415

            self.encoder = _without_pooler(lambda **kw: AutoModel.from_pretrained(resolve_encoder(config.name_or_path), **kw))
        else:
            if encoder_config is None:
                raise ValueError("building a lyrics encoder without pretrained weights needs its encoder_config")
            self.encoder = _without_pooler(lambda **kw: AutoModel.from_config(copy.deepcopy(encoder_config), **kw))
        self.encoder.float()
        config.hidden_size = int(self.encoder.config.hidden_size)
        self.embedding_dim = config.hidden_size
        self.dropout = nn.Dropout(config.dropout)

    @property
    def encoder_config(self) -> "PretrainedConfig":
        return self.encoder.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if attention_mask is None:
            raise ValueError("the lyrics encoder needs an attention_mask")
        input_ids = input_ids.long()
        attention_mask = attention_mask.long()
        if self.config.window_tokens:
            return self.dropout(self._windowed(input_ids, attention_mask, int(self.config.window_tokens)))
        return self.dropout(self._pool(input_ids, attention_mask).float())

    def _pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.config.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def _windowed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, width: int) -> torch.Tensor:
        """(n, windows * width) -> (n, hidden): encode only the non-empty windows, average them per song.

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
        weights = used.reshape(n, windows).to(pooled.dtype)
        summed = (per_window.reshape(n, windows, -1) * weights.unsqueeze(-1)).sum(dim=1)
        return summed / weights.sum(dim=1, keepdim=True).clamp(min=1.0)


def _without_pooler(build):
    """Build with add_pooling_layer=False where the architecture knows the flag (BERT, ALBERT, RoBERTa)."""
    try:
        return build(add_pooling_layer=False)
    except TypeError:
        return build()


# -------------------------------------------------------------------------------------------- the model


class EmotionModel(nn.Module):
    """One class for the audio, lyrics and fusion models, in mode 4Q (4 logits) or Ar/Va (2 logits).

    Fusion concatenates the audio and text embeddings and applies the seed's head (dropout, Linear to
    `hidden_dim`, ReLU, dropout, Linear to the classes). A row missing a modality (`has_audio` /
    `has_lyrics` False) gets that branch's learned placeholder embedding instead, so one fused model
    labels songs with audio only, lyrics only, or both; modality dropout in training swaps one present
    modality for its placeholder with probability `modality_dropout`, so both cases are learnt.
    Encoders run only on the rows that have their modality (BatchNorm never sees padding rows).
    """

    def __init__(self, config: ModelConfig, encoder_config: "PretrainedConfig | None" = None,
                 _pretrained_lyrics: bool = False) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = ModelConfig.from_dict(config)
        config = copy.deepcopy(config)
        check_mode(config.mode)
        self.config = config
        self.n_classes = num_classes(config.mode, config.classes)
        self.audio_encoder = AudioEncoder(config.audio) if config.uses_audio else None
        self.lyrics_encoder = (
            LyricsEncoder(config.lyrics, encoder_config, pretrained=_pretrained_lyrics) if config.uses_lyrics else None
        )
        dims = []
        if self.audio_encoder is not None:
            dims.append(self.audio_encoder.embedding_dim)
        if self.lyrics_encoder is not None:
            dims.append(self.lyrics_encoder.embedding_dim)
        self.embedding_dim = sum(dims)
        if config.branch == "fusion" and config.fusion != "head":
            self.audio_placeholder = nn.Parameter(torch.zeros(dims[0]), requires_grad=False)
            self.lyrics_placeholder = nn.Parameter(torch.zeros(dims[1]), requires_grad=False)
            self.late = LateFusion(dims[0], dims[1], self.n_classes, config.fusion, config.dropout)
            self.head = None  # the branch heads live in self.late
        elif config.branch == "fusion":
            self.audio_placeholder = nn.Parameter(torch.zeros(dims[0]))
            self.lyrics_placeholder = nn.Parameter(torch.zeros(dims[1]))
            self.head = nn.Sequential(
                nn.Dropout(config.dropout), nn.Linear(self.embedding_dim, config.hidden_dim), nn.ReLU(),
                nn.Dropout(config.dropout), nn.Linear(config.hidden_dim, self.n_classes),
            )
        else:
            self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(self.embedding_dim, self.n_classes))
        self.va_head = nn.Linear(self.embedding_dim, 2) if config.regression else None
        if config.freeze_branches:
            self.freeze_branches()

    # ---- construction helpers

    @classmethod
    def from_pretrained_branches(cls, config: ModelConfig) -> "EmotionModel":
        """A new model whose lyrics encoder starts from pretrained weights (alias, HF id, directory or S3).

        A MusiCNN audio branch gets the musicnn wheel's weights (labeler.musicnn); a Cnn6/Cnn10 starts
        from scratch (call `load_panns_checkpoint(model, path)` for AudioSet weights).
        """
        model = cls(config, _pretrained_lyrics=bool(config.uses_lyrics))
        if model.audio_encoder is not None and config.audio.arch == "MusiCNN":
            model.audio_encoder.cnn.load_pretrained()
        return model

    @classmethod
    def fusion_from_branches(cls, audio_model: "EmotionModel", lyrics_model: "EmotionModel",
                             config: ModelConfig) -> "EmotionModel":
        """A fusion model whose encoders are copies of two trained single-branch models of the same fold.

        The branch architectures come from the branch models (they win over `config.audio`/`config.lyrics`);
        the fusion head, the placeholders and the regression head start fresh.
        """
        if audio_model.config.branch != "audio" or audio_model.audio_encoder is None:
            raise ValueError(f"audio_model is a {audio_model.config.branch!r} model, expected an audio model")
        if lyrics_model.config.branch != "lyrics" or lyrics_model.lyrics_encoder is None:
            raise ValueError(f"lyrics_model is a {lyrics_model.config.branch!r} model, expected a lyrics model")
        if config.branch != "fusion":
            raise ValueError(f"fusion_from_branches needs a fusion config, got branch {config.branch!r}")
        fused_config = replace(config, audio=copy.deepcopy(audio_model.config.audio),
                               lyrics=copy.deepcopy(lyrics_model.config.lyrics))
        model = cls(fused_config, encoder_config=lyrics_model.encoder_config)
        model.audio_encoder.load_state_dict(audio_model.audio_encoder.state_dict())
        model.lyrics_encoder.load_state_dict(lyrics_model.lyrics_encoder.state_dict())
        if config.freeze_branches:
            model.freeze_branches()
        return model

    @classmethod
    def late_from_branches(cls, audio_model: "EmotionModel", lyrics_model: "EmotionModel", config: ModelConfig,
                           audio_temperature: float = 1.0, lyrics_temperature: float = 1.0) -> "EmotionModel":
        """A late or gated fusion model holding two trained branch models of the same fold, whole.

        Encoders and heads are copied unchanged with the branches' calibration temperatures, so the
        fused model starts as exactly the two calibrated branches; `LateFusion.set_*` then sets the
        combiner fitted on the validation fold (train.fusion). A song with one modality gets that
        branch's calibrated prediction.
        """
        if config.fusion == "head":
            raise ValueError("late_from_branches builds fusion='late' or 'gated'; use fusion_from_branches for 'head'")
        model = cls.fusion_from_branches(audio_model, lyrics_model, config)
        model.late.audio_head.load_state_dict(audio_model.head.state_dict())
        model.late.lyrics_head.load_state_dict(lyrics_model.head.state_dict())
        model.late.temperature.copy_(torch.tensor([audio_temperature, lyrics_temperature], dtype=torch.float32))
        return model

    @property
    def encoder_config(self) -> "PretrainedConfig | None":
        return self.lyrics_encoder.encoder_config if self.lyrics_encoder is not None else None

    def branch_encoders(self) -> list[nn.Module]:
        return [m for m in (self.audio_encoder, self.lyrics_encoder) if m is not None]

    def freeze_branches(self) -> None:
        """Stop gradients into the encoders and keep them in eval mode (BatchNorm statistics stay put)."""
        self.config.freeze_branches = True
        for encoder in self.branch_encoders():
            encoder.requires_grad_(False)
            encoder.eval()

    def train(self, mode: bool = True) -> "EmotionModel":
        super().train(mode)
        if self.config.freeze_branches:
            for encoder in self.branch_encoders():
                encoder.eval()
        return self

    # ---- forward

    def forward(self, log_mel: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, has_audio: torch.Tensor | None = None,
                has_lyrics: torch.Tensor | None = None, descriptors: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, va_targets: torch.Tensor | None = None,
                class_weights: torch.Tensor | None = None, patch_embeddings: torch.Tensor | None = None) -> ModelOutput:
        """`patch_embeddings` (MusiCNN only): the frozen encoder's per-patch embeddings from the feature
        cache, in place of `log_mel` (same result, without running the network again)."""
        batch = _batch_size(log_mel if patch_embeddings is None else patch_embeddings, input_ids)
        device = (self.head[-1] if self.head is not None else self.late.audio_head[-1]).weight.device
        if self.config.branch == "fusion" and self.config.fusion != "head":
            embedding, has_audio, has_lyrics = self._fused_embedding(
                batch, device, log_mel, input_ids, attention_mask, has_audio, has_lyrics, descriptors, patch_embeddings)
            audio_emb, text_emb = embedding.split([self.late.audio_dim, self.late.lyrics_dim], dim=1)
            logits, parts = self.late(audio_emb, text_emb, has_audio, has_lyrics)
            loss = self._loss(logits, None, labels, None, class_weights)
            return ModelOutput(logits=logits, embedding=embedding, loss=loss, has_audio=has_audio.cpu(),
                               has_lyrics=has_lyrics.cpu(), branch_logprobs=parts)
        if self.config.branch == "fusion":
            embedding, has_audio, has_lyrics = self._fused_embedding(
                batch, device, log_mel, input_ids, attention_mask, has_audio, has_lyrics, descriptors, patch_embeddings)
        elif self.config.branch == "audio":
            if log_mel is None and patch_embeddings is None:
                raise ValueError("the audio model needs log_mel")
            embedding = self.audio_encoder(log_mel, descriptors, patch_embeddings)
            has_audio, has_lyrics = torch.ones(batch, dtype=torch.bool), torch.zeros(batch, dtype=torch.bool)
        else:
            if input_ids is None:
                raise ValueError("the lyrics model needs input_ids and attention_mask")
            embedding = self.lyrics_encoder(input_ids, attention_mask)
            has_audio, has_lyrics = torch.zeros(batch, dtype=torch.bool), torch.ones(batch, dtype=torch.bool)
        logits = self.head(embedding)
        va = self.va_head(embedding) if self.va_head is not None else None
        loss = self._loss(logits, va, labels, va_targets, class_weights)
        return ModelOutput(logits=logits, embedding=embedding, loss=loss, va=va,
                           has_audio=has_audio.cpu(), has_lyrics=has_lyrics.cpu())

    def _fused_embedding(self, batch, device, log_mel, input_ids, attention_mask, has_audio, has_lyrics, descriptors,
                         patch_embeddings=None):
        audio_input = patch_embeddings if patch_embeddings is not None else log_mel
        has_audio = _flags(has_audio, audio_input is not None, batch, device)
        has_lyrics = _flags(has_lyrics, input_ids is not None, batch, device)
        if bool(has_audio.any()) and audio_input is None:
            raise ValueError("has_audio is set for some rows but no log_mel was given")
        if bool(has_lyrics.any()) and input_ids is None:
            raise ValueError("has_lyrics is set for some rows but no input_ids were given")
        if self.training and self.config.modality_dropout > 0:
            both = has_audio & has_lyrics
            drop = both & (torch.rand(batch, device=device) < self.config.modality_dropout)
            drop_audio = drop & (torch.rand(batch, device=device) < 0.5)
            has_audio = has_audio & ~drop_audio
            has_lyrics = has_lyrics & ~(drop & ~drop_audio)
        audio_emb = self.audio_placeholder.unsqueeze(0).expand(batch, -1)
        text_emb = self.lyrics_placeholder.unsqueeze(0).expand(batch, -1)
        if bool(has_audio.any()):
            rows = has_audio.nonzero(as_tuple=True)[0]
            d = descriptors.to(device)[rows] if descriptors is not None else None
            if patch_embeddings is not None:
                computed = self.audio_encoder(None, d, patch_embeddings.to(device)[rows])
            else:
                computed = self.audio_encoder(log_mel.to(device)[rows], d)
            audio_emb = audio_emb.index_put((rows,), computed.to(audio_emb.dtype))
        if bool(has_lyrics.any()):
            rows = has_lyrics.nonzero(as_tuple=True)[0]
            computed = self.lyrics_encoder(input_ids.to(device)[rows], attention_mask.to(device)[rows])
            text_emb = text_emb.index_put((rows,), computed.to(text_emb.dtype))
        return torch.cat([audio_emb, text_emb], dim=1), has_audio, has_lyrics

    def _loss(self, logits, va, labels, va_targets, class_weights) -> torch.Tensor | None:
        if labels is None:
            return None
        weight = class_weights.to(logits.device, torch.float32) if class_weights is not None else None
        loss = F.cross_entropy(logits.float(), labels.to(logits.device).long(), weight=weight)
        if va is not None and va_targets is not None:
            targets = va_targets.to(va.device, torch.float32)
            finite = torch.isfinite(targets)
            if bool(finite.any()):
                loss = loss + F.mse_loss(va.float()[finite], targets[finite])
        return loss


class LateFusion(nn.Module):
    """Late and gated fusion over two branches' calibrated log-probabilities.

    Why: on small real data a head trained on the branches' embeddings of the *training* fold learns
    from branches that have already fitted those songs (the lyrics encoder nearly memorises them), so
    it over-trusts them. Here the branch heads stay as trained, each branch's probabilities are
    calibrated by its own validation-fold temperature, and only a few combiner parameters are fitted,
    on the validation fold (train.fusion):

    * late:  z = W [log p_audio, log p_lyrics] + b   (a weighted average is W = [w I, (1 - w) I], b = 0;
             a multinomial logistic regression fills W and b freely);
    * gated: z = g log p_audio + (1 - g) log p_lyrics, g = sigmoid(u . [H_audio, H_lyrics] + c) per song,
             H the entropy of a branch's distribution: the less certain branch weighs less.

    A row with one modality gets that branch's calibrated log-probabilities.
    """

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


def _batch_size(log_mel, input_ids) -> int:
    for t in (log_mel, input_ids):
        if t is not None:
            return int(t.shape[0])
    raise ValueError("no input: give log_mel and/or input_ids")


def _flags(flags: torch.Tensor | None, present: bool, batch: int, device) -> torch.Tensor:
    if flags is None:
        return torch.full((batch,), present, dtype=torch.bool, device=device)
    flags = torch.as_tensor(flags, device=device).bool().reshape(-1)
    if flags.numel() != batch:
        raise ValueError(f"modality flags have {flags.numel()} rows, the batch has {batch}")
    return flags


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
