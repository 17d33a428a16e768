"""The stacked lyrics branch at training time: fit the lexical model on the training folds, then the
stacker (network logits + lexical logits -> logits) on the validation fold.

Both fits run outside the Ray Train loop: the lexical model is a small convex fit on one CPU and the
stacker must see the *finished* network's validation logits, so both
run in `train.select.finalise.finalise_fold`, after checkpoint selection and before temperature scaling. The test
fold plays no part in either fit.

A fusion run reuses its lyrics fold bundle's lexical model (fitted on the same training folds) and
fits a new stacker on the fused model's validation logits, so fusion consumes the stacked branch;
rows without lyrics keep the network's logits.
"""

from __future__ import annotations

import copy

import numpy as np


def fit_lexical(cache_uri: str, train_folds: list[int], mode: str, n_classes: int, C: float, seed: int,
                source=None):
    """A LexicalModel on the training folds' cleaned lyrics (the cache's `lyrics_text`, rows with lyrics);
    with a `source` (train.data.lexical_source.LexicalSource) its words are learnt there and only the map from
    the source's classes to these is fitted on the training folds (LexicalModel.fit_transfer)."""
    from labeler.lyrics.lexical import LexicalConfig, LexicalModel  # noqa: PLC0415
    from train.cache.feature_cache import iter_numpy, target_column  # noqa: PLC0415
    from train.fit.loop import targets_for_mode  # noqa: PLC0415

    target = target_column(mode)  # `label_index` in mode classes, else `quadrant`
    texts: list[str] = []
    ys: list[np.ndarray] = []
    for batch in iter_numpy(cache_uri, train_folds, ["lyrics_text", target], "lyrics"):
        texts.extend(str(t) for t in batch["lyrics_text"])
        ys.append(targets_for_mode(batch[target], mode))
    if not texts:
        raise ValueError(f"no training rows with lyrics in folds {train_folds} for the lexical model")
    if source is not None:
        return LexicalModel.fit_transfer(source.texts, source.y, len(source.classes), texts, np.concatenate(ys),
                                         n_classes, LexicalConfig(C=float(C)), seed=seed)
    return LexicalModel.fit(texts, np.concatenate(ys), n_classes, LexicalConfig(C=float(C)), seed=seed)


def lexical_for_fold(fold_config: dict, run: dict):
    """The fold's lexical model (without a stacker yet), or None when the branch is not stacked."""
    from labeler.bundle.store import load_bundle  # noqa: PLC0415

    branch, preset = fold_config["branch"], fold_config["preset"]  # preset: the run's train.fit.presets.TrainPreset
    if branch == "lyrics" and preset.lexical:
        return fit_lexical(run["cache_uri"], fold_config["split"]["train"], fold_config["mode"],
                           int(fold_config["n_classes"]), preset.lexical_C, preset.seed, run.get("lexical_source"))
    if branch == "fusion" and fold_config.get("lyrics_bundle"):
        return unstacked(load_bundle(fold_config["lyrics_bundle"]).lexical)
    return None


def unstacked(lexical):
    """A copy of a lyrics bundle's lexical model without its stacker (None for None): a fusion fits its
    own stacker on its own validation logits, and the lyrics bundle's model stays as it is."""
    if lexical is None:
        return None
    lexical = copy.copy(lexical)
    lexical.stack_weight = lexical.stack_bias = None
    return lexical


def stack(lexical, logits: np.ndarray, texts: list[str]) -> np.ndarray:
    """Stacked logits for the rows with text (lexical has a fitted stacker); others unchanged."""
    rows = np.array([bool(t) for t in texts], dtype=bool)
    out = np.array(logits, dtype=np.float32, copy=True)
    if rows.any():
        out[rows] = lexical.stacked(out[rows], lexical.logits([t for t, r in zip(texts, rows) if r]))
    return out


def fit_stack(lexical, val_logits: np.ndarray, val_texts: list[str], val_y: np.ndarray) -> np.ndarray:
    """Fit the stacker on the validation rows that have lyrics; return the validation logits to fit the
    temperature on: cross-fitted stacked logits where there are lyrics (see
    LexicalModel.cross_fitted_stack), the network's elsewhere."""
    rows = np.array([bool(t) for t in val_texts], dtype=bool)
    if rows.sum() < 2:
        raise ValueError(f"the stacker needs at least 2 validation rows with lyrics, got {int(rows.sum())}")
    texts = [t for t, r in zip(val_texts, rows) if r]
    net, lex, y = np.asarray(val_logits)[rows], lexical.logits(texts), np.asarray(val_y)[rows]
    lexical.fit_stack(net, lex, y)
    out = np.array(val_logits, dtype=np.float32, copy=True)
    out[rows] = lexical.cross_fitted_stack(net, lex, y)
    return out


