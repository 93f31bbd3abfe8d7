"""`baselines/tfidf.py` (`fec tfidf`): the TF-IDF + logistic-regression baseline, a text-only
point of comparison for the fusion classifier.

    python baselines/tfidf.py --task ED                      # seed 0; word 1-2 + char_wb 2-5-grams, C on valid
    python baselines/tfidf.py -dataset go_emotion -runs 5    # seeds 0..4, mean±std as main.py reports
    python baselines/tfidf.py --task ED --C 2 --ngram_max 1  # fixed C, unigrams only
    python baselines/tfidf.py --task ED --analyzer word      # word n-grams only, no character n-grams
    python baselines/tfidf.py --task ED --store              # the lexical source of the fusion, into dataset/ED/tfidf/

Reads data/{task}/{train,valid,test}.csv through `fec.core.data` (a task without test.csv reports
validation only; a multi-label task gets one-vs-rest regressions with C and per-label thresholds
chosen by --cv-fold cross-validation on train) and writes a run folder Logs/{task}_tfidf_{stamp}/ (config.json,
train.log, results.json, per_label.csv, confusion.png) and a `runs.csv` row (method `tfidf`), as
every trainer does. With --store it makes the fusion's lexical source instead of a run
(`fec.classify.lexical`: train's probabilities out of fold, C chosen by the out-of-fold metric,
the model beside the features), read by `main.py --sources ... tfidf`. Fits run on one
BLAS/OpenMP thread by default (`--threads`): these small sparse
fits do not gain from more, and on a busy machine extra threads only spin.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from threadpoolctl import threadpool_limits

from fec.classify.cross_validation import check_folds
from fec.classify.lexical import LexicalSettings
from fec.classify.lexical_store import store_lexical_source
from fec.classify.tfidf import ANALYZERS, DEFAULT_C_GRID, SOURCE, BaselineSeedResult, run_multilabel_seed, run_seed, vectorize
from fec.cli.options import (
    ArgumentParser,
    Distinct,
    chosen_seeds,
    common_options,
    flag,
    option_defaults,
    positive_float,
    positive_int,
    seed_options,
    trainer_options,
)
from fec.cli.script import run_script
from fec.core.data import available_modes, load_splits
from fec.core.errors import UsageError
from fec.runs.training_run import Closing, RunPlan, ScoredSplits, train_run

log = logging.getLogger(__name__)


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
        default=None,
        help=f"values of C tried when --C is not given (selected by validation weighted F1); default {DEFAULT_C_GRID}, "
        f"with --store {list(LexicalSettings.C_grid)} (selected by the out-of-fold metric)",
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
        help="multi-label tasks: folds of the cross-validation on train that chooses C and the per-label thresholds; "
        "with --store: the folds that score train out of fold",
    )
    parser.add_argument(*flag("threads"), type=positive_int, default=1, help="BLAS/OpenMP threads for the fits")
    add_store_options(parser)
    return parser


def add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        *flag("store"),
        action="store_true",
        help="store the fusion's lexical source in --dataset_dir (train's probabilities out of --cv folds, valid's "
        "and test's by the model fitted on all of train) instead of a baseline run",
    )
    parser.add_argument(*flag("dataset_dir"), default="dataset", help="with --store: the feature store root")
    parser.add_argument(*flag("overwrite"), action="store_true", help="with --store: replace a source stored with other settings")


def store(args: argparse.Namespace) -> dict:
    """The lexical source of the task, into the feature store (one seed: the folds' shuffle)."""
    seeds = chosen_seeds(args)
    if len(seeds) > 1:
        raise UsageError(f"--store with seeds {' '.join(map(str, seeds))}: the lexical source is made once; give one seed")
    grid = [args.C] if args.C is not None else sorted(set(args.C_grid or LexicalSettings.C_grid))
    settings = LexicalSettings(
        analyzer=args.analyzer,
        ngram_max=args.ngram_max,
        min_df=args.min_df,
        max_features=args.max_features,
        char_ngrams=tuple(args.char_ngrams),
        C_grid=tuple(grid),
        folds=args.cv,
        seed=seeds[0],
        max_iter=args.max_iter,
    )
    with threadpool_limits(args.threads):
        folder = store_lexical_source(args.data_dir, args.dataset_dir, args.task, settings, args.overwrite)
    return {"store_dir": str(folder)}


def run(args: argparse.Namespace) -> dict:
    """Read the data, check the options against it, fit the vectoriser once, fit every seed."""
    if args.char_ngrams[0] > args.char_ngrams[1]:
        raise UsageError(f"--char_ngrams {args.char_ngrams[0]} {args.char_ngrams[1]}: MIN must not exceed MAX")
    if args.store:
        return store(args)
    if args.overwrite:
        raise UsageError("--overwrite applies with --store (a baseline run never replaces anything)")
    grid = [args.C] if args.C is not None else sorted(set(args.C_grid or DEFAULT_C_GRID))
    # train and valid are required (a missing one is a one-line DataError); test only if present.
    modes = ["train", "valid"] + (["test"] if "test" in available_modes(args.data_dir, args.task) else [])
    splits = load_splits(args.data_dir, args.task, modes)
    started = time.perf_counter()
    multilabel = splits["train"].multilabel
    if multilabel:
        check_folds(args.cv, len(splits["train"]), zero=None)
    if "test" not in splits:
        log.warning("%s: no test.csv; reporting validation metrics only", args.task)
    features, vocabulary = vectorize(
        splits, args.ngram_max, args.min_df, args.max_features, args.analyzer, tuple(args.char_ngrams)
    )
    vectorizer_seconds = round(time.perf_counter() - started, 2)
    log.info(
        "TF-IDF: %d n-grams (1..%d, min_df %d) from %d training texts in %.1fs",
        vocabulary,
        args.ngram_max,
        args.min_df,
        len(splits["train"]),
        vectorizer_seconds,
    )
    scored = ScoredSplits.of(splits)
    plan = RunPlan(
        task=args.task,
        out=args.out,
        folder_name=f"{args.task}_tfidf",
        method="tfidf",
        seeds=chosen_seeds(args),
        sources=[SOURCE],
        config=run_record(args, splits, grid, vocabulary),
        splits=scored,
    )
    fitted = TfidfSeeds(args, features, scored, grid, {"vocabulary": vocabulary, "vectorizer_seconds": vectorizer_seconds})
    return train_run(plan, fitted)


def run_record(args: argparse.Namespace, splits: dict, grid: list[float], vocabulary: int) -> dict:
    """config.json of a TF-IDF run: the options, the vectoriser and the classifier as they ran."""
    multilabel = splits["train"].multilabel
    return {
        "args": vars(args),
        "option_defaults": option_defaults(build_parser()),
        "seeds": chosen_seeds(args),
        "C_grid": grid,
        "selection": f"{args.cv}-fold CV macro-F1 on train, thresholds out of fold"
        if multilabel
        else "validation weighted F1, ties to the smaller C",
        "vectorizer": {
            "analyzer": args.analyzer,
            "ngram_range": [1, args.ngram_max],
            "sublinear_tf": True,
            "char_ngram_range": list(args.char_ngrams) if args.analyzer == "word+char" else None,
            "min_df": args.min_df,
            "max_features": args.max_features,
            "lowercase": True,
            "vocabulary": vocabulary,
        },
        "classifier": {
            "model": "LogisticRegression",
            "solver": "lbfgs",
            "max_iter": args.max_iter,
            "multi_label": "one-vs-rest" if multilabel else None,
            "multinomial": not multilabel,
        },
        "rows": {m: len(s) for m, s in splits.items()},
        "label_names": splits["train"].label_names,
        "csv_sha256": {m: s.csv_sha256 for m, s in splits.items()},
    }


@dataclass
class TfidfSeeds:
    """The TF-IDF baseline's seeds (`fec.runs.training_run.SeedTrainer`): logistic regression on the
    features vectorised once; single-label fits do not depend on the seed and are reused."""

    args: argparse.Namespace
    features: dict
    splits: ScoredSplits
    grid: list[float]
    extra: dict
    fits: dict = field(default_factory=dict)

    def start(self, run_dir: Path) -> None:
        log.info("C %s", f"fixed {self.args.C}" if self.args.C is not None else f"from grid {self.grid}")

    def train_seed(self, seed: int, run_dir: Path) -> BaselineSeedResult:
        args, labels = self.args, self.splits.labels
        if self.fits and not self.splits.multilabel:
            log.info("seed %d: lbfgs does not use the seed; reusing the fits of the first seed", seed)
        with threadpool_limits(args.threads):
            if self.splits.multilabel:
                return run_multilabel_seed(self.features, labels, self.grid, seed, args.max_iter, args.cv)
            return run_seed(self.features, labels, self.grid, seed, args.max_iter, self.fits, len(self.splits.label_names))

    def log_seed(self, result: BaselineSeedResult) -> None:
        shown, split = (result.test, "test") if result.test else (result.valid, "valid")
        figures = " ".join(f"{k} {shown[k]:.2f}" for k in ("acc", "wf1", "macro_f1", "micro_f1") if k in shown)
        log.info("seed %d: C=%g | %s %s | %.1fs", result.seed, result.C, split, figures, result.seconds)

    def closing(self, results: list[BaselineSeedResult]) -> Closing:
        args = self.args
        settings = {
            "C": "/".join(f"{c:g}" for c in sorted({r.C for r in results})),
            "ngram_max": args.ngram_max,
            "min_df": args.min_df,
            "analyzer": args.analyzer,
        }
        if args.analyzer == "word+char":
            settings["char_ngrams"] = "{}-{}".format(*args.char_ngrams)
        if self.splits.multilabel:
            settings["selection"] = f"cv{args.cv}"
        fit_seconds = round(sum(entry["fit_seconds"] for _, entry in self.fits.values()), 2)
        return Closing(settings, extra=self.extra | {"fit_seconds": fit_seconds})


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, argv)
