"""Hostile audio headers, and serve's timeline reading an upload from its spooled file.

A header's sample rate and length size decoding, the chorus search and the timeline's windows. The
attack files claim what their bytes cannot back: a FLAC whose STREAMINFO says 1 Hz and 2^36-1 samples,
a WAV at 1 Hz (8000 samples: over two hours), and a 44.1-kHz FLAC claiming 2^36-1 samples. Each must be
a row error of its kind - `unsupported_format` for a sample rate outside SAMPLE_RATES, `too_long`
past the cap - refused from the header before any work, in the batch job as in `labeler serve`, while
every other row is labelled. A hang guard (SIGALRM) turns a regression into a failure, not a stuck run.
"""

from __future__ import annotations

import io
import json
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
import soundfile as sf

from labeler.audio import AudioError, FeaturizerConfig, featurise_track, open_audio
from labeler.inference.label_rows import error_kind
from labeler.inference.timeline import iter_window_features, plan_windows
from tests import helpers
from tests.helpers import free_port, make_bundle

ALL_SAMPLES = 2**36 - 1  # the largest total a FLAC STREAMINFO can hold
CFG = FeaturizerConfig(sample_rate=16000, clip_seconds=4.0, window_size=512, n_mels=32, fmax=8000.0,
                       chorus_search_seconds=30.0)  # make_bundle's featuriser


def hang_guard(seconds: int = 60):
    return helpers.hang_guard(seconds, "work sized by a header")


