"""mood-labeler: label a music catalogue with Russell emotion quadrants from chorus audio and lyrics."""

__version__ = "0.1.0"
