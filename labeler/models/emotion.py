"""The emotion model: a head on the audio branch, the lyrics branch or both (fusion).

Each piece is built from a typed config and returns an embedding; `EmotionModel` puts a head on one
branch (audio or lyrics) or on both (fusion) and returns a `ModelOutput` dataclass. Heads emit
logits: the loss is a cross-entropy on logits (the seed fed sigmoid outputs into CrossEntropyLoss).

The branches are labeler.models.audio_encoder and .lyrics_encoder, each built from its config
(labeler.models.configuration) and returning an embedding; late and gated fusion are
labeler.models.fusion.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from labeler.contracts.labels import check_mode, num_classes
from labeler.models.audio_encoder import AudioEncoder, PannsCnn
from labeler.models.configuration import ModelConfig
from labeler.models.fusion import LateFusion
from labeler.models.lyrics_encoder import LyricsEncoder

if TYPE_CHECKING:
    from transformers import PretrainedConfig


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



class EmotionModel(nn.Module):
    """One class for the audio, lyrics and fusion models, in mode 4Q (4 logits) or Ar/Va (2 logits).

    Fusion concatenates the audio and text embeddings and applies the seed's head (dropout, Linear to
    `hidden_dim`, ReLU, dropout, Linear to the classes). A row missing a modality (`has_audio` /
    `has_lyrics` False) gets that branch's learned placeholder embedding instead, so one fused model
    labels songs with audio only, lyrics only, or both; modality dropout in training swaps one present
    modality for its placeholder with probability `modality_dropout`, so both cases are learnt.
    Encoders run only on the rows that have their modality (BatchNorm never sees padding rows).
    """

    def __init__(self, config: ModelConfig, encoder_config: PretrainedConfig | None = None,
                 _pretrained_lyrics: bool = False) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = ModelConfig.from_dict(config)
        config = copy.deepcopy(config)
        check_mode(config.mode)
        self.config = config
        self.n_classes = num_classes(config.mode, config.classes)
        self.audio_encoder = AudioEncoder(config.audio_config()) if config.uses_audio else None
        self.lyrics_encoder = (
            LyricsEncoder(config.lyrics_config(), encoder_config, pretrained=_pretrained_lyrics) if config.uses_lyrics else None
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
    def from_pretrained_branches(cls, config: ModelConfig) -> EmotionModel:
        """A new model whose lyrics encoder starts from pretrained weights (alias, HF id, directory or S3).

        A MusiCNN audio branch gets the musicnn wheel's weights (labeler.musicnn); a Cnn6/Cnn10 starts
        from scratch (call `load_panns_checkpoint(model, path)` for AudioSet weights).
        """
        model = cls(config, _pretrained_lyrics=bool(config.uses_lyrics))
        if model.audio_encoder is not None and not isinstance(model.audio_encoder.cnn, PannsCnn):  # a MusiCNN branch
            model.audio_encoder.cnn.load_pretrained()
        return model

    @classmethod
    def fusion_from_branches(cls, audio_model: EmotionModel, lyrics_model: EmotionModel,
                             config: ModelConfig) -> EmotionModel:
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
        _present(model.audio_encoder, "audio encoder").load_state_dict(audio_model.audio_encoder.state_dict())
        _present(model.lyrics_encoder, "lyrics encoder").load_state_dict(lyrics_model.lyrics_encoder.state_dict())
        if config.freeze_branches:
            model.freeze_branches()
        return model

    @classmethod
    def late_from_branches(cls, audio_model: EmotionModel, lyrics_model: EmotionModel, config: ModelConfig,
                           audio_temperature: float = 1.0, lyrics_temperature: float = 1.0) -> EmotionModel:
        """A late or gated fusion model holding two trained branch models of the same fold, whole.

        Encoders and heads are copied unchanged with the branches' calibration temperatures, so the
        fused model starts as exactly the two calibrated branches; `LateFusion.set_*` then sets the
        combiner fitted on the validation fold (train.select.fusion). A song with one modality gets that
        branch's calibrated prediction.
        """
        if config.fusion == "head":
            raise ValueError("late_from_branches builds fusion='late' or 'gated'; use fusion_from_branches for 'head'")
        model = cls.fusion_from_branches(audio_model, lyrics_model, config)
        model.late.audio_head.load_state_dict(_present(audio_model.head, "head").state_dict())
        model.late.lyrics_head.load_state_dict(_present(lyrics_model.head, "head").state_dict())
        model.late.temperature.copy_(torch.tensor([audio_temperature, lyrics_temperature], dtype=torch.float32))
        return model

    @property
    def encoder_config(self) -> PretrainedConfig | None:
        return self.lyrics_encoder.encoder_config if self.lyrics_encoder is not None else None

    def branch_encoders(self) -> list[nn.Module]:
        return [m for m in (self.audio_encoder, self.lyrics_encoder) if m is not None]

    def freeze_branches(self) -> None:
        """Stop gradients into the encoders and keep them in eval mode (BatchNorm statistics stay put)."""
        self.config.freeze_branches = True
        for encoder in self.branch_encoders():
            encoder.requires_grad_(False)
            encoder.eval()

    def train(self, mode: bool = True) -> EmotionModel:
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
                class_weights: torch.Tensor | None = None, patch_features: torch.Tensor | None = None) -> ModelOutput:
        """`patch_features` (MusiCNN only): the frozen trunk's features of each patch, from the feature
        cache, in place of `log_mel` (same result, without running the trunk again)."""
        batch = _batch_size(log_mel if patch_features is None else patch_features, input_ids)
        device = (self.head[-1] if self.head is not None else self.late.audio_head[-1]).weight.device
        if self.config.branch == "fusion" and self.config.fusion != "head":
            embedding, has_audio, has_lyrics = self._fused_embedding(
                batch, device, log_mel, input_ids, attention_mask, has_audio, has_lyrics, descriptors, patch_features)
            audio_emb, text_emb = embedding.split([self.late.audio_dim, self.late.lyrics_dim], dim=1)
            logits, parts = self.late(audio_emb, text_emb, has_audio, has_lyrics)
            loss = self._loss(logits, None, labels, None, class_weights)
            return ModelOutput(logits=logits, embedding=embedding, loss=loss, has_audio=has_audio.cpu(),
                               has_lyrics=has_lyrics.cpu(), branch_logprobs=parts)
        if self.config.branch == "fusion":
            embedding, has_audio, has_lyrics = self._fused_embedding(
                batch, device, log_mel, input_ids, attention_mask, has_audio, has_lyrics, descriptors, patch_features)
        elif self.config.branch == "audio":
            if log_mel is None and patch_features is None:
                raise ValueError("the audio model needs log_mel")
            embedding = _present(self.audio_encoder, "audio encoder")(log_mel, descriptors, patch_features)
            has_audio, has_lyrics = torch.ones(batch, dtype=torch.bool), torch.zeros(batch, dtype=torch.bool)
        else:
            if input_ids is None:
                raise ValueError("the lyrics model needs input_ids and attention_mask")
            embedding = _present(self.lyrics_encoder, "lyrics encoder")(input_ids, attention_mask)
            has_audio, has_lyrics = torch.zeros(batch, dtype=torch.bool), torch.ones(batch, dtype=torch.bool)
        logits = _present(self.head, "head")(embedding)  # only late and gated fusion (returned above) have none
        va = self.va_head(embedding) if self.va_head is not None else None
        loss = self._loss(logits, va, labels, va_targets, class_weights)
        return ModelOutput(logits=logits, embedding=embedding, loss=loss, va=va,
                           has_audio=has_audio.cpu(), has_lyrics=has_lyrics.cpu())

    def _fused_embedding(self, batch, device, log_mel, input_ids, attention_mask, has_audio, has_lyrics, descriptors,
                         patch_features=None):
        audio_input = patch_features if patch_features is not None else log_mel
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
            if patch_features is not None:
                computed = self.audio_encoder(None, d, patch_features.to(device)[rows])
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



_M = TypeVar("_M", bound=nn.Module)


def _present(module: _M | None, what: str) -> _M:
    """`module`, typed as present: what the model's branch and fusion always build; RuntimeError naming
    `what` if it is None (a model whose config and modules disagree)."""
    if module is None:
        raise RuntimeError(f"this model has no {what}")
    return module


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


def penultimate_dim(model) -> int:
    """Length of the model's penultimate vector (its embedding, or the input of its head's last layer): the
    `embedding` column's length that labelling writes and the bundle records."""
    head = getattr(model, "head", None)
    return int(model.embedding_dim if head is None else head[-1].in_features)
