"""Benchmark (not a test): one fold's training with its feature-cache splits read whole, once (pyarrow, handed
to Ray as in-memory blocks: the default under `materialize_mb`, train.cache.feature_cache.read_split) against read
through Ray Data every time (streamed from storage, `materialize_mb=0`), in the same run on the same cache.

Why: each Ray Data read is a new execution with seconds of fixed cost (listing, footer readers, read tasks),
which on small corpora outweighed the training steps (train.cache.feature_cache.in_memory). The ratio
streamed / in-memory is the figure to track; absolute seconds depend on the machine.

    .venv/bin/python bench/bench_trial_io.py --songs 80 --epochs 4 --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--songs", type=int, default=80)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--branch", default="audio", choices=("audio", "lyrics"))
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import ray

    from labeler.io import storage
    from synth import SynthConfig, synthesise
    from train.data.datasets.synth import prepare_synth
    from train.data.folds import assign_folds
    from train.fit.run import train

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    root = Path(tempfile.mkdtemp(prefix="bench_trial_io-"))
    try:
        synth = synthesise(SynthConfig(songs=args.songs, output=str(root / "synth"), seconds=5.0, formats=("wav",), seed=5))
        manifest_uri = str(root / "manifest.parquet")
        storage.write_parquet(assign_folds(prepare_synth(synth.output), k=4, seed=8848), manifest_uri)
        cache = str(root / "cache")  # shared: both runs train on the same cached features
        small = dict(clip_seconds=4.0, epochs=args.epochs, audio_epoch_factor=1.0, patience=args.epochs,
                     max_tokens=64, batch_size=8, lyrics_encoder="MiniLM")
        seconds = {}
        for name, limit in (("warm-up", 1024.0), ("streamed", 0.0), ("materialised", 1024.0)):
            started = time.perf_counter()
            train(manifest_uri, str(root / name), branch=args.branch, mode="4Q", preset="cpu-small", folds="0",
                  cache_uri=cache, materialize_mb=limit, **small)
            seconds[name] = round(time.perf_counter() - started, 1)
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    result = {"songs": args.songs, "epochs": args.epochs, "branch": args.branch, "seconds": seconds,
              "streamed_over_materialised": round(seconds["streamed"] / seconds["materialised"], 2)}
    print(json.dumps(result, indent=2) if args.json else
          f"{args.branch}, {args.songs} songs, {args.epochs} epochs: streamed {seconds['streamed']} s, "
          f"materialised {seconds['materialised']} s (x{result['streamed_over_materialised']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
