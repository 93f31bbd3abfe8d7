"""The one error base: every error a user can act on (a bad value, a missing or damaged file, a
model that cannot be used) is a `FecError`, whose text is one line saying what is wrong and with
which value, file, row or field. The command line (`fec.cli.script.run_script`) prints any of
them as `error: ...` with exit code 2; any other exception is a bug and keeps its traceback.

    from fec.core.errors import FecError, UsageError
    raise UsageError(f"--cv {folds}: give 0 or 2 to {rows} folds")
"""

from __future__ import annotations


class FecError(Exception):
    """An error the user can act on, in one line."""


class UsageError(FecError, ValueError):
    """A value that cannot be used as given: an option, a recipe file's entry, a pick."""
