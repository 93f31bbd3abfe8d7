"""The recipe search: candidates of a `SearchSpace` trained and compared by the selection metric
alone (valid accuracy, or the cross-validated figure when valid is small; macro-F1 for
multi-label tasks), with test never loaded.

    from fec.classify.search import Search, run_search
    study = run_search(Search(dataset_dir, "ED", space, base_config, budget_minutes=30), storage="sqlite:///tune.db")

Optuna does the scheduling: its TPE sampler picks the next candidate from the scores so far, and
its successive-halving pruner spends seeds where they matter: every candidate trains one seed,
and only those in the top third at a rung train more, up to `max_seeds`. A trial's value is the
mean selection score over its seeds. The study lives in a database (SQLite in the tune folder,
or any RDB URL), so an interrupted search resumes where it stopped and several machines can work
on one study.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

from fec.classify.candidates import OFF, PUBLISHED, SearchSpace
from fec.classify.cross_validation import train_seed_cv
from fec.classify.fusion_inputs import FusionData, load_fusion_data
from fec.classify.fusion_training import TrainConfig, build_model, step_flops, train_seed
from fec.classify.linear_probe import selection_metric
from fec.core.threads import use_threads
from fec.features.picks import parse_pick

log = logging.getLogger(__name__)

SEARCH_MODES = ("train", "valid")  # test is not read until the final run
CACHED_DATA = 4  # candidates' feature sets kept in memory


@dataclass
class Search:
    """One search: the task's store, the candidates, how each trains and how much may be spent."""

    dataset_dir: Path | str
    task: str
    space: SearchSpace
    base: TrainConfig  # epochs, batch size, ... and `cv` (folds, 0 = valid) every candidate trains with
    budget_minutes: float = 30.0
    trials: int | None = None  # at most this many candidates in this call (None: until the budget is spent)
    max_seeds: int = 3
    seed: int = 0  # the sampler's seed
    device: str = "cpu"
    threads: int | None = None  # CPU threads of every candidate (None: chosen from its work, fec.core.threads)


def candidate(trial: optuna.Trial, space: SearchSpace) -> dict:
    """The trial's choice: an option per source and a value per head option."""
    chosen = {f"source.{slot}": trial.suggest_categorical(f"source.{slot}", options) for slot, options in space.sources.items()}
    return chosen | {name: trial.suggest_categorical(name, values) for name, values in space.head.items()}


def recipe_options(choice: dict) -> dict:
    """A candidate as main.py options (a recipe file's values): its sources, picks and head options."""
    sources = {key.removeprefix("source."): value for key, value in choice.items() if key.startswith("source.")}
    used = [slot for slot, option in sources.items() if option != OFF]
    picks = [option for option in sources.values() if option not in (OFF, PUBLISHED)]
    head = {key: value for key, value in choice.items() if not key.startswith("source.")}
    return {"sources": used, **({"features": picks} if picks else {}), **head}


class Objective:
    """Trains a candidate seed by seed, reporting the mean selection score after each so the
    pruner can stop it; feature sets are loaded once and kept for the next candidates."""

    def __init__(self, search: Search):
        self.search = search
        self.cache: OrderedDict[str, FusionData] = OrderedDict()

    def data(self, options: dict) -> FusionData:
        key = repr((options["sources"], options.get("features")))
        if key not in self.cache:
            picks = {pick.slot: pick for pick in map(parse_pick, options.get("features", []))}
            s = self.search
            data = load_fusion_data(s.dataset_dir, s.task, options["sources"], modes=SEARCH_MODES, picks=picks)
            self.cache[key] = data.to(torch.device(s.device))
            if len(self.cache) > CACHED_DATA:
                self.cache.popitem(last=False)
        self.cache.move_to_end(key)
        return self.cache[key]

    def __call__(self, trial: optuna.Trial) -> float:
        options = recipe_options(candidate(trial, self.search.space))
        if not options["sources"]:
            raise optuna.TrialPruned("every source left out")
        earlier = trained_before(trial)
        if earlier is not None:  # the sampler can propose a candidate again: its scores are known
            trial.set_user_attr("scores", earlier.user_attrs["scores"])
            trial.set_user_attr("seconds", 0.0)
            trial.set_user_attr("same_as", earlier.number)
            log.info("candidate #%d: the same as #%d, not trained again", trial.number, earlier.number)
            return earlier.value
        data = self.data(options)
        head = {k: options[k] for k in self.search.space.head}
        cfg = dataclasses.replace(self.search.base, **head)
        model = build_model(data, cfg)  # a combination the model refuses fails here, as main.py would
        if torch.device(self.search.device).type == "cpu":
            use_threads(self.search.threads, step_flops(model, cfg.batch_size), f"candidate #{trial.number}")
        metric, scores, started = selection_metric(data.multilabel), [], time.perf_counter()
        for seed in range(self.search.max_seeds):
            result = (
                train_seed_cv(data, cfg, seed, self.search.device) if cfg.cv else train_seed(data, cfg, seed, self.search.device)
            )
            scores.append(float((result.cv_metrics if cfg.cv else result.valid)[metric]))
            trial.set_user_attr("scores", scores)
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
            trial.report(statistics.fmean(scores), step=seed + 1)
            if seed + 1 < self.search.max_seeds and trial.should_prune():
                mean = statistics.fmean(scores)
                log.info("candidate #%d: %s %.2f after %d seed(s), stopped", trial.number, metric, mean, seed + 1)
                raise optuna.TrialPruned(f"after {seed + 1} seed(s)")
        log.info(
            "candidate #%d: %s %.2f over %d seeds: %s",
            trial.number,
            metric,
            statistics.fmean(scores),
            len(scores),
            " ".join(f"{k}={v}" for k, v in trial.params.items()),
        )
        return statistics.fmean(scores)


def trained_before(trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
    """A finished earlier trial of the study with the same choices, if any."""
    finished = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return next((t for t in finished if t.params == trial.params and "scores" in t.user_attrs), None)


def open_study(name: str, storage: str, seed: int, max_seeds: int) -> optuna.Study:
    """The study `name` in `storage`, created or continued: TPE sampling, successive halving over seeds."""
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=6)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3, min_early_stopping_rate=0)
    if max_seeds < 2:
        pruner = optuna.pruners.NopPruner()
    return optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, pruner=pruner, direction="maximize", load_if_exists=True
    )


def run_search(search: Search, study: optuna.Study) -> optuna.Study:
    """Candidates until `search.trials` have run or the budget is spent (a candidate under way
    when it runs out finishes). Returns the study, whose best trial is the chosen recipe."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    done = len(study.trials)
    if not done:  # a new study starts where the probes point; the sampler takes over from there
        for params in search.space.first:
            study.enqueue_trial(params)
    log.info(
        "search: %d candidate combinations; %d trials already in the study; budget %.0f min",
        search.space.size(),
        done,
        search.budget_minutes,
    )
    with quiet_epochs():
        study.optimize(Objective(search), n_trials=search.trials, timeout=search.budget_minutes * 60, show_progress_bar=True)
    return study


@contextmanager
def quiet_epochs() -> Iterator[None]:
    """The trainers' per-epoch and per-seed lines off while candidates train (one line per
    candidate is logged instead), back on for the final run."""
    loggers = [logging.getLogger(name) for name in ("fec.classify.fusion_training", "fec.classify.cross_validation")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
