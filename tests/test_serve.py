"""The online endpoint on real Ray Serve, over real HTTP on 127.0.0.1, with real audio files.

The answers are checked against the batch job's labels for the same songs and the same bundle (random
weights: plumbing, contracts and limits are under test, not accuracy).
"""

from __future__ import annotations

import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
import soundfile as sf

from labeler.bundle.info import read_bundle_info
from labeler.contracts.labels import QUADRANTS
from labeler.contracts.schemas import LABELS
from labeler.inference.label_rows import error_kind
from labeler.label_job import LabelJobConfig, label_catalogue
from labeler.serve import ServeConfig, app_builder, start
from tests.helpers import free_port, make_bundle
from tests.poison import sitecustomize as poison

PROBS = [f"prob_{q.lower()}" for q in QUADRANTS]
MAX_AUDIO_SECONDS = 60.0


def _write_song(path: Path, seconds: float, sr: int = 16000, seed: int = 0, amplitude: float = 0.3) -> str:
    """A synthetic 'song': a few drifting tones plus noise (enough structure for chorus finding)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    freqs = rng.uniform(110, 880, size=3)
    audio = sum(np.sin(2 * np.pi * f * t * (1 + 0.01 * np.sin(t))) for f in freqs) / 3
    audio = amplitude * (audio + 0.05 * rng.standard_normal(len(t)))
    sf.write(path, audio.astype(np.float32), sr, subtype="PCM_16")
    return str(path)


@pytest.fixture(scope="module")
def songs(tmp_path_factory, request) -> dict:
    """Three catalogue songs: real 4Q MP3s when the shared data is there (synthetic WAVs otherwise),
    one of them without lyrics, and one song whose audio file is missing but which has lyrics."""
    root = tmp_path_factory.mktemp("serve-audio")
    try:
        shared = request.getfixturevalue("shared_data")
        audio = sorted((shared / "4q").rglob("*.mp3"))[:2]
    except pytest.skip.Exception:
        audio = [Path(_write_song(root / f"synth-{i}.wav", 8.0, seed=i)) for i in range(2)]
    rows = [
        {"song_id": "song-a", "audio_uri": str(audio[0]), "lyrics": "love sunshine dance happy joy bright alive"},
        {"song_id": "song-b", "audio_uri": str(audio[1]), "lyrics": None},
        {"song_id": "song-c", "audio_uri": str(root / "missing.wav"), "lyrics": "tears alone cry lost grey cold"},
    ]
    return {"root": root, "rows": rows, "allowed": (str(root), *{str(p.parent) for p in audio})}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> str:
    return make_bundle(tmp_path_factory.mktemp("serve-bundle"), model_id="serve-test")


@pytest.fixture(scope="module")
def batch_labels(ray_local, bundle, songs) -> dict:
    """The batch job's rows for the same songs (run before Serve takes its CPU on the 2-CPU test Ray)."""
    schema = pa.schema([("song_id", pa.string()), ("audio_uri", pa.string()), ("lyrics", pa.string())])
    catalogue = str(songs["root"] / "catalogue.parquet")
    pq.write_table(pa.Table.from_pylist(songs["rows"], schema=schema), catalogue)
    output = str(songs["root"] / "labels")
    config = LabelJobConfig(featurise_batch_size=4, predict_batch_size=8, max_actors=1)
    summary = label_catalogue(catalogue, bundle, output, config)
    table = pq.read_table(summary.partition_uri)
    return {r["song_id"]: r for r in table.to_pylist()}


@pytest.fixture(scope="module")
def server(ray_local, bundle, songs, batch_labels):
    from ray import serve

    port = free_port()
    config = ServeConfig(bundle=bundle, port=port, max_upload_mb=1.0, max_audio_seconds=MAX_AUDIO_SECONDS,
                         max_batch_size=4, batch_wait_timeout_s=0.2, replica_cpus=0.5,
                         allow_uri_prefixes=songs["allowed"])
    start(config, name="labeler-test")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def _upload(url: str, audio: bytes, name: str = "song.mp3", **fields) -> requests.Response:
    return requests.post(f"{url}/label", files={"audio": (name, audio)}, data=fields, timeout=60)


