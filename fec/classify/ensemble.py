"""Ensemble selection: greedy forward selection, with replacement, of the candidates whose mean of
probabilities scores best on the selection rows (Caruana, Niculescu-Mizil, Crew and Ksikes,
"Ensemble selection from libraries of models", ICML 2004).

    from fec.classify.ensemble import ensemble_probabilities, select_ensemble
    choice = select_ensemble({"probe-a": p_a, "mlp-b": p_b, ...}, valid_labels, multilabel=False, size=20)
    choice.members, choice.weights, choice.score, choice.best_single
    test_probs = ensemble_probabilities(test_probabilities, choice.members, choice.weights)

The selection rows are the valid split, or the out-of-fold predictions on train when the search
selects by cross-validation. Each of `size` steps adds the candidate (one already picked included)
whose addition maximises the selection metric of the mean of the picked probabilities; ties go to
the candidate that comes first in the input, so a caller passing candidates best first has ties
favour the better single model. The first pick is the best single candidate, and the ensemble
returned is the best prefix of the picks (the shortest among equals), so its score on the selection
rows is never below the best single candidate's. A candidate picked k times of `size` gets weight
k / picks: picking with replacement is what lets the selection weight its members.

Metrics (percent, as in `fec.core.metrics`): single-label accuracy of the argmax by default,
multi-label macro-F1 at per-label thresholds tuned on the selection rows (`tune_thresholds`) for
every evaluation. Both defaults have vectorised numpy paths that score all candidates of a step
at once: a step costs about one pass over candidates x rows x labels. The other keys of
`classification_metrics` / `multilabel_metrics` may be asked for by name; they call those
functions (sklearn) once per candidate per step, `size` x candidates calls in all, so they are
much slower. Nothing is random.

Caruana et al.'s refinements (initialising with the N best models, bagging the selection) are left
out: the best-prefix rule already guards against the overfitting they address for our sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fec.core.metrics import (
    MULTILABEL_KEYS,
    SINGLE_LABEL_KEYS,
    THRESHOLD_GRID,
    classification_metrics,
    multilabel_metrics,
    selection_metric,
    tune_thresholds,
)

# Candidates x rows x labels elements scored at once: bounds the working memory of a step
# (a few arrays of this many float64, ~32 MiB each) whatever the number of candidates.
CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class EnsembleChoice:
    members: list[str]  # the chosen candidates' names (keys of the input), best-weighted first, each once
    weights: list[float]  # how often each was picked / picks, summing to 1
    score: float  # the selection metric of the weighted mean on the selection rows
    best_single: tuple[str, float]  # the best candidate alone and its score
    steps: list[float]  # the score after each greedy step (for a plot/log)
    thresholds: list[float] | None  # multi-label: per-label thresholds of the ensemble, tuned on the selection rows


def select_ensemble(
    probabilities: dict[str, np.ndarray], labels: np.ndarray, multilabel: bool, size: int, metric: str | None = None
) -> EnsembleChoice:
    """Greedy forward selection with replacement over `size` steps; the best prefix of the picks.
    `probabilities`: candidate name -> (N, C) probabilities on the selection rows, best candidate
    first; `labels`: (N,) ids or (N, C) multi-hot rows."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be an integer >= 1 (the number of greedy steps), got {size!r}")
    names = list(probabilities)
    stacked, labels = _checked(probabilities, labels, multilabel)
    metric = _checked_metric(metric, multilabel)

    total = np.zeros(stacked.shape[1:], dtype=stacked.dtype)  # sum of the picked candidates' probabilities
    picks: list[int] = []
    steps: list[float] = []
    for step in range(1, int(size) + 1):
        scores = _scores_with_each(total, stacked, step, labels, multilabel, metric)
        chosen = int(np.argmax(scores))  # the first maximum: ties go to the earlier candidate
        picks.append(chosen)
        steps.append(float(scores[chosen]))
        total += stacked[chosen]

    best_length = int(np.argmax(steps)) + 1  # the first maximum: the shortest of the best prefixes
    members, weights = _members_and_weights([names[i] for i in picks[:best_length]])
    thresholds = None
    if multilabel:
        ensemble = ensemble_probabilities(probabilities, members, weights)
        thresholds = [float(t) for t in tune_thresholds(labels, ensemble)]
    return EnsembleChoice(
        members=members,
        weights=weights,
        score=steps[best_length - 1],
        best_single=(names[picks[0]], steps[0]),
        steps=steps,
        thresholds=thresholds,
    )


