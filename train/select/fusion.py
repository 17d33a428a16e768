"""Which fusion a fold keeps: the trained head, late fusion or gated fusion, chosen on the validation fold.

The fusion head is trained on the training fold, where both branches have already fitted the songs,
so it can score below a single branch. Late fusion keeps both
branches as trained, calibrates each network on the *validation* fold (its own temperature: a lyrics
bundle's temperature belongs to its stacked logits, not to its network alone), and fits only a few
parameters over their calibrated log-probabilities there, where neither branch trained:

* `equal`:   z = (log p_audio + log p_lyrics) / 2, nothing fitted but the temperatures; where the lyrics
  branch has a lexical model, that is added as a third calibrated expert with the same weight
  (`train.select.stacking.fit_equal_stack`) instead of by a fitted stacker;
* `average`: z = w log p_audio + (1 - w) log p_lyrics, w on a grid of 0..1 by validation NLL (w = 0 or 1
  is a single branch: fusion never has to be worse than the better branch on validation);
* `logreg`:  a multinomial logistic regression on [log p_audio, log p_lyrics] (L2, C = 1);
* `gated`:   z = g log p_audio + (1 - g) log p_lyrics with g = sigmoid(u . [H_audio, H_lyrics] + c) per song.

The math is `labeler.models.LateFusion`'s, in numpy (`combine`); a test checks the two agree. Choosing
among candidates fitted on the validation fold by their score on that same fold would favour the most
flexible, so each late candidate is scored *finished* (temperatures, combiner and lexical stacker) by
cross-fitting inside the validation fold (fit on 4/5, predict the other 1/5, macro-F1 of the pooled
predictions, `cross_fitted_finished_f1`); the head's score is that of its finished validation logits
(its checkpoint chosen there, so if anything flattered). The fold keeps the simplest candidate within
one standard error of the best score (`one_standard_error`): on the small validation folds of a
development slice the scores' noise is larger than most gaps between them. The test fold is only
scored, never used to choose.

Functions work on any two branches' calibrated log-probabilities, so `bench/bench_fusion.py` uses them
over baseline branches too.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_softmax
from sklearn.model_selection import StratifiedKFold

from train.score.metrics import macro_f1

log = logging.getLogger(__name__)

LATE_KINDS: tuple[str, ...] = ("equal", "average", "logreg", "gated")
# The simplest first: the one-standard-error rule keeps the first within the tolerance of the best.
PREFERENCE: tuple[str, ...] = ("equal", "average", "gated", "logreg", "head")
# `equal` with a lexical model: the averaged network pair is 2 of the 3 experts.
EQUAL_NETWORK_SHARE = 2.0 / 3.0
AVERAGE_GRID = np.linspace(0.0, 1.0, 21)
ABSENT_CLASS_BIAS = -20.0


def calibrated_logprobs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return log_softmax(np.asarray(logits, dtype=np.float64) / float(temperature), axis=1)


def _entropy(logp: np.ndarray) -> np.ndarray:
    return -(np.exp(logp) * logp).sum(axis=1)


def combine(kind: str, params: dict, log_a: np.ndarray, log_l: np.ndarray) -> np.ndarray:
    """Fused logits of rows that have both modalities (LateFusion.forward's math)."""
    if kind in ("equal", "average"):
        w = float(params["audio_weight"])
        return w * log_a + (1.0 - w) * log_l
    if kind == "logreg":
        return np.concatenate([log_a, log_l], axis=1) @ np.asarray(params["weight"]).T + np.asarray(params["bias"])
    if kind == "gated":
        h = np.stack([_entropy(log_a), _entropy(log_l)], axis=1)
        g = expit(h @ np.asarray(params["gate_weight"], dtype=np.float64) + float(params["gate_bias"]))[:, None]
        return g * log_a + (1.0 - g) * log_l
    raise ValueError(f"unknown late fusion {kind!r}: expected one of {', '.join(LATE_KINDS)}")


def _nll(logits: np.ndarray, y: np.ndarray) -> float:
    return float(-log_softmax(logits, axis=1)[np.arange(len(y)), y].mean())


def fit(kind: str, log_a: np.ndarray, log_l: np.ndarray, y: np.ndarray, n_classes: int) -> dict:
    """Fit one late candidate on rows with both modalities; returns its parameters (JSON-able)."""
    y = np.asarray(y, dtype=np.int64)
    if kind == "equal":
        return {"audio_weight": 0.5}
    if kind == "average":
        losses = [_nll(combine("average", {"audio_weight": w}, log_a, log_l), y) for w in AVERAGE_GRID]
        best = min(range(len(AVERAGE_GRID)), key=lambda i: (round(losses[i], 9), abs(AVERAGE_GRID[i] - 0.5)))
        return {"audio_weight": float(AVERAGE_GRID[best])}
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

        weight = np.zeros((n_classes, 2 * n_classes))
        bias = np.full(n_classes, ABSENT_CLASS_BIAS)
        present = np.unique(y)
        if len(present) < 2:  # nothing to discriminate: predict the one class seen
            bias[present] = 0.0
            return {"weight": weight.tolist(), "bias": bias.tolist()}
        model = LogisticRegression(C=1.0, max_iter=2000).fit(np.concatenate([log_a, log_l], axis=1), y)
        if len(present) == 2:  # sklearn's binary form: one row for class 1
            coef = np.vstack([-model.coef_[0] / 2, model.coef_[0] / 2])
            intercept = np.array([-model.intercept_[0] / 2, model.intercept_[0] / 2])
        else:
            coef, intercept = model.coef_, model.intercept_
        weight[model.classes_] = coef
        bias[model.classes_] = intercept
        return {"weight": weight.tolist(), "bias": bias.tolist()}
    if kind == "gated":
        h = np.stack([_entropy(log_a), _entropy(log_l)], axis=1)

        def loss(theta: np.ndarray) -> float:
            g = expit(h @ theta[:2] + theta[2])[:, None]
            return _nll(g * log_a + (1.0 - g) * log_l, y) + 1e-3 * float(theta @ theta)

        theta = minimize(loss, np.zeros(3), method="L-BFGS-B").x
        return {"gate_weight": theta[:2].tolist(), "gate_bias": float(theta[2])}
    raise ValueError(f"unknown late fusion {kind!r}: expected one of {', '.join(LATE_KINDS)}")


def cross_fitted_macro_f1(kind: str, log_a: np.ndarray, log_l: np.ndarray, y: np.ndarray, n_classes: int,
                          n_splits: int = 5, seed: int = 8848) -> float:
    """Macro-F1 of out-of-fold predictions inside the validation rows (fit on the rest each time)."""
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y) if len(y) else np.zeros(0, dtype=np.int64)
    splits = min(n_splits, int(counts[counts > 0].min())) if len(y) else 0
    if splits < 2:
        return macro_f1(y, combine(kind, fit(kind, log_a, log_l, y, n_classes), log_a, log_l), n_classes)
    pred = np.zeros((len(y), n_classes))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*least populated class.*", category=UserWarning)
        for train, test in StratifiedKFold(splits, shuffle=True, random_state=seed).split(log_a, y):
            params = fit(kind, log_a[train], log_l[train], y[train], n_classes)
            pred[test] = combine(kind, params, log_a[test], log_l[test])
    return macro_f1(y, pred, n_classes)


