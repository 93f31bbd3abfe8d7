"""The recipe search: candidates of a `SearchSpace` trained and compared by the selection metric
alone (valid accuracy, or the cross-validated figure when valid is small; macro-F1 for
multi-label tasks), with test never loaded.

    from fec.classify.search import Search, run_search
    study = run_search(Search(dataset_dir, "ED", space, base_config, budget_minutes=30), storage="sqlite:///tune.db")

Optuna does the scheduling: its TPE sampler picks the next candidate from the scores so far, and
its successive-halving pruner spends seeds where they matter: every candidate trains one seed,
and only those in the top third at a rung train more, up to `max_seeds`. A trial's value is the
mean selection score over its seeds. The study lives in a database (SQLite in the tune folder,
or any RDB URL), so an interrupted search resumes where it stopped, on this machine or another
that reaches the database. A candidate cut short (Ctrl-C, or its process killed) is trained
again when the search resumes (`retry_interrupted`); a storage is checked before any work
(`check_storage`), so a bad URL, a missing driver or a damaged database is one line naming it.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import socket
import sqlite3
import statistics
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import torch

from fec.classify.candidates import OFF, PUBLISHED_FOLDER, SearchSpace
from fec.classify.cross_validation import cross_validate
from fec.classify.fusion_inputs import FusionData, load_fusion_data
from fec.classify.fusion_training import TrainConfig, build_model, step_flops, train_seed
from fec.core.errors import FecError, SettingError, StudyError
from fec.core.files import atomic_write
from fec.core.logs import log_as_worker
from fec.core.metrics import selection_metric
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
    budget_minutes: float | None = 30.0  # None: no time limit (then `trials` bounds the search)
    trials: int | None = None  # at most this many candidates in this call (None: until the budget is spent)
    max_seeds: int = 3
    seed: int = 0  # the sampler's seed
    device: str = "cpu"
    threads: int | None = None  # CPU threads of every candidate (None: chosen from its work, fec.core.threads)
    workers: int = 1  # processes training candidates of the one study at once (`run_search`)
    predictions_dir: Path | None = None  # where each finished candidate's selection probabilities go (the ensemble's library)


def candidate(trial: optuna.Trial, space: SearchSpace) -> dict:
    """The trial's choice: an option per source and a value per head option."""
    chosen = {f"source.{slot}": trial.suggest_categorical(f"source.{slot}", options) for slot, options in space.sources.items()}
    return chosen | {name: trial.suggest_categorical(name, values) for name, values in space.head.items()}


def recipe_options(choice: dict) -> dict:
    """A candidate as main.py options (a recipe file's values): its sources, picks and head options."""
    sources = {key.removeprefix("source."): value for key, value in choice.items() if key.startswith("source.")}
    used = [slot for slot, option in sources.items() if option != OFF]
    picks = [option for option in sources.values() if option not in (OFF, PUBLISHED_FOLDER)]
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
        trial.set_user_attr("worker", this_process())  # so a later search can tell a killed candidate from a live one
        try:
            return self.train(trial)
        except KeyboardInterrupt:  # Optuna records the trial as failed; this marks it for a retry on resume
            trial.set_user_attr("interrupted", "stopped")
            raise

    def train(self, trial: optuna.Trial) -> float:
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
        probabilities = []
        for seed in range(self.search.max_seeds):
            score, scored = selection_score(data, cfg, seed, metric, self.search.device)
            scores.append(score)
            probabilities.append(scored)
            trial.set_user_attr("scores", scores)
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
            trial.report(statistics.fmean(scores), step=seed + 1)
            if seed + 1 < self.search.max_seeds and trial.should_prune():
                mean = statistics.fmean(scores)
                log.info("candidate #%d: %s %.2f after %d seed(s), stopped", trial.number, metric, mean, seed + 1)
                self.keep_probabilities(trial, probabilities)  # a stopped candidate is still one the ensemble may use
                raise optuna.TrialPruned(f"after {seed + 1} seed(s)")
        log.info(
            "candidate #%d: %s %.2f over %d seeds: %s",
            trial.number,
            metric,
            statistics.fmean(scores),
            len(scores),
            " ".join(f"{k}={v}" for k, v in trial.params.items()),
        )
        self.keep_probabilities(trial, probabilities)
        return statistics.fmean(scores)

    def keep_probabilities(self, trial: optuna.Trial, probabilities: list[np.ndarray]) -> None:
        """The candidate's selection probabilities, the mean over the seeds it trained, for the ensemble."""
        if self.search.predictions_dir is not None:
            save_candidate_probabilities(self.search.predictions_dir, trial.number, np.mean(probabilities, axis=0))


