"""What to synthesise: `SynthConfig`, checked when it is made, and the choices it draws from.

Every random choice of a synthetic catalogue follows from `SynthConfig.seed` (synth.songs); the
fractions here set the known noise that bounds how well a model can do on it.
"""

from __future__ import annotations

from dataclasses import dataclass

SECTIONS: tuple[str, ...] = ("verse", "chorus", "verse", "chorus", "chorus")  # a song's sections, in order

# format name (as in --formats) -> (file extension, libsndfile format, subtype)
FORMATS: dict[str, tuple[str, str, str]] = {
    "wav": ("wav", "WAV", "PCM_16"),
    "flac": ("flac", "FLAC", "PCM_16"),
    "ogg": ("ogg", "OGG", "VORBIS"),
    "mp3": ("mp3", "MP3", "MPEG_LAYER_III"),
}
SAMPLE_RATES: tuple[int, ...] = (22050, 32000)
DISTRIBUTIONS: tuple[str, ...] = ("mixture", "uniform")


@dataclass(frozen=True)
class SynthConfig:
    """What to synthesise; every random choice follows from `seed` (see synth.songs)."""

    songs: int = 300
    output: str = "synth_catalogue"
    seed: int = 0
    seconds: float = 12.0
    formats: tuple[str, ...] = ("wav", "flac", "ogg", "mp3")
    sample_rates: tuple[int, ...] = SAMPLE_RATES
    distribution: str = "mixture"
    lyrics_noise: float = 0.1
    audio_flip: float = 0.05
    no_lyrics: float = 0.1
    chorus_fraction: float = 0.5
    corrupt: bool = False

    def __post_init__(self) -> None:
        if self.songs < 1:
            raise ValueError(f"songs must be at least 1, got {self.songs}")
        if not 5.0 <= self.seconds <= 600.0:
            raise ValueError(f"seconds must be within 5..600, got {self.seconds}")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise ValueError(f"unknown audio format(s) {unknown or self.formats!r}: expected some of {', '.join(FORMATS)}")
        bad_rates = [r for r in self.sample_rates if r not in (8000, 16000, 22050, 24000, 32000, 44100, 48000)]
        if bad_rates or not self.sample_rates:
            raise ValueError(f"unsupported sample rate(s) {bad_rates or self.sample_rates!r}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {self.distribution!r}: expected one of {', '.join(DISTRIBUTIONS)}")
        for name in ("lyrics_noise", "audio_flip", "no_lyrics", "chorus_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1], got {value}")
