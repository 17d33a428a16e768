"""Real-data audio benchmark: 5-fold CV on the 160 4Q clips: MusiCNN, Cnn6 from scratch, Hybrid, log-mel stats + LR.

Data: the 4Q slice in ../shared/data/4q (160 30-s MP3 clips, 40 a quadrant), read by the project's
adapter (train.data.datasets.fourq), folds by train.data.folds.assign_folds (k=5, seed 8848, stratified). Each
test fold is scored once; the next fold is the validation fold (early stopping, checkpoint choice
and temperature); the other three (96 clips) train.

Features: the project's Featurizer with the `cpu-small` geometry (16 kHz, 8-s chorus found
automatically, window 512, hop 320, 64 mels -> 401 frames) plus the handcrafted descriptors for the
Hybrid branch, computed once for all models (2 processes). Networks follow `cpu-small` (quarter-width
Cnn6, embedding 128, AdamW 1e-3, warmup + cosine, SpecAugment, class weights) with 12 epochs,
patience 4 by default (about 1.2 CPU-seconds per 16-clip step). The Hybrid branch is the same Cnn6
plus the descriptor vector, standardised with the training rows' mean and std. The baseline
(train.score.baselines.audio_baseline) is fitted on the same training rows, and so is a second one, the
same logistic regression on the descriptors alone (train.score.baselines.vector_baseline), which shows how
much of the Hybrid branch's gain the descriptors make.

    MOOD_LABELER_DATA=../shared/data .venv/bin/python bench/bench_real_audio.py
    .venv/bin/python bench/bench_real_audio.py --data ../shared/data --epochs 4 --report-dir /tmp/audio
    .venv/bin/python bench/bench_real_audio.py --models logmel_stats_lr --features-cache /tmp/4q_feats.npz

MusiCNN (issue 17): the clips in the musicnn front end (16 kHz, 96 mels, 3-s patches), the frozen
pretrained `MSD_musicnn` (from the musicnn wheel, read by labeler.musicnn) runs its frozen trunk over
every patch once (cached with --musicnn-cache-dir, resumable), and the branch trains on those features
exactly as `train` does from the feature cache: frozen (`musicnn`, `musicnn_hybrid`) or with its
Dense 1506 -> 200 layer fine-tuned (`musicnn_tuned`), beside a logistic regression on the frozen
network's mean+std pooled embeddings (`musicnn_stats_lr`). `--musicnn-clips 10,20,30` compares clip
lengths; with `--musicnn-derive` they are the central 3/6/10 patches of one 30-s featurisation:

    .venv/bin/python bench/bench_real_audio.py --models musicnn,musicnn_hybrid,musicnn_stats_lr,logmel_stats_lr,descriptors_lr \
        --musicnn-clips 10,20,30 --musicnn-derive --musicnn-cache-dir /tmp/musicnn --features-cache /tmp/4q.npz

Prints progress, then a Markdown table (macro-F1 mean ± std over folds, accuracy, ECE, wall and CPU
time of each model; featurisation time separately). 160 clips are a development slice: the spread
over folds is wide, and the figures are not the models' accuracy on real catalogues.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere in the checkout

from bench.realdata_cv import cv_baseline, cv_network, preset_summary, report_results, results_table  # noqa: E402
from labeler.contracts.labels import class_names  # noqa: E402

MODELS = ("cnn6_scratch", "hybrid", "logmel_stats_lr", "descriptors_lr", "musicnn", "musicnn_tuned", "musicnn_hybrid",
          "musicnn_stats_lr")


def featurizer_config(preset, clip_seconds: float):
    from labeler.audio import FeaturizerConfig

    return FeaturizerConfig(sample_rate=preset.sample_rate, clip_seconds=clip_seconds, window_size=preset.window_size,
                            hop_size=preset.hop_size, n_mels=preset.n_mels, fmin=preset.fmin, fmax=preset.fmax,
                            descriptors=True)


def _featurise_chunk(args: tuple[dict, list[str], list[str]]) -> dict:
    from labeler.audio import Featurizer

    config, song_ids, uris = args
    torch.set_num_threads(1)
    return Featurizer(config)({"song_id": np.asarray(song_ids, dtype=object), "audio_uri": np.asarray(uris, dtype=object)})


def featurise(table, config, workers: int) -> dict[str, np.ndarray]:
    """log_mel, descriptors and audio_error for every row, in row order, with `workers` processes."""
    ids, uris = table.column("song_id").to_pylist(), table.column("audio_uri").to_pylist()
    chunks = [(config.to_dict(), ids[i:i + 8], uris[i:i + 8]) for i in range(0, len(ids), 8)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(_featurise_chunk, chunks))
    return {key: np.concatenate([p[key] for p in parts]) for key in ("log_mel", "descriptors", "audio_error")}


def cached_features(path: str | None, table, config, workers: int) -> dict[str, np.ndarray]:
    """Featurise, or reuse an .npz written by an earlier run with the same featurizer and songs."""
    ids = np.asarray(table.column("song_id").to_pylist(), dtype=object)
    if path and Path(path).exists():
        with np.load(path, allow_pickle=False) as cached:
            if str(cached["fingerprint"]) == config.fingerprint() and cached["song_id"].tolist() == ids.tolist():
                print(f"features reused from {path}")
                errors = cached["audio_error"]
                return {"log_mel": cached["log_mel"], "descriptors": cached["descriptors"],
                        "audio_error": np.asarray([e or None for e in errors.tolist()], dtype=object)}
            print(f"{path} was made with other settings or songs: featurising again")
    feats = featurise(table, config, workers)
    if path:
        np.savez(path, fingerprint=config.fingerprint(), song_id=ids.astype(str), log_mel=feats["log_mel"],
                 descriptors=feats["descriptors"], audio_error=np.asarray([e or "" for e in feats["audio_error"]], dtype=str))
    return feats


def _central_order(patches: int) -> list[int]:
    """Patch indices from the centre outwards: any prefix of this order holds a centred window."""
    centre = (patches - 1) / 2
    return sorted(range(patches), key=lambda i: (abs(i - centre), i))


def musicnn_features(path: str | None, table, clip_seconds: float, model_id: str, workers: int,
                     batch_patches: int = 32, positions: int | None = None) -> dict:
    """Frozen musicnn trunk features (n, patches, 1506) + descriptors of every clip, with their costs.

    The clips go through the project's Featurizer with the musicnn front end (chorus window of
    `clip_seconds`, found automatically in the 30-s 4Q clips when shorter), then through the frozen
    encoder in batches of `batch_patches` patches under torch.inference_mode, one patch position at
    a time from the centre outwards. Cached in `path` (an .npz keyed by the featurizer fingerprint,
    the model id and the songs) after featurising and after every patch position, so an interrupted
    run resumes where it stopped; `done` says which positions are embedded (NaN elsewhere).
    `positions`: embed only the central `positions` patch positions (all by default).
    """
    from labeler.audio import FeaturizerConfig
    from labeler.musicnn.model import TRUNK_DIM, load_musicnn

    config = FeaturizerConfig.musicnn(clip_seconds=clip_seconds, descriptors=True)
    key = f"{config.fingerprint()}-{model_id}-trunk"
    ids = np.asarray(table.column("song_id").to_pylist(), dtype=object)
    out = None
    if path and Path(path).exists():
        with np.load(path, allow_pickle=False) as cached:
            if str(cached["key"]) == key and cached["song_id"].tolist() == ids.tolist():
                print(f"musicnn features resumed from {path}")
                out = {name: cached[name] for name in cached.files}
    if out is None:
        t0 = time.perf_counter()
        feats = featurise(table, config, workers)
        out = {"key": key, "song_id": ids.astype(str), "log_mel": feats["log_mel"], "descriptors": feats["descriptors"],
               "audio_error": np.asarray([e or "" for e in feats["audio_error"]], dtype=str),
               "featurise_seconds": time.perf_counter() - t0, "patches": config.patches,
               "patch_features": np.full((len(ids), config.patches, TRUNK_DIM), np.nan, dtype=np.float32),
               "done": np.zeros(config.patches, dtype=bool), "embed_seconds": 0.0, "embed_cpu_seconds": 0.0}
        if path:
            np.savez(path, **out)
    net = None
    for p in _central_order(config.patches)[:positions]:
        if out["done"][p]:
            continue
        net = net or load_musicnn(model_id)
        column = out["log_mel"][:, p * 187:(p + 1) * 187]
        t1, c1 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            emb = np.concatenate([net.trunk(torch.from_numpy(column[i:i + batch_patches].astype(np.float32))).numpy()
                                  for i in range(0, len(column), batch_patches)])
        out["patch_features"][:, p] = emb
        out["done"][p] = True
        out["embed_seconds"] = float(out["embed_seconds"]) + time.perf_counter() - t1
        out["embed_cpu_seconds"] = float(out["embed_cpu_seconds"]) + time.process_time() - c1
        print(f"musicnn {model_id} {clip_seconds:g}-s clips: patch {p} of {len(ids)} clips embedded "
              f"({int(out['done'].sum())}/{config.patches}; {float(out['embed_cpu_seconds']):.0f} CPU-s so far)", flush=True)
        if path:
            np.savez(path, **out)
    result = {k: v for k, v in out.items() if k != "log_mel"}
    result["audio_error"] = np.asarray([e or None for e in out["audio_error"].tolist()], dtype=object)
    return result


def central_patches(features: dict, clip_seconds: float) -> dict:
    """A shorter clip's features from a longer clip's: its central whole patches (3 s each), costs scaled.

    The descriptors stay those of the longer clip (they are the Hybrid's, not the encoder's, input).
    """
    from labeler.audio import FeaturizerConfig

    n = FeaturizerConfig.musicnn(clip_seconds=clip_seconds).patches
    total = int(features["patches"])
    start = (total - n) // 2
    if not features["done"][start:start + n].all():
        raise SystemExit(f"the central {n} patches are not all embedded yet: run the longest clip to the end first")
    per_patch = n / max(1, int(features["done"].sum()))
    return {**features, "patch_features": features["patch_features"][:, start:start + n], "patches": n,
            "embed_seconds": float(features["embed_seconds"]) * per_patch,
            "embed_cpu_seconds": float(features["embed_cpu_seconds"]) * per_patch, "derived": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("MOOD_LABELER_DATA", "../shared/data"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--clip-seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads and featurising processes")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--features-cache", default=None,
                        help="an .npz to reuse the featurised clips from (written when absent; keyed by the featurizer fingerprint)")
    parser.add_argument("--report-dir", default=None, help="also write train.score.report's report (JSON, Markdown, plots) here")
    parser.add_argument("--musicnn-clips", default="30", help="chorus clip lengths (s) of the musicnn models, e.g. 10,20,30")
    parser.add_argument("--musicnn-model", default="MSD_musicnn", help="MSD_musicnn or MTT_musicnn")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train every musicnn network fold this many times from different seeds (mean over all)")
    parser.add_argument("--musicnn-derive", action="store_true",
                        help="featurise the 30-s clips once; each clip length takes their central patches "
                             "(a centred window instead of the automatic chorus: cheaper on a loaded machine)")
    parser.add_argument("--musicnn-cache-dir", default=None,
                        help="a folder for the musicnn embeddings (.npz per clip length; reused when present)")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown or not models:
        parser.error(f"unknown model(s) {', '.join(unknown) or '(none given)'}: expected some of {', '.join(MODELS)}")

    from labeler.audio import DESCRIPTOR_DIM
    from labeler.models import AudioCnnConfig, EmotionModel, ModelConfig
    from train.data.datasets.fourq import prepare_4q
    from train.data.folds import assign_folds
    from train.fit.presets import get_preset
    from train.score.baselines import audio_baseline, vector_baseline

    torch.set_num_threads(args.threads)
    preset = get_preset("cpu-small", epochs=args.epochs, patience=args.patience, clip_seconds=args.clip_seconds)
    classes = class_names("4Q")
    k = 5
    started = time.perf_counter()
    table = assign_folds(prepare_4q(Path(args.data) / "4q"), k=k, seed=preset.seed)

    t0, c0 = time.perf_counter(), time.process_time()
    config = featurizer_config(preset, args.clip_seconds)
    feats = cached_features(args.features_cache, table, config, workers=args.threads)
    feat_seconds = time.perf_counter() - t0
    errors = [e for e in feats["audio_error"] if e]
    print(f"featurised {table.num_rows} clips ({config.n_frames} frames x {config.n_mels} mels + {DESCRIPTOR_DIM} descriptors) "
          f"in {feat_seconds:.0f} s wall; {len(errors)} errors {errors[:3]}")
    ok = np.asarray([not e for e in feats["audio_error"]])
    log_mel = feats["log_mel"][ok].astype(np.float32)
    descriptors = feats["descriptors"][ok].astype(np.float32)
    y = np.asarray(table.column("quadrant").to_pylist(), dtype=np.int64)[ok] - 1
    folds = np.asarray(table.column("fold").to_pylist(), dtype=np.int64)[ok]
    print(f"4Q: {len(y)} clips, per quadrant {np.bincount(y, minlength=4).tolist()}, k={k}")

    def audio_config(descriptor_dim: int) -> ModelConfig:
        cnn = AudioCnnConfig(arch="Cnn6", n_mels=preset.n_mels, width=preset.audio_width,
                             embedding_dim=preset.audio_embedding_dim, dropout=preset.audio_dropout,
                             spec_augment=preset.spec_augment, descriptor_dim=descriptor_dim)
        return ModelConfig(branch="audio", mode="4Q", audio=cnn, lyrics=None, dropout=preset.head_dropout)

    def descriptor_stats(model, train_idx):
        d = descriptors[train_idx]
        model.audio_encoder.set_descriptor_stats(d.mean(axis=0), d.std(axis=0))

    note = f"{args.clip_seconds:g}-s clips, width {preset.audio_width}, <= {preset.epochs} epochs"
    results = []
    if "cnn6_scratch" in models:
        results.append(cv_network("cnn6_scratch", lambda: EmotionModel(audio_config(0)), {"log_mel": log_mel},
                                  y, folds, k, preset, classes))
        results[-1].note = note
    if "hybrid" in models:
        results.append(cv_network("hybrid", lambda: EmotionModel(audio_config(DESCRIPTOR_DIM)),
                                  {"log_mel": log_mel, "descriptors": descriptors}, y, folds, k, preset, classes,
                                  prepare=descriptor_stats))
        results[-1].note = note + f", + {DESCRIPTOR_DIM} descriptors"
    if "logmel_stats_lr" in models:
        results.append(cv_baseline("logmel_stats_lr", audio_baseline, log_mel, y, folds, k, classes))
        results[-1].note = "mean/std/delta-std per mel band"
    if "descriptors_lr" in models:
        results.append(cv_baseline("descriptors_lr", vector_baseline, descriptors, y, folds, k, classes))
        results[-1].note = f"the Hybrid branch's {DESCRIPTOR_DIM} descriptors alone"

    clips = sorted(float(c) for c in args.musicnn_clips.split(",") if c.strip())
    base = None
    for clip in clips:
        if not {"musicnn", "musicnn_tuned", "musicnn_hybrid", "musicnn_stats_lr"} & set(models):
            break
        if args.musicnn_derive:
            if base is None:
                from labeler.audio import FeaturizerConfig

                path = str(Path(args.musicnn_cache_dir) / f"4q_{args.musicnn_model}_30s.npz") if args.musicnn_cache_dir else None
                base = musicnn_features(path, table, 30.0, args.musicnn_model, workers=args.threads,
                                        positions=FeaturizerConfig.musicnn(clip_seconds=max(clips)).patches)
            mf = central_patches(base, clip)
        else:
            path = str(Path(args.musicnn_cache_dir) / f"4q_{args.musicnn_model}_{clip:g}s.npz") if args.musicnn_cache_dir else None
            mf = musicnn_features(path, table, clip, args.musicnn_model, workers=args.threads)
        m_ok = np.asarray([not e for e in mf["audio_error"]])
        if not np.array_equal(m_ok, ok):
            raise SystemExit(f"musicnn featurising failed on other clips than the PANNs front end: {np.flatnonzero(m_ok != ok)}")
        feats = mf["patch_features"][ok].astype(np.float32)
        m_desc = mf["descriptors"][ok].astype(np.float32)
        window = ("centre of the 30-s clip" if int(mf["patches"]) < int(base["patches"]) else "whole 30-s clip") \
            if mf.get("derived") else "chorus"
        cost = (f"{clip:g}-s {window}, {int(mf['patches'])} patches; featurise {float(mf['featurise_seconds']):.0f} s + "
                f"encoder {float(mf['embed_cpu_seconds']):.0f} CPU-s for {len(ok)} clips")
        m_preset = dataclasses.replace(preset, audio_arch="MusiCNN", musicnn_clip_seconds=clip)

        def musicnn_config(descriptor_dim: int, tune_top: bool = False, m_preset=m_preset) -> ModelConfig:
            head = AudioCnnConfig(arch="MusiCNN", n_mels=96, embedding_dim=m_preset.audio_embedding_dim,
                                  dropout=m_preset.audio_dropout, descriptor_dim=descriptor_dim, encoder=args.musicnn_model,
                                  tune_top=tune_top)
            return ModelConfig(branch="audio", mode="4Q", audio=head, lyrics=None, dropout=m_preset.head_dropout)

        def m_descriptor_stats(model, train_idx, m_desc=m_desc):
            model.audio_encoder.set_descriptor_stats(m_desc[train_idx].mean(axis=0), m_desc[train_idx].std(axis=0))

        def pretrained(model):
            """The trunk's features are given (as the feature cache gives them in training), but its top
            (the Dense that `musicnn_tuned` fine-tunes, and the BatchNorms around it) runs: load the weights."""
            model.audio_encoder.cnn.load_pretrained()
            return model

        if "musicnn" in models:
            results.append(cv_network(f"musicnn_{clip:g}s", lambda: pretrained(EmotionModel(musicnn_config(0))),
                                      {"patch_features": feats}, y, folds, k, m_preset, classes, seeds=args.seeds))
            results[-1].note = f"frozen {args.musicnn_model}, mean+std pooled, head; {cost}"
        if "musicnn_tuned" in models:
            results.append(cv_network(f"musicnn_tuned_{clip:g}s", lambda: pretrained(EmotionModel(musicnn_config(0, True))),
                                      {"patch_features": feats}, y, folds, k, m_preset, classes, seeds=args.seeds))
            results[-1].note = f"{args.musicnn_model}, Dense 1506 -> 200 fine-tuned, mean+std pooled, head; {cost}"
        if "musicnn_hybrid" in models:
            results.append(cv_network(f"musicnn_hybrid_{clip:g}s", lambda: pretrained(EmotionModel(musicnn_config(DESCRIPTOR_DIM))),
                                      {"patch_features": feats, "descriptors": m_desc}, y, folds, k, m_preset, classes,
                                      prepare=m_descriptor_stats, seeds=args.seeds))
            results[-1].note = f"MusiCNN + {DESCRIPTOR_DIM} descriptors; {cost}"
        if "musicnn_stats_lr" in models:
            from labeler.musicnn.model import load_musicnn

            with torch.inference_mode():  # the frozen network's penultimate embeddings from the trunk's features
                emb = load_musicnn(args.musicnn_model).top(torch.from_numpy(feats.reshape(-1, feats.shape[2])))
            emb = emb.numpy().reshape(len(feats), feats.shape[1], -1)
            pooled = np.concatenate([np.nanmean(emb, axis=1), np.nanstd(emb, axis=1)], axis=1)  # silent patches: NaN
            results.append(cv_baseline(f"musicnn_stats_lr_{clip:g}s", vector_baseline, pooled, y, folds, k, classes))
            results[-1].note = f"LR on the same mean+std pooled embeddings; {clip:g}-s {window}"

    total = time.perf_counter() - started
    print()
    print(f"## 4Q audio, {k}-fold CV ({len(y)} clips, torch threads {args.threads}, total {total:.0f} s, "
          f"featurising {feat_seconds:.0f} s wall / {time.process_time() - c0:.0f} s CPU in the main process)")
    print()
    print(results_table(results))
    if args.report_dir:
        from train.score.report import write_report

        provenance = {"benchmark": "bench/bench_real_audio.py", "clips": len(y), "k": k, "seconds": round(total, 1),
                      "featurise_seconds": round(feat_seconds, 1), "featurizer": config.to_dict(),
                      "preset": preset_summary(preset, ("name", "audio_width", "audio_embedding_dim", "epochs", "patience",
                                                        "lr_audio", "lr_head", "batch_size", "seed"))}
        write_report(args.report_dir, report_results(results, classes, provenance))
        print(f"\nreport written to {args.report_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