def selection_score(data: FusionData, cfg: TrainConfig, seed: int, metric: str, device: str) -> tuple[float, np.ndarray]:
    """One seed of a candidate: its selection score and the probabilities it was computed from:
    on valid, or out of fold on train under cross-validation (the folds alone: the model on all of
    train that a run trains last is not needed to score the candidate)."""
    if cfg.cv:
        folds = cross_validate(data, cfg, seed, device)
        return float(folds.metrics[metric]), folds.oof
    result = train_seed(data, cfg, seed, device)
    return float(result.valid[metric]), result.probabilities["valid"]


def candidate_probabilities_path(folder: Path, number: int) -> Path:
    return Path(folder) / f"{number}.npy"


def save_candidate_probabilities(folder: Path, number: int, probabilities: np.ndarray) -> None:
    """A finished candidate's selection probabilities (the mean over its seeds), for the ensemble."""
    folder.mkdir(parents=True, exist_ok=True)

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as file:
            np.save(file, probabilities.astype(np.float32))

    atomic_write(candidate_probabilities_path(folder, number), save)


def trained_before(trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
    """A finished earlier trial of the study with the same choices, if any."""
    finished = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return next((t for t in finished if t.params == trial.params and "scores" in t.user_attrs), None)


def this_process() -> str:
    """`host:pid:start` of this process: its start time (from /proc, where there is one) tells it
    from a later process that got the same pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{process_start(os.getpid())}"


def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat); "" where
    /proc does not say (not Linux, or no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]  # the name in (...) may hold spaces; field 22 is the 20th after it


def worker_alive(worker: str | None) -> bool | None:
    """Whether the process that started a trial still runs: True or False for one of this
    machine, None where that cannot be told (another machine, where a live worker may hold it, or
    no worker recorded yet: a trial between its start and its first step)."""
    try:
        host, pid, start = (worker or "").rsplit(":", 2)
        number = int(pid)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    if start:
        return process_start(number) == start
    try:
        os.kill(number, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def retry_interrupted(study: optuna.Study) -> list[int]:
    """Queue again every candidate an earlier process left unfinished: stopped by Ctrl-C (failed,
    marked `interrupted`) or killed (still `running`, its process on this machine gone: failed
    here). Each is retried once, with `retry_of` naming it; a candidate whose worker may still run
    (another machine) is left to it. Returns the numbers queued again."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    queued = []
    for trial in trials:
        if trial.state == optuna.trial.TrialState.RUNNING and worker_alive(trial.user_attrs.get("worker")) is False:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        elif trial.state != optuna.trial.TrialState.FAIL or "interrupted" not in trial.user_attrs:
            continue
        if trial.number not in retried:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            queued.append(trial.number)
    return queued


def check_storage(url: str) -> None:
    """Refuse, before any work, a storage the study could not live in: not a database URL, a
    database kind SQLAlchemy does not know or whose driver is not installed, an in-memory SQLite
    (it ends with the process), a SQLite file in a missing folder or that is not a study
    database, a server that does not answer. Nothing is created."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SettingError("storage", url, "not a database URL; e.g. sqlite:///search.db, postgresql://USER@HOST/DB") from None
    shown = shown_url(url)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise SettingError(
            "storage", shown, f"unknown database kind {parsed.drivername!r} (sqlite, postgresql, mysql, ...)"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        raise SettingError(
            "storage", shown, f"its driver {err.name or parsed.drivername} is not installed; pip install it"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if path is None:
            raise SettingError("storage", shown, "an in-memory database ends with the search; name a file: sqlite:///PATH")
        if path.is_dir():
            raise SettingError(
                "storage", shown, f"{path}: is a folder; name the database file, e.g. sqlite:///{path / 'study.db'}"
            )
        if not path.parent.is_dir():
            raise SettingError("storage", shown, f"{path.parent}: no such folder")
        if path.exists():
            check_study_file(path)
        return
    timeout = {"connect_timeout": 10} if parsed.get_backend_name() in ("postgresql", "mysql", "mariadb") else {}
    engine = create_engine(parsed, connect_args=timeout)  # a server that does not answer is refused in seconds
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise SettingError("storage", shown, f"cannot connect ({reason})") from None
    finally:
        engine.dispose()


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite storage URL; None for an in-memory one, another database or no URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return None if parsed.database.startswith("file::memory:") else Path(parsed.database)


def absolute_url(url: str) -> str:
    """A SQLite storage URL with its file's absolute path (a search resumed from another folder
    finds it); any other URL as it is."""
    path = sqlite_file(url)
    return f"sqlite:///{path.resolve()}" if path is not None and not path.is_absolute() else url


def check_study_file(path: Path, study: str | None = None) -> None:
    """A SQLite file that holds an Optuna study, or nothing yet, and reads back whole; with
    `study`, a file that holds that study (a resumed search whose study is gone is refused, not
    started again empty)."""
    if study is not None and not path.is_file():
        raise StudyError(f"{path}: not found; the study {study!r} of the search is gone (start a new search)")
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as err:
        raise StudyError(f"{path}: not a readable study database ({err})") from None
    if verdict != "ok":
        raise StudyError(f"{path}: the study database is damaged ({verdict})")
    if tables and "studies" not in tables:
        raise StudyError(f"{path}: a SQLite database that holds no Optuna study (tables: {', '.join(sorted(tables))})")
    if study is not None and not has_study(path, study, tables):
        raise StudyError(f"{path}: holds no study {study!r}, the search's; it was emptied or replaced (start a new search)")


def has_study(path: Path, study: str, tables: set[str]) -> bool:
    if "studies" not in tables:
        return False
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
        return db.execute("SELECT 1 FROM studies WHERE study_name = ?", (study,)).fetchone() is not None


def shown_url(url: str) -> str:
    """A storage URL as it may be shown and recorded: its password hidden (`***`)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def open_study(name: str, storage: str, seed: int, max_seeds: int, existing: bool = False) -> optuna.Study:
    """The study `name` in `storage`, created or continued (`existing`: continued only; a study that
    is not there is refused rather than started again): TPE sampling, successive halving over
    seeds. A storage that cannot be opened is a `StudyError` naming it."""
    from sqlalchemy.exc import SQLAlchemyError

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=6)
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3, min_early_stopping_rate=0)
    if max_seeds < 2:
        pruner = optuna.pruners.NopPruner()
    try:
        if existing and name not in optuna.get_all_study_names(storage):
            raise StudyError(f"{shown_url(storage)}: holds no study {name!r}, the search's; it is gone (start a new search)")
        return optuna.create_study(
            study_name=name,
            storage=rdb_storage(storage),
            sampler=sampler,
            pruner=pruner,
            direction="maximize",
            load_if_exists=True,
        )
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError, RuntimeError) as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise StudyError(f"{shown_url(storage)}: the study {name!r} cannot be opened ({reason})") from None


