"""Shared command-line plumbing: logging set-up and the one-line error exit every script uses.

    def main(argv=None) -> int:
        return run_script(build_parser(), run, (DataError, ModelError), argv)

Bad options (`fec.cli.options.UsageError`), the script's expected errors and a write the file
system refuses (full, read-only, permission denied) end as one `error: ...` line and exit
code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fec.cli.options import UsageError

# File-system refusals a user can act on (free space, another folder, permissions); other OSErrors are bugs.
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT}
REFUSED_ERRNOS = WRITE_ERRNOS | {errno.EACCES, errno.EPERM}


LOG_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr as `time level message`. A log line that cannot be written (a full disk) is
    dropped rather than printed as a traceback: the error that matters is reported by the write
    that fails next."""
    logging.raiseExceptions = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LOG_FORMAT)
    logging.basicConfig(level=getattr(logging, level), handlers=[handler], force=True)


@contextmanager
def also_log_to(path: Path) -> Iterator[None]:
    """Copy every log line to `path` (a run's train.log) for the body of a `with`."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(LOG_FORMAT)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        try:
            handler.close()
        except OSError:  # the last lines could not be flushed (disk full): the run's error says why
            pass


def fail(err: Exception) -> int:
    """Report an expected error as one line on stderr and return the exit code 2."""
    message = " ".join(str(err).split())  # one line, whatever the exception's text holds
    print(f"error: {message}", file=sys.stderr)
    return 2


def refused(err: OSError) -> str:
    """`path: cannot write (No space left on device)`, or `path: Permission denied` (a read or a write)."""
    where = err.filename if err.filename is not None else "a file"
    if err.errno in WRITE_ERRNOS:
        return f"{where}: cannot write ({err.strerror or err})"
    return f"{where}: {err.strerror or err}"


def run_script(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], object],
    expected: tuple[type[Exception], ...] = (),
    argv: list[str] | None = None,
    cleanup: Callable[[], None] | None = None,
    parse: Callable[[argparse.ArgumentParser, list[str] | None], argparse.Namespace] | None = None,
) -> int:
    """Parse `argv`, set up logging, call `run(args)`; exit code 0, or 2 with a one-line error for
    a bad command line, the `expected` exceptions and refused writes (anything else is a bug and
    keeps its traceback). A `run` that returns an int sets the exit code. `cleanup` runs last,
    whatever happened. `parse` replaces `parser.parse_args` (e.g. to read defaults from a file)."""
    try:
        args = parse(parser, argv) if parse else parser.parse_args(argv)
    except UsageError as err:
        return fail(err)
    setup_logging(args.log_level)
    try:
        code = run(args)
    except (UsageError, *expected) as err:
        return fail(err)
    except OSError as err:
        if err.errno not in REFUSED_ERRNOS:
            raise
        return fail(refused(err))
    finally:
        if cleanup is not None:
            cleanup()
    return code if isinstance(code, int) and not isinstance(code, bool) else 0
