"""The TF-IDF + logistic-regression baseline, a text-only point of comparison for the fusion
classifier, and the fusion's lexical source made from the same features (the method itself is
`fec.classify.tfidf` and `fec.classify.lexical`; `python baselines/tfidf.py` and `fec tfidf` are
their command line).

    import fec
    run = fec.tfidf("ED", runs=5)                 # word 1-2 + char_wb 2-5-grams, C on valid; -> fec.Run
    run = fec.tfidf("ED", C=2, ngram_max=1)       # fixed C, unigrams only
    from fec.api.tfidf import lexical_source
    lexical_source("ED")                          # dataset/ED/tfidf/, read by fec.train(..., sources=[..., "tfidf"])

`tfidf` reads data/{task}/{train,valid,test}.csv through `fec.core.data` (a task without test.csv
reports validation only; a multi-label task gets one-vs-rest regressions with C and per-label
thresholds chosen by `cv`-fold cross-validation on train) and writes a run folder
Logs/{task}_tfidf_{stamp}/ (config.json, train.log, results.json, per_label.csv, confusion.png)
and a `runs.csv` row (method `tfidf`), as every trainer does. `lexical_source` makes the fusion's
lexical source instead of a run (train's probabilities out of fold, C chosen by the out-of-fold
metric, the model beside the features). Fits run on one BLAS/OpenMP thread by default
(`threads`): these small sparse fits do not gain from more, and on a busy machine extra threads
only spin.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from threadpoolctl import threadpool_limits

from fec.api.run import Run
from fec.api.trainer_settings import TrainerSettings
from fec.classify.cross_validation import check_folds
from fec.classify.lexical import LexicalSettings
from fec.classify.lexical_store import store_lexical_source
from fec.classify.tfidf import ANALYZERS, DEFAULT_C_GRID, SOURCE, BaselineSeedResult, run_multilabel_seed, run_seed, vectorize
from fec.core.data import Split, available_modes, load_splits
from fec.core.errors import SettingError, UsageError
from fec.core.settings import (
    BadValue,
    documented,
    given_path,
    given_record,
    positive_float,
    positive_int,
    setting,
)
from fec.runs.output_rule import check_outputs
from fec.runs.training_run import Closing, RunPlan, ScoredSplits, train_run

log = logging.getLogger(__name__)


def ngram_lengths(value) -> list[int]:
    """Character n-gram lengths: two positive integers, MIN and MAX."""
    if isinstance(value, str) or not isinstance(value, list | tuple) or len(value) != 2:
        raise BadValue(f"must be two positive integers (MIN MAX), got {value!r}")
    return [positive_int(length) for length in value]


@dataclass(kw_only=True)
class TfidfSettings(TrainerSettings):
    """Every setting of the TF-IDF baseline and of the lexical source (`python baselines/tfidf.py -h`
    lists the same as options)."""

    C: float | None = setting(
        None, check=positive_float, help="inverse regularisation strength; default: chosen on validation from --C_grid"
    )
    C_grid: list[float] | None = setting(
        None,
        check=positive_float,
        many=True,
        help=f"values of C tried when --C is not given (selected by validation weighted F1); default {DEFAULT_C_GRID}, "
        f"with --store {list(LexicalSettings.C_grid)} (selected by the out-of-fold metric)",
    )
    max_features: int | None = setting(
        None,
        check=positive_int,
        help="keep only the most frequent n-grams of each block (words, characters) (default: all with min_df)",
    )
    ngram_max: int = setting(2, check=positive_int, help="word n-grams of length 1..NGRAM_MAX")
    analyzer: str = setting(
        "word+char",
        choices=ANALYZERS,
        help="word = word n-grams only; word+char = word n-grams beside character n-grams within word boundaries (char_wb)",
    )
    char_ngrams: list[int] = setting([2, 5], check=ngram_lengths, help="with word+char: character n-gram lengths MIN..MAX")
    min_df: int = setting(2, check=positive_int, help="drop n-grams found in fewer training texts")
    max_iter: int = setting(2000, check=positive_int, help="lbfgs iteration cap (a warning is logged if a fit stops there)")
    cv: int = setting(
        5,
        check=positive_int,
        help="multi-label tasks: folds of the cross-validation on train that chooses C and the per-label thresholds; "
        "with --store: the folds that score train out of fold",
    )
    threads: int = setting(1, check=positive_int, help="BLAS/OpenMP threads for the fits")
    store: bool = setting(
        False,
        help="store the fusion's lexical source in --dataset_dir (train's probabilities out of --cv folds, valid's "
        "and test's by the model fitted on all of train) instead of a baseline run",
    )
    dataset_dir: Path = setting(Path("dataset"), check=given_path, help="with --store: the feature store root")
    overwrite: bool = setting(False, help="with --store: replace a source stored with other settings")

    def __post_init__(self) -> None:
        super().__post_init__()
        low, high = self.char_ngrams
        if low > high:
            raise SettingError("char_ngrams", f"{low} {high}", "MIN must not exceed MAX")
        seeds = self.chosen_seeds()
        if self.store and len(seeds) > 1:
            raise UsageError(f"--store with seeds {' '.join(map(str, seeds))}: the lexical source is made once; give one seed")
        if self.overwrite and not self.store:
            raise UsageError("--overwrite applies with --store (a baseline run never replaces anything)")

    def grid(self, default: list[float] | tuple[float, ...]) -> list[float]:
        """The values of C to try: `C` alone when given, else `C_grid` (or `default`), sorted."""
        return [self.C] if self.C is not None else sorted(set(self.C_grid or default))


@documented(TfidfSettings)
def tfidf(task: str | None = None, *, settings: TfidfSettings | None = None, **options) -> Run:
    """The TF-IDF baseline: a run of every seed into a new run folder; returns it.

    run = fec.tfidf("ED", runs=5)

    The data is read and the settings checked against it, the vectoriser fitted once, then every
    seed's regressions. The lexical source (`baselines/tfidf.py --store`) is `lexical_source`."""
    settings = given_record(TfidfSettings, settings, task=task, **options) or TfidfSettings(task=task, **options)
    check_outputs(settings)
    if settings.store:
        raise SettingError("store", None, "makes the lexical source, not a run: call fec.api.tfidf.lexical_source")
    grid = settings.grid(DEFAULT_C_GRID)
    # train and valid are required (a missing one is a one-line DataError); test only if present.
    modes = ["train", "valid"] + (["test"] if "test" in available_modes(settings.data_dir, settings.task) else [])
    splits = load_splits(settings.data_dir, settings.task, modes)
    started = time.perf_counter()
    if splits["train"].multilabel:
        check_folds(settings.cv, len(splits["train"]), zero=None)
    if "test" not in splits:
        log.warning("%s: no test.csv; reporting validation metrics only", settings.task)
    features, vocabulary = vectorize(
        splits, settings.ngram_max, settings.min_df, settings.max_features, settings.analyzer, tuple(settings.char_ngrams)
    )
    vectorizer_seconds = round(time.perf_counter() - started, 2)
    log.info(
        "TF-IDF: %d n-grams (1..%d, min_df %d) from %d training texts in %.1fs",
        vocabulary,
        settings.ngram_max,
        settings.min_df,
        len(splits["train"]),
        vectorizer_seconds,
    )
    scored = ScoredSplits.of(splits)
    plan = RunPlan(
        task=settings.task,
        out=settings.out,
        folder_name=f"{settings.task}_tfidf",
        method="tfidf",
        seeds=settings.chosen_seeds(),
        sources=[SOURCE],
        config=run_record(settings, splits, grid, vocabulary),
        splits=scored,
    )
    fitted = TfidfSeeds(settings, features, scored, grid, {"vocabulary": vocabulary, "vectorizer_seconds": vectorizer_seconds})
    return Run(Path(train_run(plan, fitted)["run_dir"]))


