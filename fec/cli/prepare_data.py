"""`prepare_data.py` (`fec data`): put the emotion datasets into data/{task}/ (train.csv, valid.csv, test.csv, label2idx.txt).

The CSVs are third-party data and are never committed. Either copy them from a local folder
that holds one sub-folder per task, or download the published ones (ED, go_emotion) from
havelhakimi/LLM-FusionClassifier at a pinned commit. Every known file is sha256-checked.

    python prepare_data.py --from ../shared/data            # copy all known tasks found there
    python prepare_data.py                                  # download ED and go_emotion
    python prepare_data.py --tasks ED --data_dir /tmp/data  # one task, elsewhere
    python prepare_data.py --from ../shared/data --force    # replace files already present

semeval_eng has no public download: copy it with --from DIR (its test.csv is optional).
Files already present with the right checksum are skipped. Exit status 0 on success, 2 on
error (`error: <reason>` on stderr).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fec.cli.options import ArgumentParser, Distinct, existing_dir, task_name
from fec.core import fetch
from fec.core.errors import UsageError

DEFAULT_DATA_DIR = Path("data")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        return msg if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {msg}"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--from", dest="src", metavar="DIR", type=existing_dir, help="copy from DIR/{task}/ instead of downloading")
    p.add_argument(
        "--tasks",
        nargs="+",
        metavar="TASK",
        type=task_name,
        action=Distinct,
        help=f"tasks to fetch (default: all known tasks, {' '.join(fetch.known_tasks())}, "
        f"skipping those absent from --from DIR; without --from, the "
        f"downloadable ones: {' '.join(fetch.DOWNLOADS)}). With --from any "
        f"task folder name works; unknown tasks are copied unverified",
    )
    p.add_argument("--data_dir", "--data-dir", type=Path, default=DEFAULT_DATA_DIR, metavar="DIR", help="destination folder")
    p.add_argument("--force", action="store_true", help="fetch again even if a file is present, replacing it")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # -h
        return int(e.code or 0)

    logger = logging.getLogger("fec")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        fetch.prepare(args.data_dir, src=args.src, tasks=args.tasks, force=args.force)
    except (fetch.FetchError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
    return 0