def fused_logits(kind: str, params: dict, log_a: np.ndarray, log_l: np.ndarray, has_audio: np.ndarray,
                 has_lyrics: np.ndarray) -> np.ndarray:
    """Every row's logits: combined where both modalities are there, else the one branch it has."""
    a, t = np.asarray(has_audio, bool)[:, None], np.asarray(has_lyrics, bool)[:, None]
    return np.where(a & t, combine(kind, params, log_a, log_l), np.where(a, log_a, log_l))


def choose(log_a: np.ndarray, log_l: np.ndarray, y: np.ndarray, n_classes: int,
           head_val_macro_f1: float | None = None) -> dict:
    """Fit every late candidate on the validation rows with both modalities and pick the fusion to keep.

    The winner is the simplest candidate (PREFERENCE) within one standard error of the best validation
    score (`one_standard_error`). Returns {"winner", "val_macro_f1": {candidate: score}, "params":
    {late candidate: params}, "tolerance"}; the params are refitted on all those validation rows.
    """
    scores: dict[str, float] = {}
    params: dict[str, dict] = {}
    for kind in LATE_KINDS:
        scores[kind] = cross_fitted_macro_f1(kind, log_a, log_l, y, n_classes)
        params[kind] = fit(kind, log_a, log_l, y, n_classes)
    if head_val_macro_f1 is not None:
        scores["head"] = float(head_val_macro_f1)
    tolerance = one_standard_error(max(scores.values()), len(y))
    winner = simplest_within(scores, tolerance)
    return {"winner": winner, "val_macro_f1": scores, "params": params, "tolerance": tolerance}


