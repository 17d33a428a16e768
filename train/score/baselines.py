"""Non-neural baselines, trained on exactly the same split as the networks.

A network is only worth its training cost if it beats these, so the report shows them beside the
branches:

- audio: logistic regression on log-mel statistics. For each mel band: the mean and the std of
  the log-mel over time, and the std of its first time-derivative (librosa delta; how much a band
  moves, a rough rhythm/onset-strength cue). 3 x n_mels numbers per clip, standardised, then
  multinomial logistic regression with balanced class weights.
- any fixed-length vectors (`vector_baseline`): standardised, then the same logistic regression.
  The real-data benchmarks fit it on the Hybrid branch's descriptor vector (labeler.audio.
  descriptors_from: log-mel, MFCC, chroma, spectral contrast, onset and tempo statistics), so a gain
  of the network over log-mel statistics is not credited to the CNN when it comes from the
  descriptors, and on frozen MiniLM embeddings, which fine-tuning has to beat. Not in every report
  (the cache holds descriptors only for Hybrid runs).
- lyrics: TF-IDF of word 1-2 grams (sublinear tf, min_df 2) on cleaned lyrics
  (labeler.lyrics.text.clean_lyrics: LRC tags, [Chorus] and Genius residue removed), then logistic
  regression with balanced class weights.

Each is an sklearn Pipeline (`make_audio_baseline()` / `make_lyrics_baseline()`, with `fit` and
`predict_proba`); `audio_baseline` / `lyrics_baseline` fit on the training rows and return test
probabilities with one column per class index 0..n_classes-1, even for a class the training fold
lacks (its column is 0), so they line up with the networks' probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from labeler.audio.features import logmel_stats
from labeler.contracts.labels import class_names
from labeler.io import storage
from labeler.lyrics.text import clean_lyrics


@dataclass(frozen=True)
class BaselineConfig:
    """Hyper-parameters of both baselines (defaults are the documented ones; none is tuned)."""

    C: float = 1.0                 # inverse L2 strength of the logistic regression
    max_iter: int = 2000
    ngram_max: int = 2             # lyrics: word 1..ngram_max grams
    min_df: int = 2                # lyrics: a term must occur in >= min_df training songs
    seed: int = 8848


def _clean_texts(texts: Sequence[str | None]) -> list[str]:
    return [clean_lyrics(t) for t in texts]


def _logistic(config: BaselineConfig) -> LogisticRegression:
    return LogisticRegression(C=config.C, class_weight="balanced", max_iter=config.max_iter, random_state=config.seed)


def make_audio_baseline(config: BaselineConfig | None = None) -> Pipeline:
    """log-mel stats -> standardise -> balanced logistic regression; fit(X=(n, frames, mels), y)."""
    config = config or BaselineConfig()
    return Pipeline([
        ("stats", FunctionTransformer(logmel_stats)),
        ("scale", StandardScaler()),
        ("logreg", _logistic(config)),
    ])


def make_vector_baseline(config: BaselineConfig | None = None) -> Pipeline:
    """feature vectors -> non-finite to 0 -> standardise -> balanced logistic regression."""
    config = config or BaselineConfig()
    return Pipeline([
        ("finite", FunctionTransformer(lambda x: np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0))),
        ("scale", StandardScaler()),
        ("logreg", _logistic(config)),
    ])


def make_lyrics_baseline(config: BaselineConfig | None = None) -> Pipeline:
    """clean -> TF-IDF word 1-2 grams (sublinear tf, min_df 2) -> balanced logistic regression."""
    config = config or BaselineConfig()
    return Pipeline([
        ("clean", FunctionTransformer(_clean_texts)),
        ("tfidf", TfidfVectorizer(ngram_range=(1, config.ngram_max), sublinear_tf=True, min_df=config.min_df)),
        ("logreg", _logistic(config)),
    ])


def _check_labels(y: Sequence[int], n_rows: int, n_classes: int | None) -> tuple[np.ndarray, int]:
    y = np.asarray(y).astype(np.int64)
    if y.ndim != 1 or len(y) != n_rows:
        raise ValueError(f"y_train must have one label per training row: {len(y)} labels for {n_rows} rows")
    if len(np.unique(y)) < 2:
        raise ValueError(f"a baseline needs at least 2 classes in the training rows, got {np.unique(y).tolist()}")
    n_classes = int(n_classes if n_classes is not None else y.max() + 1)
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"class indices must be in 0..{n_classes - 1}, got {y.min()}..{y.max()}")
    return y, n_classes


def _aligned_proba(model: Pipeline, test_x, n_classes: int) -> np.ndarray:
    """predict_proba with one column per class index, zeros for classes unseen in training."""
    proba = model.predict_proba(test_x)
    out = np.zeros((proba.shape[0], n_classes), dtype=np.float64)
    out[:, model.classes_.astype(np.int64)] = proba
    return out


def _fit_predict(pipeline: Pipeline, train_x, y_train: Sequence[int], test_x, n_classes: int | None) -> np.ndarray:
    """Fit `pipeline` on the training rows; test probabilities aligned to class indices."""
    y, n_classes = _check_labels(y_train, len(train_x), n_classes)
    return _aligned_proba(pipeline.fit(train_x, y), test_x, n_classes)


def audio_baseline(train_feats: np.ndarray, y_train: Sequence[int], test_feats: np.ndarray,
                   n_classes: int | None = None, config: BaselineConfig | None = None) -> np.ndarray:
    """Fit the log-mel-statistics baseline on (n, frames, mels) clips; (n_test, n_classes) probabilities."""
    return _fit_predict(make_audio_baseline(config), np.asarray(train_feats), y_train, np.asarray(test_feats), n_classes)


def vector_baseline(train_feats: np.ndarray, y_train: Sequence[int], test_feats: np.ndarray,
                    n_classes: int | None = None, config: BaselineConfig | None = None) -> np.ndarray:
    """Fit the vector baseline on (n, d) vectors (descriptors, embeddings); (n_test, n_classes) probabilities."""
    return _fit_predict(make_vector_baseline(config), np.asarray(train_feats), y_train, np.asarray(test_feats), n_classes)


def lyrics_baseline(train_texts: Sequence[str | None], y_train: Sequence[int], test_texts: Sequence[str | None],
                    n_classes: int | None = None, config: BaselineConfig | None = None) -> np.ndarray:
    """Fit the TF-IDF baseline on raw lyrics (None/"" allowed); (n_test, n_classes) probabilities."""
    return _fit_predict(make_lyrics_baseline(config), list(train_texts), y_train, list(test_texts), n_classes)


def run_baselines(manifest_uri: str, cache_uri: str, folds: list[int], k: int, mode: str, which: set[str],
                  classes: list[str] | None = None) -> dict:
    """Audio and lyrics baselines on the same train/test folds (fitted on the training part only)."""
    import pyarrow.compute as pc  # noqa: PLC0415

    from labeler.contracts.labels import class_index  # noqa: PLC0415
    from train.cache.feature_cache import iter_numpy, split_folds, target_column  # noqa: PLC0415
    from train.fit.loop import targets_for_mode  # noqa: PLC0415
    from train.score.metrics import classification_metrics  # noqa: PLC0415

    names = class_names(mode, classes)
    n_classes = len(names)
    target = target_column(mode)
    out: dict = {}
    texts = None
    if "lyrics" in which:
        # Lyrics text is small beside audio; only four columns of the manifest are read.
        texts = storage.read_parquet(manifest_uri, columns=["song_id", "lyrics", "fold",
                                                            "label" if mode == "classes" else "quadrant"])
    if "audio" in which:
        # Log-mel statistics (3 x n_mels floats a song) of every fold involved, in one streamed pass.
        involved = sorted({f for fold in folds for role in ("train", "test") for f in split_folds(fold, k)[role]})
        parts = [(b["mel_stats"], targets_for_mode(b[target], mode), b["fold"])
                 for b in iter_numpy(cache_uri, involved, ["mel_stats", target, "fold"], "audio")]
        all_x, all_y, all_f = (np.concatenate([p[i] for p in parts]) for i in range(3))
    for fold in folds:
        split = split_folds(fold, k)
        if "audio" in which:
            tr, te = np.isin(all_f, split["train"]), np.isin(all_f, split["test"])
            x_tr, y_tr, x_te, y_te = all_x[tr], all_y[tr], all_x[te], all_y[te]
            model = make_audio_baseline()[1:].fit(x_tr, y_tr)  # stats are precomputed in the cache
            proba = np.zeros((len(x_te), n_classes))
            proba[:, model.classes_.astype(int)] = model.predict_proba(x_te)
            out.setdefault("audio_logmel_logreg", {"folds": {}})["folds"][fold] = classification_metrics(y_te, proba, names)
        if texts is not None:
            def rows(fs):
                t = texts.filter(pc.is_in(texts.column("fold"), value_set=__import__("pyarrow").array(fs, type=texts.column("fold").type)))
                lyr = t.column("lyrics").to_pylist()
                keep = [i for i, v in enumerate(lyr) if v and str(v).strip()]  # same rows as the lyrics branch
                if mode == "classes":
                    labels = t.column("label").to_pylist()
                    return [lyr[i] for i in keep], np.array([class_index(labels[i], names) for i in keep], dtype=np.int64)
                return [lyr[i] for i in keep], targets_for_mode(t.column("quadrant").to_numpy()[keep], mode)
            tr_x, tr_y = rows(split["train"])
            te_x, te_y = rows(split["test"])
            proba = lyrics_baseline(tr_x, tr_y, te_x, n_classes=n_classes)
            out.setdefault("lyrics_tfidf_logreg", {"folds": {}})["folds"][fold] = classification_metrics(te_y, proba, names)
    return out
