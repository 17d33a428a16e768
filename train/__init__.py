"""Training: dataset adapters, manifest and folds, feature cache, Ray Train loops, evaluation."""

import labeler  # noqa: F401 - sets up the per-process numba cache before train.baselines imports librosa