def _post_json(url: str, body) -> requests.Response:
    return requests.post(f"{url}/label", json=body, timeout=60)


# ------------------------------------------------------------------------------------ without Ray


def test_config_from_builder_args_and_scaling_options():
    config = ServeConfig.from_mapping({"bundle": "/b", "max_batch_size": "16", "batch_wait_timeout_s": "0.01",
                                       "max_replicas": "4", "allow_uri_prefixes": "s3://a/,/data"})
    assert (config.max_batch_size, config.batch_wait_timeout_s, config.max_replicas) == (16, 0.01, 4)
    assert config.allow_uri_prefixes == ("s3://a/", "/data")
    options = config.deployment_options()
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16}
    assert "num_replicas" not in options and options["max_ongoing_requests"] >= 16
    assert ServeConfig(bundle="/b", replicas=3).deployment_options()["num_replicas"] == 3
    with pytest.raises(ValueError, match="max_batch_size"):
        ServeConfig(bundle="/b", max_batch_size=0)
    with pytest.raises(ValueError, match="unknown serve argument.*bundel"):
        ServeConfig.from_mapping({"bundel": "/b"})
    with pytest.raises(ValueError, match="max_replicas"):
        ServeConfig(bundle="/b", replicas=3, max_replicas=2)
    assert type(app_builder({"bundle": "/b"})).__name__ == "Application"


def test_cli_parser_builds_the_config():
    import argparse

    from jobs.commands.serve import config_from_args, configure_parser

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(["--bundle", "b", "--port", "9001", "--replicas", "2", "--max-batch-size", "4",
                              "--max-upload-mb", "5", "--allow-uri-prefix", "s3://x/"])
    config = config_from_args(args)
    assert config.bundle == os.path.abspath("b") and (config.port, config.replicas, config.max_batch_size) == (9001, 2, 4)
    assert config.max_upload_bytes == 5 * 1024 * 1024 and config.allow_uri_prefixes == ("s3://x/",)


# ------------------------------------------------------------------------------------- on Serve


def test_healthz_names_the_bundle(server, bundle):
    info = read_bundle_info(bundle)
    body = requests.get(f"{server}/healthz", timeout=30).json()
    assert body["ok"] is True and (body["model_id"], body["model_version"]) == (info.model_id, info.model_version)


def test_answers_match_the_batch_job(server, songs, batch_labels):
    """Concurrent requests (batched together by @serve.batch) give the batch job's labels."""
    a, b, c = songs["rows"]
    with ThreadPoolExecutor(3) as pool:
        futures = [
            pool.submit(_upload, server, Path(a["audio_uri"]).read_bytes(), Path(a["audio_uri"]).name,
                        lyrics=a["lyrics"], song_id=a["song_id"]),
            pool.submit(_upload, server, Path(b["audio_uri"]).read_bytes(), Path(b["audio_uri"]).name, song_id=b["song_id"]),
            pool.submit(_post_json, server, {"audio_uri": c["audio_uri"], "lyrics": c["lyrics"], "song_id": c["song_id"]}),
        ]
        responses = [f.result() for f in futures]
    for response in responses:
        assert response.status_code == 200, response.text
        row = response.json()
        assert list(row) == LABELS.schema.names  # exactly the LABELS fields, in contract order
        expected = batch_labels[row["song_id"]]
        assert row["quadrant"] == expected["quadrant"] and row["quadrant"] in QUADRANTS
        assert np.allclose([row[p] for p in PROBS], [expected[p] for p in PROBS], atol=1e-5), (row, expected)
        assert row["arousal_prob"] == pytest.approx(expected["arousal_prob"], abs=1e-5)
        assert (row["modalities"], row["model_version"], row["error"]) == (expected["modalities"], expected["model_version"], None)
        assert error_kind(row["audio_error"]) == error_kind(expected["audio_error"])
        assert datetime.fromisoformat(row["labelled_at"]).tzinfo is not None
    rows = {r.json()["song_id"]: r.json() for r in responses}
    assert rows["song-a"]["modalities"] == "audio+lyrics" and rows["song-b"]["modalities"] == "audio"
    assert rows["song-c"]["modalities"] == "lyrics" and error_kind(rows["song-c"]["audio_error"]) == "missing_file"


