"""Benchmark (not a test): the labelling job against a plain one-song-at-a-time loop, and its memory.

Throughput: the same synthetic catalogue, the same featuriser, tokenizer and predictor, timed twice in
one run: (1) a single-process loop that featurises, tokenises and predicts one song after another, as
the seed's test scripts did; (2) `labeler.label_job.label_catalogue` on a local Ray with `--cpus` CPUs.
Memory: the peak of the summed PSS (proportional set size: shared pages split between the processes
that map them, so the object store is not counted once per worker) of the whole process tree (driver,
GCS, raylet, workers), sampled every 0.2 s while the job runs. Streaming means the peak for 5,000
songs stays within ~15% of the peak for 1,000.

The bundle has the `cpu-small` architecture (the pretrained MusiCNN on 30-s chorus clips, its Dense
fine-tuned, or with `--audio-model Cnn6` the quarter-width Cnn6 on 8-s 16-kHz clips; MiniLM-L6 with
128 tokens) with
untrained heads unless --bundle is given: weights do not change the cost. `--stage-songs N` also
times decode + mel, tokenising and the network separately in one process (the stage-sum limit), in
wall and process CPU seconds per song. `--branch audio|lyrics` makes a single-branch bundle instead; a
stage the bundle does not use is skipped. `--engines torch,auto` times each Predictor engine in turn in
one run (stages and job; the job's actors get it through $MOOD_LABELER_ENGINE) with their ratios.

    python bench/bench_label.py --songs 1000 --seconds 30              # loop vs job, 2 CPUs
    python bench/bench_label.py --songs 1000 --skip-loop --json        # job only: peak memory at 1,000
    python bench/bench_label.py --songs 5000 --distinct-songs 1000 --skip-loop --json  # ... and at 5,000
    python bench/bench_label.py --songs 200 --loop-songs 60            # the reduced version
    python bench/bench_label.py --songs 200 --seconds 10 --skip-loop --poison --json  # cost of one crashing track
    python bench/bench_label.py --songs 200 --seconds 30 --skip-loop --stage-songs 40 --engines torch,auto --json

--poison runs the job twice on local Rays started by this process: on the catalogue as it is, and on
the same catalogue with one row's audio copied to a file that kills the featuriser with SIGSEGV
(tests/poison/sitecustomize.py, put first on the workers' PYTHONPATH, as the tests do).

Songs are synthesised once into --workdir (default /tmp/bench_label) and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ENGINE_VAR = "MOOD_LABELER_ENGINE"  # labeler.inference.predict.ENGINE_VAR (not imported: that imports torch before Ray starts)


def make_catalogue(workdir: Path, songs: int, seconds: float, distinct: int | None = None) -> str:
    """A synthetic catalogue of `songs` songs (reused when it already exists).

    With `distinct` < songs, only that many songs are synthesised and the catalogue lists each of
    them songs/distinct times under new song ids: the job does the same work per row (every row is
    decoded and featurised), and the 5,000-row memory run does not need 5,000 files synthesised.
    """
    from synth import SynthConfig, synthesise

    if distinct and distinct < songs:
        import pyarrow as pa
        import pyarrow.parquet as pq

        out = workdir / f"synth-{songs}-from-{distinct}x{seconds:g}s"
        catalogue = out / "catalogue.parquet"
        if not catalogue.exists():
            source = pq.read_table(make_catalogue(workdir, distinct, seconds))
            copies = [source.set_column(0, "song_id", pa.array([f"{s}-copy{c}" for s in source.column("song_id").to_pylist()]))
                      for c in range(-(-songs // distinct))]
            out.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.concat_tables(copies).slice(0, songs), catalogue)
        return str(catalogue)
    out = workdir / f"synth-{songs}x{seconds:g}s"
    catalogue = out / "catalogue.parquet"
    if not catalogue.exists():
        t0 = time.perf_counter()
        synthesise(SynthConfig(songs=songs, seconds=seconds, output=str(out), formats=("wav", "flac", "ogg", "mp3")))
        print(f"synthesised {songs} songs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return str(catalogue)


def make_bundle(workdir: Path, audio_model: str | None = None, branch: str = "fusion") -> str:
    """A bundle with the cpu-small architecture (its audio model, or `audio_model`: MusiCNN, Cnn6, ...) of
    `branch` (fusion, audio or lyrics), MiniLM from the offline package; untrained heads (MusiCNN's encoder
    has its pretrained weights)."""
    from labeler.bundle.store import save_bundle
    from labeler.lyrics.pretrained import load_tokenizer
    from labeler.models import EmotionModel, ModelConfig
    from train.fit.configs import featurizer_config, lyrics_config, model_config
    from train.fit.presets import get_preset

    p = get_preset("cpu-small", **({"audio_arch": audio_model} if audio_model else {}))
    kind = "" if branch == "fusion" else f"-{branch}"
    uri = workdir / f"bundle-cpu-small-{p.audio_arch.lower()}{kind}-untrained"
    if (uri / "config.json").exists():
        return str(uri)
    model = EmotionModel.from_pretrained_branches(ModelConfig.from_dict(model_config(p, branch, "4Q")))
    tokenizer = load_tokenizer(p.lyrics_encoder) if branch != "audio" else None
    save_bundle(str(uri), model, featurizer_config(p), lyrics_config(p), tokenizer=tokenizer,
                model_id=f"bench-cpu-small-{p.audio_arch.lower()}{kind}-untrained")
    return str(uri)


def bundle_stages(bundle: str):
    """(featurise, tokenise) callables for `bundle`: a stage its model does not use passes batches through."""
    from labeler.bundle.info import read_bundle_info

    info = read_bundle_info(bundle)

    def unchanged(batch):
        return batch

    featurize = unchanged
    if info.uses_audio:
        from labeler.audio import Featurizer

        featurize = Featurizer(info.featurizer)
    tokenize = unchanged
    if info.uses_lyrics:
        from labeler.lyrics.text import LyricsTokenizer

        tokenize = LyricsTokenizer(info.tokenizer.load(), info.lyrics)
    return featurize, tokenize


def stage_sums(catalogue: str, bundle: str, limit: int, batch_size: int = 8, engine: str | None = None) -> dict:
    """Seconds per song of each stage, timed separately in this process: decode + chorus + mel (the
    Featurizer), tokenise, and the network (Predictor on `engine`, `batch_size` songs a call); their sum's
    inverse is the songs/s a single process could reach at best (the stage-sum limit). `*_cpu_s`: process
    CPU seconds per song (all threads); a stage the bundle does not use costs 0."""
    import numpy as np
    import pyarrow.parquet as pq

    from labeler.inference.predict import Predictor

    rows = pq.read_table(catalogue).slice(0, limit).to_pydict()
    batch = {k: np.asarray(v, dtype=object) for k, v in rows.items()}
    featurize, tokenize = bundle_stages(bundle)
    t = time.perf_counter()
    predictor = Predictor(bundle, batch_size=batch_size, engine=engine)
    load_s = time.perf_counter() - t
    n = len(batch["song_id"])
    wall, cpu = [time.perf_counter()], [time.process_time()]
    for stage in (featurize, tokenize, predictor):
        batch = stage(batch)
        wall.append(time.perf_counter())
        cpu.append(time.process_time())
    names = ("featurise", "tokenise", "network")
    per = {f"{k}_s": (wall[i + 1] - wall[i]) / n for i, k in enumerate(names)}
    per_cpu = {f"{k}_cpu_s": (cpu[i + 1] - cpu[i]) / n for i, k in enumerate(names)}
    total = sum(per.values())
    return {"songs": n, "engine": predictor.engine, "predictor_load_s": round(load_s, 2),
            **{k: round(v, 4) for k, v in {**per, **per_cpu}.items()}, "limit_songs_per_second": round(1 / total, 3)}


def plain_loop(catalogue: str, bundle: str, limit: int) -> dict:
    """The seed's way: one process, one song after another (batch of one), same components."""
    import numpy as np
    import pyarrow.parquet as pq

    from labeler.inference.predict import Predictor

    rows = pq.read_table(catalogue).slice(0, limit).to_pylist()
    featurizer, tokenizer = bundle_stages(bundle)
    predictor = Predictor(bundle, batch_size=1)

    t0 = time.perf_counter()
    errors = 0
    for row in rows:
        batch = {k: np.array([v], dtype=object) for k, v in row.items()}
        out = predictor(tokenizer(featurizer(batch)))
        errors += out["error"][0] is not None
    seconds = time.perf_counter() - t0
    return {"songs": len(rows), "seconds": round(seconds, 2), "songs_per_second": round(len(rows) / seconds, 3),
            "errors": int(errors)}


