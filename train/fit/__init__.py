"""Fitting: presets and configs, then run -> branch -> trial (Ray Tune) -> loop (Ray Train worker) -> step, and the recipe that chains prepare and train."""
