"""A synthetic catalogue whose emotion can be heard and read, for the demo, tests and benchmarks.

Real MER datasets cannot ship with the project, so `labeler synth` writes a small catalogue in which
a song's valence and arousal are planted in its audio and its lyrics by known rules, with known noise.
A model that learns those rules shows the whole pipeline works end to end; how far it gets is bounded
by the noise, not by music.

This is development tooling, so it is its own package beside the runtime library (`labeler/` never
imports it), and the way it reaches training is the way every corpus does: a dataset adapter,
`train.data.datasets.synth.prepare_synth`. The stages, in the order a song is made:

    synth.config      SynthConfig: how many songs, formats, distribution and noise fractions
    synth.songs       each song's truth (valence, arousal, quadrant), its noise, its catalogue fields
    synth.lyrics      lyrics from the quadrant's vocabulary
    synth.audio       audio rendered from valence and arousal, encoded in one of the formats
    synth.catalogue   `synthesise`: audio files, catalogue.parquet, songs.parquet, synth.json
"""

from synth.catalogue import SynthResult, synthesise
from synth.config import SynthConfig

__all__ = ["SynthConfig", "SynthResult", "synthesise"]
