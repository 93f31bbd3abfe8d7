"""Shared command-line plumbing: logging set-up and the one-line error exit every script uses.

    def main(argv=None) -> int:
        return run_script(build_parser(), run, (DataError, ModelError), argv)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

log = logging.getLogger("fec")


def add_common_logging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-log_level", "--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging verbosity")


def setup_logging(level: str = "INFO", logfile=None) -> None:
    """Log to stderr (and to `logfile` when given) as `time level message`."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if logfile is not None:
        handlers.append(logging.FileHandler(logfile, encoding="utf-8"))
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", handlers=handlers, force=True)


def fail(err: Exception) -> int:
    """Report an expected error as one line on stderr and return the exit code 2."""
    print(f"error: {err}", file=sys.stderr)
    return 2


def run_script(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], object],
               expected: tuple[type[Exception], ...], argv: list[str] | None = None,
               cleanup: Callable[[], None] | None = None) -> int:
    """Parse `argv`, set up logging, call `run(args)`; exit code 0, or 2 with a one-line error for
    the `expected` exceptions (anything else is a bug and keeps its traceback). `cleanup` runs last,
    whatever happened."""
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        run(args)
    except expected as err:
        return fail(err)
    finally:
        if cleanup is not None:
            cleanup()
    return 0
