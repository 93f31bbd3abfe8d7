"""Metrics, per-label decision thresholds and mean±std over seeds, shared by every trainer and the report.
Computing only: how they are written out (cells, log lines) is `fec.runs.formatting`.

    from fec.core.metrics import classification_metrics, summarise
    classification_metrics(labels, preds)      # {"acc": .., "wf1": .., "macro_f1": ..} in percent
    summarise(results)["test"]["acc"]          # {"mean": 60.44, "std": 0.47} over the seeds

Single-label: accuracy, weighted F1 (the paper's metrics) and macro-F1. Multi-label (multi-hot
rows): macro-F1 (SemEval's official metric), micro-F1, subset accuracy and Jaccard; thresholds
are tuned per label on validation over the grid 0.05..0.95.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, jaccard_score


def classification_metrics(labels: np.ndarray, preds: np.ndarray) -> dict:
    """Accuracy, weighted F1 and macro-F1 of single-label predictions, in percent."""
    return {
        "acc": 100 * accuracy_score(labels, preds),
        "wf1": 100 * f1_score(labels, preds, average="weighted", zero_division=0),
        "macro_f1": 100 * f1_score(labels, preds, average="macro", zero_division=0),
    }


THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)  # 0.05, 0.10, ..., 0.95 (0.5 included)
# What classification_metrics and multilabel_metrics compute; every table of a run reports the single-label
# ones and the first two multi-label ones (the headline metrics results.json is checked for and seeds pool on).
SINGLE_LABEL_KEYS = ("acc", "wf1", "macro_f1")
MULTILABEL_KEYS = ("macro_f1", "micro_f1", "subset_acc", "jaccard")
MULTILABEL_HEADLINE = MULTILABEL_KEYS[:2]


def selection_metric(multilabel: bool) -> str:
    """What a probe, a checkpoint's epoch and a search's candidate are chosen by: accuracy
    (single-label, the paper's headline), macro-F1 (multi-label)."""
    return "macro_f1" if multilabel else "acc"


def multilabel_metrics(labels: np.ndarray, preds: np.ndarray, label_names: list[str] | None = None) -> dict:
    """Percentages for multi-hot (N, K) arrays: macro-F1 (the mean of the per-label F1s, SemEval's
    official metric), micro-F1, subset accuracy (every label right) and Jaccard (samples average;
    a text with no gold and no predicted label counts as 1, a correct "neutral").
    With `label_names`, also `per_label_f1` {name: F1}."""
    labels, preds = np.asarray(labels).astype(np.int64), np.asarray(preds).astype(np.int64)
    per_label = f1_score(labels, preds, average=None, zero_division=0)
    out = {
        "macro_f1": 100 * float(per_label.mean()),
        "micro_f1": 100 * f1_score(labels, preds, average="micro", zero_division=0),
        "subset_acc": 100 * accuracy_score(labels, preds),
        "jaccard": 100 * jaccard_score(labels, preds, average="samples", zero_division=1.0),
    }
    if label_names is not None:
        out["per_label_f1"] = {name: 100 * float(f) for name, f in zip(label_names, per_label, strict=False)}
    return out


def binary_f1_grid(labels: np.ndarray, probs: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """F1 of every label at every threshold: (len(grid), K); 0 where a label has no gold and no predicted positive."""
    labels = np.asarray(labels).astype(bool)[None]  # (1, N, K)
    predicted = np.asarray(probs)[None] >= np.asarray(grid)[:, None, None]  # (G, N, K)
    tp = (predicted & labels).sum(axis=1)
    fp = (predicted & ~labels).sum(axis=1)
    fn = (~predicted & labels).sum(axis=1)
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def tune_thresholds(labels: np.ndarray, probs: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """One threshold per label: the grid value maximising that label's F1 on these rows, ties going
    to the value nearest 0.5. The grid holds 0.5, so every label's F1, and so macro-F1, is at least
    its value at 0.5 on the rows tuned on."""
    grid = np.asarray(grid, dtype=float)
    scores = binary_f1_grid(labels, probs, grid)  # (G, K)
    order = np.argsort(np.abs(grid - 0.5), kind="stable")  # nearest 0.5 first, so argmax keeps it on ties
    best = order[np.argmax(scores[order], axis=0)]
    return grid[best]


def summary_keys(metrics: dict) -> tuple[str, ...]:
    """The keys a summary keeps of one seed's metrics: single-label ones, or multi-label ones (told by `wf1`)."""
    return SINGLE_LABEL_KEYS if "wf1" in metrics else MULTILABEL_KEYS


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample std (ddof=1); std is None for a single value."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def mean_std_stats(values: list[float]) -> dict[str, float | None]:
    """`mean_std` as `{"mean": .., "std": ..}`, the form results.json, runs.csv and report.py use."""
    return dict(zip(("mean", "std"), mean_std(values), strict=False))


def summarise(results: list) -> dict:
    """Mean and std over seeds of each split's metrics (single- or multi-label keys, from the
    metrics themselves); multi-label runs add per-label F1 and `valid_at_0.5`."""
    summary = {}
    for split, attr in (("valid", "valid"), ("test", "test"), ("valid_at_0.5", "valid_at_05"), ("cv", "cv_metrics")):
        rows = [getattr(r, attr, None) for r in results]
        rows = [r for r in rows if r is not None]
        if rows:
            summary[split] = {k: mean_std_stats([r[k] for r in rows]) for k in summary_keys(rows[0])}
            if "per_label_f1" in rows[0]:
                summary[split]["per_label_f1"] = {
                    name: mean_std_stats([r["per_label_f1"][name] for r in rows]) for name in rows[0]["per_label_f1"]
                }
    return summary
