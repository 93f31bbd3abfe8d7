"""TF-IDF + logistic regression: a text-only baseline to set beside the fusion classifier.

    python -m baselines.tfidf -dataset ED                   # seed 0; C picked on valid from 0.5 1 2 4 8
    python -m baselines.tfidf -dataset go_emotion -runs 5   # seeds 0..4, mean±std as main.py reports
    python -m baselines.tfidf -dataset ED -C 2 -ngram_max 1 # fixed C, unigrams only
    python -m baselines.tfidf -dataset ED -out /tmp/tfidf_logs

Reads data/{dataset}/{train,valid,test}.csv through `fec.data` (any single-label task; a task
without test.csv reports validation only). Word n-gram TF-IDF (sublinear tf, n-grams 1..2,
min_df 2) is fitted on train; a multinomial logistic regression (lbfgs) is fitted on train for
every C in the grid, the C with the best validation weighted F1 is kept (ties: the smaller C),
and test is evaluated once, on that model. Writes Logs/{dataset}_tfidf_{stamp}/ with
config.json, train.log and results.json, and appends one row (sources `tfidf-logreg`, mode
`baseline`) to Logs/runs.csv.

The seed sets `random_state`, but the lbfgs solver never reads it: every seed gives the same
model. So each C is fitted once and later seeds reuse that fit (results.json marks the reused
entries); the mean±std over seeds is still reported, with std 0. Fits run on one BLAS/OpenMP
thread by default (`-threads`): these small sparse fits do not gain from more, and on a busy
machine extra threads only spin (a 3.7x slowdown measured with two threads on two loaded cores).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from fec.cli import add_common_logging, run_script
from fec.data import DataError, available_modes, load_splits
from fec.options import ArgumentParser, add_seed_options, chosen_seeds, positive_float, positive_int, task_name
from fec.provenance import provenance
from fec.runlog import append_run_row, run_folder, runs_row, write_json
from fec.train import classification_metrics, format_summary, summarise

log = logging.getLogger("fec.baselines.tfidf")

SOURCE = "tfidf-logreg"
DEFAULT_C_GRID = [0.5, 1.0, 2.0, 4.0, 8.0]


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="TF-IDF + logistic-regression baseline. Single- and double-dash spellings both work.")
    parser.add_argument("-dataset", "--dataset", type=task_name, required=True, help="task name: reads DATA_DIR/DATASET/{train,valid,test}.csv")
    parser.add_argument("-data_dir", "--data_dir", default="data", help="data root")
    parser.add_argument("-out", "--out", default="Logs", help="folder for run folders and runs.csv")
    parser.add_argument("-C", "--C", dest="C", type=positive_float, default=None, help="inverse regularisation strength; default: chosen on validation from -C_grid")
    parser.add_argument("-C_grid", "--C_grid", type=positive_float, nargs="+", default=DEFAULT_C_GRID, help="values of C tried when -C is not given (selected by validation weighted F1)")
    parser.add_argument("-max_features", "--max_features", type=positive_int, default=None, help="keep only the most frequent n-grams (default: all with min_df)")
    parser.add_argument("-ngram_max", "--ngram_max", type=positive_int, default=2, help="word n-grams of length 1..NGRAM_MAX")
    parser.add_argument("-min_df", "--min_df", type=positive_int, default=2, help="drop n-grams found in fewer training texts")
    parser.add_argument("-max_iter", "--max_iter", type=positive_int, default=2000, help="lbfgs iteration cap (a warning is logged if a fit stops there)")
    parser.add_argument("-threads", "--threads", type=positive_int, default=1, help="BLAS/OpenMP threads for the fits")
    add_seed_options(parser)
    add_common_logging(parser)
    return parser


@dataclass
class BaselineSeedResult:
    """One seed: the chosen C, its validation (and test) metrics, and every C tried."""

    seed: int
    C: float
    valid: dict
    test: dict | None
    seconds: float
    n_iter: int
    grid: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return asdict(self)


def fit_logreg(x, y, C: float, seed: int, max_iter: int) -> tuple[LogisticRegression, bool]:
    """Multinomial (softmax) logistic regression; returns the model and whether lbfgs converged."""
    model = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            model.fit(x, y)
        except ValueError as err:
            raise DataError(f"logistic regression cannot be fitted: {str(err).splitlines()[0]}") from err
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    if not converged:
        log.warning("C=%g seed %d: lbfgs stopped at max_iter=%d without converging; raise -max_iter", C, seed, max_iter)
    return model, converged


def run_seed(features: dict, labels: dict, grid: list[float], seed: int, max_iter: int, fits: dict) -> BaselineSeedResult:
    """Fit every C (or reuse the fit in `fits`: lbfgs ignores the seed), keep the best on valid, test once."""
    started = time.perf_counter()
    tried, best, best_model = [], None, None
    for C in grid:
        if C in fits:
            model, entry = fits[C]
            entry = entry | {"reused_from_seed": entry["seed"]}
        else:
            fit_start = time.perf_counter()
            model, converged = fit_logreg(features["train"], labels["train"], C, seed, max_iter)
            valid = classification_metrics(labels["valid"], model.predict(features["valid"]))
            entry = {"C": C, "valid": valid, "n_iter": int(np.max(model.n_iter_)), "converged": converged,
                     "fit_seconds": round(time.perf_counter() - fit_start, 2), "seed": seed}
            fits[C] = (model, entry)
            log.info("seed %d C=%-5g | valid acc %.2f wF1 %.2f macro-F1 %.2f | %d iterations, %.1fs", seed, C,
                     valid["acc"], valid["wf1"], valid["macro_f1"], entry["n_iter"], entry["fit_seconds"])
        entry = {k: v for k, v in entry.items() if k != "seed"}
        tried.append(entry)
        valid = entry["valid"]
        if best is None or valid["wf1"] > best["valid"]["wf1"]:
            best, best_model = tried[-1], model
    test = None
    if "test" in features:  # evaluated once, on the model chosen on validation
        test = classification_metrics(labels["test"], best_model.predict(features["test"]))
    seconds = round(time.perf_counter() - started, 2)
    return BaselineSeedResult(seed, best["C"], best["valid"], test, seconds, best["n_iter"], tried)


def run(args: argparse.Namespace) -> dict:
    seeds = chosen_seeds(args)
    grid = [args.C] if args.C is not None else sorted(set(args.C_grid))
    # train and valid are required (a missing one is a one-line DataError); test only if present.
    modes = ["train", "valid"] + (["test"] if "test" in available_modes(args.data_dir, args.dataset) else [])
    splits = load_splits(args.data_dir, args.dataset, modes)
    if splits["train"].multilabel:
        raise DataError(f"{splits['train'].path}: multi-label task (one 0/1 column per label); "
                        "the TF-IDF baseline handles single-label tasks only so far")

    started = time.perf_counter()
    vectorizer = TfidfVectorizer(
        ngram_range=(1, args.ngram_max), sublinear_tf=True, min_df=args.min_df, max_features=args.max_features,
        lowercase=True, dtype=np.float64,
    )
    try:
        features = {"train": vectorizer.fit_transform(splits["train"].texts)}
    except ValueError as err:  # e.g. an empty vocabulary when min_df is too high for the data
        raise DataError(f"{splits['train'].path}: TF-IDF: {err}") from err
    for mode in modes[1:]:
        features[mode] = vectorizer.transform(splits[mode].texts)
    vectorizer_seconds = round(time.perf_counter() - started, 2)
    with run_folder(args.out, f"{args.dataset}_tfidf") as run_dir:
        return fit_run(args, run_dir, splits, features, len(vectorizer.vocabulary_), vectorizer_seconds, seeds, grid, started)


def fit_run(args: argparse.Namespace, run_dir, splits: dict, features: dict, vocabulary: int, vectorizer_seconds: float,
            seeds: list[int], grid: list[float], started: float) -> dict:
    """Fit every seed on the TF-IDF features into `run_dir` and write the run's files."""
    label_names = splits["train"].label_names
    log.info("run folder %s; seeds %s; C %s", run_dir, seeds, "fixed " + str(args.C) if args.C is not None else f"from grid {grid}")
    if "test" not in splits:
        log.warning("%s: no test.csv; reporting validation metrics only", args.dataset)
    log.info("TF-IDF: %d n-grams (1..%d, min_df %d) from %d training texts in %.1fs",
             vocabulary, args.ngram_max, args.min_df, len(splits["train"]), vectorizer_seconds)

    write_json(run_dir / "config.json", {
        "args": vars(args), "seeds": seeds, "C_grid": grid, "selection": "validation weighted F1, ties to the smaller C",
        "vectorizer": {"ngram_range": [1, args.ngram_max], "sublinear_tf": True, "min_df": args.min_df,
                       "max_features": args.max_features, "lowercase": True, "vocabulary": vocabulary},
        "classifier": {"model": "LogisticRegression", "solver": "lbfgs", "multinomial": True, "max_iter": args.max_iter},
        "rows": {m: len(s) for m, s in splits.items()}, "label_names": label_names,
        "csv_sha256": {m: s.csv_sha256 for m, s in splits.items()}, **provenance(),
    })

    labels = {mode: split.labels for mode, split in splits.items()}
    results, fits = [], {}
    for seed in seeds:
        if fits:
            log.info("seed %d: lbfgs does not use the seed; reusing the fits of seed %d", seed, seeds[0])
        with threadpool_limits(args.threads):
            result = run_seed(features, labels, grid, seed, args.max_iter, fits)
        shown = result.test or result.valid
        log.info("seed %d: C=%g | %s acc %.2f wF1 %.2f macro-F1 %.2f | %.1fs", seed, result.C,
                 "test" if result.test else "valid", shown["acc"], shown["wf1"], shown["macro_f1"], result.seconds)
        results.append(result)

    summary = summarise(results)
    best = max(results, key=lambda r: r.valid["wf1"])
    payload = {"task": args.dataset, "sources": [SOURCE], "seeds": [r.summary() for r in results], "summary": summary,
               "best_seed": best.seed, "vocabulary": vocabulary, "vectorizer_seconds": vectorizer_seconds,
               "fit_seconds": round(sum(entry["fit_seconds"] for _, entry in fits.values()), 2),
               "seconds": round(time.perf_counter() - started, 2)}
    write_json(run_dir / "results.json", payload)
    settings = {"sources": SOURCE, "mode": "baseline", "norm": "-", "pn": "-", "sigma": "-", "lr": "-",
                "batch_size": "-", "seeds": " ".join(map(str, seeds))}
    row = runs_row(args.dataset, run_dir, settings, summary, []) | {"best_epoch": "-"}
    table = append_run_row(args.out, row)
    split = "test" if "test" in summary else "valid"
    chosen = sorted({r.C for r in results})
    log.info("%s %s (%d seed%s, C %s, %.0fs): %s", args.dataset, split, len(seeds), "s" if len(seeds) > 1 else "",
             "/".join(f"{c:g}" for c in chosen), payload["seconds"], format_summary(summary[split]))
    log.info("run folder: %s; all runs: column -s, -t %s", run_dir, table)
    return payload | {"run_dir": str(run_dir)}


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, (DataError,), argv)


if __name__ == "__main__":
    sys.exit(main())
