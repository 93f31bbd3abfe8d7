"""An ensemble of trained runs saved as one run: the weighted mean of its members' probabilities,
scored on valid and test once, with the files every run has (results.json, predictions, the
row in runs.csv, the run page and model card), so `predict.py`, `explain.py`, `report.py` and
the pages treat it as one model.

    from fec.api.ensemble import ensemble_run
    run = ensemble_run("ED", {Run(Path("Logs/ED_20261207-190000")): 0.6, Run(Path("Logs/ED_20261207-193000")): 0.4})
    run.metrics["test"]["acc"]

`tune.py` makes one after its search (`--ensemble_size`, `fec.classify.ensemble` chooses the
members and weights from the candidates' selection probabilities); each member is a run of its own
recipe beside it in the same folder of runs, which its model.json names. A member's probabilities
are those its seeds give together (`probabilities.npz`, written by every fusion run).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fec.api.run import Run
from fec.classify.ensemble import ensemble_probabilities
from fec.classify.outputs import to_predictions
from fec.classify.seed_result import SeedResultBase
from fec.core.data import load_splits
from fec.core.errors import RunError
from fec.core.metrics import classification_metrics, multilabel_metrics, tune_thresholds
from fec.core.slots import LEXICAL_SLOT
from fec.runs.predictions import read_probabilities, write_probabilities
from fec.runs.run_files import read_model_spec
from fec.runs.training_run import Closing, RunPlan, ScoredSplits, train_run

log = logging.getLogger(__name__)

ENSEMBLE_KIND = "ensemble"  # model.json's `kind` of an ensemble run


@dataclass
class EnsembleResult(SeedResultBase):
    """The ensemble scored once (results.json's one entry, seed 0: nothing in it is random)."""

    seed: int
    valid: dict
    test: dict | None
    predictions: dict
    probabilities: dict
    thresholds: list[float] | None = None
    cv: dict | None = None
    best_epoch = None  # no epochs: a weighted mean of trained runs
    history: tuple = ()


@dataclass
class CandidateEnsembleSeeds:
    """The candidate ensemble as a trainer of `fec.runs.training_run`: its one "seed" is the
    weighted mean of the member runs' probabilities, scored."""

    members: dict[Path, float]  # member run folder -> weight
    labels: dict[str, np.ndarray]
    multilabel: bool
    cv: bool  # members selected by cross-validation: multi-label thresholds not tuned on valid
    thresholds: list[float] | None = None  # multi-label thresholds chosen beforehand (out of fold, by the selection)

    def start(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        for folder, weight in self.members.items():
            log.info("member %s: weight %.3f", folder.name, weight)

    def train_seed(self, seed: int, run_dir: Path) -> EnsembleResult:
        stored = {folder: read_probabilities(folder) for folder in self.members}
        splits = [split for split in ("valid", "test") if split in self.labels]
        names, weights = [folder.name for folder in self.members], list(self.members.values())
        probabilities = {
            split: ensemble_probabilities({folder.name: stored[folder][split] for folder in self.members}, names, weights)
            for split in splits
        }
        thresholds = self.decision_thresholds(probabilities["valid"]) if self.multilabel else None
        scored = {}
        predictions = {}
        for split, p in probabilities.items():
            predictions[split] = to_predictions(p, self.multilabel, thresholds)
            if self.multilabel:
                scored[split] = multilabel_metrics(self.labels[split], predictions[split])
            else:
                scored[split] = classification_metrics(self.labels[split], predictions[split])
        return EnsembleResult(
            seed,
            scored["valid"],
            scored.get("test"),
            predictions,
            probabilities,
            None if thresholds is None else [float(t) for t in thresholds],
        )

    def decision_thresholds(self, valid: np.ndarray) -> np.ndarray:
        """Multi-label decision thresholds: those chosen beforehand; else under cross-validation the
        weighted mean of the member runs' seed ensembles' (valid stays a check), else tuned on the
        candidate ensemble's valid probabilities."""
        if self.thresholds is not None:
            return np.asarray(self.thresholds, dtype=np.float64)
        if not self.cv:
            return tune_thresholds(self.labels["valid"], valid)
        own = []
        for folder in self.members:
            spec = read_model_spec(folder)
            own.append(spec.get("ensemble_thresholds") or next(iter(spec["thresholds"].values())))
        return np.average(np.asarray(own, dtype=np.float64), axis=0, weights=list(self.members.values()))

    def log_seed(self, result: EnsembleResult) -> None:
        shown = "macro_f1" if self.multilabel else "acc"
        test = f", test {result.test[shown]:.2f}" if result.test else ""
        log.info("ensemble of %d runs: valid %s %.2f%s", len(self.members), shown, result.valid[shown], test)

    def closing(self, results: list[EnsembleResult]) -> Closing:
        write_probabilities(self.run_dir, results[0].probabilities)
        names = " ".join(f"{folder.name}x{weight:.2f}" for folder, weight in self.members.items())
        return Closing({"members": names})


def ensemble_run(
    task: str,
    members: dict[Run, float],
    *,
    data_dir: Path | str = "data",
    out: Path | str = "Logs",
    selection: dict | None = None,
    thresholds: list[float] | None = None,
) -> Run:
    """Save `members` (runs of `task` in `out`, each with its weight) as one run `out/{task}_ensemble_{stamp}`;
    `selection` (how the members were chosen) is recorded in its config.json; multi-label
    `thresholds`, when given, are the decision thresholds (else chosen as `CandidateEnsembleSeeds` says)."""
    if not members:
        raise RunError("an ensemble needs at least one member run")
    unweighted = [run for run, weight in members.items() if not weight > 0]
    if unweighted:
        raise RunError(f"{unweighted[0].path}: a member's weight must be above 0, got {members[unweighted[0]]!r}")
    total = sum(members.values())
    weights = {Path(run.path): weight / total for run, weight in members.items()}
    outside = [folder for folder in weights if folder.parent.resolve() != Path(out).resolve()]
    if outside:
        raise RunError(f"{outside[0]}: an ensemble's members are runs in its own folder of runs ({out})")
    specs = {folder: read_model_spec(folder) for folder in weights}
    first = next(iter(specs.values()))
    for folder, spec in specs.items():
        if spec.get("kind") is not None or spec["label_names"] != first["label_names"]:
            raise RunError(f"{folder}: not a fusion run of the same labels as {next(iter(specs))}")
    configs = {folder: Run(folder).config for folder in weights}
    cv = bool(next(iter(configs.values()))["train_config"].get("cv"))
    scored_modes = [mode for mode in ("valid", "test") if mode in next(iter(configs.values()))["rows"]]
    splits = load_splits(data_dir, task, ["train", *scored_modes])
    scored = ScoredSplits.of(splits)
    sources = sorted({source for spec in specs.values() for source in spec["sources"]})
    cost = prediction_cost(specs, configs)
    log.info(
        "ensemble of %d runs: a prediction runs %d heads over %d feature sources (%d backbone passes)",
        len(weights),
        cost["heads"],
        cost["feature_sources"],
        cost["backbone_passes"],
    )
    record = [
        {"run": folder.name, "weight": round(weight, 6), "recipe": configs[folder]["args"]} for folder, weight in weights.items()
    ]
    plan = RunPlan(
        task=task,
        out=out,
        folder_name=f"{task}_ensemble",
        method=ENSEMBLE_KIND,
        seeds=[0],
        sources=sources,
        config={
            "args": {"task": task, "members": [folder.name for folder in weights]},
            "option_defaults": {"task": None, "members": None},
            ENSEMBLE_KIND: {"members": record, "selection": selection or {}, "prediction_cost": cost},
        },
        splits=scored,
        model={
            "kind": ENSEMBLE_KIND,
            "label_names": first["label_names"],
            "multilabel": bool(first.get("multilabel")),
            "members": [{"run": folder.name, "weight": weight} for folder, weight in weights.items()],
            "thresholds": {},  # multi-label: the ensemble's, filled in once it is scored
        },
    )
    trainer = CandidateEnsembleSeeds(weights, scored.labels, scored.multilabel, cv, thresholds)
    finished = train_run(plan, trainer)
    return Run(Path(finished["run_dir"]))


def prediction_cost(specs: dict[Path, dict], configs: dict[Path, dict]) -> dict:
    """What one prediction of the ensemble computes: every member's heads (one per seed) and feature
    sources; a backbone pass is a source that runs a model (the lexical source runs none)."""
    sources = [(folder, name) for folder, spec in specs.items() for name in spec["sources"]]
    passes = [pair for pair in sources if specs[pair[0]]["feature_manifests"][pair[1]].get("slot") != LEXICAL_SLOT]
    return {
        "heads": sum(len(configs[folder].get("seeds") or []) for folder in specs),
        "feature_sources": len(sources),
        "backbone_passes": len(passes),
    }