@documented(TfidfSettings)
def lexical_source(task: str | None = None, *, settings: TfidfSettings | None = None, **options) -> Path:
    """The fusion's lexical source of the task, into the feature store; returns its folder
    (dataset/{task}/tfidf/: a safetensors file and a manifest per split, the model beside them).

    lexical_source("ED", C=2, overwrite=True)

    Train's probabilities are out of `cv` folds (dealt by the one seed of `seeds`), valid's and
    test's by the model fitted on all of train; C is chosen by the out-of-fold metric. A source
    stored with these settings is kept; one stored with other settings is replaced only with
    `overwrite`. `out` and `device` play no part."""
    settings = given_record(TfidfSettings, settings, task=task, **options) or TfidfSettings(
        task=task, **options | {"store": True}
    )
    check_outputs(settings)
    lexical = LexicalSettings(
        analyzer=settings.analyzer,
        ngram_max=settings.ngram_max,
        min_df=settings.min_df,
        max_features=settings.max_features,
        char_ngrams=tuple(settings.char_ngrams),
        C_grid=tuple(settings.grid(LexicalSettings.C_grid)),
        folds=settings.cv,
        seed=settings.chosen_seeds()[0],
        max_iter=settings.max_iter,
    )
    with threadpool_limits(settings.threads):
        return store_lexical_source(settings.data_dir, settings.dataset_dir, settings.task, lexical, settings.overwrite)


