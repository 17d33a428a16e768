"""Real-data lyrics benchmark: 5-fold CV on MoodyLyrics4Q of the stacked lyrics branch, its parts and
the simple baselines.

Data: the MoodyLyrics4Q slice in ../shared/data/moodylyrics4q (1,354 songs with lyrics), read by the
project's adapter, folds by train.data.folds.assign_folds (k=5, seed 8848, stratified). For each test
fold the next fold is the validation fold (every choice: C of the logistic regressions, head epoch,
stacker, temperature); the other three train. The test fold is scored once.

Models (all on the same split):

- `tfidf_lr` (baseline): train.score.baselines.lyrics_baseline, word 1-2 grams, C=1.
- `minilm_frozen_head128_lr` (baseline): frozen all-MiniLM-L6-v2, masked mean over the first
  128-token window, + train.score.baselines.vector_baseline (C=1).
- `minilm_frozen_windows_lr` (baseline): the same on whole-lyric windows (mean of window vectors).
- `minilm_frozen_head_tail{128,256,512}_lr`: the same on one window truncated head+tail (the first and
  last halves) to 128, 256 or 512 tokens, the policy whole-lyric windows replace.
- `lexical` (branch part): labeler.lyrics.lexical.LexicalModel (word 1-2 + char_wb 2-5 TF-IDF), C on validation.
- `encoder_windows` (branch part): the frozen windowed encoder + the branch's linear head trained by
  the training code (AdamW, class weights, warmup + cosine, early stopping on validation macro-F1;
  bench.realdata_cv.train_network) on the cached song vectors, which is what the Ray Train loop does
  with a frozen encoder in eval mode, minus the repeated encoder passes.
- `stacked` (the branch): LexicalModel.fit_stack on the validation fold's logits of the two parts,
  then the temperature on the validation fold's cross-fitted stacked logits (train.select.stacking's order).

Calibration: besides each fold's ECE (271 test songs), the ECE of all 1,354 out-of-fold predictions
pooled, and beside each its floor (`realdata_cv.ece_floor`: the ECE a perfectly calibrated model with
the same probabilities shows on that many songs, from finite-sample noise alone).

The frozen encoder's window vectors are computed once with the product's tokenisation
(labeler.lyrics.text.tokenize with max_windows) and encoder (LyricsEncoder pooling) and cached under
--cache; the window cap (--windows) is applied to the cached list with labeler.lyrics.text.window_starts.
Labelling cost: songs/s of the frozen encoder on one thread, whole-lyric windows vs one 128-token
window (`--cost`).

    MOOD_LABELER_DATA=../shared/data .venv/bin/python bench/bench_real_lyrics.py --cache /tmp/lyrics
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

from bench.realdata_cv import ModelResult, cv_baseline, ece_floor, results_table, splits, train_network  # noqa: E402
from labeler.contracts.labels import class_names  # noqa: E402

WINDOW_TOKENS, OVERLAP, ALL_WINDOWS = 128, 16, 32


def load(data: Path, seed: int):
    from train.data.datasets.moodylyrics4q import prepare_moodylyrics4q
    from train.data.folds import assign_folds

    return assign_folds(prepare_moodylyrics4q(data / "moodylyrics4q"), k=5, seed=seed)


def encoder_and_tokenizer():
    from labeler.lyrics.pretrained import load_tokenizer
    from labeler.models import LyricsEncoder, LyricsEncoderConfig

    return LyricsEncoder(LyricsEncoderConfig(name_or_path="MiniLM"), pretrained=True).eval(), load_tokenizer("MiniLM")


def pooled(encoder, ids: np.ndarray, mask: np.ndarray, batch: int) -> np.ndarray:
    """The frozen encoder's masked-mean vector of every row of token ids, `batch` rows at a time."""
    with torch.inference_mode():
        return np.concatenate([encoder._pool(torch.as_tensor(ids[i:i + batch], dtype=torch.long),
                                             torch.as_tensor(mask[i:i + batch], dtype=torch.long)).float().numpy()
                               for i in range(0, len(ids), batch)])


