"""Choosing what is kept after fitting: calibration, the stacked lyrics branch, which fusion each fold keeps, and finalising the exported bundle."""
