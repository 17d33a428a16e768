"""Audio in which arousal and valence can be heard, rendered by known rules.

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
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from synth.config import FORMATS, SECTIONS

if TYPE_CHECKING:
    from synth.songs import SongSpec


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
