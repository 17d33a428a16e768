"""Networks: the audio CNNs (Cnn6/Cnn10, musicnn), the lyrics encoder and the emotion model that joins them.

As transformers separates configuration_* from modeling_*: `configuration` holds the typed configs
and imports no torch; `audio_encoder`, `lyrics_encoder`, `fusion` (late/gated) and `emotion`
(EmotionModel, ModelOutput) are the modelling modules. Heads emit logits: the loss is a
cross-entropy on logits (the seed fed sigmoid outputs into CrossEntropyLoss).

`from labeler.models import ModelConfig, EmotionModel` keeps working: the configuration names are
imported here, the modelling names only when first asked for (PEP 562 `__getattr__`, as
transformers' lazy modules do), so importing a config never imports torch.
"""

from __future__ import annotations

from labeler.models.configuration import (
    AUDIO_ARCHS,
    BRANCHES,
    FUSIONS,
    MIN_CHANNELS,
    MIN_MELS,
    PANNS_ARCHS,
    POOLINGS,
    AudioCnnConfig,
    LyricsEncoderConfig,
    ModelConfig,
)
from labeler.runtime.lazy import lazy_getattr

# modelling name -> the module defining it (imported on first use: these need torch)
_MODELLING = {
    "spec_augment": "audio_encoder", "ConvBlock": "audio_encoder", "PannsCnn": "audio_encoder",
    "AudioEncoder": "audio_encoder", "load_panns_checkpoint": "audio_encoder",
    "LyricsEncoder": "lyrics_encoder",
    "LateFusion": "fusion",
    "EmotionModel": "emotion", "ModelOutput": "emotion", "count_parameters": "emotion",
}

__all__ = ["AUDIO_ARCHS", "BRANCHES", "FUSIONS", "MIN_CHANNELS", "MIN_MELS", "PANNS_ARCHS", "POOLINGS",
           "AudioCnnConfig", "LyricsEncoderConfig", "ModelConfig", *_MODELLING]


__getattr__ = lazy_getattr(__name__, _MODELLING, globals())