SQLITE_WAIT_SECONDS = 60  # how long a worker waits for another's write to a SQLite study before it fails


def rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """The study's storage at `url`; a SQLite file is shared by the workers of one machine, each
    waiting its turn to write (a candidate writes a few rows a minute) instead of failing at once."""
    engine = {"connect_args": {"timeout": SQLITE_WAIT_SECONDS}} if sqlite_file(url) is not None else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine)


def run_search(search: Search, study: optuna.Study, storage: str | None = None, log_file: Path | None = None) -> optuna.Study:
    """Candidates until `search.trials` have run or the budget is spent (a candidate under way
    when it runs out finishes; no budget: until `search.trials`), by `search.workers` processes
    on the one study (the others started here, reaching the study through `storage`, its URL,
    and logging to the console and `log_file`). Returns the study, whose best trial is the
    chosen recipe."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    done = len(study.trials)
    if not done:  # a new study starts where the probes point; the sampler takes over from there
        for params in search.space.first:
            study.enqueue_trial(params)
    again = retry_interrupted(study)
    if again:
        log.info("search: candidate(s) %s were interrupted; they are queued to train again", ", ".join(f"#{n}" for n in again))
    budget = f"{search.budget_minutes:.0f} min" if search.budget_minutes else f"{search.trials} candidates"
    workers = f"; {search.workers} workers" if search.workers > 1 else ""
    log.info(
        "search: %d candidate combinations; %d trials already in the study; budget %s%s",
        search.space.size(),
        done,
        budget,
        workers,
    )
    shares = trial_shares(search.trials, search.workers)  # no more workers than candidates to train
    if len(shares) == 1:
        optimize(search, study, shares[0])
        return study
    if storage is None:
        raise ValueError("several workers reach the study through its storage URL: give `storage`")
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads or locks inherited
    others = [
        context.Process(
            target=search_worker,
            args=(search, storage, study.study_name, number, shares[number], log_file),
            name=f"search worker {number}",
        )
        for number in range(1, len(shares))
    ]
    for process in others:
        process.start()
    try:
        optimize(search, study, shares[0])
    except KeyboardInterrupt:  # Ctrl-C reaches every worker of the terminal's process group: each stops its candidate
        for process in others:
            process.join()
        raise
    except BaseException:  # this process failed: the others stop now rather than at the end of the budget
        for process in others:
            process.terminate()
            process.join()
        raise
    for process in others:
        process.join()
    failed = [process.name for process in others if process.exitcode != 0]
    if failed:
        raise StudyError(f"{', '.join(failed)} stopped with an error (its lines are in the log); the study keeps what it trained")
    return study


def trial_shares(trials: int | None, workers: int) -> list[int | None]:
    """How many candidates each worker trains: `trials` split as evenly as it goes, over at most
    `trials` workers (None: no cap, the budget decides)."""
    if trials is None:
        return [None] * workers
    workers = min(workers, trials)
    return [trials // workers + (number < trials % workers) for number in range(workers)]


def optimize(search: Search, study: optuna.Study, trials: int | None, progress: bool = True) -> None:
    """This process's candidates of the search: `trials` of them, or until the budget is spent."""
    timeout = search.budget_minutes * 60 if search.budget_minutes else None
    with quiet_epochs():
        study.optimize(Objective(search), n_trials=trials, timeout=timeout, show_progress_bar=progress)


def search_worker(search: Search, storage: str, name: str, number: int, trials: int | None, log_file: Path | None) -> None:
    """One more worker of a search, in a process of its own: the study opened again from its
    storage (its sampler seeded apart from the other workers'), its log lines marked with its
    number; an error is logged there (one line for a `FecError`) and ends the process with code 1."""
    log_as_worker(f"worker {number}", log_file)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = open_study(name, storage, search.seed + number, search.max_seeds, existing=True)
        optimize(search, study, trials, progress=False)
    except KeyboardInterrupt:  # the candidate under way is marked for a retry (Objective); the parent reports the stop
        raise SystemExit(130) from None
    except FecError as err:
        log.error("%s", err)
        raise SystemExit(1) from None
    except Exception:
        log.exception("the worker stopped on an error")
        raise SystemExit(1) from None


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