def test_uri_request_and_chorus_fields(server, songs, batch_labels):
    a = songs["rows"][0]
    by_uri = _post_json(server, {"audio_uri": a["audio_uri"], "lyrics": a["lyrics"]})
    assert by_uri.status_code == 200, by_uri.text
    row = by_uri.json()
    assert row["song_id"].startswith("request-")  # an id is made up when the client gives none
    assert np.allclose([row[p] for p in PROBS], [batch_labels["song-a"][p] for p in PROBS], atol=1e-5)
    annotated = _post_json(server, {"audio_uri": a["audio_uri"], "chorus_start_s": 2.0, "chorus_end_s": 5.5})
    assert annotated.status_code == 200 and annotated.json()["modalities"] == "audio"
    lyrics_only = _post_json(server, {"lyrics": "calm gentle breeze quiet peace", "song_id": 42})
    assert lyrics_only.status_code == 200 and lyrics_only.json()["song_id"] == "42"
    assert lyrics_only.json()["modalities"] == "lyrics" and error_kind(lyrics_only.json()["audio_error"]) == "no_audio"


def test_bad_songs_get_4xx_with_an_error_kind(server, songs):
    root: Path = songs["root"]
    cases = {
        "random bytes": (_upload(server, os.urandom(4000), "x.bin", lyrics="love"), 422, ("unsupported_format", "corrupt")),
        "random mp3": (_upload(server, b"ID3" + os.urandom(4000), "x.mp3"), 422, ("corrupt", "unsupported_format")),
        "empty upload": (_upload(server, b"", "x.wav", lyrics="love"), 422, ("empty_file",)),
        "oversize": (_upload(server, os.urandom(int(1.5 * 1024 * 1024)), "big.wav"), 413, ("too_large",)),
        "empty body": (requests.post(f"{server}/label", timeout=30), 400, ("missing_fields",)),
        "bad json": (requests.post(f"{server}/label", data=b"{not json", headers={"content-type": "application/json"},
                                   timeout=30), 400, ("bad_json",)),
        "json list": (_post_json(server, ["lyrics"]), 400, ("bad_json",)),
        "nothing to label": (_post_json(server, {"song_id": "x", "lyrics": "   "}), 400, ("missing_fields",)),
        "form without audio or lyrics": (requests.post(f"{server}/label", files={"song_id": (None, "x")}, timeout=30),
                                         400, ("missing_fields",)),
        "unknown field": (_post_json(server, {"lyric": "love"}), 400, ("bad_field",)),
        "bad chorus": (_post_json(server, {"lyrics": "love", "chorus_start_s": "soon"}), 400, ("bad_field",)),
        "text body": (requests.post(f"{server}/label", data=b"love", headers={"content-type": "text/plain"}, timeout=30),
                      415, ("unsupported_media_type",)),
        "uri outside prefixes": (_post_json(server, {"audio_uri": "/etc/passwd", "lyrics": "love"}), 403, ("forbidden",)),
        "uri escaping a prefix": (_post_json(server, {"audio_uri": f"{root}/../../etc/passwd"}), 403, ("forbidden",)),
        "too long": (_post_json(server, {"audio_uri": _write_song(root / "long.wav", MAX_AUDIO_SECONDS + 5, sr=4000)}),
                     413, ("too_long",)),
        "no lyrics, missing file": (_post_json(server, {"audio_uri": str(root / "nope.wav")}), 422, ("missing_file",)),
    }
    for name, (response, status, kinds) in cases.items():
        assert response.status_code == status, (name, response.status_code, response.text)
        body = response.json()
        assert error_kind(body["error"]) in kinds and ": " in body["error"], (name, body)
    unusable = cases["no lyrics, missing file"][0].json()["row"]
    assert unusable["quadrant"] is None and error_kind(unusable["error"]) == "missing_file"


