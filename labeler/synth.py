"""A synthetic catalogue whose emotion can be heard and read, for demos, tests and benchmarks.

Real MER datasets cannot ship with the project, so `labeler synth` writes a small catalogue in which
a song's valence and arousal are planted in its audio and its lyrics by known rules, with known noise.
A model that learns those rules shows the whole pipeline works end to end; how far it gets is bounded
by the noise below, not by music.

What is written under OUTPUT (a local directory, or an s3:// / memory:// prefix via labeler.storage):

    audio/synth-00000.wav ...   one file per song, formats cycling through --formats (WAV PCM-16,
                                FLAC, OGG Vorbis, MP3 through libsndfile), sample rates drawn from
                                22050 and 32000 Hz, mono, --seconds long (default 12 s)
    catalogue.parquet           labeler.schemas.CATALOGUE: song_id, audio_uri (absolute), lyrics,
                                chorus_start_s, chorus_end_s
    manifest.parquet            labeler.schemas.MANIFEST: dataset "synth", the true valence/arousal,
                                quadrant = quadrant_from_va(valence, arousal), fold = -1
    synth.json                  the config, counts and the ids of every noisy or broken row

Folds are left at -1: `train.folds.assign_folds` (or `labeler prepare`) assigns them, and
`manifest_table` is public so callers can build and fold the manifest themselves.

The planted signal
------------------
Each song draws valence v and arousal a in [-1, 1]. With `distribution="mixture"` (default) a
quadrant is drawn uniformly and (v, a) ~ N((±0.5, ±0.5), 0.25²) around its centre, clipped; with
"uniform", v and a are uniform on [-1, 1]. The manifest's quadrant always follows the drawn (v, a)
(midpoint 0; exactly 0 counts as low).

Audio (u = (a + 1) / 2 in [0, 1]; v_audio = v, or -v for flipped songs, see noise):

- arousal -> tempo 60 + 110·u BPM (± 3 BPM jitter); note subdivisions per beat 1 + round(3·u);
  attack 80 ms → 3 ms and note decay 0.5 s → 0.08 s as u grows; percussive noise bursts on each
  onset with probability clip(1.2·u − 0.2, 0, 1); RMS loudness −30 dBFS (u=0) → −12 dBFS (u=1),
  peaks soft-limited (tanh) below −1.5 dBFS.
- valence -> mode and harmony: v_audio > 0 plays major triads (verse I–IV–I–V, chorus I–V–IV–V)
  with an added upper octave of weight v_audio (consonance); v_audio ≤ 0 plays minor triads and a
  diminished ii° (verse i–iv–i–v, chorus iv–ii°–i–v) with an added tritone of weight −v_audio and a
  minor second of weight −v_audio/2 (dissonance). Brightness: harmonic roll-off 1/k^p with
  p = 2.2 (v_audio = −1, dull) → 1.0 (v_audio = 1, bright), then a 2nd-order low-pass on the tonal
  parts at 1.2 kHz (v_audio = −1) → 9.6 kHz (v_audio = 1).
- structure: verse, chorus, verse, chorus, chorus (five equal sections, each section synthesised
  once and repeated sample-exactly), so the chorus is the most repeated section; the chorus adds a
  melody an octave up and is 4 dB louder than the verse. The catalogue gives chorus_start_s and
  chorus_end_s (the first chorus) for about `chorus_fraction` of the songs, null for the others.

Lyrics: a verse of 4 lines, a chorus of 2 lines, a second verse of 4 new lines, the chorus again
(with [Verse]/[Chorus] tags), 6 words a line. Each word comes from the emotional vocabulary of the
song's lyrics quadrant (joy/energy for Q1, anger/tension for Q2, sadness for Q3, tenderness/peace
for Q4) with probability p = clip(0.15 + 0.6·min(|v|, |a|), 0.15, 0.75), else from a neutral filler
list: songs near an axis read as mostly neutral.

Noise (all seeded):

- `lyrics_noise` (default 0.1): this fraction of songs take their lyrics vocabulary from a random
  other quadrant.
- `audio_flip` (default 0.05): this fraction of songs have their audio valence flipped
  (v_audio = −v): mode, harmony and brightness say the opposite valence; arousal is untouched.
- `no_lyrics` (default 0.1): this fraction of catalogue rows have no lyrics (null or ""); their
  manifest rows keep the generated lyrics so training still sees them.
- `corrupt` (default off): four extra catalogue rows (not in the manifest) that must fail cleanly:
  a missing file, an empty file, a truncated FLAC and a null audio_uri.

Determinism: song i draws from `SeedSequence(seed, spawn_key=(i,))`, so the same seed gives the
same songs whatever --songs is; catalogue/manifest Parquet bytes and the decoded PCM of every file
are identical across runs (WAV, FLAC and MP3 files are byte-identical too; OGG files differ only
in the random stream serial number libsndfile writes).
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import soundfile as sf

from labeler import storage
from labeler.labels import QUADRANTS, quadrant_from_va
from labeler.schemas import CATALOGUE, MANIFEST, check_unique_ids, conform

log = logging.getLogger(__name__)

# format name (as in --formats) -> (file extension, libsndfile format, subtype)
FORMATS: dict[str, tuple[str, str, str]] = {
    "wav": ("wav", "WAV", "PCM_16"),
    "flac": ("flac", "FLAC", "PCM_16"),
    "ogg": ("ogg", "OGG", "VORBIS"),
    "mp3": ("mp3", "MP3", "MPEG_LAYER_III"),
}
SAMPLE_RATES: tuple[int, ...] = (22050, 32000)
DISTRIBUTIONS: tuple[str, ...] = ("mixture", "uniform")
SECTIONS: tuple[str, ...] = ("verse", "chorus", "verse", "chorus", "chorus")

# Emotional vocabulary per quadrant (index 0 = Q1) and neutral filler.
VOCABULARY: dict[int, tuple[str, ...]] = {
    1: ("joy", "dance", "shine", "alive", "celebrate", "bright", "thrill", "fire", "jump", "wild",
        "sunshine", "party", "laugh", "glory", "energy", "run", "free", "victory", "excited", "golden",
        "cheer", "spark", "high", "loud", "rush", "happy", "electric", "winning", "bold", "blazing"),
    2: ("rage", "hate", "fight", "scream", "anger", "blood", "war", "burn", "enemy", "storm",
        "destroy", "fury", "violent", "break", "kill", "danger", "panic", "threat", "bitter", "smash",
        "attack", "venom", "riot", "hostile", "tension", "clash", "cruel", "wrath", "shout", "chaos"),
    3: ("tears", "alone", "cry", "lonely", "grief", "lost", "empty", "sorrow", "gone", "cold",
        "broken", "mourn", "regret", "grey", "rain", "dying", "sad", "fade", "pain", "goodbye",
        "hollow", "weary", "despair", "ashes", "funeral", "silence", "misery", "heartache", "tired", "dark"),
    4: ("gentle", "calm", "peace", "tender", "soft", "breeze", "embrace", "warm", "quiet", "serene",
        "smile", "love", "dream", "cozy", "rest", "meadow", "lullaby", "kind", "sweet", "hold",
        "safe", "harmony", "slow", "easy", "tranquil", "cradle", "glow", "content", "home", "grace"),
}
FILLER: tuple[str, ...] = (
    "the", "a", "and", "we", "you", "i", "in", "on", "to", "of", "my", "your", "this", "that", "is",
    "was", "with", "for", "at", "it", "street", "night", "day", "car", "window", "road", "city", "time",
    "door", "morning", "table", "river", "train", "phone", "paper", "corner", "walk", "say", "know", "see",
)

# Chord roots (semitones above the key) and qualities for each mode and section.
_TRIADS = {"maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6)}
PROGRESSIONS: dict[tuple[str, str], tuple[tuple[int, str], ...]] = {
    ("major", "verse"): ((0, "maj"), (5, "maj"), (0, "maj"), (7, "maj")),
    ("major", "chorus"): ((0, "maj"), (7, "maj"), (5, "maj"), (7, "maj")),
    ("minor", "verse"): ((0, "min"), (5, "min"), (0, "min"), (7, "min")),
    ("minor", "chorus"): ((5, "min"), (2, "dim"), (0, "min"), (7, "min")),
}
_TABLE_SIZE = 4096
# Peak ceiling before encoding (-1.5 dBFS): leaves headroom for MP3/Vorbis overshoot, so no file clips.
PEAK_LIMIT = 0.84


@dataclass(frozen=True)
class SynthConfig:
    """What to synthesise; every random choice follows from `seed` (see the module docstring)."""

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


@dataclass
class SynthResult:
    """Where everything went, and which rows carry which noise."""

    output: str
    catalogue_uri: str
    manifest_uri: str
    summary_uri: str
    songs: list[SongSpec] = field(default_factory=list)
    corrupt_ids: list[str] = field(default_factory=list)
    seconds_taken: float = 0.0

    @property
    def audio_uris(self) -> list[str]:
        return [s.audio_uri for s in self.songs]


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


def make_lyrics(rng: np.random.Generator, quadrant: int, valence: float, arousal: float) -> str:
    """Verse, chorus, verse, chorus; emotional words with a probability that grows away from the axes."""
    p_emotional = float(np.clip(0.15 + 0.6 * min(abs(valence), abs(arousal)), 0.15, 0.75))
    vocabulary = VOCABULARY[quadrant]

    def line() -> str:
        words = [
            vocabulary[rng.integers(len(vocabulary))] if rng.random() < p_emotional else FILLER[rng.integers(len(FILLER))]
            for _ in range(6)
        ]
        return " ".join(words).capitalize()

    chorus = [line() for _ in range(2)]
    parts = ["[Verse]", *(line() for _ in range(4)), "[Chorus]", *chorus,
             "[Verse]", *(line() for _ in range(4)), "[Chorus]", *chorus]
    return "\n".join(parts)


def _wavetable(valence: float) -> np.ndarray:
    """One period of a harmonic tone whose roll-off 1/k^p makes low valence dull and high valence bright."""
    p = 2.2 - 1.2 * (valence + 1.0) / 2.0
    phase = np.arange(_TABLE_SIZE) / _TABLE_SIZE
    table = sum(k ** -p * np.sin(2 * np.pi * k * phase) for k in range(1, 9))
    return (table / np.max(np.abs(table))).astype(np.float64)


def _chord(root_midi: int, offset: int, quality: str, valence: float) -> list[tuple[int, float]]:
    """Chord voices (midi, weight): consonant doubling for positive valence, tritone and minor second for negative."""
    root = root_midi + offset
    voices = [(root + i, 1.0) for i in _TRIADS[quality]]
    if valence > 0:
        voices.append((root + 12, valence))
    else:
        voices.append((root + 6, -valence))
        voices.append((root + 1, -valence / 2))
    return voices


def _midi_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12.0)


def _tone(table: np.ndarray, midi: float, n: int, sr: int) -> np.ndarray:
    phase = (_midi_hz(midi) * np.arange(n) / sr) % 1.0
    return table[(phase * _TABLE_SIZE).astype(np.int64)]


def render_section(kind: str, n: int, sr: int, valence: float, arousal: float, root_midi: int,
                   bpm: float, rng: np.random.Generator) -> np.ndarray:
    """One section (verse or chorus): a sustained chord pad, bass and notes on the tempo grid, noise hits."""
    u = (arousal + 1.0) / 2.0
    mode = "major" if valence > 0 else "minor"
    table = _wavetable(valence)
    chords = [_chord(root_midi, off, q, valence) for off, q in PROGRESSIONS[(mode, kind)]]
    out = np.zeros(n)
    hits = np.zeros(n)
    chord_len = n // len(chords)
    for ci, chord in enumerate(chords):
        start = ci * chord_len
        end = n if ci == len(chords) - 1 else start + chord_len
        m = end - start
        pad_env = np.minimum(1.0, np.arange(m) / (0.05 * sr)) * np.minimum(1.0, (m - np.arange(m)) / (0.05 * sr))
        for midi, weight in chord:
            out[start:end] += 0.12 * weight * pad_env * _tone(table, midi, m, sr)

    subdivisions = 1 + int(round(3 * u))
    step = max(1, int(round(60.0 / bpm / subdivisions * sr)))
    attack = max(1, int((0.08 * (1 - u) + 0.003 * u) * sr))
    decay_s = 0.5 * (1 - u) + 0.08 * u
    p_hit = float(np.clip(1.2 * u - 0.2, 0.0, 1.0))
    for k, onset in enumerate(range(0, n, step)):
        m = min(step, n - onset)
        t = np.arange(m) / sr
        env = np.minimum(1.0, np.arange(m) / attack) * np.exp(-t / decay_s)
        chord = chords[min(onset // chord_len, len(chords) - 1)]
        triad = [midi for midi, weight in chord[:3]]
        note = out[onset:onset + m]
        note += 0.35 * env * _tone(table, triad[0] - 12, m, sr)                  # bass
        note += 0.25 * env * _tone(table, triad[k % 3] + 12, m, sr)              # arpeggio
        if kind == "chorus":
            note += 0.3 * env * _tone(table, triad[(k + 1) % 3] + 24, m, sr)     # melody
        if rng.random() < p_hit:
            burst = rng.standard_normal(m) * np.exp(-t / (0.05 - 0.03 * u))
            hits[onset:onset + m] += (0.2 + 0.5 * u) * np.diff(burst, prepend=0.0)  # sharp, high-passed
    import scipy.signal  # noqa: PLC0415 - heavy import, paid only when audio is made (not by --help)

    cutoff = min(1200.0 * 2.0 ** (3.0 * (valence + 1.0) / 2.0), 0.45 * sr)     # dull 1.2 kHz .. bright 9.6 kHz
    out = scipy.signal.sosfilt(scipy.signal.butter(2, cutoff, fs=sr, output="sos"), out)
    return (out + hits) * (10 ** (4 / 20) if kind == "chorus" else 1.0)


def render_song(spec: SongSpec, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """The whole song as float32 in [-1, 1]: sections rendered once, repeated, loudness set by arousal."""
    sr = spec.sample_rate
    n_section = int(round(seconds / len(SECTIONS) * sr))
    u = (spec.arousal + 1.0) / 2.0
    bpm = 60.0 + 110.0 * u + rng.uniform(-3.0, 3.0)
    root_midi = 45 + int(rng.integers(0, 12))
    rendered = {
        kind: render_section(kind, n_section, sr, spec.audio_valence, spec.arousal, root_midi, bpm, rng)
        for kind in ("verse", "chorus")
    }
    song = np.concatenate([rendered[kind] for kind in SECTIONS])
    target_rms = 10 ** ((-30.0 + 18.0 * u) / 20.0)
    song *= target_rms / max(float(np.sqrt(np.mean(song**2))), 1e-9)
    song = PEAK_LIMIT * np.tanh(song / PEAK_LIMIT)  # soft limiter, like mastering: loud stays loud
    return song.astype(np.float32)


def encode(samples: np.ndarray, sr: int, fmt: str) -> bytes:
    """The samples as the bytes of an audio file in `fmt` (one of FORMATS)."""
    _, container, subtype = FORMATS[fmt]
    buffer = io.BytesIO()
    sf.write(buffer, samples, sr, format=container, subtype=subtype)
    return buffer.getvalue()


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


def catalogue_table(songs: list[SongSpec], extra_rows: list[dict] | None = None) -> pa.Table:
    """The catalogue (what a labelling job gets): no truth, lyrics hidden where the catalogue has none."""
    rows = [
        {
            "song_id": s.song_id,
            "audio_uri": s.audio_uri,
            "lyrics": s.catalogue_lyrics,
            "chorus_start_s": s.chorus_start_s if s.has_chorus_offsets else None,
            "chorus_end_s": s.chorus_end_s if s.has_chorus_offsets else None,
        }
        for s in songs
    ] + list(extra_rows or [])
    table = pa.Table.from_pylist(rows, schema=CATALOGUE.schema)
    check_unique_ids(table, where="synthetic catalogue")
    return conform(table, CATALOGUE)


def manifest_table(songs: list[SongSpec]) -> pa.Table:
    """The training manifest with the true valence, arousal and quadrant; fold -1 (assign folds later)."""
    table = pa.table(
        {
            "song_id": [s.song_id for s in songs],
            "dataset": ["synth"] * len(songs),
            "audio_uri": [s.audio_uri for s in songs],
            "lyrics": [s.lyrics for s in songs],
            "valence": [s.valence for s in songs],
            "arousal": [s.arousal for s in songs],
            "quadrant": pa.array([s.quadrant for s in songs], pa.int8()),
            "fold": pa.array([-1] * len(songs), pa.int8()),
            "chorus_start_s": [s.chorus_start_s for s in songs],
            "chorus_end_s": [s.chorus_end_s for s in songs],
            "source_id": [str(s.index) for s in songs],
        }
    )
    return conform(table, MANIFEST)


def _write_corrupt_rows(audio_dir: str, example: bytes) -> list[dict]:
    """Rows that must fail cleanly in a labelling run: missing, empty, truncated file; no audio at all."""
    missing = storage.join(audio_dir, "synth-broken-missing.wav")
    empty = storage.join(audio_dir, "synth-broken-empty.mp3")
    truncated = storage.join(audio_dir, "synth-broken-truncated.flac")
    storage.remove(missing)
    storage.write_bytes(empty, b"")
    storage.write_bytes(truncated, example[:200])
    lyrics = "[Verse]\nA song whose audio is broken on purpose"
    return [
        {"song_id": "synth-broken-missing", "audio_uri": missing, "lyrics": lyrics},
        {"song_id": "synth-broken-empty", "audio_uri": empty, "lyrics": lyrics},
        {"song_id": "synth-broken-truncated", "audio_uri": truncated, "lyrics": lyrics},
        {"song_id": "synth-broken-no-audio", "audio_uri": None, "lyrics": lyrics},
    ]


def synthesise(config: SynthConfig) -> SynthResult:
    """Write the audio files, catalogue.parquet, manifest.parquet and synth.json under config.output."""
    started = time.perf_counter()
    output = storage.absolute_uri(config.output)
    audio_dir = storage.join(output, "audio")
    storage.makedirs(audio_dir)
    songs: list[SongSpec] = []
    every = max(1, config.songs // 10)
    first: tuple[np.ndarray, int] | None = None
    for index in range(config.songs):
        spec, rng = make_song(config, index, audio_dir)
        samples = render_song(spec, config.seconds, rng)
        first = first or (samples, spec.sample_rate)
        storage.write_bytes(spec.audio_uri, encode(samples, spec.sample_rate, spec.format))
        songs.append(spec)
        if (index + 1) % every == 0 or index + 1 == config.songs:
            log.info("synth: %d/%d songs (%.1f s)", index + 1, config.songs, time.perf_counter() - started)

    extra_rows: list[dict] = []
    if config.corrupt:
        extra_rows = _write_corrupt_rows(audio_dir, encode(first[0], first[1], "flac"))

    result = SynthResult(
        output=output,
        catalogue_uri=storage.join(output, "catalogue.parquet"),
        manifest_uri=storage.join(output, "manifest.parquet"),
        summary_uri=storage.join(output, "synth.json"),
        songs=songs,
        corrupt_ids=[row["song_id"] for row in extra_rows],
    )
    storage.write_parquet(catalogue_table(songs, extra_rows), result.catalogue_uri)
    storage.write_parquet(manifest_table(songs), result.manifest_uri)
    storage.write_text(result.summary_uri, json.dumps(summary(config, result), indent=2, sort_keys=True) + "\n")
    result.seconds_taken = time.perf_counter() - started
    return result


def summary(config: SynthConfig, result: SynthResult) -> dict:
    """Counts and the ids of noisy rows, so experiments can set a model's score against the noise."""
    songs = result.songs
    return {
        "config": {**asdict(config), "output": result.output},
        "songs": len(songs),
        "quadrants": {QUADRANTS[q - 1]: sum(s.quadrant == q for s in songs) for q in (1, 2, 3, 4)},
        "formats": {f: sum(s.format == f for s in songs) for f in config.formats},
        "noisy_lyrics_ids": [s.song_id for s in songs if s.lyrics_quadrant != s.quadrant],
        "flipped_audio_ids": [s.song_id for s in songs if s.audio_flipped],
        "no_lyrics_ids": [s.song_id for s in songs if not s.catalogue_lyrics],
        "corrupt_ids": result.corrupt_ids,
    }
