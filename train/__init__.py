"""Training: labelled corpora to a calibrated, scored model bundle.

The folders follow the data: data/ (dataset adapters -> manifest with folds) -> cache/ (features
once per song) -> fit/ (run -> branch -> trial -> loop -> step) -> select/ (calibration, stacking,
fusion, the exported bundle) -> score/ (metrics, baselines, evaluate, report).
"""

import labeler  # noqa: F401 - sets up the per-process numba cache before train.score.baselines imports librosa
