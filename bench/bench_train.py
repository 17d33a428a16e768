"""Training throughput per worker (samples/s) for each branch under the cpu-small and becmer presets.

Not a test. Times a few optimizer steps of the exact models and optimizers `train.fit.loop` builds
(class-weighted loss, per-branch learning rates, frozen lower encoder layers, bf16 autocast on GPU),
on random inputs shaped as the preset's features, without Ray: this is the per-worker cost that the
cluster multiplies. Encoders are built from their configs (BERT-base-sized for becmer, MiniLM-L6 for
cpu-small) so nothing is downloaded; weights do not change the cost.

    .venv/bin/python bench/bench_train.py --steps 3 --presets cpu-small,becmer --branches audio,lyrics,fusion
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def encoder_config(preset):
    from transformers import AutoConfig, BertConfig

    if preset.lyrics_encoder == "MiniLM":
        from labeler.lyrics.pretrained import resolve_encoder

        return AutoConfig.from_pretrained(resolve_encoder("MiniLM"))
    return BertConfig()  # bert-base-uncased geometry (12 x 768)


def bench(preset_name: str, branch: str, steps: int, device: torch.device, batch_size: int | None) -> dict:
    from labeler.models import EmotionModel, ModelConfig
    from train.fit.configs import featurizer_config, model_config
    from train.fit.loop import forward_kwargs, freeze_lyrics_layers, make_optimizer, param_groups
    from train.fit.presets import get_preset
    from train.fit.step import train_epoch

    preset = get_preset(preset_name, **({"batch_size": batch_size} if batch_size else {}))
    model = EmotionModel(ModelConfig.from_dict(model_config(preset, branch, "4Q")),
                         encoder_config=encoder_config(preset) if branch != "audio" else None)
    freeze_lyrics_layers(model, preset)
    model.to(device).train()
    opt = make_optimizer(param_groups(model, preset, {}), preset)
    fz = featurizer_config(preset)
    b = preset.batch_size
    batch = {
        "log_mel": torch.randn(b, fz.n_frames, fz.n_mels).half(),
        "input_ids": torch.randint(1000, 2000, (b, preset.max_tokens), dtype=torch.int32),
        "attention_mask": torch.ones(b, preset.max_tokens, dtype=torch.int8),
        "has_audio": torch.ones(b, dtype=torch.bool), "has_lyrics": torch.ones(b, dtype=torch.bool),
    }
    y = torch.randint(0, 4, (b,), device=device)
    amp = device.type == "cuda"

    constant = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)

    def run(n: int) -> None:  # the production step (train.fit.step), on the same synthetic batch n times
        train_epoch(model, ((forward_kwargs(batch, branch, device), y) for _ in range(n)), opt, constant,
                    grad_clip=preset.grad_clip, device=device, amp=amp)

    run(1)  # warm-up (allocations, cuDNN autotune)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    run(steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"preset": preset_name, "branch": branch, "device": device.type, "batch_size": b,
            "frames": fz.n_frames, "tokens": preset.max_tokens, "steps": steps,
            "samples_per_s": round(steps * b / seconds, 2), "s_per_step": round(seconds / steps, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--presets", default="cpu-small,becmer")
    parser.add_argument("--branches", default="audio,lyrics,fusion")
    parser.add_argument("--batch-size", type=int, default=None, help="override the presets' batch size")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for preset in args.presets.split(","):
            for branch in args.branches.split(","):
                row = bench(preset, branch, args.steps, device, args.batch_size)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| preset | branch | device | batch | frames | tokens | samples/s/worker | s/step |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['branch']} | {r['device']} | {r['batch_size']} | {r['frames']} | {r['tokens']} | "
              f"{r['samples_per_s']} | {r['s_per_step']} |")


if __name__ == "__main__":
    main()
