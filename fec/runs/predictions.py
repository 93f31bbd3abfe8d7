"""`predictions.csv` in a run folder: the best seed's prediction for every text of the report split
(test, or valid without test), with the gold labels and every label's probability, so the run page
can show example predictions and the most confused pairs without loading the model again.

    row,text,gold,predicted,correct,p:joyful,p:sad,...
    0,"i was happy to see her",joyful,joyful,1,0.91,0.03,...

Multi-label rows join their labels with `+` (an empty cell: no label) and `correct` is 1 only when
every label is right. `p:` columns are softmax (single-label) or sigmoid (multi-label) outputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fec.core.errors import RunError
from fec.core.files import atomic_write

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.csv"
PROBABILITY_PREFIX = "p:"
LABEL_JOIN = "+"


def label_cell(row, label_names: list[str], multilabel: bool) -> str:
    if multilabel:
        return LABEL_JOIN.join(name for name, on in zip(label_names, row, strict=True) if on)
    return label_names[int(row)]


def write_predictions(run_dir: Path, texts: list[str], labels, preds, probs, label_names: list[str], multilabel: bool) -> Path:
    """Write `predictions.csv` for one split; `probs` (N, C) may be None (no `p:` columns then)."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    if len(texts) != len(labels) or len(preds) != len(labels):
        raise ValueError(f"{len(texts)} texts, {len(labels)} labels and {len(preds)} predictions do not line up")
    correct = (labels == preds).all(axis=1) if multilabel else labels == preds
    table = pd.DataFrame(
        {
            "row": np.arange(len(texts)),
            "text": texts,
            "gold": [label_cell(y, label_names, multilabel) for y in labels],
            "predicted": [label_cell(p, label_names, multilabel) for p in preds],
            "correct": correct.astype(int),
        }
    )
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float64)
        table = pd.concat([table, pd.DataFrame(probs.round(4), columns=[PROBABILITY_PREFIX + n for n in label_names])], axis=1)
    path = run_dir / PREDICTIONS_FILE
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
    return path


@dataclass
class Predictions:
    """`predictions.csv` read back: the table, and the probability matrix (None without `p:` columns)."""

    table: pd.DataFrame
    label_names: list[str]
    probabilities: np.ndarray | None

    @property
    def multilabel_gold(self) -> np.ndarray:
        """(N, C) multi-hot gold labels, for multi-label runs."""
        index = {name: i for i, name in enumerate(self.label_names)}
        gold = np.zeros((len(self.table), len(self.label_names)), dtype=np.int64)
        for row, cell in enumerate(self.table["gold"]):
            for name in filter(None, str(cell).split(LABEL_JOIN)):
                gold[row, index[name]] = 1
        return gold


def read_predictions(run_dir: Path, label_names: list[str]) -> Predictions | None:
    """The run's `predictions.csv`, or None (logged) when it has none or it cannot be read."""
    path = run_dir / PREDICTIONS_FILE
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path, keep_default_na=False, dtype={"text": str, "gold": str, "predicted": str})
    except (OSError, ValueError) as err:
        log.warning("%s: cannot be read (%s); the page goes without examples", path, err)
        return None
    problem = predictions_problem(table, label_names)
    if problem:
        log.warning("%s: %s; the page goes without examples", path, problem)
        return None
    columns = [PROBABILITY_PREFIX + name for name in label_names]
    probs = table[columns].to_numpy(dtype=np.float64) if all(c in table.columns for c in columns) else None
    return Predictions(table, label_names, probs)


def predictions_problem(table: pd.DataFrame, label_names: list[str]) -> str | None:
    """Why a predictions table does not belong to a run with these labels, or None when it does."""
    missing = [c for c in ("text", "gold", "predicted", "correct") if c not in table.columns]
    if missing:
        return f"no column {', '.join(missing)}"
    known = set(label_names)
    for column in ("gold", "predicted"):
        for row, cell in enumerate(table[column]):
            unknown = [] if cell in known else [name for name in cell.split(LABEL_JOIN) if name and name not in known]
            if unknown:
                return f"row {row}: {column} label {unknown[0]!r} is not one of the run's labels"
    return None


PROBABILITIES_FILE = "probabilities.npz"


def write_probabilities(run_dir: Path, probabilities: dict[str, np.ndarray]) -> Path:
    """`probabilities.npz`: per scored split, the (N, C) probabilities the run's seeds give together
    (their mean): what an ensemble of runs combines without loading any model."""

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as file:
            np.savez(file, **{split: p.astype(np.float32) for split, p in probabilities.items()})

    path = run_dir / PROBABILITIES_FILE
    atomic_write(path, save)
    return path


def read_probabilities(run_dir: Path) -> dict[str, np.ndarray]:
    """A run's `probabilities.npz` by split; a run without one (older, or not a fusion run) is a RunError."""
    path = run_dir / PROBABILITIES_FILE
    if not path.is_file():
        raise RunError(f"{path}: not found; the run predates it or is not a fusion run (train it again)")
    with np.load(path) as stored:
        return {split: stored[split] for split in stored.files}
