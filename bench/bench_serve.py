"""Benchmark (not a test): the online endpoint's throughput and latency under concurrent clients.

Starts a local Ray (--cpus), deploys `labeler.serve` on 127.0.0.1 only, and for each client count
(default 1, 4, 8 threads) sends `POST /label` multipart uploads (one song's audio file plus its
lyrics) until --requests requests or --seconds seconds, whichever comes first. Reports requests/s,
p50/p95 latency and the status codes, then shuts Serve and Ray down.

Songs are real 4Q MP3 clips (30 s) from $MOOD_LABELER_DATA/4q when present, else synthetic songs from
bench_label's catalogue. The bundle has the `cpu-small` architecture with untrained heads (bench_label's
`make_bundle`) unless --bundle is given: weights do not change the cost.

    .venv/bin/python bench/bench_serve.py                                   # 1/4/8 clients, 1 replica
    .venv/bin/python bench/bench_serve.py --clients 1 8 --replicas 2 --cpus 4 --max-batch-size 8

`--upload-memory N` measures instead the replica's resident memory while N clients upload a WAV of
just under the default 50 MB limit at once (security finding 6: 20 such uploads took a replica from
0.8 GB to 3.3 GB when the body was held in memory; the goal is a peak under 1.5 GB). The replica's
process is found through Ray's state API and sampled with psutil every 20 ms.

    .venv/bin/python bench/bench_serve.py --upload-memory 20 --json > /tmp/bench_serve_upload.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

LYRICS = [
    "love sunshine dance happy joy bright alive party shine smile",
    "rage fight scream burn hate war anger blood break fire",
    "tears alone cry lost grey cold empty sorrow goodbye rain",
    "calm gentle breeze quiet peace soft dream slow warm home",
]


def load_songs(workdir: Path, count: int) -> list[tuple[str, bytes, str]]:
    """(file name, audio bytes, lyrics) for `count` songs: real 4Q MP3s when available, else synthetic."""
    data = os.environ.get("MOOD_LABELER_DATA")
    paths = sorted(Path(data, "4q").rglob("*.mp3"))[:count] if data and Path(data, "4q").is_dir() else []
    if not paths:
        import pyarrow.parquet as pq
        from bench_label import make_catalogue

        catalogue = pq.read_table(make_catalogue(workdir, max(count, 8), 30.0)).to_pylist()
        paths = [Path(r["audio_uri"]) for r in catalogue[:count]]
    return [(p.name, p.read_bytes(), LYRICS[i % len(LYRICS)]) for i, p in enumerate(paths)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def run_level(url: str, songs: list[tuple[str, bytes, str]], clients: int, max_requests: int, seconds: float) -> dict:
    """`clients` threads send requests back to back until the request budget or the time is spent."""
    import requests

    lock = threading.Lock()
    issued = [0]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    if issued[0] >= max_requests or time.perf_counter() >= deadline:
                        return
                    i = issued[0]
                    issued[0] += 1
                name, audio, lyrics = songs[i % len(songs)]
                t0 = time.perf_counter()
                response = session.post(f"{url}/label", files={"audio": (name, audio)},
                                        data={"lyrics": lyrics, "song_id": f"bench-{i}"}, timeout=120)
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - start
    return {
        "clients": clients, "requests": len(latencies), "seconds": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 2) if wall > 0 else 0.0,
        "p50_ms": round(1000 * percentile(latencies, 50), 1), "p95_ms": round(1000 * percentile(latencies, 95), 1),
        "statuses": statuses,
    }


def max_size_wav(workdir: Path, limit_mb: float) -> bytes:
    """A 16-bit stereo 44.1 kHz WAV (music-like: tones and noise) just under `limit_mb` with the form around it."""
    import numpy as np
    import soundfile as sf

    path = workdir / f"max-{limit_mb:g}mb.wav"
    if not path.exists():
        seconds = int((limit_mb * 1024 * 1024 - 64 * 1024) / (44100 * 2 * 2))
        t = np.arange(seconds * 44100) / 44100
        rng = np.random.default_rng(0)
        mono = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) / 2 + 0.05 * rng.standard_normal(t.size)
        sf.write(path, np.stack([mono, mono[::-1]], axis=1).astype(np.float32), 44100, subtype="PCM_16")
    return path.read_bytes()


def replica_pid() -> int:
    """The LabelService replica's process id, from the GCS actor table of *this* driver's Ray.

    Why not `ray.util.state.list_actors`: it goes through the dashboard (off here) and, without an
    address, picks any Ray running on the machine.
    """
    from ray._private.state import actors  # debugging API; the public state API needs the dashboard

    alive = [a for a in actors(actor_state_name="ALIVE").values()
             if "LabelService" in (a.get("ActorClassName") or a.get("Name") or "")]
    if len(alive) != 1:
        raise RuntimeError(f"expected one LabelService replica, found {len(alive)}")
    return int(alive[0]["Pid"])


def upload_memory(url: str, audio: bytes, clients: int) -> dict:
    """Peak and settled RSS of the replica while `clients` upload `audio` at the same moment."""
    import psutil
    import requests

    proc = psutil.Process(replica_pid())
    before = proc.memory_info().rss
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(proc.memory_info().rss)
            done.wait(0.02)

    barrier = threading.Barrier(clients)

    def upload(i: int) -> int:
        barrier.wait()
        return requests.post(f"{url}/label", files={"audio": (f"max-{i}.wav", audio)},
                             data={"lyrics": LYRICS[i % len(LYRICS)], "song_id": f"max-{i}"}, timeout=900).status_code

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(upload, range(clients)))
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    after = proc.memory_info().rss
    gb = 1024 ** 3
    return {"clients": clients, "upload_mb": round(len(audio) / 2**20, 1), "seconds": round(wall, 1),
            "statuses": {s: statuses.count(s) for s in set(statuses)}, "rss_before_gb": round(before / gb, 3),
            "rss_peak_gb": round(max(samples + [after]) / gb, 3), "rss_after_gb": round(after / gb, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=None, help="a bundle (default: untrained cpu-small architecture)")
    parser.add_argument("--workdir", default="bench/results/bench_serve")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--requests", type=int, default=48, help="most requests per client count")
    parser.add_argument("--seconds", type=float, default=60.0, help="most seconds per client count")
    parser.add_argument("--songs", type=int, default=8, help="distinct songs cycled through")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--replica-cpus", type=float, default=1.0)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.05)
    parser.add_argument("--featurise-threads", type=int, default=2)
    parser.add_argument("--upload-memory", type=int, default=0, metavar="N",
                        help="instead: replica RSS under N concurrent maximum-size uploads")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import ray
    from bench_label import make_bundle
    from ray import serve

    from labeler.serve import ServeConfig, start

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or make_bundle(workdir)
    songs = load_songs(workdir, args.songs)
    config = ServeConfig(bundle=bundle, port=free_port(), replicas=args.replicas, replica_cpus=args.replica_cpus,
                         max_batch_size=args.max_batch_size, batch_wait_timeout_s=args.batch_wait_timeout_s,
                         featurise_threads=args.featurise_threads)
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    url = f"http://127.0.0.1:{config.port}"
    result: dict = {"config": {k: v for k, v in vars(args).items() if k != "json"},
                    "songs": [name for name, _, _ in songs], "mean_upload_kb": round(sum(len(a) for _, a, _ in songs) / len(songs) / 1024, 1),
                    "loadavg_before": os.getloadavg(), "levels": []}
    try:
        t0 = time.perf_counter()
        start(config, name="bench")
        result["startup_s"] = round(time.perf_counter() - t0, 1)
        warm = run_level(url, songs, 1, 2, 120.0)  # loads lazily-initialised kernels and caches
        if warm["statuses"] != {200: 2}:
            raise RuntimeError(f"the server did not answer the warm-up: {warm}")
        if args.upload_memory:
            level = upload_memory(url, max_size_wav(workdir, config.max_upload_mb), args.upload_memory)
            result["upload_memory"] = level
            print(f"{level['clients']} x {level['upload_mb']} MB uploads: replica RSS {level['rss_before_gb']} GB -> "
                  f"peak {level['rss_peak_gb']} GB, after {level['rss_after_gb']} GB, {level['seconds']} s, "
                  f"statuses {level['statuses']}", file=sys.stderr, flush=True)
        for clients in ([] if args.upload_memory else args.clients):
            level = run_level(url, songs, clients, args.requests, args.seconds)
            result["levels"].append(level)
            print(f"{clients:>2} clients: {level['requests']:>3} requests in {level['seconds']:6.1f} s = "
                  f"{level['requests_per_s']:6.2f} req/s, p50 {level['p50_ms']:7.0f} ms, p95 {level['p95_ms']:7.0f} ms, "
                  f"statuses {level['statuses']}", file=sys.stderr, flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    result["loadavg_after"] = os.getloadavg()
    print(json.dumps(result, indent=2) if args.json else json.dumps(result.get("upload_memory") or result["levels"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
