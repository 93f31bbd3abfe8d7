"""What every trainer's result for one seed offers (fusion, fine-tuning, TF-IDF), so the code that
writes a run (results.json, figures, predictions, the runs.csv row) reads them all alike.

    from fec.classify.seed_result import SeedResultBase, scored_splits
    result.summary()      # the seed's entry in results.json
    result.report_split   # "test", or "valid" for a task whose test split is held back
    scored_splits(data.splits)   # ["valid", "test"], test only when present

Each trainer keeps its own dataclass (`fec.classify.fusion_training.SeedResult`,
`fec.classify.tfidf.BaselineSeedResult`) with the fields below; this base gives them the same
`cv_metrics`, `report_split` and `summary()`. A result without epochs (a TF-IDF fit) has
`best_epoch` None and an empty `history`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Sequence
from typing import ClassVar

import numpy as np

SCORED_SPLITS = ("valid", "test")  # the splits a selected model is scored on, in this order


def scored_splits(available: Iterable[str]) -> list[str]:
    """The scored splits among `available`: valid, and test when the task has one."""
    present = set(available)
    return [name for name in SCORED_SPLITS if name in present]


class SeedResultBase:
    """One seed's outcome; the subclass is a dataclass holding at least these fields."""

    seed: int
    valid: dict  # the selected model's metrics on valid
    test: dict | None  # None without a test split
    predictions: dict[str, np.ndarray]  # split -> predicted ids (multi-hot rows when multi-label)
    probabilities: dict[str, np.ndarray]  # split -> (N, C) probabilities
    thresholds: list[float] | None  # multi-label: the per-label decision thresholds
    cv: dict | None  # how the selection was cross-validated on train, with the out-of-fold metrics ("oof")
    best_epoch: int | None  # None without epochs
    history: Sequence[dict]  # one row per epoch; empty without epochs

    # Fields left out of `summary()` (arrays and weights: predictions.csv and checkpoints hold them) ...
    UNSUMMARISED: ClassVar[tuple[str, ...]] = ("predictions", "probabilities")
    # ... and fields left out only when None, where they do not apply to the task or the selection.
    OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ("thresholds", "cv")

    @property
    def cv_metrics(self) -> dict | None:
        return self.cv["oof"] if self.cv else None

    @property
    def report_split(self) -> str:
        """The split a run reports: test, or valid when the task has none."""
        return "test" if self.test else "valid"

    def summary(self) -> dict:
        """The seed's entry in results.json: every field in order, copied, less those named above."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self.UNSUMMARISED or (value is None and f.name in self.OMITTED_WHEN_NONE):
                continue
            out[f.name] = copy.deepcopy(value)
        return out
