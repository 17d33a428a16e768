"""Featurisation throughput: windowed decode (labeler.audio) vs librosa.load of the whole file.

Not a test. One process, one thread (the budget of one Ray CPU worker); rates are per CPU-second
(= per core), measured as process CPU time so they hold on a shared machine. For each file both paths produce the same 30-s PANNs log-mel:

  ours      featurise_track(path, start, None, cfg): soundfile seeks to the window, streams it
            through soxr (HQ), log-mel with the default STFT backend
  baseline  librosa.load(path, sr=32000) of the whole file (soxr_hq), slice the window, same log-mel

Sets: the 4Q 30-s MP3 clips (window = whole clip, so this measures decode/resample overhead) and,
with --long, the longer real recordings (PMEmo chorus MP3s 45-60 s, librosa OGGs up to 133 s) with a
window from 15 s, where reading only the window pays. Also times the STFT backends on one clip.

    MOOD_LABELER_DATA=/work/shared/data .venv/bin/python bench/bench_featurise.py [--files 24] [--long]

--stages: CPU-s per 30-s song of each stage (decode, resample, STFT, mel, chorus search), the previous
formulation (librosa's filterbank, numpy's float16 cast, librosa's sparse recurrence matrix, the librosa
imports of a fresh worker) against the current one in the same run, with each stage's floor:

    MOOD_LABELER_DATA=/work/shared/data .venv/bin/python bench/bench_featurise.py --stages [--files 16]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, as a Ray CPU worker gets

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import librosa  # noqa: E402
import soundfile as sf  # noqa: E402

from labeler.audio import DEFAULT_STFT_BACKEND, FeaturizerConfig, decode_window, featurise_track, log_mel  # noqa: E402


def _baseline(path: Path, start: float, cfg: FeaturizerConfig) -> np.ndarray:
    y, _ = librosa.load(str(path), sr=cfg.sample_rate, mono=True, res_type="soxr_hq")
    first = int(start * cfg.sample_rate)
    return log_mel(y[first:first + cfg.clip_samples], cfg.sample_rate, cfg)


def _ours(path: Path, start: float, cfg: FeaturizerConfig) -> np.ndarray:
    return featurise_track(str(path), start, None, cfg).log_mel


def _time(fn, files: list[Path], start: float, cfg: FeaturizerConfig, repeats: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds), each the best of `repeats` passes over all files.

    The process runs one thread, so its CPU time is what one core spends, and unlike wall time it
    stays meaningful on a shared, loaded machine.
    """
    fn(files[0], start, cfg)  # warm-up: lazy imports, filterbank cache
    best_cpu = best_wall = float("inf")
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        for path in files:
            fn(path, start, cfg)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return best_cpu, best_wall


def _row(name: str, timing: tuple[float, float], n_files: int, audio_s: float) -> str:
    cpu, wall = timing
    return f"| {name:<34} | {n_files:>5} | {cpu:>7.2f} | {wall:>8.2f} | {audio_s / cpu:>14.1f} | {n_files / cpu:>12.2f} |"


def _compare(title: str, files: list[Path], start: float, cfg: FeaturizerConfig, repeats: int) -> None:
    audio_s = sum(min(cfg.clip_seconds, sf.info(str(p)).duration - start) for p in files)
    total_s = sum(sf.info(str(p)).duration for p in files)
    ours = _time(_ours, files, start, cfg, repeats)
    base = _time(_baseline, files, start, cfg, repeats)
    print(f"\n{title}: {len(files)} files, {total_s:.0f} s of audio in all, {audio_s:.0f} s featurised (window from {start:g} s)")
    print("| path                               | files | CPU (s) | wall (s) | audio s/CPU-s  | songs/CPU-s  |")
    print("|---|---|---|---|---|---|")
    print(_row("ours: seek + stream resample", ours, len(files), audio_s))
    print(_row("librosa.load whole file + slice", base, len(files), audio_s))
    print(f"speed-up (baseline CPU time / ours): {base[0] / ours[0]:.2f}x (wall: {base[1] / ours[1]:.2f}x)")


