"""The synthetic catalogue: contracts, determinism, the planted signal, noise and broken rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from labeler.contracts.labels import quadrant_from_va
from labeler.contracts.schemas import CATALOGUE, MANIFEST, check_unique_ids, validate
from labeler.io import storage
from synth import SynthConfig, synthesise
from synth.audio import render_song
from synth.songs import make_song, song_rng
from train.data.datasets.synth import prepare_synth

SECONDS = 6.0


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[SynthConfig, object]:
    config = SynthConfig(songs=16, output=str(tmp_path_factory.mktemp("synth") / "out"), seed=7,
                         seconds=SECONDS, corrupt=True)
    return config, synthesise(config)


def _decode(uri: str) -> tuple[np.ndarray, int]:
    with storage.open_file(uri) as f:
        return sf.read(f, dtype="float32")


def test_writes_catalogue_and_manifest_that_follow_the_contracts(small):
    config, result = small
    catalogue = storage.read_parquet(result.catalogue_uri)
    manifest = prepare_synth(result.output)
    validate(catalogue.schema, CATALOGUE)
    validate(manifest.schema, MANIFEST)
    check_unique_ids(catalogue)
    check_unique_ids(manifest)
    assert catalogue.num_rows == config.songs + 4
    assert manifest.num_rows == config.songs
    rows = manifest.to_pylist()
    assert {r["dataset"] for r in rows} == {"synth"}
    assert {r["fold"] for r in rows} == {-1}
    for r in rows:
        assert -1.0 <= r["valence"] <= 1.0 and -1.0 <= r["arousal"] <= 1.0
        assert r["quadrant"] == quadrant_from_va(r["valence"], r["arousal"])
        assert r["lyrics"]  # the manifest always keeps the generated lyrics
        assert Path(r["audio_uri"]).is_absolute()


def test_audio_files_decode_in_every_format_and_rate(small):
    config, result = small
    seen = set()
    for song in result.songs:
        samples, sr = _decode(song.audio_uri)
        assert sr == song.sample_rate
        assert samples.ndim == 1 and abs(len(samples) / sr - config.seconds) < 0.05
        assert 0.0 < np.max(np.abs(samples)) < 1.0  # no clipping, lossy codecs included
        seen.add((Path(song.audio_uri).suffix, sr))
    assert {suffix for suffix, _ in seen} == {".wav", ".flac", ".ogg", ".mp3"}
    assert {sr for _, sr in seen} == {22050, 32000}


def test_broken_rows_are_only_in_the_catalogue(small):
    _, result = small
    catalogue = {r["song_id"]: r for r in storage.read_parquet(result.catalogue_uri).to_pylist()}
    manifest_ids = set(prepare_synth(result.output).column("song_id").to_pylist())
    assert set(result.corrupt_ids) == {"synth-broken-missing", "synth-broken-empty", "synth-broken-truncated",
                                       "synth-broken-no-audio"}
    assert not manifest_ids & set(result.corrupt_ids)
    assert not storage.exists(catalogue["synth-broken-missing"]["audio_uri"])
    assert storage.size(catalogue["synth-broken-empty"]["audio_uri"]) == 0
    assert catalogue["synth-broken-no-audio"]["audio_uri"] is None
    with pytest.raises(sf.LibsndfileError):
        _decode(catalogue["synth-broken-truncated"]["audio_uri"])


def test_same_seed_same_content_whatever_the_directory(small, tmp_path):
    config, first = small
    again = synthesise(SynthConfig(songs=4, output=str(tmp_path / "again"), seed=config.seed, seconds=SECONDS))
    a = storage.read_parquet(first.catalogue_uri).slice(0, 4).drop_columns(["audio_uri"])
    b = storage.read_parquet(again.catalogue_uri).drop_columns(["audio_uri"])
    assert a.equals(b)  # and song i does not depend on --songs
    for s1, s2 in zip(first.songs, again.songs):
        assert Path(s1.audio_uri).name == Path(s2.audio_uri).name
        x1, sr1 = _decode(s1.audio_uri)
        x2, sr2 = _decode(s2.audio_uri)
        assert sr1 == sr2 and np.array_equal(x1, x2)
        if not s1.audio_uri.endswith(".ogg"):  # Ogg holds a random stream serial; the PCM above is identical
            assert Path(s1.audio_uri).read_bytes() == Path(s2.audio_uri).read_bytes()


def test_rerun_into_the_same_directory_is_byte_identical(tmp_path):
    config = SynthConfig(songs=3, output=str(tmp_path / "out"), seed=3, seconds=SECONDS, formats=("wav", "mp3"))

    def digests() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(config.output).rglob("*") if p.is_file()}

    synthesise(config)
    before = digests()
    synthesise(config)
    assert digests() == before
    assert {"catalogue.parquet", "songs.parquet", "synth.json"} <= set(before)


def test_different_seeds_differ(tmp_path):
    a = make_song(SynthConfig(seed=1, output=str(tmp_path)), 0, str(tmp_path))[0]
    b = make_song(SynthConfig(seed=2, output=str(tmp_path)), 0, str(tmp_path))[0]
    assert (a.valence, a.arousal, a.lyrics) != (b.valence, b.arousal, b.lyrics)


def _song(config: SynthConfig, tmp_path: Path, **change):
    spec, _ = make_song(config, 0, str(tmp_path))
    spec = type(spec)(**{**spec.__dict__, **change})
    return render_song(spec, config.seconds, song_rng(config.seed, 99))


def test_arousal_is_audible_as_loudness_and_onset_rate(tmp_path):
    import librosa

    config = SynthConfig(seed=5, seconds=SECONDS, output=str(tmp_path))
    calm = _song(config, tmp_path, arousal=-0.9, sample_rate=22050)
    energetic = _song(config, tmp_path, arousal=0.9, sample_rate=22050)
    rms_db = [20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2))) for x in (calm, energetic)]
    assert rms_db[1] - rms_db[0] > 12  # RMS -30 + 18u dBFS: u 0.05 -> 0.95 is 16 dB (the soft limiter takes a little)
    onsets = [len(librosa.onset.onset_detect(y=x, sr=22050)) for x in (calm, energetic)]
    assert onsets[1] > 2 * onsets[0]  # 1 -> 4 notes a beat at 62 -> 167 BPM (chord changes add the same to both)


# Krumhansl-Kessler key profiles: a key-invariant "does this sound major or minor" test.
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def _major_minus_minor(chroma: np.ndarray) -> float:
    def best(profile):
        return max(np.corrcoef(chroma, np.roll(profile, r))[0, 1] for r in range(12))

    return best(_MAJOR) - best(_MINOR)


def test_valence_is_audible_as_mode_and_brightness(tmp_path):
    import librosa

    config = SynthConfig(seed=5, seconds=SECONDS, output=str(tmp_path))
    for index in range(3):
        spec, _ = make_song(config, index, str(tmp_path))
        scores, centroids = {}, {}
        for valence in (-0.8, 0.8):
            changed = type(spec)(**{**spec.__dict__, "audio_valence": valence, "arousal": -0.2, "sample_rate": 22050})
            x = render_song(changed, config.seconds, song_rng(config.seed, 100 + index))
            scores[valence] = _major_minus_minor(librosa.feature.chroma_stft(y=x, sr=22050).mean(axis=1))
            centroids[valence] = librosa.feature.spectral_centroid(y=x, sr=22050).mean()
        assert scores[0.8] > 0 > scores[-0.8], scores
        assert centroids[0.8] > centroids[-0.8]


def test_chorus_repeats_sample_exactly_at_the_stated_offsets(tmp_path):
    config = SynthConfig(seed=4, seconds=SECONDS, output=str(tmp_path))
    spec, rng = make_song(config, 0, str(tmp_path))
    x = render_song(spec, config.seconds, rng)
    sr = spec.sample_rate
    start, end = int(round(spec.chorus_start_s * sr)), int(round(spec.chorus_end_s * sr))
    n = end - start
    assert np.array_equal(x[start:end], x[3 * n:4 * n]) and np.array_equal(x[start:end], x[4 * n:5 * n])
    assert not np.array_equal(x[:n], x[start:end])  # the verse is different


def test_noise_rates_follow_the_config(tmp_path):
    config = SynthConfig(songs=1000, seed=11, output=str(tmp_path))
    songs = [make_song(config, i, str(tmp_path))[0] for i in range(config.songs)]
    noisy = np.mean([s.lyrics_quadrant != s.quadrant for s in songs])
    flipped = np.mean([s.audio_flipped for s in songs])
    missing = np.mean([not s.catalogue_lyrics for s in songs])
    offsets = np.mean([s.has_chorus_offsets for s in songs])
    assert 0.07 < noisy < 0.13 and 0.03 < flipped < 0.07 and 0.07 < missing < 0.13 and 0.45 < offsets < 0.55
    assert {s.quadrant for s in songs} == {1, 2, 3, 4}
    clean = SynthConfig(songs=200, seed=11, output=str(tmp_path), lyrics_noise=0.0, audio_flip=0.0)
    assert all(
        s.lyrics_quadrant == s.quadrant and not s.audio_flipped
        for s in (make_song(clean, i, str(tmp_path))[0] for i in range(clean.songs))
    )


def test_lyrics_use_the_quadrant_vocabulary(tmp_path):
    from synth.lyrics import VOCABULARY

    config = SynthConfig(songs=200, seed=12, output=str(tmp_path), lyrics_noise=0.0)
    for s in (make_song(config, i, str(tmp_path))[0] for i in range(config.songs)):
        words = set(s.lyrics.lower().replace("[verse]", "").replace("[chorus]", "").split())
        counts = {q: len(words & set(v)) for q, v in VOCABULARY.items()}
        assert counts[s.quadrant] == max(counts.values()) and all(
            counts[q] == 0 for q in counts if q != s.quadrant
        )


def test_summary_lists_the_noisy_rows(small):
    _, result = small
    summary = json.loads(storage.read_text(result.summary_uri))
    assert summary["songs"] == len(result.songs)
    assert summary["flipped_audio_ids"] == [s.song_id for s in result.songs if s.audio_flipped]
    assert summary["corrupt_ids"] == result.corrupt_ids
    assert sum(summary["quadrants"].values()) == len(result.songs)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"songs": 0}, "songs"),
        ({"formats": ("wav", "aiff")}, "aiff"),
        ({"distribution": "gaussian"}, "gaussian"),
        ({"lyrics_noise": 1.5}, "lyrics_noise"),
        ({"sample_rates": (12345,)}, "12345"),
        ({"seconds": 1.0}, "seconds"),
    ],
)
def test_bad_config_is_a_value_error_naming_the_value(change, message):
    with pytest.raises(ValueError, match=message):
        SynthConfig(**change)


def test_writes_to_s3(s3_bucket):
    result = synthesise(SynthConfig(songs=2, output=f"{s3_bucket}/synth", seed=1, seconds=SECONDS, formats=("flac",)))
    catalogue = storage.read_parquet(result.catalogue_uri)
    uris = catalogue.column("audio_uri").to_pylist()
    assert all(u.startswith(f"{s3_bucket}/synth/audio/") for u in uris)
    samples, sr = _decode(uris[0])
    assert sr in (22050, 32000) and len(samples) == int(round(SECONDS / 5 * sr)) * 5
    validate(prepare_synth(result.output).schema, MANIFEST)


def test_the_dataset_adapter_keeps_song_ids_and_labelling_truth(small):
    """train.data.datasets.synth reads songs.parquet: catalogue ids, the drawn truth, the sung lyrics."""
    _, result = small
    rows = {r["song_id"]: r for r in prepare_synth(result.output).to_pylist()}
    assert list(rows) == [s.song_id for s in result.songs]
    for s in result.songs:
        row = rows[s.song_id]
        assert (row["valence"], row["arousal"], row["quadrant"]) == (s.valence, s.arousal, s.quadrant)
        assert row["lyrics"] == s.lyrics and row["audio_uri"] == s.audio_uri and row["source_id"] == str(s.index)


def test_prepare_takes_the_synthetic_corpus_like_any_other(small):
    from train.data.manifest import prepare

    _, result = small
    table, report = prepare([("synth", result.output, {})], k=4, cv="ALL", seed=1)
    assert table.num_rows == len(result.songs)
    assert set(table.column("fold").to_pylist()) == {0, 1, 2, 3}


def test_the_adapter_names_a_folder_that_is_not_a_synthetic_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match="labeler synth"):
        prepare_synth(str(tmp_path))
