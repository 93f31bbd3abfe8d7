"""`report.py` (`fec report`): pool the seeds of finished runs that share a recipe into one table row
(markdown or CSV), or write the run pages again; the job is `fec.api.report` (`fec.report`), the
pooling rule `fec.runs.report`.

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

from fec.api.report import ReportSettings, pooled_rows, write_pages
from fec.cli.options import ArgumentParser, add_log_level, add_settings, flag
from fec.cli.script import run_script
from fec.core.settings import about, default_of
from fec.runs.report_format import format_csv, format_markdown


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Pool the seeds of finished main.py / finetune.py / baselines/tfidf.py runs that "
        "share a recipe into one row each. Every option also has its single-dash spelling."
    )
    runs = ReportSettings.__dataclass_fields__["runs"]  # the one positional: add_settings makes options
    parser.add_argument("runs", nargs="*", type=Path, default=default_of(runs), help=about(runs)["help"])
    add_settings(parser, ReportSettings, ["task"])
    parser.add_argument(*flag("format"), default="markdown", choices=["markdown", "csv"], help="output table format")
    parser.add_argument(
        *flag("html"),
        action="store_true",
        help="write pages instead of printing the table: index.html in each folder of runs (and the page of any run "
        "without one), or a run folder's own index.html and model card (README.md)",
    )
    add_log_level(parser)
    return parser


def run(args: argparse.Namespace) -> None:
    settings = ReportSettings.from_options(vars(args))
    if args.html:
        for path in write_pages(settings=settings):
            print(path)
        return
    rows = pooled_rows(settings)
    sys.stdout.write(format_csv(rows) if args.format == "csv" else format_markdown(rows))


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, argv)