def test_silent_upload_with_lyrics_is_labelled_from_lyrics(server, songs):
    silent = _write_song(songs["root"] / "silent.wav", 5.0, amplitude=0.0)
    response = _upload(server, Path(silent).read_bytes(), "silent.wav", lyrics="rage fight scream burn")
    assert response.status_code == 200, response.text
    row = response.json()
    assert row["modalities"] == "lyrics" and error_kind(row["audio_error"]) == "silent" and row["quadrant"] in QUADRANTS
    # the server is still healthy after every bad request
    assert requests.get(f"{server}/healthz", timeout=30).json()["ok"] is True


# ---------------------------------------------------------------- attacks (see tests/test_serve_security.py)


def test_a_megabyte_of_digits_as_lyrics_never_freezes_the_replica(server):
    """The quadratic footer pattern held the GIL for minutes on one such request and Serve marked the
    replica unhealthy; now the lyric is capped and every pattern is linear."""
    lyric = "7" * (900 * 1024)
    health: list[int] = []
    answer: dict = {}

    def post() -> None:
        answer["response"] = requests.post(f"{server}/label", json={"lyrics": lyric, "song_id": "digits"}, timeout=120)

    sender = threading.Thread(target=post)
    sender.start()
    while sender.is_alive() and len(health) < 50:
        health.append(requests.get(f"{server}/healthz", timeout=30).status_code)
    sender.join(timeout=120)
    assert set(health) <= {200}
    response = answer["response"]
    assert response.status_code == 200, response.text
    assert response.json()["song_id"] == "digits" and response.json()["modalities"] == "lyrics"


def test_nested_json_and_huge_ints_get_400_from_the_running_endpoint(server):
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"song_id": ' + b"9" * 5000 + b"}"):
        response = requests.post(f"{server}/label", data=body, headers={"content-type": "application/json"}, timeout=60)
        assert response.status_code == 400 and response.json()["error"].startswith("bad_json"), response.text
    assert requests.get(f"{server}/healthz", timeout=30).status_code == 200
def test_row_to_json_gives_class_probs_as_an_object():
    from labeler.serve import row_to_json

    row = row_to_json({"song_id": "a", "class_probs": [("Cluster 1", 0.25), ("Cluster 2", 0.75)], "label_prob": float("nan")})
    assert row == {"song_id": "a", "class_probs": {"Cluster 1": 0.25, "Cluster 2": 0.75}, "label_prob": None}


def test_a_song_that_crashes_the_featuriser_gets_its_answer_and_the_next_request_is_served(server, songs):
    """A real SIGSEGV while featurising (tests/poison/sitecustomize.py, exported by conftest into the replica
    and its isolation children): that request answers worker_crash, the replica lives on."""
    poisoned = Path(songs["root"]) / poison.POISON_FILE
    shutil.copy(_write_song(songs["root"] / "healthy.wav", 6.0, seed=7), poisoned)
    bare = _post_slow(server, {"audio_uri": str(poisoned)})
    assert bare.status_code == 422, bare.text
    assert bare.json()["error"].startswith(f"worker_crash: {poisoned}: killed by SIGSEGV")
    with_lyrics = _post_slow(server, {"audio_uri": str(poisoned), "lyrics": "tears alone cry"})
    assert with_lyrics.status_code == 200, with_lyrics.text
    assert with_lyrics.json()["modalities"] == "lyrics" and error_kind(with_lyrics.json()["audio_error"]) == "worker_crash"
    a = songs["rows"][0]
    after = _post_slow(server, {"audio_uri": a["audio_uri"], "lyrics": a["lyrics"]})
    assert after.status_code == 200 and after.json()["modalities"] == "audio+lyrics", after.text


def _post_slow(url: str, body) -> requests.Response:
    """A crashed child is replaced by a fresh interpreter for the next request: allow for that on a loaded machine."""
    return requests.post(f"{url}/label", json=body, timeout=600)
