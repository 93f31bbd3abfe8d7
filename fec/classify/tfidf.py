"""The TF-IDF + logistic-regression baseline (its job is `fec.api.tfidf`, its command `baselines/tfidf.py`).

    from fec.classify.tfidf import run_seed, vectorize
    features, vocabulary = vectorize(splits, ngram_max=2, min_df=2, max_features=None, analyzer="word+char")
    result = run_seed(features, labels, grid=DEFAULT_C_GRID, seed=0, max_iter=2000, fits={}, n_labels=32)

TF-IDF of word 1-2-grams beside character 2-5-grams within word boundaries (`char_wb`, the
classical baseline at its strongest; `analyzer="word"` for words only), sublinear tf, is fitted
on train; a multinomial logistic regression (lbfgs) is fitted on train for every C in the grid,
the C with the best validation weighted F1 is kept (ties: the smaller C), and test is evaluated
once, on that model. The seed sets `random_state`, but lbfgs never reads it: every seed gives the
same model, so each C is fitted once and later seeds reuse that fit (results.json marks the
reused entries).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from fec.classify.outputs import to_predictions
from fec.classify.seed_result import SeedResultBase, scored_splits
from fec.core.errors import DataError
from fec.core.metrics import classification_metrics, multilabel_metrics, tune_thresholds

log = logging.getLogger(__name__)

SOURCE = "tfidf-logreg"
DEFAULT_C_GRID = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


@dataclass
class BaselineSeedResult(SeedResultBase):
    """One seed: the chosen C, its validation (and test) metrics, and every C tried."""

    seed: int
    C: float
    valid: dict
    test: dict | None
    seconds: float
    n_iter: int
    grid: list[dict] = field(default_factory=list)
    predictions: dict = field(default_factory=dict)  # split -> predicted ids of the chosen C
    probabilities: dict = field(default_factory=dict)  # split -> (N, C) probabilities of the chosen C
    thresholds: list[float] | None = None  # multi-label: per-label thresholds, tuned out of fold
    cv: dict | None = None  # multi-label: how C was chosen by cross-validation on train
    best_epoch = None  # no epochs: one fit per C
    history: tuple = ()  # a field, so results.json's seed entries keep their `history: []`


def fit_logreg(x, y, C: float, seed: int, max_iter: int) -> tuple[LogisticRegression, bool]:
    """Multinomial (softmax) logistic regression; returns the model and whether lbfgs converged."""
    model = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            model.fit(x, y)
        except ValueError as err:
            raise DataError(f"logistic regression cannot be fitted: {str(err).splitlines()[0]}") from err
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    if not converged:
        log.warning("C=%g seed %d: lbfgs stopped at max_iter=%d without converging; raise -max_iter", C, seed, max_iter)
    return model, converged


def label_probabilities(model: LogisticRegression, x, n_labels: int) -> np.ndarray:
    """`predict_proba` with one column per label id: a label that train never shows has no column
    in sklearn's output (only `classes_` do), and gets probability 0 here."""
    probabilities = np.zeros((x.shape[0], n_labels))
    probabilities[:, model.classes_] = model.predict_proba(x)
    return probabilities


def run_seed(
    features: dict, labels: dict, grid: list[float], seed: int, max_iter: int, fits: dict, n_labels: int
) -> BaselineSeedResult:
    """Fit every C (or reuse the fit in `fits`: lbfgs ignores the seed), keep the best on valid, test once."""
    started = time.perf_counter()
    tried, best, best_model = [], None, None
    for C in grid:
        if C in fits:
            model, entry = fits[C]
            entry = entry | {"reused_from_seed": entry["seed"]}
        else:
            fit_start = time.perf_counter()
            model, converged = fit_logreg(features["train"], labels["train"], C, seed, max_iter)
            valid = classification_metrics(labels["valid"], model.predict(features["valid"]))
            entry = {
                "C": C,
                "valid": valid,
                "n_iter": int(np.max(model.n_iter_)),
                "converged": converged,
                "fit_seconds": round(time.perf_counter() - fit_start, 2),
                "seed": seed,
            }
            fits[C] = (model, entry)
            log.info(
                "seed %d C=%-5g | valid acc %.2f wF1 %.2f macro-F1 %.2f | %d iterations, %.1fs",
                seed,
                C,
                valid["acc"],
                valid["wf1"],
                valid["macro_f1"],
                entry["n_iter"],
                entry["fit_seconds"],
            )
        entry = {k: v for k, v in entry.items() if k != "seed"}
        tried.append(entry)
        valid = entry["valid"]
        if best is None or valid["wf1"] > best["valid"]["wf1"]:
            best, best_model = tried[-1], model
    evaluated = scored_splits(features)  # test once, on the model chosen on validation
    probabilities = {m: label_probabilities(best_model, features[m], n_labels) for m in evaluated}
    predictions = {m: to_predictions(probabilities[m], False) for m in evaluated}
    test = classification_metrics(labels["test"], predictions["test"]) if "test" in predictions else None
    seconds = round(time.perf_counter() - started, 2)
    return BaselineSeedResult(
        seed, best["C"], best["valid"], test, seconds, best["n_iter"], tried, predictions, probabilities=probabilities
    )


ANALYZERS = ("word", "word+char")


