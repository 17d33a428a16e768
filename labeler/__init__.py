"""mood-labeler: label a music catalogue with Russell emotion quadrants from chorus audio and lyrics."""

from labeler.runtime import jit_cache as _jit_cache

# Before anything imports librosa, in every process: a numba cache no other process writes (labeler/runtime/jit_cache.py).
_jit_cache.configure()

__version__ = "0.1.0"