def one_standard_error(score: float, n: int) -> float:
    """The standard error of a score near `score` measured on `n` songs, as for a proportion.

    A validation fold of 40 songs estimates macro-F1 only to about +-0.08, and the candidates' scores
    are not equally honest (the head's is the best of its epochs on that same fold, the late ones
    are cross-fitted), so the highest score alone rewards the most flexible candidate. The
    one-standard-error rule (Hastie, Tibshirani & Friedman, ESL 7.10) keeps the simplest candidate
    within this distance of the best; on a large validation fold it shrinks towards the plain argmax.
    Agresti-Coull's adjusted proportion (s n + 2) / (n + 4) keeps it above zero at a perfect score,
    where a small fold's 1.0 is exactly the overfit it must not trust.
    """
    if n <= 0:
        return 0.0
    s = (min(max(float(score), 0.0), 1.0) * n + 2.0) / (n + 4.0)
    return float(np.sqrt(s * (1.0 - s) / (n + 4.0)))


def simplest_within(scores: dict[str, float], tolerance: float) -> str:
    """The first candidate in PREFERENCE whose score is within `tolerance` of the best."""
    best = max(scores.values())
    return next(k for k in PREFERENCE if k in scores and scores[k] >= best - tolerance - 1e-9)


# --------------------------------------------------------------------------------- one fold of a run


def model_kind(kind: str) -> str:
    """The ModelConfig.fusion that holds a late candidate: average and logreg are both 'late'."""
    return "gated" if kind == "gated" else "late"


def set_params(late, kind: str, params: dict) -> None:
    """Write a fitted candidate's parameters into a labeler.models.LateFusion."""
    if kind in ("equal", "average"):
        late.set_average(params["audio_weight"])
    elif kind == "logreg":
        late.set_linear(params["weight"], params["bias"])
    elif kind == "gated":
        late.set_gate(params["gate_weight"], params["gate_bias"])
    else:
        raise ValueError(f"unknown late fusion {kind!r}: expected one of {', '.join(LATE_KINDS)}")


def late_model(fold_config: dict, kind: str, temperatures: tuple[float, float] = (1.0, 1.0)):
    """The fold's late/gated fusion model from its audio and lyrics bundles (combiner unset), each network
    divided by its temperature in `temperatures` (1, 1: the raw networks, as `branch_parts` needs them)."""
    from labeler.bundle.store import load_bundle  # noqa: PLC0415
    from labeler.models import EmotionModel, ModelConfig  # noqa: PLC0415

    audio, lyrics = load_bundle(fold_config["audio_bundle"]), load_bundle(fold_config["lyrics_bundle"])
    config = ModelConfig.from_dict({**fold_config["model"], "fusion": model_kind(kind), "freeze_branches": False})
    model = EmotionModel.late_from_branches(audio.model, lyrics.model, config, *temperatures)
    return model, audio, lyrics


