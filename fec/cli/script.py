"""Shared command-line plumbing: logging set-up and the one-line error exit every script uses.

    def main(argv=None) -> int:
        return run_script(build_parser(), run, argv)

Any `fec.core.errors.FecError` (a bad option, file or model) and a write the file system
refuses (full, read-only, permission denied) end as one `error: ...` line and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Callable

from fec.cli.outputs import check_output_options
from fec.core.errors import FecError, SettingError, UsageError
from fec.core.logs import LOG_FORMAT

# File-system refusals a user can act on (free space, another folder, permissions); other OSErrors are bugs.
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT}
REFUSED_ERRNOS = WRITE_ERRNOS | {errno.EACCES, errno.EPERM}


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr as `time level message`. A log line that cannot be written (a full disk) is
    dropped rather than printed as a traceback: the error that matters is reported by the write
    that fails next."""
    logging.raiseExceptions = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LOG_FORMAT)
    logging.basicConfig(level=getattr(logging, level), handlers=[handler], force=True)


def fail(err: Exception | str) -> int:
    """Report an expected error as one line on stderr and return the exit code 2."""
    message = " ".join(str(err).split())  # one line, whatever the exception's text holds
    print(f"error: {message}", file=sys.stderr)
    return 2


def option_named(err: FecError, parser: argparse.ArgumentParser) -> FecError | str:
    """A `SettingError` names its option where the command has one (`--max_len 300: ...`); every
    other error, and a setting the command does not take, as the library worded it."""
    if isinstance(err, SettingError) and err.setting in {action.dest for action in parser._actions}:
        return err.named(f"--{err.setting}")
    return err


def refused(err: OSError) -> str:
    """`path: cannot write (No space left on device)`, or `path: Permission denied` (a read or a write)."""
    where = err.filename if err.filename is not None else "a file"
    if err.errno in WRITE_ERRNOS:
        return f"{where}: cannot write ({err.strerror or err})"
    return f"{where}: {err.strerror or err}"


def run_script(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], object],
    argv: list[str] | None = None,
    cleanup: Callable[[], None] | None = None,
    parse: Callable[[argparse.ArgumentParser, list[str] | None], argparse.Namespace] | None = None,
) -> int:
    """Parse `argv`, set up logging, refuse an output option set onto an input
    (`fec.cli.outputs`), call `run(args)`; exit code 0, or 2 with a one-line error for
    a bad command line, any `FecError` and refused writes (anything else is a bug and keeps its
    traceback). A `run` that returns an int sets the exit code. `cleanup` runs last,
    whatever happened. `parse` replaces `parser.parse_args` (e.g. to read defaults from a file)."""
    try:
        args = parse(parser, argv) if parse else parser.parse_args(argv)
    except UsageError as err:
        return fail(err)
    setup_logging(args.log_level)
    try:
        check_output_options(parser, args)  # before any work: no output lands on an input
        code = run(args)
    except FecError as err:
        return fail(option_named(err, parser))
    except OSError as err:
        if err.errno not in REFUSED_ERRNOS:
            raise
        return fail(refused(err))
    finally:
        if cleanup is not None:
            cleanup()
    return code if isinstance(code, int) and not isinstance(code, bool) else 0