def _stft_backends(path: Path, cfg: FeaturizerConfig, repeats: int) -> None:
    import torch

    torch.set_num_threads(1)
    clip = featurise_track(str(path), 0.0, None, cfg)  # warm-up decode
    y = librosa.load(str(path), sr=cfg.sample_rate, duration=cfg.clip_seconds)[0]
    print(f"\nlog-mel of one {cfg.clip_seconds:g}-s clip ({clip.log_mel.shape}), one thread, best of {repeats * 5} (CPU ms):")
    for backend in ("librosa", "torch"):
        log_mel(y, cfg.sample_rate, cfg, backend=backend)
        best = float("inf")
        for _ in range(repeats * 5):
            began = time.process_time()
            log_mel(y, cfg.sample_rate, cfg, backend=backend)
            best = min(best, time.process_time() - began)
        print(f"  {backend:<8} {best * 1000:7.1f} ms")


def _chorus(data: Path, repeats: int) -> None:
    """find_chorus per track, CPU time, with the chroma tuning estimate (librosa's default, piptrack) and
    without it (tuning=0.0, what find_chorus does since issue #22), on the real recordings longer than a clip."""
    from labeler import audio

    files = [p for p in sorted(data.glob("audio/*.ogg")) if sf.info(str(p)).duration > 45]
    files += sorted(data.glob("pmemo/chorus/*.mp3"))
    clips = [audio.decode_window(str(p), 0.0, 240.0, audio.ANALYSIS_SR) for p in files]
    chroma_stft = librosa.feature.chroma_stft

    def estimated(*args, **kwargs):
        kwargs.pop("tuning", None)
        return chroma_stft(*args, **kwargs)

    print(f"\nchorus search (find_chorus, 30-s clip) on {len(files)} real recordings "
          f"({sum(len(c) for c in clips) / audio.ANALYSIS_SR:.0f} s of audio), one thread, best of {repeats} (CPU s per track):")
    results = {}
    for name, fn in (("tuning estimated (before)", estimated), ("tuning=0.0 (now)", chroma_stft)):
        librosa.feature.chroma_stft = fn
        try:
            windows = [audio.find_chorus(c, audio.ANALYSIS_SR, 30.0) for c in clips[:1]]  # warm-up: JIT
            best = float("inf")
            for _ in range(repeats):
                began = time.process_time()
                windows = [audio.find_chorus(c, audio.ANALYSIS_SR, 30.0) for c in clips]
                best = min(best, time.process_time() - began)
        finally:
            librosa.feature.chroma_stft = chroma_stft
        results[name] = windows
        print(f"  {name:<26} {best / len(clips):6.3f} s/track")
    same = sum(abs(a[0] - b[0]) < 1e-6 for a, b in zip(*results.values()))
    print(f"  same chorus window chosen for {same} of {len(clips)} tracks")


def _best(fn, repeats: int) -> float:
    """Best process CPU seconds of `repeats` calls of fn() (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        began = time.process_time()
        fn()
        best = min(best, time.process_time() - began)
    return best


def _old_log_mel_from_power(power: np.ndarray, cfg: FeaturizerConfig) -> np.ndarray:
    """The previous formulation: librosa's filterbank (cached) and numpy's float16 cast."""
    from labeler.audio.features import mel_to_db

    mel = _old_basis(cfg) @ power
    if cfg.frontend == "musicnn":
        return np.log10(10000.0 * mel.T[:cfg.n_frames].astype(np.float16).astype(np.float32) + 1.0).astype(np.float32)
    return mel_to_db(mel)


def _old_basis(cfg: FeaturizerConfig, cache: dict = {}) -> np.ndarray:  # noqa: B006 - a deliberate memo
    key = (cfg.sample_rate, cfg.window_size, cfg.n_mels, cfg.fmin, cfg.fmax)
    if key not in cache:
        cache[key] = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.window_size, n_mels=cfg.n_mels, fmin=cfg.fmin,
                                         fmax=cfg.fmax).astype(np.float32)
    return cache[key]


def _old_recurrence(features: np.ndarray, width: int) -> np.ndarray:
    return librosa.segment.recurrence_matrix(features, mode="affinity", sym=True, width=width, metric="cosine")


_FRESH = """
import sys, time
sys.path.insert(0, {root!r})
import numpy, torch, soundfile, soxr
from labeler.audio import FeaturizerConfig, featurise_track
began = time.process_time()
if {old}:
    import librosa.filters, librosa.util  # what the previous clip path imported on its first call
featurise_track({path!r}, None, None, FeaturizerConfig.musicnn())
print(time.process_time() - began)
"""


def _fresh_first_song(path: str, old: bool) -> float:
    """CPU-s of a fresh interpreter's first featurised song (libraries already imported, JIT cache as on disk)."""
    import subprocess

    code = _FRESH.format(root=str(Path(__file__).resolve().parents[1]), old=old, path=path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)  # noqa: S603 - our own code
    return float(out.stdout.strip().splitlines()[-1])


