"""One training run of any trainer (the fusion classifier, fine-tuning, TF-IDF): its seeds trained
into one run folder, the records written beside them, and the finish step every trainer shares.

    plan = RunPlan(task="ED", out="Logs", folder_name="ED", method="fusion", seeds=[0, 1, 2], ...)
    train_run(plan, FusionSeeds(...))      # fec.api.train; fec.api.finetune and fec.api.tfidf likewise

A trainer says how to train one seed (`SeedTrainer`); the run does the rest, the same way for all:
claims the folder (`fec.runs.folder`), writes config.json (what ran, with provenance) and
model.json (what rebuilds the model), trains the seeds in order, rewriting results.json after
each (so a run stopped part-way keeps its finished seeds) and each seed's multi-label
thresholds into model.json, then finishes: results.json, the figures and predictions of the
best seed, the row in runs.csv, the run page and model card, and the closing log lines.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from fec.classify.seed_result import SeedResultBase
from fec.core.data import Split
from fec.core.provenance import provenance
from fec.runs.folder import run_folder, write_json
from fec.runs.page import write_run_pages_safely
from fec.runs.predictions import write_predictions
from fec.runs.results import log_summary, write_figures, write_results
from fec.runs.table import append_run_row, runs_row

log = logging.getLogger(__name__)


@dataclass
class ScoredSplits:
    """The labelled splits a run is scored on: labels (ids, or multi-hot rows) and texts per split."""

    labels: dict[str, np.ndarray]
    texts: dict[str, list[str]]
    label_names: list[str]
    multilabel: bool

    @classmethod
    def of(cls, splits: dict[str, Split]) -> ScoredSplits:
        """The labels and texts of the data contract's splits (`fec.core.data.load_splits`)."""
        train = splits["train"]
        texts = {mode: split.texts for mode, split in splits.items()}
        return cls({mode: split.labels for mode, split in splits.items()}, texts, train.label_names, train.multilabel)

    @property
    def report_split(self) -> str:
        """The split results are reported on: test, or valid where the task holds no test split."""
        return "test" if "test" in self.labels else "valid"


@dataclass
class RunPlan:
    """What every trainer's run has: where it goes, its seeds, its records and its data."""

    task: str
    out: Path | str
    folder_name: str  # the run folder's name before its time stamp: ED, ED_finetune, ED_tfidf
    method: str  # runs.csv's method: fusion, finetune or tfidf
    seeds: list[int]
    sources: list[str]  # what results.json says the model read: feature sources, a fine-tuned model, tfidf-logreg
    config: dict  # config.json: the options as resolved and what the run trained on (provenance is added)
    splits: ScoredSplits
    model: dict | None = None  # model.json: what rebuilds the model (TF-IDF runs keep none)
    threshold: float | None = None  # multi-label: one global decision threshold, None when tuned per label
    compat: str = ""  # fusion runs: the compat setting (corrected, reference, custom:...)


@dataclass
class Closing:
    """What a trainer adds once its seeds are done: its runs.csv settings, results.json extras and
    the seed ensemble (`fec.classify.fusion_training.seed_ensemble`), kept beside the per-seed summary."""

    settings: dict
    extra: dict = field(default_factory=dict)
    ensemble: dict | None = None


class SeedTrainer(Protocol):
    """A trainer: how one seed is trained and logged, and what it adds at the end."""

    def start(self, run_dir: Path) -> None:
        """Log what the run is about to do (and move data to its device)."""

    def train_seed(self, seed: int, run_dir: Path) -> SeedResultBase:
        """Train and score one seed, saving its checkpoint under `run_dir`."""

    def log_seed(self, result: SeedResultBase) -> None:
        """The seed's log lines."""

    def closing(self, results: list[SeedResultBase]) -> Closing:
        """The run's settings, extras and ensemble, once every seed is done."""


def train_run(plan: RunPlan, trainer: SeedTrainer) -> dict:
    """Train every seed of `plan` with `trainer` into a new run folder and write the run's files;
    returns results.json's payload and the folder. A run that fails part-way is marked failed
    (`fec.runs.folder.run_folder`) and keeps the seeds it finished."""
    with run_folder(plan.out, plan.folder_name) as run_dir:
        compat = f" ({plan.compat})" if plan.compat else ""
        log.info("run folder %s; %s%s; seeds %s", run_dir, plan.method, compat, plan.seeds)
        trainer.start(run_dir)
        write_json(run_dir / "config.json", plan.config | provenance())
        if plan.model is not None:
            write_json(run_dir / "model.json", plan.model)
        started, results = time.perf_counter(), []
        for seed in plan.seeds:
            result = trainer.train_seed(seed, run_dir)
            if plan.model is not None and plan.splits.multilabel:
                # Thresholds belong to the checkpoint they were tuned for: predict.py reads them from here.
                plan.model["thresholds"][str(seed)] = result.thresholds
                write_json(run_dir / "model.json", plan.model)
            trainer.log_seed(result)
            results.append(result)
            write_results(run_dir, plan.task, results, sources=plan.sources, multilabel=plan.splits.multilabel, finished=False)
        closing = trainer.closing(results)
        if closing.ensemble and plan.splits.multilabel and plan.model is not None:
            plan.model["ensemble_thresholds"] = closing.ensemble["thresholds"]
            write_json(run_dir / "model.json", plan.model)
        return finish_run(run_dir, plan, results, closing, round(time.perf_counter() - started, 2))


def finish_run(run_dir: Path, plan: RunPlan, results: list[SeedResultBase], closing: Closing, seconds: float) -> dict:
    """Everything a run writes once its seeds are done: results.json (per seed and mean/std, the best
    seed on validation), curves.png, the best seed's label report and predictions on the report
    split, the row in runs.csv, the run page and model card, and the summary log lines."""
    splits, multilabel = plan.splits, plan.splits.multilabel
    extra = closing.extra | ({"ensemble": closing.ensemble} if closing.ensemble else {})
    payload = write_results(
        run_dir, plan.task, results, sources=plan.sources, multilabel=multilabel, finished=True, seconds=seconds, extra=extra
    )
    best = next(r for r in results if r.seed == payload["best_seed"])
    write_figures(run_dir, results, best, splits.labels, splits.label_names, multilabel, plan.threshold)
    shown = splits.report_split
    if shown in splits.texts:
        write_predictions(
            run_dir,
            splits.texts[shown],
            splits.labels[shown],
            best.predictions[shown],
            best.probabilities.get(shown),
            splits.label_names,
            multilabel,
        )
    best_epochs = [r.best_epoch for r in results if r.best_epoch is not None]
    row = runs_row(
        plan.task, run_dir, plan.method, plan.compat, closing.settings, [r.seed for r in results], payload["summary"], best_epochs
    )
    if closing.ensemble and "test" in closing.ensemble:
        row["ensemble_test"] = f"{closing.ensemble['test']['macro_f1' if multilabel else 'acc']:.2f}"
    table = append_run_row(plan.out, row)
    log_summary(plan.task, payload["summary"], len(results), seconds, closing.ensemble, multilabel and plan.threshold is None)
    write_run_pages_safely(run_dir)
    log.info("run folder: %s; all runs: column -s, -t %s", run_dir, table)
    return payload | {"run_dir": str(run_dir)}
