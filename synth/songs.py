"""Each song's truth (valence, arousal, quadrant), the noise applied to it and its catalogue fields.

Each song draws valence v and arousal a in [-1, 1]. With `distribution="mixture"` (default) a
quadrant is drawn uniformly and (v, a) ~ N((±0.5, ±0.5), 0.25²) around its centre, clipped; with
"uniform", v and a are uniform on [-1, 1]. The song's quadrant always follows the drawn (v, a)
(midpoint 0; exactly 0 counts as low).

Noise (all seeded):

- `lyrics_noise` (default 0.1): this fraction of songs take their lyrics vocabulary from a random
  other quadrant.
- `audio_flip` (default 0.05): this fraction of songs have their audio valence flipped
  (v_audio = −v): mode, harmony and brightness say the opposite valence; arousal is untouched.
- `no_lyrics` (default 0.1): this fraction of catalogue rows have no lyrics (null or ""); songs.parquet,
  and so the training manifest, keeps the generated lyrics so training still sees them.
- `corrupt` (default off): four extra catalogue rows (not in songs.parquet) that must fail cleanly:
  a missing file, an empty file, a truncated FLAC and a null audio_uri.

Determinism: song i draws from `SeedSequence(seed, spawn_key=(i,))`, so the same seed gives the
same songs whatever --songs is; the Parquet files' bytes and the decoded PCM of every file
are identical across runs (WAV, FLAC and MP3 files are byte-identical too; OGG files differ only
in the random stream serial number libsndfile writes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labeler.contracts.labels import quadrant_from_va
from labeler.io import storage
from synth.config import FORMATS, SECTIONS, SynthConfig
from synth.lyrics import make_lyrics


@dataclass(frozen=True)
class SongSpec:
    """One synthetic song: its truth, the noise applied to it, and the catalogue fields."""

    song_id: str
    index: int
    valence: float
    arousal: float
    quadrant: int
    audio_valence: float          # valence the audio expresses (-valence when flipped)
    audio_flipped: bool
    lyrics_quadrant: int          # vocabulary the lyrics use (another quadrant when noisy)
    lyrics: str                   # the generated lyrics (always; the catalogue may hide them)
    catalogue_lyrics: str | None  # what the catalogue row holds (None or "" for ~no_lyrics)
    has_chorus_offsets: bool
    chorus_start_s: float
    chorus_end_s: float
    format: str
    sample_rate: int
    audio_uri: str


def song_rng(seed: int, index: int) -> np.random.Generator:
    """Song `index`'s own stream: independent of how many songs are generated."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def draw_va(rng: np.random.Generator, distribution: str) -> tuple[float, float]:
    if distribution == "uniform":
        v, a = rng.uniform(-1.0, 1.0, size=2)
    else:
        quadrant = int(rng.integers(1, 5))
        centre_v = 0.5 if quadrant in (1, 4) else -0.5
        centre_a = 0.5 if quadrant in (1, 2) else -0.5
        v, a = rng.normal((centre_v, centre_a), 0.25)
    return float(np.clip(v, -1.0, 1.0)), float(np.clip(a, -1.0, 1.0))


def make_song(config: SynthConfig, index: int, audio_dir: str) -> tuple[SongSpec, np.random.Generator]:
    """Draw song `index`'s truth, noise and catalogue fields (its audio comes from the returned stream)."""
    rng = song_rng(config.seed, index)
    valence, arousal = draw_va(rng, config.distribution)
    quadrant = quadrant_from_va(valence, arousal)
    flipped = rng.random() < config.audio_flip
    lyrics_quadrant = quadrant
    if rng.random() < config.lyrics_noise:
        lyrics_quadrant = int(rng.choice([q for q in (1, 2, 3, 4) if q != quadrant]))
    lyrics = make_lyrics(rng, lyrics_quadrant, valence, arousal)
    catalogue_lyrics: str | None = lyrics
    if rng.random() < config.no_lyrics:
        catalogue_lyrics = None if rng.random() < 0.5 else ""
    section_s = config.seconds / len(SECTIONS)
    fmt = config.formats[index % len(config.formats)]
    song_id = f"synth-{index:05d}"
    spec = SongSpec(
        song_id=song_id,
        index=index,
        valence=valence,
        arousal=arousal,
        quadrant=quadrant,
        audio_valence=-valence if flipped else valence,
        audio_flipped=bool(flipped),
        lyrics_quadrant=lyrics_quadrant,
        lyrics=lyrics,
        catalogue_lyrics=catalogue_lyrics,
        has_chorus_offsets=bool(rng.random() < config.chorus_fraction),
        chorus_start_s=section_s,
        chorus_end_s=2 * section_s,
        format=fmt,
        sample_rate=int(config.sample_rates[int(rng.integers(len(config.sample_rates)))]),
        audio_uri=storage.join(audio_dir, f"{song_id}.{FORMATS[fmt][0]}"),
    )
    return spec, rng