def fit_equal_stack(lexical, val_logits: np.ndarray, val_texts: list[str], val_y: np.ndarray,
                    network_share: float) -> np.ndarray:
    """Set the stacker to a fixed product of experts: logits = network_share x network + (1 - network_share)
    x lexical / T_lex, with T_lex the lexical model's own temperature fitted on the validation rows with lyrics.

    The fitted stacker (`fit_stack`, 2 n_classes^2 + n_classes weights) needs more validation songs than
    a small catalogue has (bench/README.md), while calibrated log-probabilities added with fixed shares
    fit one number.
    `network_share` is the network's share of the sources: 2/3 for a late fusion of two branches whose
    calibrated log-probabilities were averaged (each source then weighs 1/3). Returns the stacked
    validation logits (the temperature fitted there is the only number learnt, so no cross-fitting).
    """
    from train.select.calibration import fit_temperature  # noqa: PLC0415

    rows = np.array([bool(t) for t in val_texts], dtype=bool)
    lex = lexical.logits([t for t, r in zip(val_texts, rows) if r])
    t_lex = fit_temperature(lex, np.asarray(val_y)[rows])
    n = lexical.n_classes
    lexical.set_stack(np.hstack([network_share * np.eye(n), (1.0 - network_share) / t_lex * np.eye(n)]), np.zeros(n))
    return stack(lexical, val_logits, val_texts)


def stack_and_calibrate(lexical, val: tuple, test: tuple, names: list[str], equal_share: float | None = None) -> dict:
    """The end of every fold: stack (if the branch is stacked), fit the temperature and the ambiguity
    threshold on validation, score the test fold. `val`/`test` are (logits, targets, texts or None).

    Shared by a branch's fold (train.select.finalise.finalise_fold) and a late/gated fusion winner
    (train.select.fusion.finalise_fusion_fold), so both bundles carry the same parts: lexical stacker,
    temperature, ambiguous threshold. `equal_share`: the fixed stacker of `fit_equal_stack` instead of
    the fitted one. Returns {"metrics", "calibration", "temperature", "threshold", "val_macro_f1"} (the
    last of the validation logits the temperature was fitted on: cross-fitted where stacked).
    """
    from train.score.metrics import classification_metrics, macro_f1  # noqa: PLC0415
    from train.select.calibration import (  # noqa: PLC0415
        ambiguity_summary,
        ambiguity_threshold,
        apply_temperature,
        expected_calibration_error,
        fit_temperature,
    )

    (val_logits, val_y, val_texts), (test_logits, test_y, test_texts) = val, test
    if lexical is not None and equal_share is not None:
        val_logits = fit_equal_stack(lexical, val_logits, val_texts, val_y, equal_share)
        test_logits = stack(lexical, test_logits, test_texts)
    elif lexical is not None:  # combination fitted on validation, then the temperature
        val_logits = fit_stack(lexical, val_logits, val_texts, val_y)
        test_logits = stack(lexical, test_logits, test_texts)
    temperature = fit_temperature(val_logits, val_y)  # validation only; the test fold is scored below
    threshold = ambiguity_threshold(apply_temperature(val_logits, temperature), val_y)  # validation only too
    probs = apply_temperature(test_logits, temperature)
    metrics = classification_metrics(test_y, probs, names)
    calibration = {
        "temperature": temperature,
        "ece_before": expected_calibration_error(apply_temperature(test_logits, 1.0), test_y),
        "ece_after": expected_calibration_error(probs, test_y),
        "accuracy": metrics["accuracy"],
        **ambiguity_summary(probs, test_y, threshold),
    }
    val_f1 = macro_f1(val_y, val_logits, len(names)) if len(val_y) else float("nan")
    return {"metrics": metrics, "calibration": calibration, "temperature": temperature, "threshold": threshold,
            "val_macro_f1": float(val_f1)}
