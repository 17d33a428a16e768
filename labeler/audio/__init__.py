"""Audio featurisation shared by training and labelling: decode -> chorus -> log-mel (+ descriptors).

One featuriser, one config (`FeaturizerConfig`, stored in the model bundle), so the log-mel a model
is trained on is exactly the log-mel it labels with. One module per stage, each plain functions
testable without Ray: `config` (FeaturizerConfig, AudioError, TrackFeatures), `decode` (open_audio,
decode_window), `chorus` (find_chorus), `features` (log-mel, descriptors) and `featurizer`
(featurise_track for one track; `Featurizer`, the Ray Data `map_batches` callable that never lets one
bad file fail a batch). The names below are re-exported so callers write `from labeler.audio import ...`.
"""

from labeler.audio.chorus import ANALYSIS_SR, find_chorus
from labeler.audio.config import (
    DEFAULT_STFT_BACKEND,
    DESCRIPTOR_DIM,
    ERROR_KINDS,
    FRONTENDS,
    MUSICNN_GEOMETRY,
    MUSICNN_PATCH_FRAMES,
    STFT_BACKENDS,
    AudioError,
    FeaturizerConfig,
    TrackFeatures,
)
from labeler.audio.decode import decode_window, open_audio
from labeler.audio.config import descriptor_names
from labeler.audio.features import descriptors_from, fit_clip, log_mel, power_spectrogram
from labeler.audio.featurizer import SILENCE_RMS, Featurizer, clip_features, featurise_track, warm_up_jit

__all__ = [
    "ANALYSIS_SR", "DEFAULT_STFT_BACKEND", "DESCRIPTOR_DIM", "ERROR_KINDS", "FRONTENDS", "MUSICNN_GEOMETRY",
    "MUSICNN_PATCH_FRAMES", "SILENCE_RMS", "STFT_BACKENDS", "AudioError", "Featurizer", "FeaturizerConfig",
    "TrackFeatures", "clip_features", "decode_window", "descriptor_names", "descriptors_from", "featurise_track",
    "find_chorus", "fit_clip", "log_mel", "open_audio", "power_spectrogram", "warm_up_jit",
]
