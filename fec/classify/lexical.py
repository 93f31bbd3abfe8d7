"""The lexical source: the word+character TF-IDF model's label probabilities, one more input of the fusion.

    python baselines/tfidf.py --task ED --store        # dataset/ED/tfidf/{train,valid,test}.safetensors
    python main.py --task ED --sources llama bert roberta tfidf
    python tune.py --task ED --extract                 # stores it beside the extractions; the search may fuse it

    from fec.classify.lexical import LexicalSettings, LexicalModel
    model = LexicalModel.fit(texts, labels, LexicalSettings(), C=4.0, n_labels=32, multilabel=False)
    model.predict_proba(["so happy today"])            # (1, 32), the columns in label-id order

A fused input must not be a model's verdict on the rows it was fitted on: the head would learn to
trust it more than it deserves on new text. So train's rows get out-of-fold probabilities: train is
cut into `folds` folds (stratified when every label allows it, seeded), and each fold is scored by
a model, vectorizer and regression, fitted on the other folds only. valid and test are scored by
the model fitted on all of train, as a new text is when predict.py rebuilds the source. C is
chosen from `C_grid` by the out-of-fold metric (accuracy; macro-F1 for multi-label tasks), on
train alone, so the fusion's own selection on valid stays clean. Writing it to the store is
`fec.classify.lexical_store`.

The C values share their folds' vectorizers: a fold's vectorizer does not depend on C, so it is
fitted (and its held rows transformed) once, and every C's regression is fitted on those
features from zero, the very model `LexicalModel.fit` makes (tests/classify/test_lexical_path.py
holds the two side by side). The regressions are not warm-started from the previous C's
solution: lbfgs stops at sklearn's gradient tolerance, a few hundredths of probability short of
the optimum from either start, but not at the same point; on ED's first 6000 rows a warm start
moved out-of-fold probabilities by up to 0.17 and changed the chosen C.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from safetensors import safe_open
from sklearn.model_selection import KFold, StratifiedKFold
from tqdm import tqdm

from fec.classify.outputs import to_predictions
from fec.classify.tfidf import TextVectorizer, fit_logreg
from fec.core.errors import DataError, StoreError
from fec.core.files import atomic_write, sha256_file
from fec.core.metrics import classification_metrics, multilabel_metrics, tune_thresholds
from fec.features.store import write_safetensors

log = logging.getLogger(__name__)

FORMAT = "fec-lexical/1"
CONSTANT_LOGIT = 30.0  # a label that train shows on every row, or on none: its probability is 1 or 0


@dataclass(frozen=True)
class LexicalSettings:
    """How the lexical source is made: the TF-IDF features (word 1..ngram_max-grams, with
    `word+char` character 2-5-grams within word boundaries beside them), the C values tried and
    the folds that score train out of fold."""

    analyzer: str = "word+char"
    ngram_max: int = 2
    min_df: int = 2
    max_features: int | None = None
    char_ngrams: tuple[int, int] = (2, 5)
    C_grid: tuple[float, ...] = (1.0, 4.0, 16.0)
    folds: int = 5
    seed: int = 0
    max_iter: int = 2000

    def record(self) -> dict:
        return asdict(self) | {"C_grid": list(self.C_grid), "char_ngrams": list(self.char_ngrams)}


@dataclass
class LexicalModel:
    """A fitted TF-IDF logistic regression as plain weights: the label probabilities are
    softmax(x W^T + b) over the label ids in `columns` (single-label) or a sigmoid per label
    (multi-label, one binary regression per label)."""

    vectorizer: TextVectorizer
    weights: np.ndarray  # (rows, features)
    bias: np.ndarray  # (rows,)
    columns: np.ndarray  # the label id of each row of `weights`
    n_labels: int
    multilabel: bool

    @classmethod
    def fit(cls, texts: list[str], labels: np.ndarray, settings: LexicalSettings, C: float, n_labels: int, multilabel: bool):
        vectorizer, x = fit_vectorizer(texts, settings)
        return cls.fit_features(vectorizer, x, labels, settings, C, n_labels, multilabel)

    @classmethod
    def fit_features(
        cls,
        vectorizer: TextVectorizer,
        x: sp.csr_matrix,
        labels: np.ndarray,
        settings: LexicalSettings,
        C: float,
        n_labels: int,
        multilabel: bool,
    ) -> LexicalModel:
        """`fit` of texts that `vectorizer`, fitted on them, has turned into `x`."""
        fit = fit_binary_per_label if multilabel else fit_softmax
        weights, bias, columns = fit(x, labels, C, settings)
        return cls(vectorizer, weights, bias, columns, n_labels, multilabel)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """(N, n_labels) float32; a label the regression never saw gets probability 0."""
        return self.feature_proba(self.vectorizer.transform(list(texts)))

    def feature_proba(self, x) -> np.ndarray:
        """`predict_proba` of rows already turned into this model's TF-IDF features."""
        logits = np.asarray(x @ self.weights.T) + self.bias
        probabilities = np.zeros((x.shape[0], self.n_labels))
        if self.multilabel:
            probabilities[:, self.columns] = 1.0 / (1.0 + np.exp(-logits))
        else:
            logits -= logits.max(axis=1, keepdims=True)
            exp = np.exp(logits)
            probabilities[:, self.columns] = exp / exp.sum(axis=1, keepdims=True)
        return probabilities.astype(np.float32)

    def save(self, path: Path) -> str:
        """One safetensors file (weights, idf; vocabularies in its metadata); returns its sha256."""
        described, idf = self.vectorizer.state()
        tensors = {
            "weights": torch.from_numpy(np.ascontiguousarray(self.weights)),
            "bias": torch.from_numpy(self.bias),
            "columns": torch.from_numpy(self.columns.astype(np.int64)),
            **idf,
        }
        head = {"n_labels": self.n_labels, "multilabel": self.multilabel}
        metadata = {"format": FORMAT, "model": json.dumps(head), "vectorizer": json.dumps(described)}
        atomic_write(path, lambda tmp: write_safetensors(tmp, tensors, metadata))
        return sha256_file(path)

    @classmethod
    def load(cls, path: Path) -> LexicalModel:
        try:
            with safe_open(str(path), framework="pt") as stored:
                metadata = stored.metadata() or {}
                tensors = {key: stored.get_tensor(key) for key in stored.keys()}  # noqa: SIM118 (safe_open has no iteration)
            if metadata.get("format") != FORMAT:
                raise ValueError(f"format {metadata.get('format')!r}, expected {FORMAT}")
            head, described = json.loads(metadata["model"]), json.loads(metadata["vectorizer"])
            vectorizer = TextVectorizer.rebuild(described, tensors)
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as err:
            problem = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise StoreError(f"{path}: not a lexical model ({problem})") from err
        weights, bias, columns = (tensors[k].numpy() for k in ("weights", "bias", "columns"))
        return cls(vectorizer, weights, bias, columns, int(head["n_labels"]), bool(head["multilabel"]))


