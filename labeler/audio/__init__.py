"""Audio featurisation shared by training and labelling: decode -> chorus -> log-mel (+ descriptors).

One featuriser, one config (`FeaturizerConfig`, stored in the model bundle), so the log-mel a model
is trained on is exactly the log-mel it labels with. One module per stage, each plain functions
testable without Ray: `config` (FeaturizerConfig, AudioError, TrackFeatures), `decode` (open_audio,
decode_window), `chorus` (find_chorus), `features` (log-mel, descriptors) and `featurizer`
(featurise_track for one track; `Featurizer`, the Ray Data `map_batches` callable that never lets one
bad file fail a batch). The names below are re-exported so callers write `from labeler.audio import ...`;
the configuration names at once, the signal-processing ones on first use (PEP 562, as labeler.models).
"""

from __future__ import annotations

from labeler.audio.config import (
    DEFAULT_STFT_BACKEND,
    DESCRIPTOR_DIM,
    ERROR_KINDS,
    FRONTENDS,
    MAX_AUDIO_SECONDS,
    MUSICNN_GEOMETRY,
    MUSICNN_PATCH_FRAMES,
    SAMPLE_RATES,
    STFT_BACKENDS,
    AudioError,
    FeaturizerConfig,
    TrackFeatures,
    check_header,
    check_max_seconds,
    descriptor_names,
)
from labeler.runtime.lazy import lazy_getattr

# signal-processing name -> the module defining it (imported on first use: these need librosa and
# numba, which a driver that only reads a config - train.fit.presets, the CLI - should not load)
_PROCESSING = {
    "ANALYSIS_SR": "chorus", "find_chorus": "chorus",
    "decode_window": "decode", "open_audio": "decode",
    "descriptors_from": "features", "fit_clip": "features", "log_mel": "features", "power_spectrogram": "features",
    "SILENCE_RMS": "featurizer", "Featurizer": "featurizer", "clip_features": "featurizer",
    "featurise_track": "featurizer", "warm_up_jit": "featurizer",
}

__all__ = ["DEFAULT_STFT_BACKEND", "DESCRIPTOR_DIM", "ERROR_KINDS", "FRONTENDS", "MAX_AUDIO_SECONDS", "MUSICNN_GEOMETRY",
           "MUSICNN_PATCH_FRAMES", "SAMPLE_RATES", "STFT_BACKENDS", "AudioError", "FeaturizerConfig", "TrackFeatures",
           "check_header", "check_max_seconds", "descriptor_names", *_PROCESSING]


__getattr__ = lazy_getattr(__name__, _PROCESSING, globals())
