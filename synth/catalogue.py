"""Write a synthetic catalogue: the audio files, the catalogue a labelling job reads, and the truth.

What is written under OUTPUT (a local directory, or an s3:// / memory:// prefix via labeler.io.storage):

    audio/synth-00000.wav ...   one file per song, formats cycling through `formats` (WAV PCM-16,
                                FLAC, OGG Vorbis, MP3 through libsndfile), sample rates drawn from
                                22050 and 32000 Hz, mono, `seconds` long (default 12 s)
    catalogue.parquet           labeler.contracts.schemas.CATALOGUE: song_id, audio_uri (absolute), lyrics,
                                chorus_start_s, chorus_end_s (what a labelling job gets: no truth)
    songs.parquet               every song's truth and noise (the fields of synth.songs.SongSpec),
                                this corpus's own annotation file
    synth.json                  the config, counts and the ids of every noisy or broken row

The training manifest is not written here: like every other corpus, the synthetic one becomes
manifest rows through its dataset adapter, `train.data.datasets.synth.prepare_synth(OUTPUT)` (or
`labeler prepare --dataset synth=OUTPUT`); `labeler synth` writes it as OUTPUT/manifest.parquet.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from labeler.contracts.labels import QUADRANTS
from labeler.contracts.schemas import CATALOGUE, check_unique_ids, conform
from labeler.io import storage
from synth.audio import encode, render_song
from synth.config import SynthConfig
from synth.songs import SongSpec, make_song

log = logging.getLogger(__name__)

SONGS_FILE = "songs.parquet"


@dataclass
class SynthResult:
    """Where everything went, and which rows carry which noise."""

    output: str
    catalogue_uri: str
    songs_uri: str
    summary_uri: str
    songs: list[SongSpec] = field(default_factory=list)
    corrupt_ids: list[str] = field(default_factory=list)
    seconds_taken: float = 0.0

    @property
    def audio_uris(self) -> list[str]:
        return [s.audio_uri for s in self.songs]


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


def songs_table(songs: list[SongSpec]) -> pa.Table:
    """Every song's truth and noise, one row per SongSpec: what the dataset adapter reads."""
    return pa.Table.from_pylist([asdict(s) for s in songs])


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
    """Write the audio files, catalogue.parquet, songs.parquet and synth.json under config.output."""
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
        songs_uri=storage.join(output, SONGS_FILE),
        summary_uri=storage.join(output, "synth.json"),
        songs=songs,
        corrupt_ids=[row["song_id"] for row in extra_rows],
    )
    storage.write_parquet(catalogue_table(songs, extra_rows), result.catalogue_uri)
    storage.write_parquet(songs_table(songs), result.songs_uri)
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
