"""Training: corpora to a manifest, the feature cache, Ray Train trials, finalising, metrics and reports.

The data flow, module by module: datasets/ -> manifest, folds -> feature_cache -> run (the driver)
-> branch -> trial -> loop (one Ray Train worker) -> finalise (stacking, calibration, fusion) ->
metrics, report; evaluate scores a finished bundle, recipe chains prepare and train.
"""

import labeler  # noqa: F401 - sets up the per-process numba cache before train.baselines imports librosa