def branch_parts(model, cache_uri: str, folds: list[int], mode: str, descriptors: bool,
                 embeddings: bool = False) -> dict:
    """Per row of `folds`: the two branches' calibrated log-probabilities, modality flags, target, fold
    and cleaned lyrics (`texts`, None where a row has none: what the stacked lyrics branch reads).

    `embeddings`: the audio branch is the frozen MusiCNN, whose cached patch embeddings replace the log-mel.
    """
    import torch  # noqa: PLC0415

    from train.cache.feature_cache import branch_columns, read_split, target_column  # noqa: PLC0415
    from train.fit.loop import forward_kwargs, targets_for_mode  # noqa: PLC0415

    columns = branch_columns("fusion", descriptors, mode, embeddings) + ["fold", "lyrics_text"]
    ds = read_split(cache_uri, folds, columns, None)
    out: dict[str, list] = {"log_a": [], "log_l": [], "has_audio": [], "has_lyrics": [], "y": [], "fold": [], "texts": []}
    model.eval()
    with torch.inference_mode():
        for batch in ds.iter_batches(batch_size=64, batch_format="numpy"):
            out["texts"].append(np.array([str(t) if ok else None for t, ok in zip(batch.pop("lyrics_text"),
                                                                                  batch["has_lyrics"])], dtype=object))
            batch = {name: torch.as_tensor(np.asarray(v)) for name, v in batch.items()}
            result = model(**forward_kwargs(batch, "fusion", torch.device("cpu")))
            out["log_a"].append(result.branch_logprobs[0].double().numpy())
            out["log_l"].append(result.branch_logprobs[1].double().numpy())
            out["has_audio"].append(result.has_audio.numpy())
            out["has_lyrics"].append(result.has_lyrics.numpy())
            out["y"].append(targets_for_mode(batch[target_column(mode)].numpy(), mode))
            out["fold"].append(batch["fold"].numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def _late_logits(kind: str, parts: dict, fit_rows: np.ndarray, n_classes: int) -> tuple[np.ndarray, dict, tuple]:
    """Fit the networks' temperatures and the candidate on `fit_rows` of `parts` (raw network
    log-probabilities, `branch_parts` of a model at temperatures 1); every row's fused logits."""
    from train.select.calibration import fit_temperature  # noqa: PLC0415

    y, has_a, has_l = parts["y"], parts["has_audio"], parts["has_lyrics"]
    temps = (fit_temperature(parts["log_a"][fit_rows & has_a], y[fit_rows & has_a]),
             fit_temperature(parts["log_l"][fit_rows & has_l], y[fit_rows & has_l]))
    log_a, log_l = calibrated_logprobs(parts["log_a"], temps[0]), calibrated_logprobs(parts["log_l"], temps[1])
    both = fit_rows & has_a & has_l
    params = fit(kind, log_a[both], log_l[both], y[both], n_classes)
    return fused_logits(kind, params, log_a, log_l, has_a, has_l), params, temps


def _stacked(kind: str, lexical, logits: np.ndarray, texts: list, y: np.ndarray, fit_idx: np.ndarray,
             apply_idx: np.ndarray) -> np.ndarray:
    """The candidate's lexical stacker (equal shares for `equal`, else fitted) on `fit_idx`, applied to `apply_idx`."""
    from train.select.stacking import fit_equal_stack, fit_stack, stack, unstacked  # noqa: PLC0415

    if lexical is None:
        return logits[apply_idx]
    lexical = unstacked(lexical)
    fit_texts = [texts[i] for i in fit_idx]
    try:
        if kind == "equal":
            fit_equal_stack(lexical, logits[fit_idx], fit_texts, y[fit_idx], EQUAL_NETWORK_SHARE)
        else:
            fit_stack(lexical, logits[fit_idx], fit_texts, y[fit_idx])
    except ValueError:  # too few rows with lyrics (or classes) in this part to fit a stacker: the networks'
        return logits[apply_idx]
    return stack(lexical, logits[apply_idx], [texts[i] for i in apply_idx])


def cross_fitted_finished_f1(kind: str, parts: dict, rows: np.ndarray, lexical, n_classes: int,
                             n_splits: int = 5, seed: int = 8848) -> float:
    """Macro-F1 of a *finished* late candidate on `rows` (the validation fold), by cross-fitting: the
    temperatures, the combiner and the lexical stacker fitted on 4/5 of the rows, applied to the other 1/5."""
    idx = np.flatnonzero(rows)
    y = parts["y"]
    counts = np.bincount(y[idx]) if len(idx) else np.zeros(0, dtype=np.int64)
    splits = min(n_splits, int(counts[counts > 0].min())) if len(idx) else 0
    if splits < 2:  # too small to cross-fit: the in-sample score
        logits, _, _ = _late_logits(kind, parts, rows, n_classes)
        return macro_f1(y[idx], _stacked(kind, lexical, logits, parts["texts"], y, idx, idx), n_classes)
    pred = np.zeros((len(idx), n_classes))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*least populated class.*", category=UserWarning)
        for train, held in StratifiedKFold(splits, shuffle=True, random_state=seed).split(idx, y[idx]):
            fit_rows = np.zeros(len(y), dtype=bool)
            fit_rows[idx[train]] = True
            logits, _, _ = _late_logits(kind, parts, fit_rows, n_classes)
            pred[held] = _stacked(kind, lexical, logits, parts["texts"], y, idx[train], idx[held])
    return macro_f1(y[idx], pred, n_classes)


def finalise_fusion_fold(fold_config: dict, run: dict, head_metrics: dict, head_val_macro_f1: float,
                         bundle_uri: str) -> dict:
    """Choose the fold's fusion on validation; if a late candidate wins, it replaces the head's bundle.

    Every candidate is compared finished, as it would label: the late ones with their own network
    temperatures, combiner and lexical stacker, cross-fitted inside the validation fold
    (`cross_fitted_finished_f1`); the head by the macro-F1 of its finished validation logits
    (`head_val_macro_f1`, from train.select.finalise.finalise_fold). Then each late candidate is fitted on the
    whole validation fold and finished as the head was (train.select.stacking.stack_and_calibrate): temperature
    and ambiguity threshold fitted on validation, test fold scored. So a late winner's bundle keeps the
    lexical model and its `ambiguous` threshold, like the head's.

    Returns {"winner", "selection" (validation scores, params, temperatures), "variants": {name: test
    metrics}, "metrics" and "calibration" (the winner's)}. Rows with neither modality are left out, as
    labelling leaves them unlabelled.
    """
    from labeler.bundle.store import save_bundle  # noqa: PLC0415
    from labeler.io import storage  # noqa: PLC0415
    from train.cache.feature_cache import caches_embeddings  # noqa: PLC0415
    from train.select.stacking import stack_and_calibrate, unstacked  # noqa: PLC0415

    mode, split = fold_config["mode"], fold_config["split"]
    (val_fold,), (test_fold,) = split["val"], split["test"]
    descriptors = bool(fold_config.get("descriptor_stats"))
    model, audio, lyrics = late_model(fold_config, "average")  # temperatures 1: the raw networks
    names = model.config.class_names()
    n_classes = len(names)
    parts = branch_parts(model, run["cache_uri"], [val_fold, test_fold], mode, descriptors,
                         caches_embeddings(audio.featurizer))
    usable = parts["has_audio"] | parts["has_lyrics"]
    val_rows, test_rows = (parts["fold"] == val_fold) & usable, (parts["fold"] == test_fold) & usable
    scores = {kind: cross_fitted_finished_f1(kind, parts, val_rows, lyrics.lexical, n_classes) for kind in LATE_KINDS}
    if head_val_macro_f1 is not None:
        scores["head"] = float(head_val_macro_f1)
    tolerance = one_standard_error(max(scores.values()), int(val_rows.sum()))
    winner = simplest_within(scores, tolerance)

    fitted = {kind: _late_logits(kind, parts, val_rows, n_classes) for kind in LATE_KINDS}
    stackers = {kind: unstacked(lyrics.lexical) for kind in LATE_KINDS}  # each candidate fits its own stacker

    def rows(kind: str, which: np.ndarray) -> tuple:
        return fitted[kind][0][which], parts["y"][which], list(parts["texts"][which])

    finished = {kind: stack_and_calibrate(stackers[kind], rows(kind, val_rows), rows(kind, test_rows), names,
                                          equal_share=EQUAL_NETWORK_SHARE if kind == "equal" else None)
                for kind in LATE_KINDS}
    variants = {"head": head_metrics, **{kind: f["metrics"] for kind, f in finished.items()}}
    log.info("fusion fold %s: validation macro-F1 %s -> keeping %s", fold_config["fold"],
             {k: round(v, 3) for k, v in scores.items()}, winner)
    selection = {"val_macro_f1": scores, "params": {k: f[1] for k, f in fitted.items()},
                 "temperatures": {k: list(f[2]) for k, f in fitted.items()}, "tolerance": tolerance}
    calibration = None
    if winner != "head":
        model, audio, lyrics = late_model(fold_config, winner, fitted[winner][2])
        set_params(model.late, winner, fitted[winner][1])
        done = finished[winner]
        calibration = done["calibration"]
        save_bundle(bundle_uri, model, audio.featurizer, lyrics.lyrics, tokenizer=lyrics.tokenizer,
                    model_id=fold_config.get("model_id"),
                    provenance={**run["provenance"], "branch": "fusion", "fusion": winner, "fold": fold_config["fold"],
                                "split": split, "audio_bundle": storage.describe(fold_config["audio_bundle"]),
                                "lyrics_bundle": storage.describe(fold_config["lyrics_bundle"])},
                    metrics={"val_macro_f1": scores[winner], "test": done["metrics"], "calibration": calibration,
                             "fusion_selection": {"val_macro_f1": scores, "winner": winner, "tolerance": tolerance}},
                    temperature=done["temperature"], descriptor_stats=fold_config.get("descriptor_stats"),
                    ambiguous_threshold=done["threshold"], lexical=stackers[winner])
    return {"winner": winner, "selection": selection, "variants": variants, "metrics": variants[winner],
            "calibration": calibration}
