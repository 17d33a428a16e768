"""Named training presets: every knob of a training run in one typed dataclass.

A run is defined by about 30 numbers (feature geometry, network width, learning rates, epochs,
folds, workers) that only make sense together. A preset fixes a coherent set; any field can
still be overridden (`get_preset("cpu-small", epochs=2)`, or `--set epochs=2` on the CLI).

| preset | features | audio CNN | lyrics encoder | optimiser | epochs (patience) | folds | workers |
|---|---|---|---|---|---|---|---|
| `becmer` | 30 s chorus, 32 kHz, hop 320, 64 mels (3001 frames) | Cnn6 or Cnn10 (`--model`), width 1.0, emb 512 | `bert-base-uncased` (`BERT`), 512 tokens, nothing frozen | Adam; lr 1e-4 CNN, head and fusion; 2e-5 BERT; batch 16; class weights | 30 (8) | all 5 (seed 8848) | 1 GPU worker per fold, bf16 |
| `cpu-small` | MusiCNN: 30 s chorus, musicnn front end (16 kHz, hop 256, 96 mels, 10 patches of 187 frames); Cnn6: 8 s chorus, 16 kHz, hop 320, 64 mels (401 frames) | MusiCNN (MSD_musicnn, trunk frozen, Dense 1506 -> 200 fine-tuned, mean+std pooled, emb 128); `--model Cnn6`: width 0.25, emb 128, no block dropout / SpecAugment | MiniLM-L6 (offline) frozen, whole lyric in <= 8 windows of 128 tokens, + lexical TF-IDF model, stacked on validation (fusion: lower 4 of 6 layers frozen) | AdamW; lr 1e-3 CNN/head/fusion; 5e-5 encoder; batch 16; class weights | 5, audio 3x (15) (4) | first 2 | 1 CPU worker per fold |

The audio branch defaults to the pretrained MusiCNN in `cpu-small` (on real music a CNN trained from
scratch loses to a logistic regression on log-mel statistics, bench/README.md); `becmer` keeps the seed's
Cnn6 by default, with `--model MusiCNN` for real music (30-s clips, `musicnn_clip_seconds`).

`becmer` reproduces the seed (sungbohsun/BECMER): full-width PANNs CNNs on 30 s clips at 32 kHz, Adam
at 1e-4 (2e-5 for BERT), class-weighted cross-entropy, 5-fold CV with seed 8848. It is meant for GPU
clusters. `cpu-small` trains a useful fused model on two CPU cores (the demo and the tests):
shorter, lower-rate clips, a quarter-width CNN, a small frozen-bottom sentence encoder and
only two folds. Both use linear warmup then cosine decay, early stopping and checkpoint selection on
the *validation* fold's macro-F1 (never the test fold).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from labeler.audio.config import FeaturizerConfig as _F
from labeler.contracts.coerce import coerce, field_types
from labeler.contracts.labels import check_mode
from labeler.lyrics.lexical import LexicalConfig as _X
from labeler.lyrics.text import LyricsConfig as _Ly
from labeler.models.configuration import AudioCnnConfig as _A
from labeler.models.configuration import LyricsEncoderConfig as _L
from labeler.models.configuration import ModelConfig as _M
from labeler.runtime.display import markdown_table

# `--model` values of the audio branch: the seed's PANNs CNNs (from scratch) and the pretrained MusiCNN.
AUDIO_MODELS: tuple[str, ...] = ("Cnn6", "Cnn10", "Hybrid", "MusiCNN", "MusiCNN-Hybrid")


@dataclass(frozen=True)
class TrainPreset:
    """All settings of one training run. Learning rates are per parameter group."""

    name: str = "custom"
    # --- features (-> labeler.audio.FeaturizerConfig; stored in the bundle). Defaults are the library
    # configs' own (one source of truth); a preset below overrides what it needs. ---
    sample_rate: int = _F.sample_rate
    clip_seconds: float = _F.clip_seconds
    window_size: int = _F.window_size
    hop_size: int = _F.hop_size
    n_mels: int = _F.n_mels
    fmin: float = _F.fmin
    fmax: float = _F.fmax
    # --- audio branch (-> labeler.models.AudioCnnConfig) ---
    audio_arch: str = _A.arch         # Cnn6 | Cnn10 | Hybrid (Cnn6 + descriptors) | MusiCNN | MusiCNN-Hybrid
    musicnn_encoder: str = _A.encoder  # MusiCNN archs: which pretrained musicnn (MSD_musicnn | MTT_musicnn)
    musicnn_clip_seconds: float = 30.0    # MusiCNN archs: chorus clip length (3-s patches; the musicnn front end)
    # MusiCNN archs: fine-tune a copy of its Dense 1506 -> 200 (the trunk stays frozen): better at every clip length
    # on the 4Q slice (bench/README.md); False keeps the whole encoder frozen.
    musicnn_tune_top: bool = True
    audio_width: float = _A.width
    audio_embedding_dim: int = _A.embedding_dim
    audio_dropout: float = _A.dropout
    spec_augment: bool = _A.spec_augment
    # --- lyrics branch (-> labeler.models.LyricsEncoderConfig, labeler.lyrics.text.LyricsConfig; the encoder and
    # max_tokens differ from those configs' defaults on purpose: the seed's BERT at 512 tokens) ---
    lyrics_encoder: str = "BERT"      # alias (BERT/ALBERT/MiniLM), HF id, local dir or s3:// dir
    max_tokens: int = 512
    long_policy: str = _Ly.long_policy
    freeze_embeddings: bool = False
    freeze_lower_layers: int = 0      # encoder layers (from the bottom) kept frozen
    lyrics_dropout: float = _L.dropout
    lyrics_windows: int = _Ly.max_windows  # > 1: whole-lyric windows of max_tokens, at most this many
    lyrics_window_overlap: int = _Ly.window_overlap  # tokens shared by neighbouring windows
    freeze_lyrics_encoder: bool = False  # lyrics branch: the encoder stays pretrained (eval mode); only the head learns
    lexical: bool = False             # stacked lyrics branch: + TF-IDF model, combined on the validation fold
    lexical_C: float = _X.C            # its logistic regression's inverse L2 strength (LexicalConfig.C)
    # a larger labelled lyrics manifest the lexical model learns its words from, mapped to the run's classes
    # on the training folds (train.data.lexical_source; `labeler train --lexical-source`); "" = the run's own songs
    lexical_source: str = ""
    # --- heads / fusion (-> labeler.models.ModelConfig) ---
    hidden_dim: int = _M.hidden_dim
    head_dropout: float = _M.dropout
    modality_dropout: float = _M.modality_dropout
    freeze_branches: bool = _M.freeze_branches  # fusion: train only the fusion head
    # --- optimisation ---
    optimizer: str = "adam"           # adam | adamw
    lr_audio: float = 1e-4
    lr_encoder: float = 2e-5          # pretrained lyrics encoder (lower than the head)
    lr_head: float = 1e-4
    lr_fusion: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 16
    epochs: int = 30
    audio_epoch_factor: float = 1.0   # audio branch: round(epochs x this) (a CNN from scratch needs more steps)
    patience: int = 8                 # epochs without val macro-F1 improvement before stopping
    warmup_fraction: float = 0.05     # of all steps; then cosine decay to 0
    grad_clip: float = 1.0
    class_weights: bool = True        # inverse-frequency weights from the training part only
    # --- cross-validation ---
    folds: tuple[int, ...] | None = None  # None = every fold of the manifest
    seed: int = 8848
    # --- resources and fault tolerance ---
    num_workers: int = 1              # Ray Train workers per fold (DDP)
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_concurrent_folds: int = 0     # 0 = as many as the cluster's resources allow
    max_failures: int = 2
    num_to_keep: int = 2              # checkpoints kept per fold (best by val_macro_f1 + latest)
    featurise_concurrency: int = 0    # Featurizer tasks; 0 = Ray Data decides
    materialize_mb: float = 1024.0    # a feature cache up to this size is read once per trial, not once per epoch

    def __post_init__(self) -> None:
        if self.audio_arch not in AUDIO_MODELS:
            raise ValueError(f"audio_arch must be one of {', '.join(AUDIO_MODELS)}, got {self.audio_arch!r}")
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be adam or adamw, got {self.optimizer!r}")
        for name in ("epochs", "batch_size", "num_workers", "patience"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.audio_epoch_factor > 0:
            raise ValueError(f"audio_epoch_factor must be > 0, got {self.audio_epoch_factor!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")

    @property
    def uses_musicnn(self) -> bool:
        """The audio branch is the pretrained MusiCNN (musicnn front end, frozen-encoder embeddings cached)."""
        return self.audio_arch.startswith("MusiCNN")

    @property
    def uses_descriptors(self) -> bool:
        """The audio branch adds the handcrafted descriptors (Hybrid, MusiCNN-Hybrid)."""
        return self.audio_arch.endswith("Hybrid")

    def epochs_for(self, branch: str) -> int:
        """Epochs of one branch: the audio CNN trains `audio_epoch_factor` times longer (at least 1)."""
        return max(1, round(self.epochs * self.audio_epoch_factor)) if branch == "audio" else self.epochs

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["folds"] = list(self.folds) if self.folds is not None else None
        return d


PRESETS: dict[str, TrainPreset] = {
    "becmer": TrainPreset(name="becmer", use_gpu=True),
    "cpu-small": TrainPreset(
        name="cpu-small",
        sample_rate=16000,
        clip_seconds=8.0,
        window_size=512,
        hop_size=320,
        n_mels=64,
        fmax=8000.0,
        # The pretrained musicnn encoder on 30-s chorus clips, its trunk frozen (its features are cached once
        # per song) and its Dense 1506 -> 200 fine-tuned, with a small head: of the frozen and tuned
        # variants on 10/20/30-s clips this one has the best validation score on the 160 4Q development
        # clips, and it beats log-mel and descriptor statistics + LR by 0.087 / 0.095 macro-F1 on the test
        # folds (5 seeds, bench/bench_real_audio.py); `--model Cnn6` keeps the quarter-width CNN below.
        audio_arch="MusiCNN",
        musicnn_clip_seconds=30.0,
        audio_width=0.25,
        audio_embedding_dim=128,
        # Few songs and few steps: block dropout and SpecAugment kept the quarter-width CNN near chance
        # on the synthetic set in 16 epochs; without them it reaches ~0.7 validation accuracy.
        audio_dropout=0.0,
        spec_augment=False,
        lyrics_encoder="MiniLM",
        max_tokens=128,
        # The stacked lyrics branch (bench/bench_real_lyrics.py): the whole lyric in up to 8 windows of
        # 128 tokens through the frozen encoder, a linear head, and the lexical model beside it.
        lyrics_windows=8,
        lyrics_window_overlap=16,
        freeze_lyrics_encoder=True,
        lexical=True,
        freeze_embeddings=True,
        freeze_lower_layers=4,
        hidden_dim=128,
        optimizer="adamw",
        lr_audio=1e-3,
        lr_encoder=5e-5,
        lr_head=1e-3,
        lr_fusion=1e-3,
        weight_decay=1e-4,
        batch_size=16,
        epochs=5,
        audio_epoch_factor=3.0,  # 15 audio epochs; `--set epochs=2` shortens every branch (audio: 6)
        patience=4,
        warmup_fraction=0.1,
        folds=(0, 1),
        num_workers=1,
        use_gpu=False,
        # Below 1 so that, on a 2-CPU machine, a training worker (0.9) + its Tune trial driver (0.01)
        # leave a whole CPU to Ray Data's 1-CPU file-listing task; 2 x 0.9 fits 2 folds on 2 CPUs.
        cpus_per_worker=0.9,
        max_failures=2,
    ),
}


def _coerce(name: str, value):
    """A CLI override (a string) to its field's type by `labeler.contracts.coerce`'s rules; "all" folds is every fold."""
    if name == "folds" and isinstance(value, str) and value.strip().lower() == "all":
        return None
    value = coerce(name, value, field_types(TrainPreset)[name])
    return tuple(int(v) for v in value) if name == "folds" and value is not None else value


def get_preset(name: str, **overrides) -> TrainPreset:
    """The named preset with `overrides` applied; unknown presets or fields raise ValueError naming them."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
    base = PRESETS[name]
    fields = {f.name for f in dataclasses.fields(TrainPreset)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown preset field(s) {', '.join(unknown)}: expected some of {', '.join(sorted(fields))}")
    values = {k: _coerce(k, v) for k, v in overrides.items()}
    return dataclasses.replace(base, **values)


def parse_overrides(items: list[str] | None) -> dict:
    """`["epochs=2", "lr_head=3e-4"]` -> dict; a malformed item raises ValueError naming it."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def presets_table() -> str:
    """The presets as a Markdown table (the module docstring's table is this, edited for prose)."""
    keys = ["sample_rate", "clip_seconds", "hop_size", "n_mels", "audio_arch", "audio_width", "lyrics_encoder",
            "max_tokens", "freeze_lower_layers", "lr_audio", "lr_encoder", "lr_head", "lr_fusion", "batch_size",
            "epochs", "patience", "folds", "seed", "num_workers", "use_gpu"]
    return markdown_table(["field", *PRESETS], [[f"`{k}`", *(getattr(p, k) for p in PRESETS.values())] for k in keys])


def check_branch_mode(branch: str, mode: str) -> None:
    check_mode(mode)
    if branch not in ("audio", "lyrics", "fusion", "all"):
        raise ValueError(f"unknown branch {branch!r}: expected audio, lyrics, fusion or all")
