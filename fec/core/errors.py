"""The one error base: every error a user can act on (a bad value, a missing or damaged file, a
model that cannot be used) is a `FecError`, whose text is one line saying what is wrong and with
which value, file, row or field. The command line (`fec.cli.script.run_script`) prints any of
them as `error: ...` with exit code 2; any other exception is a bug and keeps its traceback.

    from fec.core.errors import FecError, SettingError
    raise SettingError("cv", 100, "give 0 or 2 to 90 folds")   # printed as: error: --cv 100: give 0 or 2 to 90 folds

Library code names the setting and its value, not how the user gave it: the command line names
its option (`--cv`), a recipe file its key, a pick itself.
"""

from __future__ import annotations


class FecError(Exception):
    """An error the user can act on, in one line."""


class UsageError(FecError, ValueError):
    """A value that cannot be used as given: an option, a recipe file's entry, a pick."""


class SettingError(UsageError):
    """A setting's value that cannot be used: `SETTING VALUE: what is wrong` (`SETTING: ...` for a
    switch). `setting` is the config field it names, which the command line spells `--SETTING`."""

    def __init__(self, setting: str, value: object, problem: str):
        self.setting = setting
        self.detail = ("" if value is None else f" {value}") + f": {problem}"
        super().__init__(setting + self.detail)

    def named(self, name: str) -> str:
        """The message with the setting called `name`, e.g. the option `--max_len` that gave it."""
        return name + self.detail


class StudyError(FecError):
    """A recipe search's study that cannot be used: a storage URL that cannot be opened, a damaged
    study database, a search folder that is not the search asked for."""
