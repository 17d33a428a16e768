"""Inference throughput of the fused model (songs/s), per model size, on CPU (and GPU when present).

One song = a 30-s chorus clip at 32 kHz, hop 320 -> 3001 frames x 64 mels, plus 512 lyric tokens
(the worst case: a full window of lyrics). Models are randomly initialised apart from the lyrics
encoder (MiniLM from labeler.lyrics.pretrained when installed, else a tiny BERT): speed does not depend on
the weights. Runs the model exactly as the Predictor does (eval, inference_mode, bf16 autocast on
CUDA), on a fixed batch, after one warm-up batch.

    .venv/bin/python bench/bench_inference.py                 # CPU (all cores torch sees), GPU if available
    .venv/bin/python bench/bench_inference.py --threads 2 --batch-size 4 --seconds 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import nullcontext

import torch

from labeler.models import AudioCnnConfig, EmotionModel, LyricsEncoderConfig, ModelConfig, count_parameters

FRAMES, MELS, TOKENS = 3001, 64, 512
SIZES = [("Cnn6", 0.25), ("Cnn6", 1.0), ("Cnn10", 1.0)]


def lyrics_encoder_config() -> tuple[LyricsEncoderConfig, str]:
    """MiniLM when the offline package is there, else a tiny BERT built on the spot."""
    try:
        from labeler.lyrics.pretrained import resolve_encoder

        resolve_encoder("MiniLM")
        return LyricsEncoderConfig(name_or_path="MiniLM"), "MiniLM-L6"
    except Exception as exc:  # noqa: BLE001 - the bench still runs, and says which encoder it used
        import sys

        sys.path.insert(0, "tests")
        from tiny_models import tiny_bert_dir

        print(f"MiniLM unavailable ({exc}); using a tiny BERT")
        return LyricsEncoderConfig(name_or_path=tiny_bert_dir(tempfile.mkdtemp())), "tiny-BERT"


def bench(model: EmotionModel, device: torch.device, batch_size: int, seconds: float) -> tuple[float, int]:
    g = torch.Generator().manual_seed(0)
    log_mel = torch.randn(batch_size, FRAMES, MELS, generator=g).to(device)
    ids = torch.randint(1000, 20000, (batch_size, TOKENS), generator=g).to(device)
    mask = torch.ones(batch_size, TOKENS, dtype=torch.long, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def step():
        with torch.inference_mode(), autocast:
            model(log_mel=log_mel, input_ids=ids, attention_mask=mask).logits.float().cpu()

    step()  # warm-up (allocator, kernels, oneDNN primitive cache)
    n, start = 0, time.perf_counter()
    while True:
        step()
        n += batch_size
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and n >= batch_size * 2:
            return n / elapsed, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0, help="minimum timed seconds per model")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--cpu-only", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lyrics, lyrics_name = lyrics_encoder_config()
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, batch {args.batch_size}, "
          f"song = {FRAMES}x{MELS} log-mel + {TOKENS} tokens")
    header = f"{'device':<8} {'audio':<12} {'lyrics':<10} {'params':>8} {'songs/s':>9} {'ms/song':>9} {'songs':>6}"
    print(header)
    print("-" * len(header))
    for arch, width in SIZES:
        cfg = ModelConfig(branch="fusion", mode="4Q", audio=AudioCnnConfig(arch=arch, width=width), lyrics=lyrics)
        model = EmotionModel.from_pretrained_branches(cfg).eval()
        for device in devices:
            model.to(device)
            rate, n = bench(model, device, args.batch_size, args.seconds)
            print(f"{device.type:<8} {arch + ' w' + str(width):<12} {lyrics_name:<10} "
                  f"{count_parameters(model) / 1e6:>7.1f}M {rate:>9.2f} {1000 / rate:>9.1f} {n:>6}", flush=True)


if __name__ == "__main__":
    main()