class TreeMemorySampler:
    """Peak of the summed PSS of this process and all its descendants (Ray's GCS, raylet, workers)."""

    def __init__(self, interval: float = 0.2) -> None:
        import psutil

        self.root = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for proc in [self.root, *self.root.children(recursive=True)]:
            try:
                total += proc.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def poisoned_catalogue(catalogue: str, workdir: Path) -> str:
    """The catalogue with the middle row's audio copied to a file that kills the featuriser (test-only injection)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.poison import sitecustomize as poison

    table = pq.read_table(catalogue)
    uris = table.column("audio_uri").to_pylist()
    middle = len(uris) // 2
    target = workdir / f"poison-{Path(uris[middle]).name}"
    shutil.copy(uris[middle], target)
    uris[middle] = str(target)
    out = workdir / "catalogue-poisoned.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("audio_uri"), "audio_uri", pa.array(uris, pa.string())), out)
    poison.export(os.environ, target.name)  # before ray.init: the workers and their children inherit it
    return str(out)


def run_job(catalogue: str, bundle: str, workdir: Path, cpus: int, extra: dict) -> dict:
    import ray

    from labeler.label_job import LabelJobConfig, label_catalogue

    output = workdir / "labels-bench"
    shutil.rmtree(output, ignore_errors=True)
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        baseline = TreeMemorySampler()._sample()
        with TreeMemorySampler() as sampler:
            t0 = time.perf_counter()
            summary = label_catalogue(catalogue, bundle, str(output), LabelJobConfig(**extra))
            seconds = time.perf_counter() - t0
    finally:
        ray.shutdown()
    return {"songs": summary.written, "seconds": round(seconds, 2), "songs_per_second": round(summary.written / seconds, 3),
            "pipeline_songs_per_second": round(summary.songs_per_second, 3), "errors": summary.errors,
            "audio_errors": summary.audio_errors,
            "peak_pss_mib": round(sampler.peak / 2**20), "idle_cluster_pss_mib": round(baseline / 2**20)}


def engine_ratios(runs: dict, baseline: str) -> dict:
    """Each engine against `baseline` in this run: network CPU-s and wall-s per song (baseline / engine, so
    >1 is cheaper) and the job's songs/s (engine / baseline, >1 is faster)."""
    base = runs[baseline]
    out = {}
    for name, run in runs.items():
        if name == baseline:
            continue
        ratio = {"job_songs_per_second": round(run["job"]["songs_per_second"] / base["job"]["songs_per_second"], 3)}
        if "stages" in run:
            for key in ("network_cpu_s", "network_s"):
                if run["stages"][key] > 0:
                    ratio[f"{key}_lower_by"] = round(base["stages"][key] / run["stages"][key], 3)
        out[f"{name}_vs_{baseline}"] = ratio
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--songs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each synthetic song")
    parser.add_argument("--distinct-songs", type=int, default=None,
                        help="synthesise only this many songs and repeat them under new ids (memory runs)")
    parser.add_argument("--loop-songs", type=int, default=None, help="songs timed in the plain loop (default: all)")
    parser.add_argument("--skip-loop", action="store_true")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--workdir", default="bench/results/bench_label")
    parser.add_argument("--bundle", default=None, help="a trained bundle (default: untrained cpu-small architecture)")
    parser.add_argument("--audio-model", default=None, help="the untrained bundle's audio model (default: cpu-small's)")
    parser.add_argument("--branch", default="fusion", choices=("fusion", "audio", "lyrics"),
                        help="the untrained bundle's branch (default: fusion)")
    parser.add_argument("--engines", default=None,
                        help="comma-separated Predictor engines timed in turn in this run (auto, onnxruntime, torch); "
                             "default: the Predictor's default")
    parser.add_argument("--stage-songs", type=int, default=0, help="also time each stage on this many songs (stage-sum limit)")
    parser.add_argument("--featurise-cpus", type=float, default=None)
    parser.add_argument("--featurise-batch-size", type=int, default=None)
    parser.add_argument("--predict-batch-size", type=int, default=None)
    parser.add_argument("--max-actors", type=int, default=None)
    parser.add_argument("--max-retries", type=int, default=None)
    parser.add_argument("--poison", action="store_true", help="also time the job with one track that crashes its process")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    catalogue = make_catalogue(workdir, args.songs, args.seconds, args.distinct_songs)
    bundle = args.bundle or make_bundle(workdir, args.audio_model, args.branch)
    result: dict = {"songs": args.songs, "song_seconds": args.seconds, "cpus": args.cpus, "nproc": os.cpu_count(),
                    "bundle": bundle, "load_average_start": os.getloadavg()}
    extra = {k: v for k, v in {"featurise_cpus": args.featurise_cpus, "featurise_batch_size": args.featurise_batch_size,
                               "predict_batch_size": args.predict_batch_size, "max_actors": args.max_actors,
                               "max_retries": args.max_retries}.items()
             if v is not None}
    engines = [e.strip() for e in args.engines.split(",")] if args.engines else [None]
    runs = {}
    for engine in engines:
        run: dict = {}
        if engine is not None:
            os.environ[ENGINE_VAR] = engine  # before ray.init: the job's Predictor actors inherit it
        if args.stage_songs:
            run["stages"] = stage_sums(catalogue, bundle, args.stage_songs, engine=engine)
            print(json.dumps({engine or "default": run["stages"]}), file=sys.stderr, flush=True)  # kept if the job fails
        if not args.skip_loop:
            run["loop"] = plain_loop(catalogue, bundle, args.loop_songs or args.songs)
        run["job"] = run_job(catalogue, bundle, workdir, args.cpus, extra)
        if args.poison:
            run["job_with_poison"] = run_job(poisoned_catalogue(catalogue, workdir), bundle, workdir, args.cpus, extra)
        if "loop" in run:
            run["speedup"] = round(run["job"]["songs_per_second"] / run["loop"]["songs_per_second"], 2)
        run["load_average_end"] = os.getloadavg()
        runs[engine or "default"] = run
    if len(runs) == 1:
        result.update(next(iter(runs.values())))
    else:
        result["engines"] = runs
        result["ratios"] = engine_ratios(runs, engines[0])
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
