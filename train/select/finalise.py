"""After training: the chosen checkpoint of each fold becomes a calibrated, scored bundle; one is exported.

`finalise_fold` is the first and only look at the test fold: the checkpoint chosen on validation is
stacked with the lexical model where the lyrics branch has one, calibrated (temperature and the
`ambiguous` threshold fitted on the validation split, `train.select.stacking`/`train.select.calibration`), scored
on the test fold and saved as the fold's bundle. For fusion, `choose_fusion` then lets late and
gated fusion (`train.select.fusion`) compete with the fused head on validation. `export_best` copies the
fold bundle with the best *validation* macro-F1 to `<output>/bundle`: choosing by test score would
make the reported test metrics optimistic, so the cross-validated test summary is stored beside it.
"""

from __future__ import annotations

import numpy as np

from labeler.io import storage


def _predict_folds(bundle, cache_uri: str, folds: list[int], branch: str, mode: str, descriptors: bool,
                   texts: bool = False):
    """{fold: (logits, targets, lyrics texts or None)} for `folds`, in one streamed pass through the model."""
    import torch  # noqa: PLC0415

    from train.cache.feature_cache import branch_columns, branch_requirement, caches_embeddings, read_split  # noqa: PLC0415
    from train.fit.loop import predict_logits  # noqa: PLC0415

    extra = ["fold"] + (["lyrics_text"] if texts else [])
    embeddings = caches_embeddings(bundle.featurizer)
    ds = read_split(cache_uri, folds, branch_columns(branch, descriptors, mode, embeddings) + extra,
                    branch_requirement(branch))
    seen: list[np.ndarray] = []
    seen_texts: list[str] = []

    def batches():
        for batch in ds.iter_batches(batch_size=64, batch_format="numpy"):
            seen.append(batch.pop("fold"))
            if texts:
                seen_texts.extend(str(t) for t in batch.pop("lyrics_text"))
            yield {name: torch.as_tensor(np.asarray(v)) for name, v in batch.items()}

    logits, y = predict_logits(bundle.model, batches(), branch, mode, torch.device("cpu"), amp=False)
    fold_of = np.concatenate(seen) if seen else np.zeros(0, dtype=np.int64)
    all_texts = np.array(seen_texts, dtype=object) if texts else None
    return {f: (logits[fold_of == f], y[fold_of == f], list(all_texts[fold_of == f]) if texts else None) for f in folds}


def finalise_fold(checkpoint_uri: str, fold_config: dict, run: dict, out_uri: str) -> dict:
    """Calibrate on validation, score the untouched test fold, write the fold's calibrated bundle."""
    from labeler.bundle.store import load_bundle, save_bundle  # noqa: PLC0415
    from train.select.stacking import lexical_for_fold, stack_and_calibrate  # noqa: PLC0415

    branch, mode, split = fold_config["branch"], fold_config["mode"], fold_config["split"]
    descriptors = bool(fold_config.get("descriptor_stats"))
    bundle = load_bundle(storage.join(checkpoint_uri, "bundle"))
    (val_fold,), (test_fold,) = split["val"], split["test"]
    lexical = lexical_for_fold(fold_config, run)
    predicted = _predict_folds(bundle, run["cache_uri"], [val_fold, test_fold], branch, mode, descriptors,
                               texts=lexical is not None)
    done = stack_and_calibrate(lexical, predicted[val_fold], predicted[test_fold], bundle.model.config.class_names())
    metrics, calibration, temperature, threshold = (done[k] for k in ("metrics", "calibration", "temperature", "threshold"))
    save_bundle(out_uri, bundle.model, bundle.featurizer, bundle.lyrics, tokenizer=bundle.tokenizer,
                model_id=bundle.model_id,
                provenance={**run["provenance"], "branch": branch, "fold": fold_config["fold"], "split": split,
                            "checkpoint": checkpoint_uri},
                metrics={"val_macro_f1": fold_config.get("val_macro_f1"), "test": metrics, "calibration": calibration},
                temperature=temperature, descriptor_stats=fold_config.get("descriptor_stats"),
                ambiguous_threshold=threshold, lexical=lexical)
    return {"metrics": metrics, "calibration": calibration, "val_macro_f1": done["val_macro_f1"]}


def choose_fusion(entry: dict, fold: int, cfg: dict, run: dict, done: dict, bundle_uri: str) -> None:
    """Head vs late vs gated fusion on the validation fold (train.select.fusion); the winner becomes the fold's bundle."""
    from train.select.fusion import finalise_fusion_fold  # noqa: PLC0415

    fused = finalise_fusion_fold(cfg, run, done["metrics"], done["val_macro_f1"], bundle_uri)
    winner = fused["winner"]
    entry["folds"][fold] = fused["metrics"]
    entry["selection"][fold]["head_checkpoint_val_macro_f1"] = entry["selection"][fold]["val_macro_f1"]
    entry["selection"][fold]["val_macro_f1"] = fused["selection"]["val_macro_f1"][winner]
    entry["selection"][fold]["fusion"] = {"winner": winner, **fused["selection"]}
    for name, metrics in fused["variants"].items():
        entry.setdefault("variants", {}).setdefault(name, {})[fold] = metrics
    if fused["calibration"] is not None:  # a late winner: its own temperature and threshold (train.select.fusion)
        entry["calibration"][fold] = fused["calibration"]


def export_best(entry: dict, branch: str, bundle_uri: str, provenance: dict, results: dict) -> str:
    """Copy the fold bundle with the best validation macro-F1 to `bundle_uri`, with provenance and CV metrics."""
    from labeler.bundle.store import load_bundle, save_bundle  # noqa: PLC0415
    from train.score.metrics import summarise_folds  # noqa: PLC0415

    fold = max(entry["selection"], key=lambda f: entry["selection"][f]["val_macro_f1"])
    source = load_bundle(entry["bundles"][fold])
    summary = {name: summarise_folds(list(e["folds"].values())) for name, e in results["branches"].items()}
    save_bundle(
        bundle_uri, source.model, source.featurizer, source.lyrics, tokenizer=source.tokenizer,
        model_id=source.model_id,
        provenance={**provenance, "branch": branch, "exported_fold": fold, "source_bundle": entry["bundles"][fold]},
        metrics={"val_macro_f1": entry["selection"][fold]["val_macro_f1"], "test": entry["folds"][fold],
                 "calibration": entry["calibration"][fold], "cv_test_summary": summary},
        temperature=float(entry["calibration"][fold]["temperature"]),
        descriptor_stats=source.descriptor_stats, lexical=source.lexical,
        ambiguous_threshold=source.config.get("ambiguous_threshold"),
    )
    return bundle_uri
