"""`baselines/tfidf.py` (`fec tfidf`): the TF-IDF + logistic-regression baseline, a text-only
point of comparison for the fusion classifier.

    python baselines/tfidf.py --task ED                      # seed 0; word 1-2 + char_wb 2-5-grams, C on valid
    python baselines/tfidf.py -dataset go_emotion -runs 5    # seeds 0..4, mean±std as main.py reports
    python baselines/tfidf.py --task ED --C 2 --ngram_max 1  # fixed C, unigrams only
    python baselines/tfidf.py --task ED --analyzer word      # word n-grams only, no character n-grams

Reads data/{task}/{train,valid,test}.csv through `fec.core.data` (a task without test.csv reports
validation only; a multi-label task gets one-vs-rest regressions with C and per-label thresholds
chosen by --cv-fold cross-validation on train) and writes a run folder Logs/{task}_tfidf_{stamp}/ (config.json,
train.log, results.json, per_label.csv, confusion.png) and a `runs.csv` row (method `tfidf`), as
every trainer does. Fits run on one BLAS/OpenMP thread by default (`--threads`): these small sparse
fits do not gain from more, and on a busy machine extra threads only spin.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from fec.classify.cross_validation import check_folds
from fec.classify.tfidf import ANALYZERS, DEFAULT_C_GRID, SOURCE, run_multilabel_seed, run_seed, vectorize
from fec.cli.options import (
    ArgumentParser,
    Distinct,
    chosen_seeds,
    common_options,
    flag,
    positive_float,
    positive_int,
    seed_options,
    trainer_options,
)
from fec.cli.script import run_script
from fec.core.data import available_modes, load_splits
from fec.core.errors import UsageError
from fec.core.provenance import provenance
from fec.runs.folder import finish_run, run_folder, write_json

log = logging.getLogger("fec.classify.tfidf")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="TF-IDF + logistic-regression baseline. Every option also has its single-dash spelling.",
        parents=[trainer_options("folder holding TASK/MODE.csv"), seed_options(), common_options()],
    )
    parser.add_argument(
        *flag("C"),
        dest="C",
        type=positive_float,
        default=None,
        help="inverse regularisation strength; default: chosen on validation from --C_grid",
    )
    parser.add_argument(
        *flag("C_grid"),
        type=positive_float,
        action=Distinct,
        nargs="+",
        default=DEFAULT_C_GRID,
        help="values of C tried when --C is not given (selected by validation weighted F1)",
    )
    parser.add_argument(
        *flag("max_features"),
        type=positive_int,
        default=None,
        help="keep only the most frequent n-grams of each block (words, characters) (default: all with min_df)",
    )
    parser.add_argument(*flag("ngram_max"), type=positive_int, default=2, help="word n-grams of length 1..NGRAM_MAX")
    parser.add_argument(
        *flag("analyzer"),
        default="word+char",
        choices=ANALYZERS,
        help="word = word n-grams only; word+char = word n-grams beside character n-grams within word boundaries (char_wb)",
    )
    parser.add_argument(
        *flag("char_ngrams"),
        type=positive_int,
        nargs=2,
        default=[2, 5],
        metavar=("MIN", "MAX"),
        help="with word+char: character n-gram lengths MIN..MAX",
    )
    parser.add_argument(*flag("min_df"), type=positive_int, default=2, help="drop n-grams found in fewer training texts")
    parser.add_argument(
        *flag("max_iter"), type=positive_int, default=2000, help="lbfgs iteration cap (a warning is logged if a fit stops there)"
    )
    parser.add_argument(
        *flag("cv"),
        type=positive_int,
        default=5,
        help="multi-label tasks: folds of the cross-validation on train that chooses C and the per-label thresholds",
    )
    parser.add_argument(*flag("threads"), type=positive_int, default=1, help="BLAS/OpenMP threads for the fits")
    return parser


def run(args: argparse.Namespace) -> dict:
    seeds = chosen_seeds(args)
    grid = [args.C] if args.C is not None else sorted(set(args.C_grid))
    # train and valid are required (a missing one is a one-line DataError); test only if present.
    modes = ["train", "valid"] + (["test"] if "test" in available_modes(args.data_dir, args.task) else [])
    splits = load_splits(args.data_dir, args.task, modes)
    started = time.perf_counter()
    if splits["train"].multilabel:
        check_folds(args.cv, len(splits["train"]), zero=None)
    if args.char_ngrams[0] > args.char_ngrams[1]:
        raise UsageError(f"--char_ngrams {args.char_ngrams[0]} {args.char_ngrams[1]}: MIN must not exceed MAX")
    features, vocabulary = vectorize(splits, args.ngram_max, args.min_df, args.max_features, args.analyzer,
                                     tuple(args.char_ngrams))  # fmt: skip
    vectorizer_seconds = round(time.perf_counter() - started, 2)
    with run_folder(args.out, f"{args.task}_tfidf") as run_dir:
        return fit_run(args, run_dir, splits, features, vocabulary, vectorizer_seconds, seeds, grid, started)


def fit_run(args: argparse.Namespace, run_dir: Path, splits: dict, features: dict, vocabulary: int, vectorizer_seconds: float,
            seeds: list[int], grid: list[float], started: float) -> dict:  # fmt: skip
    """Fit every seed on the TF-IDF features into `run_dir` and write the run's files."""
    label_names, multilabel = splits["train"].label_names, splits["train"].multilabel
    chosen = "fixed " + str(args.C) if args.C is not None else f"from grid {grid}"
    log.info("run folder %s; seeds %s; C %s", run_dir, seeds, chosen)
    if "test" not in splits:
        log.warning("%s: no test.csv; reporting validation metrics only", args.task)
    log.info("TF-IDF: %d n-grams (1..%d, min_df %d) from %d training texts in %.1fs", vocabulary, args.ngram_max,
             args.min_df, len(splits["train"]), vectorizer_seconds)  # fmt: skip
    write_json(run_dir / "config.json", {
        "args": vars(args), "seeds": seeds, "C_grid": grid,
        "selection": f"{args.cv}-fold CV macro-F1 on train, thresholds out of fold" if multilabel else
                     "validation weighted F1, ties to the smaller C",
        "vectorizer": {"analyzer": args.analyzer, "ngram_range": [1, args.ngram_max], "sublinear_tf": True,
                       "char_ngram_range": list(args.char_ngrams) if args.analyzer == "word+char" else None,
                       "min_df": args.min_df,
                       "max_features": args.max_features, "lowercase": True, "vocabulary": vocabulary},
        "classifier": {"model": "LogisticRegression", "solver": "lbfgs", "max_iter": args.max_iter,
                       "multi_label": "one-vs-rest" if multilabel else None, "multinomial": not multilabel},
        "rows": {m: len(s) for m, s in splits.items()}, "label_names": label_names,
        "csv_sha256": {m: s.csv_sha256 for m, s in splits.items()}, **provenance(),
    })  # fmt: skip
    labels = {mode: split.labels for mode, split in splits.items()}
    results, fits = [], {}
    for seed in seeds:
        if fits and not multilabel:
            log.info("seed %d: lbfgs does not use the seed; reusing the fits of seed %d", seed, seeds[0])
        with threadpool_limits(args.threads):
            if multilabel:
                result = run_multilabel_seed(features, labels, grid, seed, args.max_iter, args.cv)
            else:
                result = run_seed(features, labels, grid, seed, args.max_iter, fits, len(label_names))
        shown, split = (result.test, "test") if result.test else (result.valid, "valid")
        figures = " ".join(f"{k} {shown[k]:.2f}" for k in ("acc", "wf1", "macro_f1", "micro_f1") if k in shown)
        log.info("seed %d: C=%g | %s %s | %.1fs", seed, result.C, split, figures, result.seconds)
        results.append(result)
    extra = {"vocabulary": vocabulary, "vectorizer_seconds": vectorizer_seconds,
             "fit_seconds": round(sum(entry["fit_seconds"] for _, entry in fits.values()), 2)}  # fmt: skip
    settings = {"C": "/".join(f"{c:g}" for c in sorted({r.C for r in results})), "ngram_max": args.ngram_max,
                "min_df": args.min_df, "analyzer": args.analyzer}  # fmt: skip
    if args.analyzer == "word+char":
        settings["char_ngrams"] = "{}-{}".format(*args.char_ngrams)
    if multilabel:
        settings["selection"] = f"cv{args.cv}"
    return finish_run(run_dir, args.out, args.task, results, sources=[SOURCE], labels=labels, label_names=label_names,
                      multilabel=multilabel, threshold=None, method="tfidf", recipe="", settings=settings,
                      seconds=round(time.perf_counter() - started, 2), extra=extra,
                      texts={mode: split.texts for mode, split in splits.items()})  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, argv)
