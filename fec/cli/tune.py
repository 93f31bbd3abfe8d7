"""`tune.py` (`fec tune`): from a task's store to its best fusion recipe, searched automatically and
honestly: test is read once, by the final run of the chosen recipe. The command line of
`fec.tune` (`fec.api.tune`), where the work is done and its steps are told.

    python tune.py --task ED                                   # search what dataset/ED/ holds, 30 min budget
    python tune.py --task mine --extract --preset offline      # first extract the default search space
    python tune.py --task ED --budget_minutes 90 --save recipes/ED_tuned.json
    python tune.py --task ED --resume Logs/tune_ED_20261205-190000   # continue an interrupted search

The search folder is `Logs/tune_{task}_{stamp}/` (`fec.runs.tune_folder`). Ctrl-C stops the
search with its table written, logs the command that resumes it, and exits with code 130.
"""

from __future__ import annotations

import argparse

from fec.api.tune import SearchInterrupted, TuneSettings, tune
from fec.cli.options import ArgumentParser, add_log_level, add_settings
from fec.cli.script import run_script

SWITCH = {"action": "store_true"}


def build_parser() -> argparse.ArgumentParser:
    """tune.py's options: one per setting of `TuneSettings` (`--seed` also spells --sampler_seed), and --log_level."""
    parser = ArgumentParser(
        description="Search the best fusion recipe of a task's stored features (Optuna, successive halving over seeds), "
        "then train it. Every option also has its single-dash spelling.",
    )
    add_settings(parser, TuneSettings, ["device"])
    add_log_level(parser)
    add_settings(
        parser,
        TuneSettings,
        [name for name in TuneSettings.names() if name != "device"],
        extract=SWITCH,
        model={"nargs": "+", "type": None, "metavar": "SLOT=MODEL"},  # the pairs checked together: each slot once
        slot_kind={"nargs": "+", "type": None, "metavar": "SLOT=KIND"},
        compile=SWITCH,
        overwrite=SWITCH,
        sampler_seed={"aliases": ("--seed", "-seed")},
        no_final=SWITCH,
    )
    return parser


def run(args: argparse.Namespace) -> int | None:
    try:
        tune(settings=TuneSettings.from_options(vars(args)))
    except SearchInterrupted:
        return 130  # the search logged the command that resumes it
    return None


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, argv)