def _synthetic_songs(n: int, seconds: float, out: Path) -> list[str]:
    import pyarrow.parquet as pq

    from synth.catalogue import synthesise
    from synth.config import SynthConfig

    synthesise(SynthConfig(songs=n, seconds=seconds, output=str(out), formats=("wav", "flac", "ogg", "mp3")))
    return pq.read_table(out / "catalogue.parquet").column("audio_uri").to_pylist()


def _stage_rows(title: str, uris: list[str], cfg: FeaturizerConfig, repeats: int) -> None:
    """Per-song CPU ms of each stage of the clip path on 30-s songs (no chorus search)."""
    import torch

    from labeler.audio import featurizer
    from labeler.audio.decode import open_audio
    from labeler.audio.features import fit_clip, log_mel_from_power, power_spectrogram

    torch.set_num_threads(1)
    n = len(uris)

    def read(rate: int | None):
        def run():
            for uri in uris:
                with open_audio(uri) as reader:
                    reader.read(0.0, cfg.clip_seconds, rate or reader.samplerate)
        return run

    clips = []
    for uri in uris:
        with open_audio(uri) as reader:
            clips.append(fit_clip(reader.read(0.0, cfg.clip_seconds, cfg.sample_rate), cfg))
    powers = [power_spectrogram(c, cfg) for c in clips]

    def whole(log_mel_fn):
        def run():
            saved = featurizer.log_mel_from_power
            featurizer.log_mel_from_power = log_mel_fn
            try:
                for uri in uris:
                    featurizer.featurise_track(uri, None, None, cfg)
            finally:
                featurizer.log_mel_from_power = saved
        return run

    ms = {
        "decode alone (soundfile.read, native rate): the decoder's floor": _best(lambda: [sf.read(u, dtype="float32") for u in uris], repeats),
        "decode window, native rate (ours)": _best(read(None), repeats),
        f"decode + soxr HQ resample to {cfg.sample_rate} Hz (ours)": _best(read(cfg.sample_rate), repeats),
        "STFT (torch, 1 thread)": _best(lambda: [power_spectrogram(c, cfg) for c in clips], repeats),
        "mel + compression, before": _best(lambda: [_old_log_mel_from_power(p, cfg) for p in powers], repeats),
        "mel + compression, now": _best(lambda: [log_mel_from_power(p, cfg) for p in powers], repeats),
        "featurise_track, before": _best(whole(_old_log_mel_from_power), repeats),
        "featurise_track, now": _best(whole(log_mel_from_power), repeats),
    }
    print(f"\n{title}: {n} songs, {cfg.frontend} front end, CPU ms per song (best of {repeats}, one thread)")
    print("| stage | CPU ms/song |\n|---|---|")
    for name, cpu in ms.items():
        print(f"| {name} | {cpu / n * 1000:.2f} |")
    print(f"mel + compression: {ms['mel + compression, before'] / ms['mel + compression, now']:.2f}x; "
          f"featurise_track: {ms['featurise_track, before'] / ms['featurise_track, now']:.2f}x")


def _chorus_stages(files: list[str], repeats: int) -> None:
    """Chorus search per track: analysis decode, find_chorus before/now, the recurrence matrix and its FLOPs."""
    from labeler.audio import chorus

    clips = [decode_window(f, 0.0, 240.0, chorus.ANALYSIS_SR) for f in files]
    captured: list[tuple[np.ndarray, int]] = []
    real = chorus.recurrence_affinity

    def search(recurrence):
        def run():
            chorus.recurrence_affinity = recurrence
            try:
                return [chorus.find_chorus(c, chorus.ANALYSIS_SR, 30.0) for c in clips]
            finally:
                chorus.recurrence_affinity = real
        return run

    search(lambda f, w: captured.append((f, w)) or real(f, w))()
    n = len(files)
    seconds = sum(len(c) for c in clips) / chorus.ANALYSIS_SR
    decode_s = _best(lambda: [decode_window(f, 0.0, 240.0, chorus.ANALYSIS_SR) for f in files], repeats)
    before = _best(search(_old_recurrence), repeats)
    now = _best(search(real), repeats)
    rec_before = _best(lambda: [_old_recurrence(f, w) for f, w in captured], repeats)
    rec_now = _best(lambda: [real(f, w) for f, w in captured], repeats)
    flops = sum(2 * f.shape[1] ** 2 * f.shape[0] for f, _ in captured)
    same = search(_old_recurrence)() == search(real)()
    print(f"\nchorus search on {n} recordings ({seconds / n:.0f} s each on average), CPU ms per track (best of {repeats}):")
    print("| stage | CPU ms/track |\n|---|---|")
    print(f"| decode + resample to {chorus.ANALYSIS_SR} Hz | {decode_s / n * 1000:.1f} |")
    print(f"| find_chorus, before (librosa recurrence_matrix) | {before / n * 1000:.1f} |")
    print(f"| find_chorus, now (dense recurrence_affinity) | {now / n * 1000:.1f} |")
    print(f"| recurrence matrix alone, before | {rec_before / n * 1000:.2f} |")
    print(f"| recurrence matrix alone, now | {rec_now / n * 1000:.2f} |")
    print(f"find_chorus {before / now:.1f}x, recurrence {rec_before / rec_now:.1f}x; same windows: {same}; "
          f"the similarity matrix is {flops / n / 1e6:.1f} MFLOP a track ({flops / rec_now / 1e9:.2f} GFLOP/s now)")


