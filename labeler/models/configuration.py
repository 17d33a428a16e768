"""The models' configurations: `AudioCnnConfig`, `LyricsEncoderConfig` and `ModelConfig`, without torch.

Why a module of its own (as transformers separates configuration_* from modeling_*): a bundle's
config, the presets and the drivers read and check these without building a network, so importing
them must not import torch (tests/test_models.py checks `sys.modules`). Each config fails at
construction on a value the model could not be built from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from labeler.contracts.labels import CLASSES_MODE, check_mode, class_names

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

# How a CPU Predictor runs the frozen encoders (labeler.models.engine): auto, ONNX Runtime, or PyTorch.
ENGINES = ("auto", "onnxruntime", "torch")


# --------------------------------------------------------------------------------------------- configs


@dataclass
class AudioCnnConfig:
    """Hyperparameters of the audio branch.

    `width` scales every block's channel count (64, 128, 256, 512), never below 8 channels, so
    `cpu-small` can run a quarter-width Cnn6; only width 1.0 matches a PANNs checkpoint.
    `descriptor_dim > 0` makes the Hybrid branch: the CNN embedding concatenated with the
    standardised handcrafted descriptors, mixed by one Linear+ReLU back to `embedding_dim`.
    `arch="MusiCNN"` is the pretrained musicnn encoder (`encoder`: MSD_musicnn or MTT_musicnn) with
    mean+std pooling of its patch embeddings (labeler.musicnn.encoder), frozen, or with its Dense
    1506 -> 200 layer fine-tuned (`tune_top`); it reads the musicnn front end (96 mels) and ignores
    `width` and the SpecAugment fields.
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
    tune_top: bool = False

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
    S3 URI (see labeler.lyrics.pretrained). `hidden_size` is filled from the encoder's config when built.
    `window_tokens > 0`: inputs are whole-lyric windows of that many tokens side by side in a row
    (labeler.lyrics.text, `max_windows > 1`); each non-empty window is pooled, then the windows are averaged.
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
    other modes take their fixed classes from labeler.contracts.labels and leave it None.
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

    def audio_config(self) -> AudioCnnConfig:
        """`audio`, typed as present: set whenever `uses_audio` (checked at construction); ValueError if None."""
        if self.audio is None:
            raise ValueError(f"this {self.branch!r} model has no audio config")
        return self.audio

    def lyrics_config(self) -> LyricsEncoderConfig:
        """`lyrics`, typed as present: set whenever `uses_lyrics` (checked at construction); ValueError if None."""
        if self.lyrics is None:
            raise ValueError(f"this {self.branch!r} model has no lyrics config")
        return self.lyrics

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.uses_audio:
            d["audio"] = None
        if not self.uses_lyrics:
            d["lyrics"] = None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        from labeler.contracts.coerce import config_from_dict  # noqa: PLC0415

        return config_from_dict(cls, d)

    def short_name(self) -> str:
        """Human-readable model id part, e.g. 'mood-4q-fusion-cnn6-minilm'."""
        parts = ["mood", self.mode.lower(), self.branch]
        if self.uses_audio:
            audio = self.audio_config()
            parts.append(audio.arch.lower() + ("-hybrid" if audio.descriptor_dim else ""))
        if self.uses_lyrics:
            name = self.lyrics_config().name_or_path.rstrip("/").split("/")[-1]
            parts.append("".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-") or "encoder")
        return "-".join(parts)