def ensemble_probabilities(probabilities: dict[str, np.ndarray], members: Sequence[str], weights: Sequence[float]) -> np.ndarray:
    """The weighted mean of the members' (N, C) probabilities: the ensemble's prediction on any split.
    The weights are divided by their sum, so weights rounded when written out still give a mean."""
    if len(members) == 0:
        raise ValueError("an ensemble needs at least one member")
    if len(members) != len(weights):
        raise ValueError(f"{len(members)} members but {len(weights)} weights")
    missing = [name for name in members if name not in probabilities]
    if missing:
        raise ValueError(f"members without probabilities: {missing}")
    weights = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {weights.tolist()}")
    shape = np.shape(probabilities[members[0]])
    out = np.zeros(shape, dtype=np.result_type(*(probabilities[name] for name in members), np.float32))
    for name, weight in zip(members, weights, strict=True):
        if np.shape(probabilities[name]) != shape:
            raise ValueError(f"candidate {name!r} has shape {np.shape(probabilities[name])}, {members[0]!r} has {shape}")
        out += weight * np.asarray(probabilities[name])
    return out / weights.sum()


def _checked(probabilities: dict[str, np.ndarray], labels: np.ndarray, multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    """The candidates stacked (M, N, C) and the labels, or a ValueError naming what is wrong."""
    if not probabilities:
        raise ValueError("no candidates: probabilities is empty")
    arrays = {name: np.asarray(p) for name, p in probabilities.items()}
    first_name, first = next(iter(arrays.items()))
    if first.ndim != 2 or first.shape[0] == 0 or first.shape[1] == 0:
        raise ValueError(f"candidate {first_name!r}: probabilities must be a non-empty (rows, labels) array, got {first.shape}")
    for name, p in arrays.items():
        if p.shape != first.shape:
            raise ValueError(f"candidate {name!r} has shape {p.shape}, {first_name!r} has {first.shape}: shapes differ")
        if not np.all(np.isfinite(p)):
            raise ValueError(f"candidate {name!r} has non-finite probabilities (NaN or inf)")
    # float32 at least (integer inputs are promoted), float64 kept when given: the sums stay exact enough.
    stacked = np.stack([p for p in arrays.values()]).astype(np.result_type(*arrays.values(), np.float32), copy=False)
    rows, classes = first.shape

    labels = np.asarray(labels)
    if labels.shape[:1] != (rows,):
        raise ValueError(f"labels have {labels.shape[0] if labels.ndim else 0} rows, the probabilities {rows}")
    if multilabel:
        if labels.shape != (rows, classes):
            raise ValueError(f"multi-label labels must be multi-hot (rows, labels) = {(rows, classes)}, got {labels.shape}")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("multi-label labels must be multi-hot: 0 or 1")
        return stacked, labels.astype(bool)
    if labels.ndim != 1:
        raise ValueError(f"single-label labels must be ids (rows,), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"single-label labels must be integer ids in 0..{classes - 1}")
    return stacked, labels


def _checked_metric(metric: str | None, multilabel: bool) -> str:
    if metric is None:
        return selection_metric(multilabel)
    known = MULTILABEL_KEYS if multilabel else SINGLE_LABEL_KEYS
    if metric not in known:
        kind = "multi-label" if multilabel else "single-label"
        raise ValueError(f"unknown {kind} metric {metric!r}: one of {known}")
    return metric


def _scores_with_each(
    total: np.ndarray, stacked: np.ndarray, picks: int, labels: np.ndarray, multilabel: bool, metric: str
) -> np.ndarray:
    """(M,) the metric of the mean of (the picks so far + candidate m), `picks` counting the candidate."""
    rows, classes = total.shape
    chunk = max(1, CHUNK_ELEMENTS // (rows * classes))
    scores = []
    for start in range(0, len(stacked), chunk):
        sums = total + stacked[start : start + chunk]  # (m, N, C)
        if not multilabel and metric == "acc":
            # The argmax of a sum is that of the mean: no division; accuracy is a mean of equality.
            correct = (sums.argmax(axis=2) == labels).sum(axis=1)
            scores.append(100 * (correct / rows))
        elif multilabel and metric == "macro_f1":
            scores.append(_tuned_macro_f1(sums / picks, labels))
        else:
            scores.append(np.array([_metric_of_mean(mean, labels, multilabel, metric) for mean in sums / picks]))
    return np.concatenate(scores)


def _tuned_macro_f1(probs: np.ndarray, labels: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """(m,) macro-F1 in percent of each (N, K) block of `probs` (m, N, K) at thresholds tuned per label
    on these rows: the mean over labels of the best F1 over the grid, which is what `tune_thresholds`
    then `multilabel_metrics` give (thresholds maximise each label's F1 alone). Counted from
    histograms of the grid bin each probability falls in, one pass over the probabilities rather
    than one per grid value as in `binary_f1_grid`."""
    grid = np.asarray(grid, dtype=np.float64)
    blocks, _, label_count = probs.shape
    bins = len(grid) + 1
    # bin b = how many grid values are <= p, so p >= grid[g] exactly when b > g (same comparison as binary_f1_grid)
    bin_of = np.searchsorted(grid, probs, side="right")
    index = (np.arange(blocks)[:, None, None] * label_count + np.arange(label_count)) * bins + bin_of  # (m, N, K)
    every = np.bincount(index.ravel(), minlength=blocks * label_count * bins).reshape(blocks, label_count, bins)
    positive = np.bincount(index[:, labels].ravel(), minlength=blocks * label_count * bins).reshape(blocks, label_count, bins)
    # counts of bins > g for threshold g: the reversed cumulative sums from bin g + 1 on
    predicted = np.cumsum(every[..., ::-1], axis=2)[..., ::-1][..., 1:]  # (m, K, G)
    true_positive = np.cumsum(positive[..., ::-1], axis=2)[..., ::-1][..., 1:]
    gold = labels.sum(axis=0)[None, :, None]
    denominator = predicted + gold  # 2 tp + fp + fn
    f1 = np.where(denominator > 0, 2 * true_positive / np.maximum(denominator, 1), 0.0)
    return 100 * f1.max(axis=2).mean(axis=1)


def _metric_of_mean(mean: np.ndarray, labels: np.ndarray, multilabel: bool, metric: str) -> float:
    """Any metric of `fec.core.metrics` on one mean of probabilities (sklearn: the slow path)."""
    if multilabel:
        predictions = (mean >= tune_thresholds(labels, mean)).astype(np.int64)
        return float(multilabel_metrics(labels, predictions)[metric])
    return float(classification_metrics(labels, mean.argmax(axis=1))[metric])


def _members_and_weights(picked: list[str]) -> tuple[list[str], list[float]]:
    """Each picked name once, most picked first (ties: first picked first), weighted by its share of the picks."""
    counts: dict[str, int] = {}
    for name in picked:  # dicts keep insertion order: the order of first picks
        counts[name] = counts.get(name, 0) + 1
    members = sorted(counts, key=lambda name: -counts[name])  # stable: equal counts keep the first-pick order
    return members, [counts[name] / len(picked) for name in members]