def run_multilabel_seed(
    features: dict, labels: dict, grid: list[float], seed: int, max_iter: int, folds: int = 5
) -> BaselineSeedResult:
    """Multi-label: one-vs-rest logistic regressions. C and the per-label thresholds are chosen by
    `folds`-fold cross-validation on train (out-of-fold probabilities, macro-F1), since a small
    valid split overfits; then the model is fitted on all of train, valid is scored as a check and
    test, when present, once."""
    started = time.perf_counter()
    x, y = features["train"], np.asarray(labels["train"])
    assignment = np.random.default_rng(seed).permutation(x.shape[0]) % folds
    tried, best = [], None
    for C in grid:
        oof = np.zeros(y.shape, dtype=np.float64)
        for fold in range(folds):
            held = assignment == fold
            oof[held] = fit_one_vs_rest(x[~held], y[~held], C, seed, max_iter).predict_proba(x[held])
        thresholds = tune_thresholds(y, oof)
        metrics = multilabel_metrics(y, to_predictions(oof, True, thresholds))
        tried.append({"C": C, "cv": metrics})
        shown = (metrics["macro_f1"], metrics["micro_f1"])
        log.info("seed %d C=%-5g | %d-fold CV macro-F1 %.2f micro-F1 %.2f", seed, C, folds, *shown)
        if best is None or metrics["macro_f1"] > best[1]["macro_f1"]:
            best = (C, metrics, thresholds)
    C, oof_metrics, thresholds = best
    model = fit_one_vs_rest(x, y, C, seed, max_iter)
    probabilities = {m: model.predict_proba(features[m]) for m in scored_splits(features)}
    predictions = {m: to_predictions(p, True, thresholds) for m, p in probabilities.items()}
    valid = multilabel_metrics(labels["valid"], predictions["valid"])
    test = multilabel_metrics(labels["test"], predictions["test"]) if "test" in predictions else None
    seconds = round(time.perf_counter() - started, 2)
    cv = {"folds": folds, "oof": oof_metrics}
    chosen = [float(t) for t in thresholds]
    return BaselineSeedResult(seed, C, valid, test, seconds, max_iter, tried, predictions, probabilities, chosen, cv)


def fit_one_vs_rest(x, y, C: float, seed: int, max_iter: int) -> OneVsRestClassifier:
    model = OneVsRestClassifier(LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


@dataclass(frozen=True)
class TextVectorizer:
    """TF-IDF blocks side by side (word n-grams, character n-grams within word boundaries), each
    L2-normalised, sublinear tf, lowercased; fitted on train only."""

    parts: tuple[tuple[str, TfidfVectorizer], ...]

    @classmethod
    def new(
        cls, analyzer: str, ngram_max: int, min_df: int, max_features: int | None, char_ngrams: tuple[int, int] = (2, 5)
    ) -> TextVectorizer:
        """Word 1..ngram_max-grams, and with `word+char` character n-grams within word boundaries
        (`char_wb`, lengths `char_ngrams`) beside them."""
        common = dict(sublinear_tf=True, min_df=min_df, max_features=max_features, lowercase=True, dtype=np.float64)
        parts = [("word", TfidfVectorizer(ngram_range=(1, ngram_max), **common))]
        if analyzer == "word+char":
            parts.append(("char", TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(char_ngrams), **common)))
        return cls(tuple(parts))

    def fit_transform(self, texts: list[str]) -> sp.csr_matrix:
        return sp.hstack([part.fit_transform(texts) for _, part in self.parts], format="csr")

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        return sp.hstack([part.transform(texts) for _, part in self.parts], format="csr")

    @property
    def size(self) -> int:
        return sum(len(part.vocabulary_) for _, part in self.parts)

    def state(self) -> tuple[list[dict], dict[str, torch.Tensor]]:
        """What rebuilds it: per block its analyzer, n-gram range and vocabulary, and its idf weights."""
        described = [
            {"name": name, "analyzer": part.analyzer, "ngram_range": list(part.ngram_range), "vocabulary": part.vocabulary_}
            for name, part in self.parts
        ]
        return described, {f"idf.{name}": torch.from_numpy(part.idf_) for name, part in self.parts}

    @classmethod
    def rebuild(cls, described: list[dict], tensors: dict[str, torch.Tensor]) -> TextVectorizer:
        parts = []
        for block in described:
            vocabulary = {term: int(index) for term, index in block["vocabulary"].items()}
            part = TfidfVectorizer(
                analyzer=block["analyzer"],
                ngram_range=tuple(block["ngram_range"]),
                vocabulary=vocabulary,
                sublinear_tf=True,
                lowercase=True,
                dtype=np.float64,
            )
            part.idf_ = tensors[f"idf.{block['name']}"].numpy()
            parts.append((block["name"], part))
        return cls(tuple(parts))


def vectorize(
    splits: dict,
    ngram_max: int,
    min_df: int,
    max_features: int | None,
    analyzer: str = "word+char",
    char_ngrams: tuple[int, int] = (2, 5),
) -> tuple[dict, int]:
    """TF-IDF features of every split, fitted on train (`TextVectorizer`), and the vocabulary size."""
    vectorizer = TextVectorizer.new(analyzer, ngram_max, min_df, max_features, char_ngrams)
    try:
        features = {"train": vectorizer.fit_transform(splits["train"].texts)}
    except ValueError as err:  # e.g. an empty vocabulary when min_df is too high for the data
        raise DataError(f"{splits['train'].path}: TF-IDF: {err}") from err
    for mode, split in splits.items():
        if mode != "train":
            features[mode] = vectorizer.transform(split.texts)
    return features, vectorizer.size