def model_file_problem(path: Path, manifest: dict) -> str | None:
    """Why the lexical model at `path` is not the one `manifest`'s features were made with, or None
    (training reads it from the store, prediction from the run's copy)."""
    if not path.is_file():
        return "is missing"
    if sha256_file(path) != (manifest.get("model_fingerprint") or {}).get("weights_sha256"):
        return "differs from the model the lexical features were made with"
    return None


def fit_vectorizer(texts: list[str], settings: LexicalSettings) -> tuple[TextVectorizer, sp.csr_matrix]:
    """The TF-IDF vectorizer fitted on `texts`, and their features."""
    s = settings
    vectorizer = TextVectorizer.new(s.analyzer, s.ngram_max, s.min_df, s.max_features, s.char_ngrams)
    try:
        return vectorizer, vectorizer.fit_transform(texts)
    except ValueError as err:  # e.g. an empty vocabulary when min_df is too high for the data
        raise DataError(f"TF-IDF of {len(texts)} texts: {err}") from err


def fit_softmax(x, labels: np.ndarray, C: float, settings: LexicalSettings):
    """Multinomial logistic regression (lbfgs) as (weights, bias, label ids); two labels in
    softmax form too, so one rule turns logits into probabilities."""
    model, _ = fit_logreg(x, labels, C, settings.seed, settings.max_iter)
    weights, bias = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # sklearn keeps one row for two labels: sigmoid(z) = softmax([0, z])[1]
        weights, bias = np.vstack([np.zeros_like(weights), weights]), np.concatenate([[0.0], bias])
    return weights, bias, model.classes_


def fit_binary_per_label(x, labels: np.ndarray, C: float, settings: LexicalSettings):
    """One binary logistic regression per label (multi-label); a label constant on train keeps
    that constant."""
    weights, bias = np.zeros((labels.shape[1], x.shape[1])), np.zeros(labels.shape[1])
    for label in range(labels.shape[1]):
        column = labels[:, label]
        if column.min() == column.max():
            bias[label] = CONSTANT_LOGIT if column[0] else -CONSTANT_LOGIT
            continue
        w, b, _ = fit_softmax(x, column, C, settings)
        weights[label], bias[label] = w[1] - w[0], b[1] - b[0]
    return weights, bias, np.arange(labels.shape[1])


def fold_assignment(labels: np.ndarray, multilabel: bool, folds: int, seed: int) -> np.ndarray:
    """The fold of every train row: stratified by label when every label has a row per fold, else plain."""
    counts = None if multilabel else np.bincount(labels)
    stratified = counts is not None and counts[counts > 0].min() >= folds
    splitter = (StratifiedKFold if stratified else KFold)(folds, shuffle=True, random_state=seed)
    assignment = np.zeros(len(labels), dtype=np.int64)
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels if stratified else None)):
        assignment[held] = fold
    return assignment


