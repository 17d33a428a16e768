"""The labelling driver at catalogue scale: a re-run over a catalogue of N songs whose output partition
already holds N - TODO labels (issue #22, item 7). Not a test.

The benchmark writes the catalogue (song ids, null audio and lyrics) and the label partition directly,
in parts of 2,048 rows as the job commits them (no audio, no model), then runs `label_catalogue` in a
fresh process on a local Ray of 2 CPUs and reports that driver's peak RSS and the time of each driver
step: validating the catalogue (schema + unique ids), planning (reading the partition's song ids and
the anti-join), labelling the TODO missing songs (Ray Data; all rows are errors here, no audio or lyrics),
and finishing (one-row-per-song check, counts, completion record).

    MOOD_LABELER_DATA=... .venv/bin/python bench/bench_driver_scale.py --rows 10000000 --todo 1000 --workdir /tmp/scale

Data are cached in --workdir (rebuilt only when missing); each --run labels the TODO songs again after
removing their rows (the last part).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PART_ROWS = 2048


def _ids(start: int, stop: int):
    import pyarrow as pa

    return pa.array([f"song-{i:09d}" for i in range(start, stop)], pa.string())


def build(workdir: Path, rows: int, todo: int) -> dict:
    """Catalogue + bundle + partition with rows - todo labels; returns the paths (cached in meta.json)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from labeler.bundle.info import read_bundle_info
    from labeler.contracts.schemas import LABELS, conform
    from labeler.label_job import OutputLayout
    from tests.test_pipeline import make_bundle

    meta_path = workdir / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["rows"] == rows and meta["todo"] == todo:
            return meta
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    bundle = make_bundle(workdir, model_id="scale")
    info = read_bundle_info(bundle)
    catalogue = workdir / "catalogue.parquet"
    schema = pa.schema([("song_id", pa.string()), ("audio_uri", pa.string()), ("lyrics", pa.string())])
    with pq.ParquetWriter(catalogue, schema) as writer:
        for start in range(0, rows, 1_000_000):
            ids = _ids(start, min(rows, start + 1_000_000))
            writer.write_table(pa.table([ids, pa.nulls(len(ids), pa.string()), pa.nulls(len(ids), pa.string())], schema=schema))
    layout = OutputLayout(str(workdir / "labels"), info.model_version)
    os.makedirs(layout.partition_uri)
    rng = np.random.default_rng(0)
    now = datetime.now(UTC)
    done = rows - todo
    for n, start in enumerate(range(0, done, PART_ROWS)):
        ids = _ids(start, min(done, start + PART_ROWS))
        k = len(ids)
        probs = rng.dirichlet(np.ones(4), size=k).astype(np.float32)
        cols = {"song_id": ids, "quadrant": pa.array([f"Q{q + 1}" for q in probs.argmax(1)], pa.string()),
                **{f"prob_q{j + 1}": pa.array(probs[:, j]) for j in range(4)},
                "model_id": pa.array([info.model_id] * k), "model_version": pa.array([info.model_version] * k),
                "labelled_at": pa.array([now] * k, pa.timestamp("us", tz="UTC"))}
        table = pa.table({f.name: cols.get(f.name, pa.nulls(k, f.type)) for f in LABELS.schema})
        pq.write_table(conform(table, LABELS), os.path.join(layout.partition_uri, f"part-bench-{n:08d}.parquet"))
    meta = {"rows": rows, "todo": todo, "bundle": bundle, "catalogue": str(catalogue), "output": str(workdir / "labels"),
            "partition": layout.partition_uri, "parts": n + 1}
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta


def run(meta: dict) -> dict:
    """In a fresh process: label the missing songs, timing each driver step; returns the figures."""
    import ray

    from labeler.label_job import driver
    from labeler.label_job import summary as summary_module

    for part in Path(meta["partition"]).glob("*.parquet"):
        if not part.name.startswith("part-bench-"):  # parts a previous --run committed
            part.unlink()
    times: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[name] = times.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    driver.validated_catalogue = timed("validate", driver.validated_catalogue)
    # read_partition runs in the driver (what is done) and in finish (the check): both count, as before the split
    driver.read_partition = summary_module.read_partition = timed("read_partition", driver.read_partition)
    driver.todo_filter = timed("anti_join", driver.todo_filter)
    driver.finish = timed("finish", driver.finish)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    t0 = time.perf_counter()
    summary = driver.label_catalogue(meta["catalogue"], meta["bundle"], meta["output"],
                                     driver.LabelJobConfig(featurise_batch_size=64, predict_batch_size=64))
    total = time.perf_counter() - t0
    ray.shutdown()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"rows": meta["rows"], "todo": meta["todo"], "parts": meta["parts"], "written": summary.written,
            "partition_rows": summary.partition_rows, "total_s": round(total, 1),
            **{f"{k}_s": round(v, 1) for k, v in times.items()}, "peak_rss_mib": round(peak)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--todo", type=int, default=1000)
    parser.add_argument("--workdir", default="bench/results/bench-driver-scale")
    parser.add_argument("--run-only", action="store_true", help=argparse.SUPPRESS)  # the fresh driver process
    args = parser.parse_args()
    workdir = Path(args.workdir)
    if args.run_only:
        print(json.dumps(run(json.loads((workdir / "meta.json").read_text()))))
        return
    t0 = time.perf_counter()
    meta = build(workdir, args.rows, args.todo)
    print(f"data ready in {time.perf_counter() - t0:.0f} s: {meta['rows']} catalogue rows, {meta['parts']} parts", flush=True)
    out = subprocess.run([sys.executable, __file__, "--run-only", "--workdir", str(workdir)], check=True,  # noqa: S603 - this script
                         capture_output=True, text=True)
    print(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
