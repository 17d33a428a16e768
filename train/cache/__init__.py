"""The feature cache: a manifest's audio and lyrics featurised once, read by every trial."""
