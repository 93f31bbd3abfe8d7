"""`prepare_data.py` (`fec data`): put the emotion datasets into data/{task}/ (train.csv, valid.csv, test.csv, label2idx.txt).

The published CSVs are third-party data and are never committed. Either copy them from a local
folder that holds one sub-folder per task, or download the published ones (ED, go_emotion) from
havelhakimi/LLM-FusionClassifier at a pinned commit. Every known file is sha256-checked.

    python prepare_data.py --from ../shared/data            # copy all known tasks found there
    python prepare_data.py                                  # download ED and go_emotion
    python prepare_data.py --tasks ED --data_dir /tmp/data  # one task, elsewhere
    python prepare_data.py --from ../shared/data --force    # replace files already present

semeval_eng has no public download: copy it with --from DIR (its test.csv is optional).
Files already present with the right checksum are skipped.

Bring your own data: --from FILE --task NAME makes data/NAME/ from a CSV, TSV, JSON Lines
(.jsonl, .json) or Parquet file, or from a folder saved by datasets' save_to_disk:

    python prepare_data.py --from mine.jsonl --task mine --text_column text --label_column label
    python prepare_data.py --from train.csv --valid valid.csv --test test.csv --task mine
    python prepare_data.py --from mine.tsv --task mine --label_column labels --label_separator ,
    python prepare_data.py --from mine.csv --task mine --label_columns anger joy sadness

Splits not given are carved from train (stratified by label for single-label data, seeded);
data/NAME/split.json records the sources' sha256, the options and the row counts.
Exit status 0 on success, 2 on error (`error: <reason>` on stderr).
"""

from __future__ import annotations

import argparse
import logging
import sys

from fec.api.prepare_data import PrepareSettings, prepare_data
from fec.cli.options import ArgumentParser, add_fields, command_line_options
from fec.cli.script import option_named
from fec.core.errors import FecError, UsageError

# Options as prepare_data.py has always spelled them (no single-dash forms): name -> argparse keywords.
OPTION_FORMS = {
    "source": {"flags": ("--from",), "metavar": "DIR"},
    "tasks": {"metavar": "TASK"},
    "data_dir": {"flags": ("--data_dir", "--data-dir"), "metavar": "DIR"},
    "force": {"action": "store_true"},
    "task": {"metavar": "NAME"},
    "valid": {"metavar": "FILE"},
    "test": {"metavar": "FILE"},
    "text_column": {"metavar": "NAME"},
    "label_column": {"metavar": "NAME"},
    "label_columns": {"metavar": "NAME"},
    "label_separator": {"metavar": "SEP"},
    "valid_fraction": {"metavar": "F"},
    "test_fraction": {"metavar": "F"},
    "seed": {"metavar": "N"},
}


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
    add_options(p, ["source", "tasks", "data_dir", "force"])
    own = p.add_argument_group("bring your own data (--from FILE --task NAME)")
    add_options(own, ["task", "valid", "test", "text_column"])
    add_options(own.add_mutually_exclusive_group(), ["label_column", "label_columns"])
    add_options(own, ["label_separator", "valid_fraction", "test_fraction", "seed"])
    return p


def add_options(parser, names: list[str]) -> None:
    """The settings `names` as options, with prepare_data.py's own spellings: `--name` only (and `--from`, `--data-dir`)."""
    add_fields(parser, PrepareSettings, {name: {"flags": (f"--{name}",)} | OPTION_FORMS[name] for name in names})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
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
        # Only the options given, so that one given at its default still counts as given (`check_options`).
        prepare_data(**{name: getattr(args, name) for name in command_line_options(parser, argv)})
    except (FecError, OSError) as e:
        print(f"error: {option_named(e, parser)}", file=sys.stderr)
        return 2
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
    return 0