def window_vectors(texts: list[str], cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n_windows, hidden), owner song index (n_windows,)) of every window of every song, cached."""
    from labeler.lyrics.text import LyricsConfig, tokenize

    path = cache / f"windows{WINDOW_TOKENS}_overlap{OVERLAP}.npz"
    if path.exists():
        data = np.load(path)
        return data["emb"], data["owner"]
    encoder, tokenizer = encoder_and_tokenizer()
    cfg = LyricsConfig(max_tokens=WINDOW_TOKENS, max_windows=ALL_WINDOWS, window_overlap=OVERLAP)
    ids, mask = tokenize(tokenizer, texts, cfg)
    ids = ids.reshape(-1, WINDOW_TOKENS)
    mask = mask.reshape(-1, WINDOW_TOKENS)
    used = np.flatnonzero(mask.any(axis=1))
    owner = used // ALL_WINDOWS
    t0 = time.perf_counter()
    emb = pooled(encoder, ids[used], mask[used], batch=64)
    print(f"encoded {len(used)} windows of {len(texts)} songs in {time.perf_counter() - t0:.0f} s")
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, emb=emb, owner=owner)
    return emb, owner


def head_tail_vectors(texts: list[str], cache: Path, tokens: int) -> np.ndarray:
    """One vector per song from the head+tail truncation at `tokens` (the one-window policy), cached."""
    from labeler.lyrics.text import LyricsConfig, tokenize

    path = cache / f"head_tail{tokens}.npy"
    if path.exists():
        return np.load(path)
    encoder, tokenizer = encoder_and_tokenizer()
    ids, mask = tokenize(tokenizer, texts, LyricsConfig(max_tokens=tokens, long_policy="head_tail"))
    t0 = time.perf_counter()
    out = pooled(encoder, ids, mask, batch=32)
    print(f"encoded {len(texts)} songs truncated head+tail to {tokens} tokens in {time.perf_counter() - t0:.0f} s")
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def song_vectors(emb: np.ndarray, owner: np.ndarray, n_songs: int, max_windows: int) -> np.ndarray:
    """Mean of each song's windows, at most `max_windows` spread evenly (the product's cap)."""
    out = np.zeros((n_songs, emb.shape[1]), dtype=np.float32)
    for song in range(n_songs):
        rows = np.flatnonzero(owner == song)
        if len(rows) > max_windows:
            rows = rows[np.linspace(0, len(rows) - 1, max_windows).round().astype(int)]
        out[song] = emb[rows].mean(axis=0)
    return out


class CachedEncoder(torch.nn.Module):
    """Stands in for the frozen LyricsEncoder: `input_ids[:, 0]` is a song's row in the cached vectors."""

    def __init__(self, vectors: np.ndarray):
        super().__init__()
        self.register_buffer("vectors", torch.as_tensor(vectors))
        self.embedding_dim = vectors.shape[1]

    def forward(self, input_ids, attention_mask):
        return self.vectors[input_ids[:, 0].long()]


def head_model(vectors: np.ndarray, dropout: float):
    from transformers import BertConfig

    from labeler.models import EmotionModel, LyricsEncoderConfig, ModelConfig

    tiny = BertConfig(vocab_size=8, hidden_size=vectors.shape[1], num_hidden_layers=1, num_attention_heads=1,
                      intermediate_size=8)
    model = EmotionModel(ModelConfig(branch="lyrics", mode="4Q", audio=None, dropout=dropout,
                                     lyrics=LyricsEncoderConfig(name_or_path="cached"), freeze_branches=True),
                         encoder_config=tiny)
    model.lyrics_encoder = CachedEncoder(vectors)
    return model


