"""Pool the seeds of finished runs that share a recipe into one table row (markdown or CSV).

    python report.py                          # every finished run under Logs/
    python report.py -task ED                 # one task
    python report.py Logs/ED_20261122-075750 Logs/ED_20261122-082150   # chosen run folders
    python report.py -format csv > pooled.csv

Runs of main.py and finetune.py pool when they trained the same recipe on the same features
(seeds, device and folders aside); see fec/report.py for the rule. A recipe run as seeds 0 1 and
again as seeds 2 3 4 gives one 5-seed row.
"""

import argparse
import sys
from pathlib import Path

import main as main_script
from fec import finetune
from fec.cli import add_common_logging, run_script
from fec.options import ArgumentParser, task_name
from fec.report import ReportError, find_runs, format_csv, format_markdown, parser_defaults, pool


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Pool the seeds of finished main.py / finetune.py runs that share a recipe into one row each.")
    parser.add_argument("runs", nargs="*", type=Path, default=[Path("Logs")], help="run folders, or folders of run folders")
    parser.add_argument("-task", "--task", type=task_name, default=None, help="only runs of this task (e.g. ED, go_emotion)")
    parser.add_argument("-format", "--format", default="markdown", choices=["markdown", "csv"], help="output table format")
    add_common_logging(parser)
    return parser


def run(args: argparse.Namespace) -> None:
    defaults = {
        "main.py": parser_defaults(main_script.build_parser(), ["-dataset", "-"]),
        "finetune.py": parser_defaults(finetune.build_parser(), ["-dataset", "-"]),
    }
    rows = pool(find_runs(args.runs, defaults, args.task))
    sys.stdout.write(format_csv(rows) if args.format == "csv" else format_markdown(rows))


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, (ReportError,), argv)


if __name__ == "__main__":
    sys.exit(main())
