"""`baselines/tfidf.py` (`fec tfidf`): the TF-IDF + logistic-regression baseline, and with
--store the fusion's lexical source; the command line of `fec.api.tfidf`.

    python baselines/tfidf.py --task ED                      # seed 0; word 1-2 + char_wb 2-5-grams, C on valid
    python baselines/tfidf.py -dataset go_emotion -runs 5    # seeds 0..4, mean±std as main.py reports
    python baselines/tfidf.py --task ED --C 2 --ngram_max 1  # fixed C, unigrams only
    python baselines/tfidf.py --task ED --analyzer word      # word n-grams only, no character n-grams
    python baselines/tfidf.py --task ED --store              # the lexical source of the fusion, into dataset/ED/tfidf/
"""

from __future__ import annotations

import argparse

from fec.api.tfidf import TfidfSettings, lexical_source, tfidf
from fec.cli.options import positive_int, trainer_parser
from fec.cli.script import run_script


def build_parser() -> argparse.ArgumentParser:
    return trainer_parser(
        "TF-IDF + logistic-regression baseline. Every option also has its single-dash spelling.",
        TfidfSettings,
        char_ngrams={"type": positive_int, "nargs": 2, "metavar": ("MIN", "MAX")},
        store={"action": "store_true"},
        overwrite={"action": "store_true"},
    )


def run(args: argparse.Namespace) -> None:
    settings = TfidfSettings.from_options(vars(args))
    if settings.store:
        lexical_source(settings=settings)
    else:
        tfidf(settings=settings)


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, argv)
