"""`main.py` (`fec train`): train the fusion classifier on stored features, report test metrics
(mean±std over seeds). The command line of `fec.train` (`fec.api.train`), where the work is done.

    python main.py -dataset ED                       # the published command line: corrected recipe, one seed
    python main.py --task ED --runs 5                # seeds 0..4, as the paper's 5 runs
    python main.py --task ED --sources llama         # ablation: LLaMA features only
    python main.py --task ED --compat reference      # the published recipe, defects included
    python main.py --task ED --raw_inputs all        # encoders also reach the MLP directly (not published)
    python main.py --task semeval_eng --runs 3       # multi-label: BCE, per-label thresholds tuned on valid
    python main.py --task ED --features llama:mean:-1,-9,-17 roberta:mean:-1   # layers and poolings of variant extractions
    python main.py --task ED --sources llama bert roberta e5 --features e5:mean:-1   # a fourth source (extracted with --slot e5)
    python main.py --task ED --recipe recipes/ED.json --runs 5                # the best recipe found on validation
"""

from __future__ import annotations

import argparse

from fec.api.train import TrainSettings, train
from fec.cli.options import command_line_options, trainer_parser
from fec.cli.script import run_script


def build_parser() -> argparse.ArgumentParser:
    """main.py's options: one per setting of `TrainSettings` (published spellings as aliases), and --log_level."""
    return trainer_parser(
        "Train the LLM-FusionClassifier head on stored features. Every option also has its single-dash spelling.",
        TrainSettings,
        early_stop={"aliases": ("-early-stop", "--early-stop")},
        sigma={"aliases": ("-SIGMA", "--SIGMA")},
        features={"metavar": "SLOT:POOLING:LAYERS[@FOLDER]"},
    )


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The options, and the names of those the command line gave (`given`): only these go to
    `fec.train`, so a --recipe file's values yield to them and fill the others."""
    args = parser.parse_args(argv)
    args.given = command_line_options(parser, argv) - {"log_level"}
    return args


def run(args: argparse.Namespace) -> None:
    given = {name: getattr(args, name) for name in args.given}
    train(recipe=given.pop("recipe", None), **given)


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, argv, parse=parse)