def out_of_fold_per_C(
    texts: list[str],
    labels: np.ndarray,
    assignment: np.ndarray,
    settings: LexicalSettings,
    n_labels: int,
    multilabel: bool,
    workers: int = 1,
) -> dict[float, np.ndarray]:
    """For every C of the grid, every row's probabilities from `LexicalModel.fit` at C on the other
    folds, with each fold's vectorizer fitted once for all C; `workers` processes of one thread
    each take a fold at a time (every fold's fits are the same whoever makes them)."""
    grid = list(dict.fromkeys(settings.C_grid))  # a C listed twice is fitted once
    scored = {C: np.zeros((len(texts), n_labels), dtype=np.float32) for C in grid}
    folds = int(assignment.max()) + 1
    jobs = []
    for fold in range(folds):
        held = assignment == fold
        fit_texts = [t for t, h in zip(texts, held, strict=True) if not h]
        held_texts = [t for t, h in zip(texts, held, strict=True) if h]
        jobs.append((fit_texts, labels[~held], held_texts, grid, settings, n_labels, multilabel))
    if workers > 1:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or locks inherited
        with ProcessPoolExecutor(min(workers, folds), mp_context=context, initializer=one_blas_thread) as pool:
            done = pool.map(fold_fits, *zip(*jobs, strict=True))
            results = list(tqdm(done, total=folds, desc=f"lexical folds ({workers} workers)", unit="fold", leave=False))
    else:
        results = [fold_fits(*job) for job in tqdm(jobs, desc="lexical folds", unit="fold", leave=False)]
    for fold, per_C in enumerate(results):
        for C, probabilities in per_C.items():
            scored[C][assignment == fold] = probabilities
    return scored


def fold_fits(
    fit_texts: list[str],
    fit_labels: np.ndarray,
    held_texts: list[str],
    grid: list[float],
    settings: LexicalSettings,
    n_labels: int,
    multilabel: bool,
) -> dict[float, np.ndarray]:
    """One fold: its vectorizer fitted on the other folds' texts, then every C's regression; the
    held rows' probabilities per C."""
    vectorizer, x = fit_vectorizer(fit_texts, settings)
    held_x = vectorizer.transform(held_texts)
    return {
        C: LexicalModel.fit_features(vectorizer, x, fit_labels, settings, C, n_labels, multilabel).feature_proba(held_x)
        for C in grid
    }


def one_blas_thread() -> None:
    """A worker's BLAS on one thread, the workers sharing the cores: those loaded already (numpy's,
    with this module) limited now, those loaded later by the environment they read."""
    from threadpoolctl import threadpool_limits

    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    threadpool_limits(1)


def oof_score(labels: np.ndarray, probabilities: np.ndarray, multilabel: bool) -> float:
    """The metric C is chosen by: accuracy, or macro-F1 at thresholds tuned on the same rows."""
    if multilabel:
        return multilabel_metrics(labels, to_predictions(probabilities, True, tune_thresholds(labels, probabilities)))["macro_f1"]
    return classification_metrics(labels, probabilities.argmax(axis=1))["acc"]


@dataclass
class LexicalSource:
    """What the store keeps: train's out-of-fold probabilities, the chosen C, every C's score and
    the model fitted on all of train."""

    train: np.ndarray
    C: float
    scores: dict[float, float]
    assignment: np.ndarray
    model: LexicalModel


def lexical_source(
    texts: list[str], labels: np.ndarray, settings: LexicalSettings, n_labels: int, multilabel: bool, workers: int = 1
):
    """Choose C by the out-of-fold metric, keep that C's out-of-fold probabilities, fit the full model
    (`settings.folds` checked by the caller: `fec.classify.cross_validation.check_folds`); the
    folds' fits by `workers` processes."""
    assignment = fold_assignment(labels, multilabel, settings.folds, settings.seed)
    per_C = out_of_fold_per_C(texts, labels, assignment, settings, n_labels, multilabel, workers)
    best, scores = None, {}
    for C in settings.C_grid:  # in the grid's order, so a tie keeps the C listed first
        probabilities = per_C[C]
        scores[C] = oof_score(labels, probabilities, multilabel)
        log.info("lexical source C=%g: out-of-fold %s %.2f", C, "macro-F1" if multilabel else "acc", scores[C])
        if best is None or scores[C] > scores[best[0]]:
            best = (C, probabilities)
    C, train = best
    model = LexicalModel.fit(texts, labels, settings, C, n_labels, multilabel)
    return LexicalSource(train, C, scores, assignment, model)
