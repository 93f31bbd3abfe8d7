"""`report.py` (`fec report`): pool the seeds of finished runs that share a recipe into one
table row (markdown or CSV); see `fec.runs.report` for the pooling rule. Runs written before runs
recorded their option defaults are read with today's, from the trainers' parsers.

    python report.py                          # every finished run under Logs/
    python report.py --task ED                # one task
    python report.py Logs/ED_20261122-075750 Logs/ED_20261122-082150   # chosen run folders
    python report.py --format csv > pooled.csv
    python report.py --html                   # Logs/index.html: every run in one page, linking each run's page
    python report.py --html --task ED         # Logs/index_ED.html: the runs of one task
    python report.py --html Logs/ED_20261122-075750   # write that run's index.html and README.md again
"""

import argparse
import sys
from pathlib import Path

from fec.cli import finetune, tfidf, train
from fec.cli.options import ArgumentParser, flag, option_defaults, task_name
from fec.cli.script import run_script
from fec.runs.index import write_html
from fec.runs.report import find_runs, pool
from fec.runs.report_format import format_csv, format_markdown

# The trainers whose runs are read back, by the script name their runs are filed under.
TRAINERS = {"main.py": train, "finetune.py": finetune, "baselines/tfidf.py": tfidf}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Pool the seeds of finished main.py / finetune.py / baselines/tfidf.py runs that "
        "share a recipe into one row each. Every option also has its single-dash spelling."
    )
    parser.add_argument("runs", nargs="*", type=Path, default=[Path("Logs")], help="run folders, or folders of run folders")
    parser.add_argument(
        *flag("task"),
        type=task_name,
        default=None,
        help="only runs of this task (e.g. ED, go_emotion); with --html, in index_TASK.html",
    )
    parser.add_argument(*flag("format"), default="markdown", choices=["markdown", "csv"], help="output table format")
    parser.add_argument(
        *flag("html"),
        action="store_true",
        help="write pages instead of printing the table: index.html in each folder of runs (and the page of any run "
        "without one), or a run folder's own index.html and model card (README.md)",
    )
    parser.add_argument(
        *flag("log_level"), default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging verbosity"
    )
    return parser


def script_defaults() -> dict[str, dict]:
    """Today's option defaults of each trainer, for runs written before runs recorded their own
    (config.json's `option_defaults`): the same record, read from the trainers' parsers."""
    return {script: option_defaults(command.build_parser()) for script, command in TRAINERS.items()}


def run(args: argparse.Namespace) -> None:
    defaults = script_defaults()
    if args.html:
        for path in write_html(args.runs, defaults, args.task):
            print(path)
        return
    rows = pool(find_runs(args.runs, defaults, args.task))
    sys.stdout.write(format_csv(rows) if args.format == "csv" else format_markdown(rows))


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, argv)
