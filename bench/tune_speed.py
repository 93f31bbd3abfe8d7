"""The recipe search's speed: candidate-seeds per minute, the search's path before and now, in one run.

    python -m bench.tune_speed                                  # stand-in shapes, 3000 train rows, both selections
    python -m bench.tune_speed --results bench/tune_cpu.json
    python -m bench.tune_speed --curve Logs/tune_ED_20261207-200000 Logs/tune_semeval_eng_...   # best score over time

Both paths train the same candidates (the head grid of `fec.classify.candidates`, crossed) on the
same synthetic features of the stand-ins' shapes (decoder (5, 576), encoders 384 and 768, the
lexical source's 32 label probabilities), `--seeds` seeds each, for a fixed number of epochs
(`--epochs`, early stopping off), so both do the same training steps:

* before: one process, the thread count `fec.core.threads` takes on an idle machine (2 on 2 cores), a
  candidate's seeds one after the other; under cross-validation each seed is
  `train_seed_cv`: its K folds and then the model on all of train, which the search never used.
* now: `--workers` processes of one thread each (`tune.py --workers`), taking candidates from one
  queue as the workers of a study do, each seed scored by `fec.classify.search.selection_score`
  (under cross-validation: the K folds alone).

Reported per selection (valid; 5-fold cross-validation): candidate-seeds per minute and seconds per
seed-fold (one model trained), each path, and the ratio now / before. Optuna's own bookkeeping (a
few database rows per candidate) is left out of both.

`--curve` reads search folders instead: the best selection score the search had reached 5, 10, 20
and 30 minutes after its first candidate started (from the study's trial times). `--where` times
where one candidate-seed's seconds go (cProfile, one thread): the backward pass, the forward
matrix products (train, and valid every epoch), dropout, the Adam step, the elementwise steps,
the rest.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import multiprocessing
import platform
import sqlite3
import time
from contextlib import closing
from datetime import datetime
from pathlib import Path

import torch

from fec.classify.candidates import HEAD_GRID
from fec.classify.cross_validation import train_seed_cv
from fec.classify.fusion_inputs import FusionData, SplitInputs
from fec.classify.fusion_training import TrainConfig, build_model, step_flops, train_seed
from fec.classify.search import quiet_epochs, selection_score
from fec.cli.options import ArgumentParser, output_file, positive_int
from fec.cli.script import run_script
from fec.core.files import atomic_write_text
from fec.core.provenance import provenance
from fec.core.threads import choose_threads, usable_cores, use_threads

log = logging.getLogger("bench.tune_speed")

SHAPES = {"llama": (5, 576), "bert": (384,), "roberta": (768,), "tfidf": (32,)}
KINDS = {"llama": "decoder", "bert": "encoder", "roberta": "encoder", "tfidf": "lexical"}
MARKS = (5, 10, 20, 30)  # minutes at which --curve reads the best score


def synthetic_data(rows: int, classes: int, seed: int = 0) -> FusionData:
    """Features of the stand-ins' shapes with a label signal in every source; valid and test a quarter of train each."""
    generator = torch.Generator().manual_seed(seed)
    centres = {name: torch.randn(classes, *shape, generator=generator) for name, shape in SHAPES.items()}

    def split(n: int) -> SplitInputs:
        labels = torch.randint(0, classes, (n,), generator=generator)
        inputs = [centres[name][labels] + 3 * torch.randn(n, *shape, generator=generator) for name, shape in SHAPES.items()]
        return SplitInputs(inputs, labels)

    splits = {"train": split(rows), "valid": split(rows // 4), "test": split(rows // 4)}
    return FusionData("bench", list(SHAPES), splits, [f"label{i}" for i in range(classes)], False, {}, kinds=dict(KINDS))


def candidates() -> list[dict]:
    """The head grid of the search, crossed: 16 candidates."""
    names = list(HEAD_GRID)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(HEAD_GRID[n] for n in names))]


def config(head: dict, epochs: int, cv: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, early_stop=epochs + 1, batch_size=64, cv=cv, **head)