def cv_stacked(texts, vectors, y, folds, k, classes, preset, lexical_grid, log=print) -> list[ModelResult]:
    """The branch's parts and the stacked branch, with every choice on the validation fold."""
    from labeler.lyrics.lexical import LexicalModel
    from train.score.metrics import classification_metrics
    from train.select.calibration import apply_temperature, expected_calibration_error, fit_temperature

    results = {name: ModelResult(name, "branch") for name in ("stacked", "lexical", "encoder_windows")}
    pooled = {name: ([], []) for name in results}  # out-of-fold test probabilities and targets, every fold
    timing = {name: 0.0 for name in results}
    inputs = {"input_ids": np.arange(len(y))[:, None], "attention_mask": np.ones((len(y), 1), dtype=np.int64)}
    for test_fold, tr, va, te in splits(folds, k):
        t0 = time.perf_counter()
        best = None
        for config in lexical_grid:  # n-grams and C of the lexical model, chosen on validation macro-F1
            lex = LexicalModel.fit([texts[i] for i in tr], y[tr], len(classes), config)
            val = lex.logits([texts[i] for i in va])
            f1 = classification_metrics(y[va], apply_temperature(val, 1.0), classes)["macro_f1"]
            if best is None or f1 > best[0]:
                best = (f1, config, lex, val)
        _, config, lex, lex_val = best
        lex_test = lex.logits([texts[i] for i in te])
        timing["lexical"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        model, curves, _ = train_network(lambda: head_model(vectors, preset.head_dropout), inputs, y, tr, va, preset,
                                         classes, seed=preset.seed + test_fold, log=lambda s: None)
        from bench.realdata_cv import logits_of

        enc_val, enc_test = logits_of(model, inputs, va), logits_of(model, inputs, te)
        timing["encoder_windows"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        lex.fit_stack(enc_val, lex_val, y[va])
        st_val, st_test = lex.cross_fitted_stack(enc_val, lex_val, y[va]), lex.stacked(enc_test, lex_test)
        timing["stacked"] += time.perf_counter() - t0
        for name, val, test in (("lexical", lex_val, lex_test), ("encoder_windows", enc_val, enc_test),
                                ("stacked", st_val, st_test)):
            temperature = fit_temperature(val, y[va])
            probs = apply_temperature(test, temperature)
            metrics = classification_metrics(y[te], probs, classes)
            metrics["temperature"] = temperature
            metrics["ece_floor"] = ece_floor(probs)
            pooled[name][0].append(probs)
            pooled[name][1].append(y[te])
            results[name].folds[str(test_fold)] = metrics
        results["encoder_windows"].curves[str(test_fold)] = curves
        log(f"  fold {test_fold}: lexical C={config.C} char={config.char_max > 0} {results['lexical'].folds[str(test_fold)]['macro_f1']:.3f}, "
            f"encoder {results['encoder_windows'].folds[str(test_fold)]['macro_f1']:.3f}, "
            f"stacked {results['stacked'].folds[str(test_fold)]['macro_f1']:.3f}")
    for name, r in results.items():
        probs, targets = np.concatenate(pooled[name][0]), np.concatenate(pooled[name][1])
        r.pooled_ece = {"ece": expected_calibration_error(probs, targets), "floor": ece_floor(probs)}
        log(f"  {name}: ECE per fold {np.mean([m['ece'] for m in r.folds.values()]):.3f} (floor of a calibrated model "
            f"on a fold: {np.mean([m['ece_floor'] for m in r.folds.values()]):.3f}); over all {len(targets)} "
            f"out-of-fold songs {r.pooled_ece['ece']:.3f} (floor {r.pooled_ece['floor']:.3f})")
        r.seconds = timing[name] + (timing["lexical"] + timing["encoder_windows"] if name == "stacked" else 0.0)
    return [results["stacked"], results["lexical"], results["encoder_windows"]]


def labelling_cost(texts: list[str], windows: int, n: int = 64) -> dict:
    """Frozen-encoder songs/s on one thread: one 128-token window vs whole-lyric windows (cap `windows`)."""
    from labeler.lyrics.text import LyricsConfig, tokenize
    from labeler.models import LyricsEncoder, LyricsEncoderConfig

    torch.set_num_threads(1)
    _, tokenizer = encoder_and_tokenizer()
    out = {}
    for name, cfg, wt in (("head_tail_128", LyricsConfig(max_tokens=128), 0),
                          (f"windows_128x{windows}", LyricsConfig(max_tokens=128, max_windows=windows, window_overlap=OVERLAP), 128)):
        encoder = LyricsEncoder(LyricsEncoderConfig(name_or_path="MiniLM", window_tokens=wt), pretrained=True).eval()
        ids, mask = tokenize(tokenizer, texts[:n], cfg)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, n, 16):
                encoder(torch.as_tensor(ids[start:start + 16], dtype=torch.long), torch.as_tensor(mask[start:start + 16], dtype=torch.long))
        out[name] = n / (time.perf_counter() - t0)
        print(f"labelling cost {name}: {out[name]:.2f} songs/s on one thread")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("MOOD_LABELER_DATA", "../shared/data"))
    parser.add_argument("--cache", default="bench/results/lyrics", help="folder of the cached frozen window vectors")
    parser.add_argument("--windows", type=int, default=8, help="window cap per song (LyricsConfig.max_windows)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--cost", action="store_true", help="also time the frozen encoder per song (labelling cost)")
    args = parser.parse_args(argv)

    from labeler.lyrics.text import clean_lyrics
    from train.fit.presets import get_preset
    from train.score.baselines import lyrics_baseline, vector_baseline

    torch.set_num_threads(args.threads)
    preset = get_preset("cpu-small")
    classes, k = class_names("4Q"), 5
    started = time.perf_counter()
    table = load(Path(args.data), preset.seed)
    raw = table.column("lyrics").to_pylist()
    texts = [clean_lyrics(t) for t in raw]
    y = np.asarray(table.column("quadrant").to_pylist(), dtype=np.int64) - 1
    folds = np.asarray(table.column("fold").to_pylist(), dtype=np.int64)
    print(f"MoodyLyrics4Q: {len(y)} songs, per quadrant {np.bincount(y, minlength=4).tolist()}, k={k}")

    emb, owner = window_vectors(texts, Path(args.cache))
    head = song_vectors(emb, owner, len(y), 1)
    whole = song_vectors(emb, owner, len(y), args.windows)
    from labeler.lyrics.lexical import LexicalConfig

    grid = [LexicalConfig(char_max=0, C=c) for c in (3.0, 10.0)] + [LexicalConfig(C=c) for c in (3.0, 10.0, 30.0)]
    results = cv_stacked(texts, whole, y, folds, k, classes, preset, grid)
    results[0].note = f"lexical + encoder logits, LR fitted on validation; {args.windows} x 128-token windows"
    results[1].note = "TF-IDF word 1-2 (C 3, 10) or + char_wb 2-5 (C 3, 10, 30), chosen on validation"
    results[2].note = f"frozen MiniLM, mean of <= {args.windows} windows, linear head (AdamW, early stop on val)"
    for name, fn, x, note in (
        ("tfidf_lr", lyrics_baseline, raw, "word 1-2 grams, C=1"),
        ("minilm_frozen_head128_lr", vector_baseline, head, "first 128-token window, C=1"),
        ("minilm_frozen_windows_lr", vector_baseline, whole, f"mean of <= {args.windows} windows, C=1"),
        *((f"minilm_frozen_head_tail{n}_lr", vector_baseline, head_tail_vectors(texts, Path(args.cache), n),
           f"head+tail truncation to {n} tokens, C=1") for n in (128, 256, 512)),
    ):
        results.append(cv_baseline(name, fn, x, y, folds, k, classes, log=lambda s: None))
        results[-1].note = note
    print()
    print(f"## MoodyLyrics4Q, {k}-fold CV ({len(y)} songs, total {time.perf_counter() - started:.0f} s)")
    print()
    print(results_table(results))
    branch = results[0].summary["macro_f1"]["mean"]
    print("\nthe stacked branch's lead in mean macro-F1 (target >= 0.03 over each baseline): " + ", ".join(
        f"{r.name} {branch - r.summary['macro_f1']['mean']:+.4f}" for r in results if r.kind == "baseline"))
    for r in results:
        if r.pooled_ece:
            print(f"{r.name}: ECE of all {len(y)} out-of-fold predictions {r.pooled_ece['ece']:.3f} "
                  f"(a calibrated model's floor {r.pooled_ece['floor']:.3f})")
    if args.cost:
        labelling_cost(texts, args.windows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
