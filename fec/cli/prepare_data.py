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
from pathlib import Path

from fec.cli.options import ArgumentParser, Distinct, command_line_options, existing_file, fraction, non_negative_int, task_name
from fec.cli.outputs import output_problem
from fec.cli.script import option_named
from fec.core import fetch
from fec.core.data_import import ImportSpec, import_task
from fec.core.errors import FecError, UsageError
from fec.core.tables import FORMATS, data_format

DEFAULT_DATA_DIR = Path("data")
# Options that only bringing your own data (--task NAME) uses.
IMPORT_OPTIONS = (
    "valid",
    "test",
    "text_column",
    "label_column",
    "label_columns",
    "label_separator",
    "valid_fraction",
    "test_fraction",
    "seed",
)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        return msg if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {msg}"


def existing_source(text: str) -> Path:
    """A folder (of task folders, or saved by datasets) or a data file."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such {'file' if path.suffix.lower() in FORMATS else 'folder'}")
    return path


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--from",
        dest="src",
        metavar="DIR",
        type=existing_source,
        help="copy from DIR/{task}/ instead of downloading; with --task: the data file (or datasets folder) to read",
    )
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
    p.add_argument(
        "--force",
        action="store_true",
        help="fetch again even if a file is present, replacing it (with --task: replace the task's data)",
    )
    add_own_data_options(p)
    return p


def add_own_data_options(p: argparse.ArgumentParser) -> None:
    """--task NAME and the options that say how to read the user's file and carve its splits."""
    own = p.add_argument_group("bring your own data (--from FILE --task NAME)")
    own.add_argument(
        "--task", type=task_name, metavar="NAME", help="make data/NAME/ from the file (or datasets folder) given with --from"
    )
    own.add_argument(
        "--valid", type=existing_file, metavar="FILE", help="the valid split as its own file (default: carved from train)"
    )
    own.add_argument(
        "--test", type=existing_file, metavar="FILE", help="the test split as its own file (default: carved from train)"
    )
    own.add_argument("--text_column", default="text", metavar="NAME", help="the column holding the texts")
    labels = own.add_mutually_exclusive_group()
    labels.add_argument(
        "--label_column",
        default="label",
        metavar="NAME",
        help="the column holding each row's label; lists there (or strings split at --label_separator) make the task multi-label",
    )
    labels.add_argument(
        "--label_columns", nargs="+", action=Distinct, metavar="NAME", help="several 0/1 columns, one per label: multi-label"
    )
    own.add_argument("--label_separator", metavar="SEP", help="split --label_column's strings at SEP (e.g. ,): multi-label")
    own.add_argument(
        "--valid_fraction",
        type=fraction,
        default=0.1,
        metavar="F",
        help="share of train carved out as valid when no --valid FILE",
    )
    own.add_argument(
        "--test_fraction",
        type=fraction,
        default=0.1,
        metavar="F",
        help="share of train carved out as test when no --test FILE (0: no test split)",
    )
    own.add_argument("--seed", type=non_negative_int, default=0, metavar="N", help="seed of the carving")


def check_options(args: argparse.Namespace, given: set[str]) -> None:
    """Refuse combinations that would silently do something else than asked."""
    if args.task is None:
        used = [name for name in IMPORT_OPTIONS if name in given]
        if used:
            raise UsageError(f"--{used[0]}: only with --task NAME (bringing your own data from --from FILE)")
        if args.src is not None and (args.src.is_file() or data_format_or_none(args.src) == "datasets"):
            raise UsageError(f"--from {args.src}: a data file or datasets folder; name the task to make from it with --task NAME")
        return
    if args.src is None:
        raise UsageError("--task NAME: give the data with --from FILE (to download or copy published tasks, use --tasks)")
    if args.tasks is not None:
        raise UsageError(
            "--tasks and --task: give --tasks to copy or download published tasks, --task to make one from --from FILE"
        )
    for mode in ("valid", "test"):
        if getattr(args, mode) is not None and f"{mode}_fraction" in given:
            raise UsageError(f"--{mode}_fraction: the {mode} split is the file given with --{mode}; give one or the other")
    if args.label_separator is not None and args.label_columns:
        raise UsageError("--label_separator: applies to --label_column, not to --label_columns")
    if args.label_separator == "":
        raise UsageError("--label_separator: give a non-empty separator, e.g. ,")


def check_sources_kept(args: argparse.Namespace) -> None:
    """What is written never replaces what is read or kept: with --task, no source file lies in the
    task folder it makes (replaced with --force), valid and test are not train's file; copying
    tasks, --from is not --data_dir itself; and no task folder lands in a feature store, a run,
    search or model folder (`fec.cli.outputs`)."""
    if args.task is None:
        if args.src is not None and args.src.resolve() == Path(args.data_dir).resolve():
            raise UsageError(f"--from {args.src}: is --data_dir itself; copy from another folder")
        tasks = args.tasks or fetch.known_tasks()
    else:
        tasks = [args.task]
        target = Path(args.data_dir) / args.task
        for option, source in (("from", args.src), ("valid", args.valid), ("test", args.test)):
            if source is not None and source.resolve().is_relative_to(target.resolve()):
                raise UsageError(
                    f"--{option} {source}: lies in {target}, which --task {args.task} writes; move it out first, so the "
                    "data is kept"
                )
        given = {"from": args.src, "valid": args.valid, "test": args.test}
        for option, other in (("valid", "from"), ("test", "from"), ("test", "valid")):
            if given[option] is not None and given[other] is not None and given[option].resolve() == given[other].resolve():
                raise UsageError(f"--{option} {given[option]}: is the --{other} file; each split is a file of its own rows")
    for task in tasks:
        target = Path(args.data_dir) / task
        problem = output_problem(target, {}, replacing=target)
        if problem:
            raise UsageError(f"--data_dir {args.data_dir}: {target} {problem}")


def data_format_or_none(path: Path) -> str | None:
    try:
        return data_format(path)
    except FecError:
        return None


def run(args: argparse.Namespace) -> None:
    if args.task is None:
        fetch.prepare(args.data_dir, src=args.src, tasks=args.tasks, force=args.force)
        return
    spec = ImportSpec(
        text_column=args.text_column,
        label_column=None if args.label_columns else args.label_column,
        label_columns=tuple(args.label_columns or ()),
        label_separator=args.label_separator,
        valid_fraction=args.valid_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
    )
    import_task(args.src, args.task, args.data_dir, spec, valid=args.valid, test=args.test, force=args.force)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        check_options(args, command_line_options(parser, argv))
        check_sources_kept(args)
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
        run(args)
    except (FecError, OSError) as e:
        print(f"error: {option_named(e, parser)}", file=sys.stderr)
        return 2
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
    return 0
