"""Benchmark (not a test): what `--embeddings` and `--timeline SECONDS` cost the labelling job.

1. The job (`labeler.label_job.label_catalogue` on a local Ray with --cpus CPUs) on one synthetic
   catalogue, three times: plain, with `--embeddings`, with `--timeline SECONDS`; songs/s and
   audio-seconds/s of each (audio-seconds = the catalogue's total track length).
2. The Predictor alone on one featurised batch, with and without embeddings, alternating, median of
   --repeats; CPU seconds of this process (all its threads) as well as wall seconds, since on a
   shared machine the wall clock measures the neighbours as much as the code.
3. One long track through `Predictor.timeline` in this process: seconds of CPU per minute of audio
   and the peak RSS growth for a short and a long track (bounded memory: the long one must not cost
   proportionally more memory).

The bundle has the `cpu-small` architecture with untrained heads (bench/bench_label.py's), weights
do not change the cost. Songs are synthesised once into --workdir and reused.

    python bench/bench_mood_outputs.py --songs 120 --seconds 30 --timeline 10 --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.bench_label import make_bundle, make_catalogue  # noqa: E402


def audio_seconds(catalogue: str) -> float:
    import pyarrow.parquet as pq
    import soundfile as sf

    total = 0.0
    for uri in pq.read_table(catalogue, columns=["audio_uri"]).column("audio_uri").to_pylist():
        try:
            total += sf.info(uri).duration
        except Exception:  # noqa: BLE001, S112 - a broken row has no length: it adds nothing
            continue
    return total


def run_jobs(catalogue: str, bundle: str, workdir: Path, cpus: int, timeline: float) -> dict:
    import ray

    from labeler.label_job import LabelJobConfig, label_catalogue

    seconds_of_audio = audio_seconds(catalogue)
    results = {}
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        for name, extra in (("plain", {}), ("embeddings", {"embeddings": True}),
                            (f"timeline_{timeline:g}", {"timeline_seconds": timeline})):
            output = workdir / f"labels-{name}"
            shutil.rmtree(output, ignore_errors=True)
            t0 = time.perf_counter()
            summary = label_catalogue(catalogue, bundle, str(output), LabelJobConfig(**extra))
            seconds = time.perf_counter() - t0
            results[name] = {"songs": summary.written, "seconds": round(seconds, 2),
                             "songs_per_second": round(summary.written / seconds, 3),
                             "audio_seconds_per_second": round(seconds_of_audio / seconds, 1)}
            print(name, results[name], file=sys.stderr)
    finally:
        ray.shutdown()
    results["audio_seconds"] = round(seconds_of_audio, 1)
    return results


def predictor_overhead(catalogue: str, bundle: str, batch: int, repeats: int) -> dict:
    import numpy as np
    import pyarrow.parquet as pq

    from labeler.audio import Featurizer
    from labeler.bundle.store import read_bundle_config
    from labeler.inference.predict import Predictor
    from labeler.io import storage
    from labeler.lyrics.text import LyricsTokenizer

    config = read_bundle_config(bundle)
    rows = pq.read_table(catalogue).slice(0, batch).to_pydict()
    features = LyricsTokenizer(storage.join(bundle, "tokenizer"), config["lyrics"])(
        Featurizer(config["featurizer"])({k: np.array(v, dtype=object) for k, v in rows.items()}))
    predictors = {name: Predictor(bundle, batch_size=32, embeddings=name == "embeddings")
                  for name in ("plain", "embeddings")}
    wall: dict[str, list[float]] = {name: [] for name in predictors}
    cpu: dict[str, list[float]] = {name: [] for name in predictors}
    for predictor in predictors.values():
        predictor(features)  # warm-up
    for _ in range(repeats):  # alternate, so that a busy spell of the machine hits both
        for name, predictor in predictors.items():
            c0, t0 = time.process_time(), time.perf_counter()
            predictor(features)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    out: dict = {"batch": batch, "repeats": repeats}
    for name in predictors:
        out[name] = {"wall_s": round(statistics.median(wall[name]), 4), "cpu_s": round(statistics.median(cpu[name]), 4)}
    out["overhead_percent_cpu"] = round(100 * (out["embeddings"]["cpu_s"] / out["plain"]["cpu_s"] - 1), 1)
    out["overhead_percent_wall"] = round(100 * (out["embeddings"]["wall_s"] / out["plain"]["wall_s"] - 1), 1)
    return out


def long_track(path: Path, minutes: float) -> str:
    """A long test track: the synthesiser's songs are short, so one 30-s song repeated (FLAC, 22.05 kHz)."""
    import numpy as np
    import soundfile as sf

    if not path.exists():
        sr = 22050
        t = np.arange(int(sr * 30)) / sr
        phrase = (0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 1.5 * t))).astype(np.float32)
        with sf.SoundFile(path, "w", sr, 1, format="FLAC") as f:
            for _ in range(int(minutes * 2)):
                f.write(phrase)
    return str(path)


def timeline_cost(bundle: str, workdir: Path, timeline: float, minutes: list[float]) -> dict:
    import torch

    from labeler.inference.predict import Predictor

    predictor = Predictor(bundle, batch_size=32, timeline_seconds=timeline)
    out = {"torch_threads": torch.get_num_threads()}
    for m in minutes:
        track = long_track(workdir / f"long-{m:g}min.flac", m)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        cpu0, t0 = time.process_time(), time.perf_counter()
        windows = predictor.timeline(track)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        out[f"{m:g}min"] = {"windows": len(windows), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                            "cpu_s_per_audio_minute": round(cpu / m, 2), "wall_s_per_audio_minute": round(wall / m, 2),
                            "peak_rss_growth_mib": round(growth / 1024, 1)}
        print(m, out[f"{m:g}min"], file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--songs", type=int, default=120)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--timeline", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=64, help="songs in the Predictor-only comparison")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--minutes", default="2,10", help="long-track lengths for the timeline cost")
    parser.add_argument("--workdir", default="bench/results/recsys/bench")
    parser.add_argument("--parts", default="predictor,timeline,job", help="which of predictor, timeline, job to run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    catalogue = make_catalogue(workdir, args.songs, args.seconds)
    bundle = make_bundle(workdir)
    result: dict = {"songs": args.songs, "song_seconds": args.seconds, "cpus": args.cpus}
    if "predictor" in parts:
        result["predictor"] = predictor_overhead(catalogue, bundle, args.batch, args.repeats)
    if "timeline" in parts:
        result["timeline_long_tracks"] = timeline_cost(bundle, workdir, args.timeline, [float(m) for m in args.minutes.split(",")])
    if "job" in parts:
        result["job"] = run_jobs(catalogue, bundle, workdir, args.cpus, args.timeline)
    (workdir / f"result-{'-'.join(sorted(parts))}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2) if args.json else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