def _stages(data: Path, files: int, repeats: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-featurise-") as tmp:
        _stages_in(data, files, repeats, Path(tmp))


def _stages_in(data: Path, files: int, repeats: int, tmp: Path) -> None:
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; CPU time of one thread")
    synthetic = _synthetic_songs(files, 30.0, tmp / "30s")
    real = [str(p) for p in sorted(data.glob("4q/Q*/*.mp3"))[::10][:files]]
    for cfg in (FeaturizerConfig.musicnn(), FeaturizerConfig()):
        _stage_rows("synthetic 30-s songs (WAV, FLAC, OGG, MP3 at 22.05/32 kHz)", synthetic, cfg, repeats)
        _stage_rows("4Q 30-s MP3 clips", real, cfg, repeats)
    first = {old: min(_fresh_first_song(synthetic[0], old) for _ in range(2)) for old in (True, False)}
    print(f"\nfirst song of a fresh process (CPU s, best of 2): before {first[True]:.2f}, now {first[False]:.2f} "
          f"({first[True] / first[False]:.1f}x)")
    long_files = [str(p) for p in sorted(data.glob("audio/*.ogg")) if sf.info(str(p)).duration > 45]
    long_files += [str(p) for p in sorted(data.glob("pmemo/chorus/*.mp3"))]
    _chorus_stages(long_files + _synthetic_songs(2, 240.0, tmp / "240s"), repeats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("MOOD_LABELER_DATA"), help="shared data folder (default $MOOD_LABELER_DATA)")
    parser.add_argument("--files", type=int, default=24, help="4Q clips to use (spread over the sample rates)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long", action="store_true", help="also time 30-s windows of the longer recordings")
    parser.add_argument("--chorus", action="store_true", help="only time the chorus search, with and without the tuning estimate")
    parser.add_argument("--stages", action="store_true", help="CPU per song of each stage, before and now, and their floors")
    args = parser.parse_args()
    if not args.data or not Path(args.data).is_dir():
        parser.error("give --data or set MOOD_LABELER_DATA to the shared data folder")
    data = Path(args.data)
    if args.chorus:
        _chorus(data, args.repeats)
        return 0
    if args.stages:
        _stages(data, min(args.files, 16), args.repeats)
        return 0
    cfg = FeaturizerConfig()
    print(f"STFT backend for both paths: {DEFAULT_STFT_BACKEND}")
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (best of {args.repeats}; CPU time is the robust figure)")

    by_rate: dict[int, list[Path]] = {}
    for path in sorted(data.glob("4q/Q*/*.mp3")):
        by_rate.setdefault(sf.info(str(path)).samplerate, []).append(path)
    files: list[Path] = []
    while len(files) < args.files and any(by_rate.values()):
        for rate in sorted(by_rate):
            if by_rate[rate] and len(files) < args.files:
                files.append(by_rate[rate].pop(0))
    rates = sorted({sf.info(str(p)).samplerate for p in files})
    _compare(f"4Q MP3 clips at {rates} Hz", files, 0.0, cfg, args.repeats)
    if args.long:
        long_files = sorted(data.glob("pmemo/chorus/*.mp3")) + [p for p in sorted(data.glob("audio/*.ogg")) if sf.info(str(p)).duration > 45]
        _compare("longer recordings (PMEmo MP3, librosa OGG)", long_files, 15.0, cfg, args.repeats)
    _stft_backends(files[0], cfg, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