def flac_claiming(sample_rate: int, total_samples: int) -> bytes:
    """A real FLAC (two seconds of a tone at 44.1 kHz, 25 kB) whose STREAMINFO claims another rate and length.

    STREAMINFO is the first metadata block ('fLaC', a 4-byte block header, then 34 bytes); its bytes
    10..17 pack sample rate (20 bits), channels-1 (3), bits per sample-1 (5) and total samples (36).
    The audio frames carry their own rate and CRCs, which are left intact: only the header lies.
    """
    buf = io.BytesIO()
    t = np.arange(2 * 44100) / 44100
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 1.5 * t))
    sf.write(buf, tone.astype(np.float32), 44100, format="FLAC", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first
    packed = int.from_bytes(data[18:26], "big")
    packed = (sample_rate << 44) | (packed & (0xFF << 36)) | total_samples  # keep channels and bit depth
    data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


def wav_at(path: Path, sample_rate: int, seconds: float, seed: int = 0) -> str:
    """A WAV of drifting tones plus noise (enough structure for the chorus search)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / max(sample_rate, 1)
    audio = sum(np.sin(2 * np.pi * f * t * (1 + 0.01 * np.sin(t))) for f in rng.uniform(110, 880, 3)) / 3
    sf.write(path, (0.3 * audio + 0.02 * rng.standard_normal(len(t))).astype(np.float32), sample_rate, subtype="PCM_16")
    return str(path)


@pytest.fixture(scope="module")
def audio_bundle(tmp_path_factory) -> str:
    """An audio-only bundle with random weights and CFG as its featuriser (the pure tests need no lyrics)."""
    return helpers.make_audio_bundle(tmp_path_factory.mktemp("caps-bundle"), CFG)


@pytest.fixture(scope="module")
def attacks(tmp_path_factory) -> dict[str, tuple[str, str]]:
    """name -> (path, the row error kind it must get)."""
    root = tmp_path_factory.mktemp("headers")
    (root / "flac-1hz.flac").write_bytes(flac_claiming(1, ALL_SAMPLES))
    (root / "flac-forever.flac").write_bytes(flac_claiming(44100, ALL_SAMPLES))
    return {
        "flac-1hz": (str(root / "flac-1hz.flac"), "unsupported_format"),
        "wav-1hz": (wav_at(root / "wav-1hz.wav", 1, 8000), "unsupported_format"),
        "flac-forever": (str(root / "flac-forever.flac"), "too_long"),
    }


# ------------------------------------------------------------------------------------ without Ray


def test_the_attack_files_claim_what_the_finding_says(attacks):
    with sf.SoundFile(attacks["flac-1hz"][0]) as f:
        assert (f.samplerate, f.frames) == (1, ALL_SAMPLES)
    with sf.SoundFile(attacks["wav-1hz"][0]) as f:
        assert (f.samplerate, f.frames) == (1, 8000)
    with sf.SoundFile(attacks["flac-forever"][0]) as f:
        assert f.frames / f.samplerate > 1e6


@pytest.mark.parametrize("name", ["flac-1hz", "wav-1hz", "flac-forever"])
def test_decoding_featurising_and_timeline_planning_refuse_the_header(attacks, name):
    path, kind = attacks[name]
    data = Path(path).read_bytes()
    with hang_guard():
        for attempt in (lambda: open_audio(path).__enter__(),
                        lambda: featurise_track(path, None, None, CFG),
                        lambda: list(iter_window_features(path, CFG, 2.0)),
                        lambda: list(iter_window_features(io.BytesIO(data), CFG, 2.0))):
            with pytest.raises(AudioError) as refused:
                attempt()
            assert refused.value.kind == kind and error_kind(str(refused.value)) == kind


def test_planning_refuses_a_length_past_the_cap_before_planning():
    with hang_guard(5):
        for duration in (ALL_SAMPLES / 1.0, float("inf"), float("nan"), 3600.5):
            with pytest.raises(AudioError, match="too_long"):
                plan_windows(duration, 5.0, 30.0, 1.0)
        assert len(plan_windows(3600.0, 5.0, 30.0, 1.0)) == 720  # the default cap itself is allowed
        with pytest.raises(AudioError, match="too_long"):
            plan_windows(20.0, 5.0, 4.0, 1.0, max_seconds=10.0)


def test_the_cap_is_a_setting_and_a_header_without_a_length_is_refused(tmp_path):
    from labeler.audio import Featurizer
    from labeler.label_job import LabelJobConfig

    song = wav_at(tmp_path / "song.wav", 16000, 6.0)
    with pytest.raises(AudioError, match="too_long"):
        featurise_track(song, None, None, CFG, max_seconds=5.0)
    assert featurise_track(song, None, None, CFG, max_seconds=None).log_mel.shape == (CFG.n_frames, CFG.n_mels)
    out = Featurizer(CFG, max_audio_seconds=5.0)({"audio_uri": np.array([song], dtype=object)})
    assert error_kind(out["audio_error"][0]) == "too_long"
    for bad in (0, -1.0, float("inf"), None):
        with pytest.raises(ValueError, match="max_audio_seconds"):
            LabelJobConfig(max_audio_seconds=bad)
    # A FLAC whose STREAMINFO gives no length (0 samples: a stream) reads as 2^63-1 frames, and soundfile fails
    # at its end: refused by name.
    stream = tmp_path / "stream.flac"
    stream.write_bytes(flac_claiming(44100, 0))
    with pytest.raises(AudioError, match="unsupported_format: .*gives no length"):
        featurise_track(str(stream), None, None, CFG, max_seconds=None)


def test_the_predictor_refuses_a_header_the_featuriser_let_through(tmp_path, attacks, audio_bundle):
    """Defence in depth: a track past the Predictor's cap that reached it anyway (swapped after featurising,
    or featurised under a larger cap) is refused by the timeline as a row error; the other row keeps its
    label and timeline. The attack files are refused by the timeline itself, before any window."""
    from labeler.audio import Featurizer
    from labeler.inference.predict import Predictor

    uris = np.array([wav_at(tmp_path / "long.wav", 8000, 12.0), wav_at(tmp_path / "ok.wav", 16000, 5.0)], dtype=object)
    batch = Featurizer(CFG, max_audio_seconds=None)({"song_id": np.array(["long", "ok"], dtype=object), "audio_uri": uris})
    assert list(batch["audio_error"]) == [None, None]
    predictor = Predictor(audio_bundle, batch_size=4, timeline_seconds=2.0, max_audio_seconds=10.0)
    with hang_guard():
        out = predictor(batch)
        for path, kind in attacks.values():
            with pytest.raises(AudioError, match=f"^{kind}: "):
                predictor.timeline(path)
    assert error_kind(out["error"][0]) == "too_long" == error_kind(out["audio_error"][0])
    assert np.isnan(out["probs"][0]).all() and out["timeline"][0] == "" and out["modalities"][0] is None
    assert out["error"][1] is None and len(json.loads(out["timeline"][1])) == 3


def test_serve_timeline_reads_the_spooled_upload_never_its_bytes(tmp_path, audio_bundle):
    """The timeline's source is the upload's spooled file itself: featurising and labelling an 8-MB upload
    allocate a few MB in the replica, never the upload whole."""
    from labeler.bundle.info import read_bundle_info
    from labeler.inference.predict import Predictor
    from labeler.serve import ServeConfig, SongFeaturiser, song_from_fields

    featuriser = SongFeaturiser(read_bundle_info(audio_bundle), ServeConfig(bundle=audio_bundle, timeline_seconds=60.0))
    predictor = Predictor(audio_bundle, batch_size=4, timeline_seconds=60.0)
    upload = tempfile.SpooledTemporaryFile(max_size=1 << 20)  # as Starlette spools a multipart file part
    upload.write(Path(wav_at(tmp_path / "big.wav", 16000, 250.0)).read_bytes())
    size = upload.tell()
    song = song_from_fields({"song_id": "big"}, audio=upload, audio_name="big.wav")
    with open(wav_at(tmp_path / "w.wav", 16000, 5.0), "rb") as warm:  # the isolation child, imports and
        predictor(featuriser(song_from_fields({"song_id": "warm"}, audio=warm)))  # first calls: not measured
    tracemalloc.start()
    try:
        batch = featuriser(song)
        out = predictor(batch)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert batch["audio_source"][0] is upload and size > 8_000_000
    assert peak < size / 2, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB upload"
    assert out["error"][0] is None and [w["start"] for w in json.loads(out["timeline"][0])] == [0, 60, 120, 180, 240]


# ------------------------------------------------------------------------------------- on Ray


@pytest.fixture(scope="module")
def labelled(ray_local, tmp_path_factory, attacks) -> dict:
    """`labeler label --timeline 2 --max-audio-seconds 10` over the attack files and good songs."""
    from labeler.label_job import LabelJobConfig, label_catalogue

    root = tmp_path_factory.mktemp("header-job")
    rows = [{"song_id": name, "audio_uri": path, "lyrics": None} for name, (path, _) in attacks.items()]
    rows += [{"song_id": "good-a", "audio_uri": wav_at(root / "a.wav", 16000, 6.0, seed=1), "lyrics": "sunshine dance joy"},
             {"song_id": "good-b", "audio_uri": wav_at(root / "b.wav", 22050, 5.0, seed=2), "lyrics": None},
             {"song_id": "long-with-lyrics", "audio_uri": wav_at(root / "c.wav", 8000, 12.0, seed=3),
              "lyrics": "tears alone cry"}]
    schema = pa.schema([("song_id", pa.string()), ("audio_uri", pa.string()), ("lyrics", pa.string())])
    catalogue = str(root / "catalogue.parquet")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), catalogue)
    bundle = make_bundle(root)
    config = LabelJobConfig(featurise_batch_size=4, predict_batch_size=8, max_actors=1, timeline_seconds=2.0,
                            max_audio_seconds=10.0, max_retries=0, max_resumes=0)
    with hang_guard(600):
        summary = label_catalogue(catalogue, bundle, str(root / "labels"), config)
    table = pq.read_table(summary.partition_uri)
    return {"summary": summary, "rows": {r["song_id"]: r for r in table.to_pylist()}, "bundle": bundle}


def test_label_job_makes_the_attack_rows_errors_and_labels_every_other_row(labelled, attacks):
    rows, summary = labelled["rows"], labelled["summary"]
    assert summary.resumes == 0 and len(rows) == 6
    for name, (_, kind) in attacks.items():
        row = rows[name]
        assert error_kind(row["error"]) == kind and error_kind(row["audio_error"]) == kind, row
        assert row["quadrant"] is None and row["timeline"] is None
    for name in ("good-a", "good-b"):
        row = rows[name]
        assert row["error"] is None and row["audio_error"] is None and row["quadrant"] is not None
        assert [w["start"] for w in row["timeline"]] == [0.0, 2.0, 4.0]
    # past the configured cap (12 s > 10 s) but with lyrics: labelled from them, as any unusable audio is
    long = rows["long-with-lyrics"]
    assert long["error"] is None and long["modalities"] == "lyrics" and error_kind(long["audio_error"]) == "too_long"


def test_serve_with_a_timeline_answers_the_attack_uploads_with_4xx(labelled, attacks, tmp_path):
    from ray import serve

    from labeler.serve import ServeConfig, start

    port = free_port()
    start(ServeConfig(bundle=labelled["bundle"], port=port, max_audio_seconds=60.0, timeline_seconds=2.0,
                      max_batch_size=4, batch_wait_timeout_s=0.05, replica_cpus=0.5), name="labeler-headers")
    url = f"http://127.0.0.1:{port}"
    try:
        expected = {"unsupported_format": 422, "too_long": 413}
        for path, kind in attacks.values():
            response = requests.post(f"{url}/label", files={"audio": (Path(path).name, Path(path).read_bytes())},
                                     timeout=300)
            assert response.status_code == expected[kind] and error_kind(response.json()["error"]) == kind, response.text
        good = wav_at(tmp_path / "good.wav", 16000, 5.0)
        response = requests.post(f"{url}/label", files={"audio": ("good.wav", Path(good).read_bytes())}, timeout=300)
        assert response.status_code == 200, response.text
        assert [w["start"] for w in response.json()["timeline"]] == [0.0, 2.0, 4.0]
        assert requests.get(f"{url}/healthz", timeout=30).json()["ok"] is True
    finally:
        serve.shutdown()