def before(data: FusionData, heads: list[dict], seeds: int, epochs: int, cv: int) -> dict:
    """The search's path before: one process, the thread policy's count, refit included under CV."""
    started = time.perf_counter()
    # The count today's search takes on an idle machine (the policy reads the load average, which lags a job that just paused).
    threads = choose_threads(step_flops(build_model(data, config(heads[0], epochs, cv)), 64), usable_cores(), busy=0)
    use_threads(threads, 0, "before")
    for head, seed in itertools.product(heads, range(seeds)):
        cfg = config(head, epochs, cv)
        (train_seed_cv if cv else train_seed)(data, cfg, seed)
    return {"seconds": time.perf_counter() - started, "processes": 1, "threads": threads, "models_per_seed": cv + 1 if cv else 1}


def worker(rows: int, classes: int, jobs, done, epochs: int, cv: int) -> None:
    """One worker of `now`: its features made (a search loads them once per feature set), then
    candidate seeds from the queue until it is empty, on one thread."""
    torch.set_num_threads(1)
    data = synthetic_data(rows, classes)
    done.put("ready")
    while (job := jobs.get()) is not None:
        head, seed = job
        selection_score(data, config(head, epochs, cv), seed, "acc", "cpu")
        done.put("trained")


def now(rows: int, classes: int, heads: list[dict], seeds: int, epochs: int, cv: int, workers: int) -> dict:
    """The search's path now: `workers` single-thread processes on one queue of candidate seeds."""
    context = multiprocessing.get_context("spawn")
    jobs, done = context.Queue(), context.Queue()
    processes = [context.Process(target=worker, args=(rows, classes, jobs, done, epochs, cv)) for _ in range(workers)]
    for process in processes:
        process.start()
    for _ in processes:
        done.get()  # every worker ready: the clock starts
    started = time.perf_counter()
    for job in [*itertools.product(heads, range(seeds)), *[None] * workers]:
        jobs.put(job)
    for _ in range(len(heads) * seeds):
        done.get()
    seconds = time.perf_counter() - started
    for process in processes:
        process.join()
    return {"seconds": seconds, "processes": workers, "threads": 1, "models_per_seed": cv or 1}


def measure(args: argparse.Namespace) -> dict:
    heads = candidates()[: args.candidates]
    data = synthetic_data(args.rows, args.classes)
    results = {}
    for name, cv in (("valid", 0), ("cv5", 5)):
        log.info("%s: %d candidates x %d seeds, %d epochs each", name, len(heads), args.seeds, args.epochs)
        with quiet_epochs():  # one line per path, not one per epoch
            old = before(data, heads, args.seeds, args.epochs, cv)
        new = now(args.rows, args.classes, heads, args.seeds, args.epochs, cv, args.workers)
        for path in (old, new):
            count = len(heads) * args.seeds
            path["candidate_seeds_per_minute"] = 60 * count / path["seconds"]
            path["seconds_per_seed_fold"] = path["seconds"] / (count * path["models_per_seed"])
        results[name] = {
            "before": old,
            "now": new,
            "ratio": new["candidate_seeds_per_minute"] / old["candidate_seeds_per_minute"],
        }
        log.info("%s: %.2fx the candidate-seeds per minute", name, results[name]["ratio"])
    return results


def study_trials(folder: Path) -> list[tuple[datetime, datetime | None, float | None]]:
    """(start, end, mean selection score) of every trial of a search folder's study.db."""
    with closing(sqlite3.connect(f"{(folder / 'study.db').resolve().as_uri()}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT trial_id, datetime_start, datetime_complete FROM trials").fetchall()
        scores = dict(db.execute("SELECT trial_id, value_json FROM trial_user_attributes WHERE key = 'scores'").fetchall())
    trials = []
    for trial_id, start, end in rows:
        if start is None:  # queued, never started (the budget ran out first)
            continue
        values = json.loads(scores[trial_id]) if trial_id in scores else []
        when = datetime.fromisoformat(end) if end else None
        trials.append((datetime.fromisoformat(start), when, sum(values) / len(values) if values else None))
    return trials


def curve(folder: Path) -> dict:
    """The best mean selection score among candidates finished by each mark (minutes after the first started)."""
    trials = study_trials(folder)
    first = min(start for start, _, _ in trials)
    out = {}
    for minutes in MARKS:
        finished = [
            score for _, end, score in trials if end and score is not None and (end - first).total_seconds() <= 60 * minutes
        ]
        out[f"{minutes} min"] = {"best": max(finished) if finished else None, "candidates": len(finished)}
    return out


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one): every timing names its CPU."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


