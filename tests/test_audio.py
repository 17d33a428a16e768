"""labeler.audio on real recordings, real transcodes and real broken files (no mocks of decoders)."""

from __future__ import annotations

import csv
import math
import tracemalloc
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from labeler import audio
from labeler.audio import (
    DESCRIPTOR_DIM,
    AudioError,
    Featurizer,
    FeaturizerConfig,
    decode_window,
    descriptor_names,
    featurise_track,
    find_chorus,
    log_mel,
)

SMALL = FeaturizerConfig(clip_seconds=4.0, chorus_search_seconds=30.0, min_seconds=1.0)
TRUMPET = "sorohanro_-_solo-trumpet-06.hq.ogg"  # 5.3 s, 44.1 kHz stereo


def _kind(excinfo) -> str:
    return excinfo.value.kind


def _reference(path: Path, sr: int) -> np.ndarray:
    """Whole-file decode, mono mix and one-shot resample: what windowed decoding must agree with."""
    x, native = sf.read(str(path), dtype="float32", always_2d=True)
    return soxr.resample(x.mean(axis=1), native, sr, quality="HQ")


def _tone(freq: float, seconds: float, sr: int, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ----------------------------------------------------------------- config


def test_config_round_trip_fingerprint_and_frames():
    cfg = FeaturizerConfig()
    assert FeaturizerConfig.from_dict(cfg.to_dict()) == cfg
    assert len(cfg.fingerprint()) == 16 and cfg.fingerprint() == FeaturizerConfig().fingerprint()
    assert FeaturizerConfig(hop_size=160).fingerprint() != cfg.fingerprint()
    assert cfg.n_frames == 1 + 30 * 32000 // 320 == 3001  # PANNs: 30 s at 32 kHz, hop 320
    with pytest.raises(ValueError, match="fmax=20000"):
        FeaturizerConfig(fmax=20000.0)
    with pytest.raises(ValueError, match="hop_size=0"):
        FeaturizerConfig(hop_size=0)
    with pytest.raises(ValueError, match="unknown FeaturizerConfig key.*bogus"):
        FeaturizerConfig.from_dict({"bogus": 1})


def test_audio_error_carries_kind():
    err = AudioError("silent", "x.wav: quiet")
    assert err.kind == "silent" and str(err) == "silent: x.wav: quiet"
    with pytest.raises(ValueError, match="unknown audio error kind 'nope'"):
        AudioError("nope", "x")


# ----------------------------------------------------------------- decoding real files


def test_every_shared_recording_decodes_windows_like_a_full_decode(shared_data):
    paths = sorted((shared_data / "audio").glob("*.ogg"))
    assert len(paths) >= 5
    for path in paths:
        window = decode_window(str(path), 1.0, 2.0, 16000)
        reference = _reference(path, 16000)[16000:48000]
        assert window.dtype == np.float32 and window.ndim == 1
        assert abs(len(window) - 32000) <= 2, path.name
        n = min(len(window), len(reference))
        # Streaming vs one-shot resampling differ only at the window edges.
        assert np.corrcoef(window[200:n - 200], reference[200:n - 200])[0, 1] > 0.999, path.name


@pytest.mark.parametrize(
    "fmt, subtype, rate, min_corr",
    [
        ("WAV", "PCM_16", 44100, 0.9999),
        ("FLAC", "PCM_24", 22050, 0.9999),
        ("OGG", "VORBIS", 44100, 0.98),
        ("MP3", "MPEG_LAYER_III", 44100, 0.99),
        ("MP3", "MPEG_LAYER_III", 22050, 0.99),
        ("OGG", "OPUS", 48000, 0.99),
    ],
)
def test_transcodes_decode_to_the_same_window(shared_data, tmp_path, fmt, subtype, rate, min_corr):
    src = shared_data / "audio" / TRUMPET
    x, native = sf.read(str(src), dtype="float32")
    y = x if rate == native else soxr.resample(x, native, rate)
    path = tmp_path / f"trumpet.{ {'OGG': 'ogg', 'MP3': 'mp3', 'WAV': 'wav', 'FLAC': 'flac'}[fmt] }"
    if subtype == "OPUS":
        path = tmp_path / "trumpet.opus"
    sf.write(str(path), y, rate, format=fmt, subtype=subtype)
    window = decode_window(str(path), 1.0, 2.0, 32000)
    reference = _reference(src, 32000)[32000:96000]
    assert abs(len(window) - 64000) <= 2
    n = min(len(window), len(reference))
    # Sample-accurate seeking: a lag of even a few samples would drop the correlation of a trumpet tone.
    assert np.corrcoef(window[:n], reference[:n])[0, 1] > min_corr


def test_bytes_and_file_objects_decode_like_paths(shared_data):
    path = shared_data / "audio" / TRUMPET
    from_path = decode_window(str(path), 0.5, 1.0, 22050)
    from_bytes = decode_window(path.read_bytes(), 0.5, 1.0, 22050)
    with open(path, "rb") as f:
        from_file = decode_window(f, 0.5, 1.0, 22050)
    np.testing.assert_array_equal(from_path, from_bytes)
    np.testing.assert_array_equal(from_path, from_file)
    assert decode_window("file://" + str(path), 0.5, 1.0, 22050).shape == from_path.shape


def _four_q_by_rate(shared_data: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in sorted((shared_data / "4q").glob("Q*/*.mp3")):
        found.setdefault(sf.info(str(path)).samplerate, path)
    return found


def test_4q_mp3_seek_is_sample_accurate_at_every_rate(shared_data):
    by_rate = _four_q_by_rate(shared_data)
    assert {22050, 32000, 44100} <= set(by_rate)
    for rate, path in by_rate.items():
        full, native = sf.read(str(path), dtype="float32", always_2d=True)
        assert native == rate
        window = decode_window(str(path), 10.0, 2.0, rate)  # native rate: no resampling, exact samples
        np.testing.assert_allclose(window, full[10 * rate:12 * rate].mean(axis=1), atol=1e-6, err_msg=path.name)


def test_4q_and_pmemo_featurise_with_the_promised_shape(shared_data, caplog):
    cfg = FeaturizerConfig(clip_seconds=10.0, chorus_search_seconds=60.0)
    path = _four_q_by_rate(shared_data)[22050]
    features = featurise_track(str(path), 5.0, 12.0, cfg)
    assert features.log_mel.shape == (cfg.n_frames, cfg.n_mels) and features.log_mel.dtype == np.float32
    # 7 s of annotated chorus in a 10 s clip: the clip goes on into the music after it, no silence.
    assert (features.chorus_start_s, features.chorus_end_s) == pytest.approx((5.0, 15.0), abs=1e-3)
    assert features.log_mel[-50:].mean() > -60 and features.log_mel[:600].mean() > -60
    # Near the end of the track the window moves earlier so that it stays inside the track.
    duration = sf.info(str(path)).duration
    late = featurise_track(str(path), duration - 3.0, duration - 1.0, cfg)
    assert late.chorus_start_s == pytest.approx(duration - 10.0, abs=1e-3)
    assert late.chorus_end_s == pytest.approx(duration, abs=0.2)  # an MP3 decodes a little short of its header's length
    silent_frames = int((late.log_mel.max(axis=1) <= -99.9).sum())
    assert silent_frames <= 0.2 * cfg.sample_rate / cfg.hop_size, silent_frames

    with open(shared_data / "pmemo" / "metadata.csv", newline="") as f:
        meta = next(csv.DictReader(f))
    clip = shared_data / "pmemo" / "chorus" / meta["fileName"]
    # PMEmo's chorus times refer to the full song; the file is the chorus alone, so the annotation
    # lies past its end: it is ignored (with a warning) and the chorus is found automatically.
    start = sum(float(p) * m for p, m in zip(meta["chorus_start_time"].split(":"), (60, 1)))
    end = sum(float(p) * m for p, m in zip(meta["chorus_end_time"].split(":"), (60, 1)))
    duration = sf.info(str(clip)).duration
    assert start > duration
    features = featurise_track(str(clip), start, end, cfg)
    assert "does not fit the track" in caplog.text
    assert 0.0 <= features.chorus_start_s and features.chorus_end_s <= duration + 1e-6
    assert features.chorus_end_s - features.chorus_start_s == pytest.approx(10.0, abs=0.01)
    assert np.isfinite(features.log_mel).all() and features.log_mel.std() > 1.0


# ----------------------------------------------------------------- bad input


def test_bad_inputs_raise_audio_errors_by_kind(shared_data, tmp_path, monkeypatch):
    mp3 = _four_q_by_rate(shared_data)[32000].read_bytes()
    truncated = tmp_path / "truncated.mp3"
    truncated.write_bytes(mp3[:3000])  # a few MP3 frames: decodes to ~0.2 s
    random_mp3 = tmp_path / "random.mp3"
    random_mp3.write_bytes(np.random.default_rng(1).bytes(20000))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.xyz"
    text.write_text("not audio at all\n" * 50)
    short = tmp_path / "short.wav"
    sf.write(str(short), _tone(440, 0.5, 16000), 16000)
    m4a = tmp_path / "song.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00" + b"\x00" * 64)

    cases = {
        str(truncated): "too_short",
        str(random_mp3): "corrupt",
        str(empty): "empty_file",
        str(tmp_path / "missing.flac"): "missing_file",
        str(text): "unsupported_format",
        str(short): "too_short",
        None: "no_audio",
    }
    for source, kind in cases.items():
        with pytest.raises(AudioError) as excinfo:
            featurise_track(source, None, None, SMALL)
        assert _kind(excinfo) == kind, (source, str(excinfo.value))
        assert str(excinfo.value).startswith(kind + ": ")

    # A truncated file keeps what can be decoded: half an MP3 is still a usable 15 s.
    half = tmp_path / "half.mp3"
    half.write_bytes(mp3[: len(mp3) // 2])
    assert 10.0 < len(decode_window(str(half), None, None, 8000)) / 8000 < 20.0

    monkeypatch.setattr(audio.decode.shutil, "which", lambda name: None)
    for source in (str(m4a), m4a.read_bytes()):  # by extension, and by the 'ftyp' magic of raw bytes
        with pytest.raises(AudioError) as excinfo:
            decode_window(source, 0.0, 1.0, 16000)
        assert _kind(excinfo) == "ffmpeg_missing" and "install" in str(excinfo.value) and "ffmpeg" in str(excinfo.value)


def test_one_hour_silent_wav_is_never_loaded_whole(tmp_path):
    path = tmp_path / "silence.wav"
    rate, chunk = 16000, np.zeros(16000 * 60, dtype=np.int16).tobytes()
    with wave.open(str(path), "wb") as w:  # written in one-minute chunks, 115 MB in all
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        for _ in range(60):
            w.writeframes(chunk)
    file_size = path.stat().st_size
    assert sf.info(str(path)).duration == pytest.approx(3600.0)

    for chorus_start, limit in ((1800.0, 0.05), (None, 0.25)):  # a requested window; the auto path (240 s analysed)
        tracemalloc.start()
        try:
            with pytest.raises(AudioError) as excinfo:
                featurise_track(str(path), chorus_start, None, FeaturizerConfig(clip_seconds=10.0, chorus_search_seconds=240.0))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert _kind(excinfo) == "silent"
        assert peak < limit * file_size, f"peak {peak / 1e6:.1f} MB for a {file_size / 1e6:.0f} MB file"


# ----------------------------------------------------------------- chorus


def _section(seed: int, seconds: float, sr: int) -> np.ndarray:
    """A distinct synthetic section: a random 8-note melody with its own number of harmonics."""
    rng = np.random.default_rng(seed)
    harmonics = int(rng.integers(1, 6))
    notes = []
    t = np.arange(int(sr * seconds / 8)) / sr
    for midi in rng.choice(np.arange(48, 84), size=8):
        f0 = 440.0 * 2 ** ((midi - 69) / 12)
        notes.append(sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, harmonics + 1)) * np.exp(-3 * t))
    return (0.3 * np.concatenate(notes)).astype(np.float32)


def test_find_chorus_picks_a_repeated_section():
    sr, seconds = audio.ANALYSIS_SR, 4.0
    sections = {name: _section(seed, seconds, sr) for seed, name in enumerate("ABCD")}
    track = np.concatenate([sections[name] for name in "ABCBDB"])
    track += 0.01 * np.random.default_rng(0).standard_normal(len(track)).astype(np.float32)
    start, end = find_chorus(track, sr, seconds)
    assert end - start == pytest.approx(seconds)
    assert min(abs(start - b) for b in (4.0, 12.0, 20.0)) < 0.75, start  # B starts at 4, 12 and 20 s


def test_find_chorus_fallbacks():
    sr = 8000
    assert find_chorus(_tone(440, 3.0, sr), sr, 5.0) == (0.0, 3.0)  # shorter than the clip
    start, end = find_chorus(_tone(440, 60.0, sr), sr, 6.0)  # a constant tone: no distinct repetition
    assert (start, end) == pytest.approx((60.0 / 3 - 3.0, 60.0 / 3 + 3.0))
    with pytest.raises(ValueError, match="mono"):
        find_chorus(np.zeros((2, 100)), sr, 1.0)


# ----------------------------------------------------------------- log-mel and descriptors


def test_log_mel_torch_matches_librosa_and_follows_panns(shared_data):
    cfg = FeaturizerConfig(clip_seconds=5.0)
    clip = decode_window(str(shared_data / "audio" / TRUMPET), 0.0, 5.0, cfg.sample_rate)
    by_librosa = log_mel(clip, cfg.sample_rate, cfg, backend="librosa")
    by_torch = log_mel(clip, cfg.sample_rate, cfg, backend="torch")
    assert by_librosa.shape == by_torch.shape == (cfg.n_frames, cfg.n_mels)
    # Same algorithm: 1e-5 relative (atol for values near 0 dB) within 60 dB of the clip's peak. Further
    # down, float32 FFT round-off (relative to the frame's loud bins) dominates: still < 0.01 dB.
    audible = by_librosa >= by_librosa.max() - 60.0
    assert audible.mean() > 0.3
    np.testing.assert_allclose(by_torch[audible], by_librosa[audible], rtol=1e-5, atol=1e-4)
    assert np.abs(by_torch - by_librosa).max() < 0.01

    tone = log_mel(_tone(1000.0, 5.0, cfg.sample_rate), cfg.sample_rate, cfg)
    centres = audio.features.librosa.mel_frequencies(n_mels=cfg.n_mels + 2, fmin=cfg.fmin, fmax=cfg.fmax)[1:-1]
    assert abs(centres[int(np.argmax(tone[100]))] - 1000.0) < 100.0  # energy lands in the 1 kHz band
    assert tone.min() >= -100.0 - 1e-3  # 10*log10(max(mel, 1e-10))


def test_log_mel_pads_crops_and_validates():
    cfg = FeaturizerConfig(clip_seconds=2.0)
    short = log_mel(_tone(440, 0.7, cfg.sample_rate), cfg.sample_rate, cfg)
    long = log_mel(_tone(440, 3.0, cfg.sample_rate), cfg.sample_rate, cfg)
    assert short.shape == long.shape == (cfg.n_frames, cfg.n_mels)
    assert np.all(short[-20:] == pytest.approx(-100.0))  # zero padding
    with pytest.raises(ValueError, match="sr=16000"):
        log_mel(np.zeros(16000, dtype=np.float32), 16000, cfg)
    with pytest.raises(ValueError, match="mono"):
        log_mel(np.zeros((2, 64000), dtype=np.float32), cfg.sample_rate, cfg)
    with pytest.raises(ValueError, match="NaN"):
        log_mel(np.full(64000, np.nan, dtype=np.float32), cfg.sample_rate, cfg)
    with pytest.raises(ValueError, match="backend 'fft'"):
        log_mel(np.zeros(64000, dtype=np.float32), cfg.sample_rate, cfg, backend="fft")


def test_descriptors_measure_tempo_and_loudness(tmp_path):
    cfg = FeaturizerConfig(clip_seconds=8.0, chorus_search_seconds=30.0, descriptors=True)
    sr = 22050
    clicks = np.zeros(sr * 8, dtype=np.float32)
    for beat in np.arange(0, 8, 0.5):  # 120 BPM
        i = int(beat * sr)
        clicks[i:i + 400] += _tone(1500, 400 / sr, sr, amp=0.8)[:400] * np.hanning(400).astype(np.float32)
    clicks += _tone(1500, 8.0, sr, amp=0.02)  # a steady 1.5 kHz bed: the spectral centroid sits there
    path = tmp_path / "clicks.flac"
    sf.write(str(path), clicks, sr)
    features = featurise_track(str(path), 0.0, None, cfg)
    names = descriptor_names()
    assert len(names) == DESCRIPTOR_DIM == features.descriptors.shape[0] and len(set(names)) == len(names)
    vector = dict(zip(names, features.descriptors.tolist()))
    assert np.isfinite(features.descriptors).all() and features.descriptors.dtype == np.float32
    assert vector["tempo_bpm"] == pytest.approx(120.0, rel=0.05)
    assert vector["onset_strength_std"] > 0 and vector["rms_mean"] > 0
    assert 1300.0 < vector["spectral_centroid_mean"] < 1700.0


# ----------------------------------------------------------------- Featurizer (Ray map_batches callable)


def test_featurizer_batch_with_good_and_bad_rows(shared_data, tmp_path):
    good = str(shared_data / "audio" / TRUMPET)
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    batch = {
        "song_id": np.array(["good", "auto", "none", "empty", "gone"], dtype=object),
        "audio_uri": np.array([good, good, None, str(empty), str(tmp_path / "gone.ogg")], dtype=object),
        "chorus_start_s": np.array([0.5, np.nan, np.nan, np.nan, 1.0]),
        "chorus_end_s": np.array([2.5, np.nan, np.nan, np.nan, 2.0]),
    }
    cfg = FeaturizerConfig(clip_seconds=3.0, chorus_search_seconds=10.0, descriptors=True)
    out = Featurizer(cfg.to_dict())(batch)
    assert list(out["song_id"]) == list(batch["song_id"])
    assert out["log_mel"].shape == (5, cfg.n_frames, cfg.n_mels) and out["log_mel"].dtype == np.float16
    assert out["descriptors"].shape == (5, DESCRIPTOR_DIM) and out["descriptors"].dtype == np.float32
    errors = list(out["audio_error"])
    assert errors[:2] == [None, None]
    assert [e.split(":", 1)[0] for e in errors[2:]] == ["no_audio", "empty_file", "missing_file"]
    assert (out["chorus_start_used_s"][0], out["chorus_end_used_s"][0]) == pytest.approx((0.5, 3.5), abs=1e-3)
    assert 0.0 <= out["chorus_start_used_s"][1] and out["chorus_end_used_s"][1] - out["chorus_start_used_s"][1] == pytest.approx(3.0, abs=0.01)
    assert np.isnan(out["chorus_start_used_s"][2:]).all()
    assert not out["log_mel"][2:].any() and out["log_mel"][0].astype(np.float32).std() > 1.0
    # float16 storage keeps the dB values to well under 0.1 dB
    exact = featurise_track(good, 0.5, 2.5, cfg).log_mel
    assert np.abs(out["log_mel"][0].astype(np.float32) - exact).max() < 0.1
    assert math.isclose(float(np.sum(out["descriptors"][2:])), 0.0)


def test_featurizer_rejects_batches_without_audio_uri():
    with pytest.raises(ValueError, match="audio_uri"):
        Featurizer(SMALL)({"song_id": np.array(["a"], dtype=object)})
    with pytest.raises(ValueError, match="backend"):
        Featurizer(SMALL, backend="fft")