def run_record(settings: TfidfSettings, splits: dict[str, Split], grid: list[float], vocabulary: int) -> dict:
    """config.json of a TF-IDF run: the settings, the vectoriser and the classifier as they ran."""
    multilabel = splits["train"].multilabel
    return {
        "args": settings.record(),
        "option_defaults": TfidfSettings.defaults(),
        "seeds": settings.chosen_seeds(),
        "C_grid": grid,
        "selection": f"{settings.cv}-fold CV macro-F1 on train, thresholds out of fold"
        if multilabel
        else "validation weighted F1, ties to the smaller C",
        "vectorizer": {
            "analyzer": settings.analyzer,
            "ngram_range": [1, settings.ngram_max],
            "sublinear_tf": True,
            "char_ngram_range": list(settings.char_ngrams) if settings.analyzer == "word+char" else None,
            "min_df": settings.min_df,
            "max_features": settings.max_features,
            "lowercase": True,
            "vocabulary": vocabulary,
        },
        "classifier": {
            "model": "LogisticRegression",
            "solver": "lbfgs",
            "max_iter": settings.max_iter,
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

    settings: TfidfSettings
    features: dict
    splits: ScoredSplits
    grid: list[float]
    extra: dict
    fits: dict = field(default_factory=dict)

    def start(self, run_dir: Path) -> None:
        log.info("C %s", f"fixed {self.settings.C}" if self.settings.C is not None else f"from grid {self.grid}")

    def train_seed(self, seed: int, run_dir: Path) -> BaselineSeedResult:
        settings, labels = self.settings, self.splits.labels
        if self.fits and not self.splits.multilabel:
            log.info("seed %d: lbfgs does not use the seed; reusing the fits of the first seed", seed)
        with threadpool_limits(settings.threads):
            if self.splits.multilabel:
                return run_multilabel_seed(self.features, labels, self.grid, seed, settings.max_iter, settings.cv)
            return run_seed(self.features, labels, self.grid, seed, settings.max_iter, self.fits, len(self.splits.label_names))

    def log_seed(self, result: BaselineSeedResult) -> None:
        shown, split = (result.test, "test") if result.test else (result.valid, "valid")
        figures = " ".join(f"{k} {shown[k]:.2f}" for k in ("acc", "wf1", "macro_f1", "micro_f1") if k in shown)
        log.info("seed %d: C=%g | %s %s | %.1fs", result.seed, result.C, split, figures, result.seconds)

    def closing(self, results: list[BaselineSeedResult]) -> Closing:
        settings = self.settings
        row_settings = {
            "C": "/".join(f"{c:g}" for c in sorted({r.C for r in results})),
            "ngram_max": settings.ngram_max,
            "min_df": settings.min_df,
            "analyzer": settings.analyzer,
        }
        if settings.analyzer == "word+char":
            row_settings["char_ngrams"] = "{}-{}".format(*settings.char_ngrams)
        if self.splits.multilabel:
            row_settings["selection"] = f"cv{settings.cv}"
        fit_seconds = round(sum(entry["fit_seconds"] for _, entry in self.fits.values()), 2)
        return Closing(row_settings, extra=self.extra | {"fit_seconds": fit_seconds})