# Where a candidate-seed's time goes: cProfile's own time of these functions, by part.
PARTS = {
    "backward (every matrix product's gradients)": ("run_backward",),
    "forward matrix products (train and valid)": ("_nn.linear", "torch.bmm"),
    "dropout masks": ("torch.dropout",),
    "Adam step": ("_fused_adam_",),
    "sigmoid, relu, stack, mean": ("torch.sigmoid", "torch.relu", "torch.stack", "'mean'"),
}


def where(rows: int, classes: int, epochs: int) -> dict:
    """Seconds of one seed's training by part (one thread): what a candidate spends its time on."""
    import cProfile
    import pstats

    torch.set_num_threads(1)
    data = synthetic_data(rows, classes)
    train_seed(
        synthetic_data(64, classes), config(candidates()[0], 1, 0), 0
    )  # first calls import and register: not a candidate's
    profile = cProfile.Profile()
    profile.enable()
    started = time.perf_counter()
    train_seed(data, config(candidates()[0], epochs, 0), 0)
    total = time.perf_counter() - started
    profile.disable()
    own = {}
    for (_, _, name), (_, _, seconds, _, _) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        part = next((p for p, names in PARTS.items() if any(n in name for n in names)), None)
        if part:
            own[part] = own.get(part, 0.0) + seconds
    return {"total": total} | own | {"rest": total - sum(own.values())}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="The recipe search's candidate-seeds per minute, before and now; or its score over time.")
    parser.add_argument("--rows", type=positive_int, default=3000, help="train rows (valid and test get a quarter each)")
    parser.add_argument("--classes", type=positive_int, default=32, help="labels (ED has 32)")
    parser.add_argument("--candidates", type=positive_int, default=4, help="candidates of the head grid (at most 16)")
    parser.add_argument("--seeds", type=positive_int, default=1, help="seeds per candidate")
    parser.add_argument("--epochs", type=positive_int, default=3, help="epochs per model (early stopping off)")
    parser.add_argument("--workers", type=positive_int, default=2, help="worker processes of the path now")
    parser.add_argument("--where", action="store_true", help="time where one candidate-seed's seconds go instead")
    parser.add_argument(
        "--curve", type=Path, nargs="+", default=None, help="search folders: their best score at 5, 10, 20, 30 min"
    )
    parser.add_argument("--results", type=output_file, default=None, help="also write the measurements here (JSON)")
    parser.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def run(args: argparse.Namespace) -> int:
    if args.where:
        results = where(args.rows, args.classes, args.epochs)
        print(f"CPU: {cpu_name()}; one seed, {args.rows} train rows, {args.epochs} epochs, one thread")
        print("| part | seconds | share |")
        print("|---|---|---|")
        for part, seconds in results.items():
            print(f"| {part} | {seconds:.2f} | {100 * seconds / results['total']:.0f}% |")
    elif args.curve:
        results = {str(folder): curve(folder) for folder in args.curve}
        for folder, marks in results.items():
            shown = "  ".join(
                f"{mark}: {v['best'] if v['best'] is None else round(v['best'], 2)} ({v['candidates']})"
                for mark, v in marks.items()
            )
            print(f"{folder}: {shown}")
    else:
        results = measure(args)
        cpu = cpu_name()
        print(f"CPU: {cpu}; {args.rows} train rows, {args.candidates} candidates x {args.seeds} seeds, {args.epochs} epochs")
        print("| selection | path | processes x threads | candidate-seeds/min | s per seed-fold |")
        print("|---|---|---|---|---|")
        for name, paths in results.items():
            for path in ("before", "now"):
                r = paths[path]
                speed = f"{r['candidate_seeds_per_minute']:.2f} | {r['seconds_per_seed_fold']:.2f}"
                print(f"| {name} | {path} | {r['processes']} x {r['threads']} | {speed} |")
            print(f"| {name} | ratio now/before | | {paths['ratio']:.2f}x | |")
    if args.results:
        atomic_write_text(
            args.results,
            json.dumps(
                {"results": results, "settings": vars(args) | {"curve": None, "results": None}} | provenance(),
                indent=2,
                default=str,
            )
            + "\n",
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
