"""The lexical lyrics model: TF-IDF of word and character n-grams with a linear head, and the stacker
that combines its logits with the encoder's.

The lexical model and the encoder err differently (words like "baby", "kill", "tears" vs the
sentence meaning), so their combination is fitted on the validation fold (`bench/bench_real_lyrics.py`
compares them).

The bundle loads without unpickling anything: the vocabulary, idf and weights are plain arrays
(`lexical/vocab.json`, `lexical/model.safetensors`, both hash-checked with
the bundle) and the features are computed here. Training fits scikit-learn's `TfidfVectorizer` and
`LogisticRegression` with *our* analysers and keeps only their arrays; `transform` reproduces
`TfidfVectorizer` exactly (sublinear tf, smoothed idf, l2 norm per block; tested against it).
Each analyser ("word": lowercase `\\b\\w\\w+\\b` tokens, 1..n grams; "char_wb": character n-grams
inside space-padded words) is a block normalised on its own, as `hstack` of two vectorisers would be.
Works for any number of classes.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "model.safetensors"
ANALYZERS = ("word", "char_wb")
_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_WHITE = re.compile(r"\s\s+")


@dataclass(frozen=True)
class LexicalConfig:
    """Features and head of the lexical model (defaults chosen by validation on MoodyLyrics4Q, see bench)."""

    word_ngrams: int = 2          # word 1..word_ngrams grams; 0 = no word block
    char_min: int = 2             # char_wb n-grams char_min..char_max; char_max 0 = no char block
    char_max: int = 5
    min_df: int = 2               # a term must occur in >= min_df training songs
    max_features: int = 100_000   # per block, most frequent terms kept
    C: float = 10.0               # inverse L2 strength of the logistic regression
    max_iter: int = 3000

    def __post_init__(self) -> None:
        if self.word_ngrams < 0 or self.char_max < 0 or (self.char_max and not 1 <= self.char_min <= self.char_max):
            raise ValueError(f"bad n-gram ranges in {self!r}")
        if not self.word_ngrams and not self.char_max:
            raise ValueError("LexicalConfig needs a word or a char block")
        if self.min_df < 1 or self.max_features < 1 or not self.C > 0:
            raise ValueError(f"min_df, max_features and C must be positive, got {self!r}")

    def blocks(self) -> list[tuple[str, int, int]]:
        out = []
        if self.word_ngrams:
            out.append(("word", 1, self.word_ngrams))
        if self.char_max:
            out.append(("char_wb", self.char_min, self.char_max))
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LexicalConfig:
        from labeler.contracts.coerce import config_from_dict  # noqa: PLC0415

        return config_from_dict(cls, d)


def analyze(text: str, analyzer: str, lo: int, hi: int) -> list[str]:
    """The terms of one text, exactly as scikit-learn's analyzer of the same name and ngram_range."""
    text = (text or "").lower()
    if analyzer == "word":
        tokens = _TOKEN.findall(text)
        if hi == 1:
            return tokens
        out = list(tokens) if lo == 1 else []
        for n in range(max(2, lo), hi + 1):
            out.extend(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        return out
    if analyzer == "char_wb":
        out = []
        for w in _WHITE.sub(" ", text).split():
            w = f" {w} "
            for n in range(lo, hi + 1):
                out.extend(w[i:i + n] for i in range(max(1, len(w) - n + 1)))
                if len(w) <= n:  # a word shorter than n counts once, as in scikit-learn
                    break
        return out
    raise ValueError(f"unknown analyzer {analyzer!r}: expected one of {ANALYZERS}")


class LexicalModel:
    """TF-IDF blocks + linear head; `logits(texts)` -> (n, n_classes) float32. Build with `fit` or `load`."""

    def __init__(self, config: LexicalConfig, vocabularies: list[dict[str, int]], idfs: list[np.ndarray],
                 coef: np.ndarray, intercept: np.ndarray, stack_weight: np.ndarray | None = None,
                 stack_bias: np.ndarray | None = None) -> None:
        blocks = config.blocks()
        if not (len(blocks) == len(vocabularies) == len(idfs)):
            raise ValueError(f"{len(blocks)} blocks but {len(vocabularies)} vocabularies and {len(idfs)} idf arrays")
        for vocab, idf in zip(vocabularies, idfs):
            if len(vocab) != len(idf) or sorted(vocab.values()) != list(range(len(vocab))):
                raise ValueError("a vocabulary must map its terms to 0..n-1 with one idf per term")
        n_features = sum(len(v) for v in vocabularies)
        coef = np.asarray(coef, dtype=np.float32)
        intercept = np.asarray(intercept, dtype=np.float32).reshape(-1)
        if coef.ndim != 2 or coef.shape[1] != n_features or intercept.shape[0] != coef.shape[0]:
            raise ValueError(f"coef {coef.shape} / intercept {intercept.shape} do not fit {n_features} features")
        self.config = config
        self.vocabularies = vocabularies
        self.idfs = [np.asarray(i, dtype=np.float32) for i in idfs]
        self.coef = coef
        self.intercept = intercept
        self.n_classes = int(coef.shape[0])
        self.stack_weight = None
        self.stack_bias = None
        if stack_weight is not None:
            self.set_stack(stack_weight, stack_bias)

    # ---- features and logits

    def transform(self, texts: Sequence[str | None]):
        """scipy CSR (n, n_features): per block sublinear tf x idf, each block l2-normalised."""
        from scipy.sparse import csr_matrix, hstack  # noqa: PLC0415

        mats = []
        for (analyzer, lo, hi), vocab, idf in zip(self.config.blocks(), self.vocabularies, self.idfs):
            indptr, indices, values = [0], [], []
            for text in texts:
                counts = Counter(t for t in analyze(text or "", analyzer, lo, hi) if t in vocab)
                cols = np.fromiter((vocab[t] for t in counts), dtype=np.int64, count=len(counts))
                vals = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))) * idf[cols]
                norm = np.sqrt((vals ** 2).sum())
                indices.append(cols)
                values.append(vals / norm if norm > 0 else vals)
                indptr.append(indptr[-1] + len(cols))
            mats.append(csr_matrix((np.concatenate(values) if values else np.zeros(0),
                                    np.concatenate(indices) if indices else np.zeros(0, np.int64), indptr),
                                   shape=(len(texts), len(vocab)), dtype=np.float64))
        return hstack(mats, format="csr")

    def logits(self, texts: Sequence[str | None]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.n_classes), dtype=np.float32)
        return np.asarray(self.transform(texts) @ self.coef.T.astype(np.float64) + self.intercept, dtype=np.float32)

    # ---- the stacker: logits = W [encoder logits, lexical logits] + b

    def set_stack(self, weight, bias) -> None:
        weight = np.asarray(weight, dtype=np.float32)
        bias = np.asarray(bias, dtype=np.float32).reshape(-1)
        if weight.shape != (self.n_classes, 2 * self.n_classes) or bias.shape != (self.n_classes,):
            raise ValueError(f"stack weight {weight.shape} / bias {bias.shape}: expected "
                             f"({self.n_classes}, {2 * self.n_classes}) / ({self.n_classes},)")
        self.stack_weight, self.stack_bias = weight, bias

    def fit_stack(self, encoder_logits: np.ndarray, lexical_logits: np.ndarray, y: np.ndarray, C: float = 1.0) -> None:
        """Fit the combination on held-out rows (the validation fold): a multinomial logistic regression
        on the two models' logits. Its output is a logit vector, calibrated afterwards by temperature."""
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

        x = np.concatenate([encoder_logits, lexical_logits], axis=1).astype(np.float64)
        y = np.asarray(y, dtype=np.int64)
        present = np.unique(y)
        if len(present) < 2:
            raise ValueError(f"the stacker needs at least 2 classes in its rows, got {present.tolist()}")
        lr = LogisticRegression(C=C, max_iter=2000).fit(x, y)
        self.set_stack(*_full_linear(lr, self.n_classes))

    def cross_fitted_stack(self, encoder_logits: np.ndarray, lexical_logits: np.ndarray, y: np.ndarray,
                           parts: int = 5, C: float = 1.0, seed: int = 8848) -> np.ndarray:
        """Out-of-part stacked logits of the fitting rows: the stacker refitted on all parts but one,
        applied to that one. The temperature is fitted on these, because the stacker's own fit on the
        same rows looks better calibrated there than it is on new songs. The model's stacker is unchanged."""
        y = np.asarray(y, dtype=np.int64)
        part = np.random.default_rng(seed).permutation(len(y)) % max(2, min(parts, len(y)))
        out = np.zeros((len(y), self.n_classes), dtype=np.float32)
        scratch = copy.copy(self)
        for p in np.unique(part):
            fit, held = part != p, part == p
            if len(np.unique(y[fit])) < 2:
                continue
            scratch.fit_stack(encoder_logits[fit], lexical_logits[fit], y[fit], C=C)
            out[held] = scratch.stacked(encoder_logits[held], lexical_logits[held])
        return out

    def stacked(self, encoder_logits: np.ndarray, lexical_logits: np.ndarray) -> np.ndarray:
        if self.stack_weight is None:
            raise ValueError("this lexical model has no fitted stacker")
        x = np.concatenate([encoder_logits, lexical_logits], axis=1).astype(np.float32)
        return x @ self.stack_weight.T + self.stack_bias

    # ---- fitting

    @classmethod
    def fit(cls, texts: Sequence[str | None], y: Sequence[int], n_classes: int,
            config: LexicalConfig | None = None, seed: int = 8848) -> LexicalModel:
        """TF-IDF on the training texts, then a balanced logistic regression; only arrays are kept."""
        from scipy.sparse import hstack  # noqa: PLC0415
        from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

        config = config or LexicalConfig()
        labels = np.asarray(y, dtype=np.int64)
        texts = [t or "" for t in texts]
        if len(np.unique(labels)) < 2:
            raise ValueError(f"the lexical model needs at least 2 classes in its training rows, got {np.unique(labels).tolist()}")
        vocabularies, idfs, mats = [], [], []
        for analyzer, lo, hi in config.blocks():
            vec = TfidfVectorizer(analyzer=lambda t, a=analyzer, lo=lo, hi=hi: analyze(t, a, lo, hi), sublinear_tf=True,
                                  min_df=min(config.min_df, len(texts)), max_features=config.max_features, lowercase=False)
            try:
                mats.append(vec.fit_transform(texts))
            except ValueError as exc:  # every term below min_df: no vocabulary
                raise ValueError(f"lexical model: no {analyzer} terms in the training texts ({exc})") from exc
            vocabularies.append({t: int(i) for t, i in vec.vocabulary_.items()})
            idfs.append(vec.idf_.astype(np.float32))
        lr = LogisticRegression(C=config.C, class_weight="balanced", max_iter=config.max_iter, random_state=seed)
        lr.fit(hstack(mats, format="csr"), labels)
        coef, intercept = _full_linear(lr, n_classes)
        return cls(config, vocabularies, idfs, coef.astype(np.float32), intercept.astype(np.float32))

    @classmethod
    def fit_transfer(cls, source_texts: Sequence[str | None], source_y: Sequence[int], n_source: int,
                     texts: Sequence[str | None], y: Sequence[int], n_classes: int,
                     config: LexicalConfig | None = None, seed: int = 8848, C_map: float = 1.0) -> LexicalModel:
        """A lexical model that learnt its words on a larger labelled corpus (`source_*`, its own classes,
        e.g. MoodyLyrics4Q's quadrants) and maps that corpus's class logits to this run's classes.

        It serves a taxonomy with a few hundred labelled songs (too few for a vocabulary of mood words)
        from a public lyrics corpus of thousands. Stage 1 is `fit` on the source; stage 2 a small
        balanced logistic regression from its `n_source` logits to `y` (n_source x n_classes weights,
        fitted on the training rows). Both stages are linear, so the result is stored as one ordinary
        lexical model: coef = W2 coef_source, intercept = W2 b_source + b2 (the bundle format and
        the labelling path are unchanged).
        """
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

        source = cls.fit(source_texts, source_y, n_source, config, seed=seed)
        labels = np.asarray(y, dtype=np.int64)
        if len(np.unique(labels)) < 2:
            raise ValueError(f"the lexical model needs at least 2 classes in its training rows, got {np.unique(labels).tolist()}")
        z = source.logits([t or "" for t in texts]).astype(np.float64)
        lr = LogisticRegression(C=C_map, class_weight="balanced", max_iter=2000, random_state=seed).fit(z, labels)
        w2, b2 = _full_linear(lr, n_classes)
        coef = w2 @ source.coef.astype(np.float64)
        intercept = w2 @ source.intercept.astype(np.float64) + b2
        return cls(source.config, source.vocabularies, source.idfs, coef.astype(np.float32), intercept.astype(np.float32))

    # ---- files (no pickles: JSON + safetensors)

    def save(self, directory: str | Path) -> list[str]:
        """Write vocab.json and model.safetensors into `directory`; return the file names."""
        from safetensors.numpy import save_file  # noqa: PLC0415

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        terms = [sorted(v, key=v.__getitem__) for v in self.vocabularies]
        (directory / VOCAB_FILE).write_text(json.dumps({"config": self.config.to_dict(), "terms": terms},
                                                       ensure_ascii=True, separators=(",", ":")))
        arrays = {"coef": self.coef, "intercept": self.intercept}
        arrays.update({f"idf.{i}": idf for i, idf in enumerate(self.idfs)})
        if self.stack_weight is not None:
            arrays.update({"stack.weight": self.stack_weight, "stack.bias": self.stack_bias})
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(directory / WEIGHTS_FILE))
        return [VOCAB_FILE, WEIGHTS_FILE]

    @classmethod
    def load(cls, directory: str | Path) -> LexicalModel:
        """Read a model saved by `save`."""
        directory = Path(directory)
        return cls.from_bytes((directory / VOCAB_FILE).read_bytes(), (directory / WEIGHTS_FILE).read_bytes())

    @classmethod
    def from_bytes(cls, vocab: bytes, weights: bytes) -> LexicalModel:
        """The model from the two files' bytes (the bundle passes bytes it has checked against their sha256)."""
        from safetensors.numpy import load as load_arrays  # noqa: PLC0415

        meta = json.loads(vocab)
        arrays = load_arrays(weights)
        config = LexicalConfig.from_dict(meta["config"])
        vocabularies = [{t: i for i, t in enumerate(terms)} for terms in meta["terms"]]
        idfs = [arrays[f"idf.{i}"] for i in range(len(vocabularies))]
        return cls(config, vocabularies, idfs, arrays["coef"], arrays["intercept"],
                   arrays.get("stack.weight"), arrays.get("stack.bias"))


def _full_linear(lr, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted scikit-learn LogisticRegression as (n_classes, d) weights and (n_classes,) biases.

    A class absent from the fitting rows gets bias -30 (never predicted); the binary form's single row
    (logit of class 1 minus logit of class 0) becomes class 1's row, class 0's staying at zero.
    """
    weight = np.zeros((n_classes, lr.coef_.shape[1]))
    bias = np.full(n_classes, -30.0)
    present = lr.classes_.astype(np.int64)
    if len(present) == 2:
        weight[present[1]], bias[present[1]] = lr.coef_[0], lr.intercept_[0]
        bias[present[0]] = 0.0
    else:
        weight[present], bias[present] = lr.coef_, lr.intercept_
    return weight, bias
