"""labeler.inference.timeline and the Predictor's embeddings/timeline: window planning, streamed windows of real
audio files (WAV, and an open-ended MP4 read through ffmpeg when installed), and a saved bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC

import numpy as np
import pytest
import soundfile as sf

from labeler.inference.predict import Predictor, check_timeline
from labeler.inference.timeline import Window, axis_probs, iter_window_features, plan_windows, window_rows
from tests.helpers import make_audio_bundle, tiny_featurizer

CFG = tiny_featurizer()


def _tone(path, seconds: float, sr: int = 22050, silent_from: float | None = None) -> str:
    t = np.arange(int(sr * seconds)) / sr
    wave = (0.3 * np.sin(2 * np.pi * 330 * t) * (1 + 0.5 * np.sin(2 * np.pi * 2 * t))).astype(np.float32)
    if silent_from is not None:
        wave[int(silent_from * sr):] = 0.0
    sf.write(path, wave, sr)
    return str(path)


def test_plan_windows_cover_the_track_and_centre_the_clip():
    windows = plan_windows(10.0, 3.0, clip_seconds=2.0, min_seconds=0.5)
    assert [(w.start, w.end) for w in windows] == [(0.0, 3.0), (3.0, 6.0), (6.0, 9.0), (9.0, 10.0)]
    assert windows[1].clip_start == pytest.approx(3.5) and windows[1].clip_end == pytest.approx(5.5)
    assert windows[-1].clip_end == pytest.approx(10.0)  # kept inside the track
    # a tail shorter than min_seconds joins the window before it
    assert [(w.start, w.end) for w in plan_windows(6.2, 3.0, 2.0, 0.5)] == [(0.0, 3.0), (3.0, 6.2)]
    # a clip longer than the window: the model hears context around it, never past the ends
    first, *_, last = plan_windows(20.0, 2.0, clip_seconds=8.0, min_seconds=1.0)
    assert (first.clip_start, first.clip_end) == (0.0, 8.0) and (last.clip_start, last.clip_end) == (12.0, 20.0)
    assert plan_windows(0.0, 3.0, 2.0, 0.5) == []
    with pytest.raises(ValueError, match="positive number of seconds"):
        plan_windows(10.0, 0.0, 2.0, 0.5)


def test_windows_stream_in_chunks_and_silent_windows_have_no_label(tmp_path):
    path = _tone(tmp_path / "long.wav", 9.0, silent_from=6.0)
    chunks = list(iter_window_features(path, CFG, 2.0, chunk=2))
    assert [len(w) for w, _, _, _ in chunks] == [2, 2, 1]  # never more than `chunk` windows of log-mel at once
    for _, mels, descriptors, _ in chunks:
        assert mels.shape[1:] == (CFG.n_frames, CFG.n_mels) and descriptors is None
    usable = np.concatenate([u for _, _, _, u in chunks])
    assert usable.tolist() == [True, True, True, False, False]  # 6-9 s is digital silence
    windows = [w for ws, _, _, _ in chunks for w in ws]
    rows = window_rows(windows, np.tile([0.1, 0.6, 0.2, 0.1], (5, 1)), usable, "4Q", ("Q1", "Q2", "Q3", "Q4"))
    assert rows[0]["label"] == "Q2" and rows[0]["arousal_prob"] == pytest.approx(0.7)
    assert rows[0]["valence_prob"] == pytest.approx(0.2)
    assert rows[-1]["label"] is None and rows[-1]["end"] == 9.0


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_open_ended_track_through_ffmpeg_stops_at_its_end(tmp_path):
    wav = _tone(tmp_path / "x.wav", 5.0)
    m4a = tmp_path / "x.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", wav, "-c:a", "aac", str(m4a)], check=True)
    windows = [w for ws, _, _, _ in iter_window_features(str(m4a), CFG, 2.0) for w in ws]
    assert [w.start for w in windows] == [0.0, 2.0, 4.0]
    assert windows[-1].end == pytest.approx(5.0, abs=0.1)


def test_axis_probs_per_mode():
    assert axis_probs("4Q", ("Q1", "Q2", "Q3", "Q4"), np.array([0.4, 0.3, 0.2, 0.1])) == pytest.approx((0.7, 0.5))
    assert axis_probs("Ar", ("low", "high"), np.array([0.3, 0.7])) == (pytest.approx(0.7), None)
    assert axis_probs("Va", ("low", "high"), np.array([0.3, 0.7])) == (None, pytest.approx(0.7))
    assert axis_probs("classes", ("C1", "C2", "C3"), np.array([0.3, 0.3, 0.4])) == (None, None)


@pytest.fixture(scope="module")
def audio_bundle(tmp_path_factory) -> str:
    return make_audio_bundle(tmp_path_factory.mktemp("tl"), CFG, ambiguous_threshold=0.4)


def test_predictor_writes_normalised_embeddings_and_timelines(audio_bundle, tmp_path):
    from labeler.audio import Featurizer

    path = _tone(tmp_path / "song.wav", 5.0)
    batch = Featurizer(CFG)({"song_id": np.array(["a", "b"], dtype=object),
                             "audio_uri": np.array([path, str(tmp_path / "missing.wav")], dtype=object)})
    predictor = Predictor(audio_bundle, batch_size=2, embeddings=True, timeline_seconds=2.0)
    assert predictor.embedding_dim == 16
    out = predictor(batch)
    assert out["embedding"].shape == (2, 16) and out["embedding"].dtype == np.float32
    assert np.linalg.norm(out["embedding"][0]) == pytest.approx(1.0, abs=1e-5) and np.isnan(out["embedding"][1]).all()
    timeline = json.loads(out["timeline"][0])
    assert [(w["start"], w["end"]) for w in timeline] == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.0)]
    assert all(w["label"] in ("Q1", "Q2", "Q3", "Q4") for w in timeline) and out["timeline"][1] == ""
    # the timeline is the model's own answer on each window's clip: the Predictor agrees on the same audio
    assert timeline == predictor.timeline(open(path, "rb").read())
    # without the options nothing extra is computed or returned
    plain = Predictor(audio_bundle, batch_size=2)(batch)
    assert "embedding" not in plain and "timeline" not in plain
    np.testing.assert_allclose(plain["probs"], out["probs"], rtol=1e-6)


def test_timeline_option_is_checked():
    assert check_timeline(None, uses_audio=False) is None
    assert check_timeline(10, uses_audio=True) == 10.0
    for bad in (0, -1, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="positive number of seconds"):
            check_timeline(bad, uses_audio=True)
    with pytest.raises(ValueError, match="no audio branch"):
        check_timeline(10, uses_audio=False)
    assert Window(0, 1, 0, 1).end == 1


def test_serve_answers_with_the_same_columns_from_an_upload(audio_bundle, tmp_path):
    """`labeler serve --embeddings --timeline S`: the replica's own stages (SongFeaturiser -> Predictor ->
    label_rows) on uploaded bytes, without starting Serve; and the flags reach ServeConfig."""
    import argparse
    from datetime import datetime

    from jobs.commands.serve import config_from_args, configure_parser
    from labeler.bundle.info import read_bundle_info
    from labeler.inference.label_rows import label_rows
    from labeler.serve import ServeConfig, SongFeaturiser, row_to_json, song_from_fields

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    config = config_from_args(parser.parse_args(["--bundle", audio_bundle, "--embeddings", "--timeline", "2"]))
    assert (config.embeddings, config.timeline_seconds) == (True, 2.0)
    with pytest.raises(ValueError, match="timeline_seconds"):
        ServeConfig(bundle=audio_bundle, timeline_seconds=-1.0)

    info = read_bundle_info(audio_bundle)
    audio = open(_tone(tmp_path / "up.wav", 5.0), "rb").read()
    batch = SongFeaturiser(info, config)(song_from_fields({"song_id": "up"}, audio=audio, audio_name="up.wav"))
    predictor = Predictor(audio_bundle, batch_size=4, embeddings=True, timeline_seconds=2.0)
    row = row_to_json(label_rows(predictor(batch), info, datetime.now(UTC)).to_pylist()[0])
    assert len(row["embedding"]) == info.embedding_dim == 16
    assert [w["start"] for w in row["timeline"]] == [0.0, 2.0, 4.0] and row["ambiguous"] in (True, False)
    json.dumps(row)  # the answer is plain JSON
