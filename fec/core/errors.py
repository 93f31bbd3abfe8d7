"""The one error base: every error a user can act on (a bad value, a missing or damaged file, a
model that cannot be used) is a `FecError`, whose text is one line saying what is wrong and with
which value, file, row or field. The command line (`fec.cli.script.run_script`) prints any of
them as `error: ...` with exit code 2; any other exception is a bug and keeps its traceback.

    from fec.core.errors import FecError, SettingError
    raise SettingError("cv", 100, "give 0 or 2 to 90 folds")   # printed as: error: --cv 100: give 0 or 2 to 90 folds

Library code names the setting and its value, not how the user gave it: the command line names
its option (`--cv`), a recipe file its key, a pick itself.

Every kind of FecError is defined here, in the order of the layers that raise it, so that one
file lists what a caller may have to catch. The ValueError or RuntimeError beside FecError says
whether the input or the circumstances are at fault.
"""

from __future__ import annotations

from pathlib import Path


class FecError(Exception):
    """An error the user can act on, in one line."""


class UsageError(FecError, ValueError):
    """A value that cannot be used as given: an option, a recipe file's entry, a pick."""


class SettingError(UsageError):
    """A setting's value that cannot be used: `SETTING VALUE: what is wrong` (`SETTING: ...` for a switch)."""

    def __init__(self, setting: str, value: object, problem: str):
        """`setting` is the config field it names, which the command line spells `--SETTING`."""
        self.setting = setting
        self.detail = ("" if value is None else f" {value}") + f": {problem}"
        self.given = (setting, value, problem)
        super().__init__(setting + self.detail)

    def __reduce__(self):  # rebuilt from its own arguments when a worker process sends it back
        return type(self), self.given

    def named(self, name: str) -> str:
        """The message with the setting called `name`, e.g. the option `--max_len` that gave it."""
        return name + self.detail


# core: the data contract and bringing the data


class DataError(FecError, ValueError):
    """A data file that breaks the contract (`fec.core.data`): one line naming the file and row."""


class FetchError(FecError, RuntimeError):
    """A copy or download of the published data that could not be completed, in one line."""


# features: models, the feature store, extraction


class ModelError(FecError, ValueError):
    """A model name that cannot be resolved or loaded, in one line."""


class StandinError(FecError, ValueError):
    """A stand-in model that cannot be resolved: an unknown name, its package or a file missing."""


class StoreError(FecError, ValueError):
    """Features missing, incomplete, or inconsistent with their manifest: one line naming the file."""


class LockHeld(FecError, RuntimeError):
    """Another process is extracting this split: one line naming the holder and the lock file."""


class PeerFailed(FecError, RuntimeError):
    """Another process of a distributed extraction failed (it reports its own error)."""


class NonFiniteFeaturesError(FecError, RuntimeError):
    """Some rows came out NaN or inf (the fp16 overflow users hit with Llama-2); nothing is saved."""

    def __init__(self, message: str, rows: list[int] | None = None):
        """`rows`: the 0-based indices of the rows that came out non-finite."""
        super().__init__(message)
        self.rows = rows or []


# classify: the recipe search


class StudyError(FecError):
    """A search's study that cannot be used: an unopenable storage, a damaged database, another search's folder."""


# runs: run folders read back, the report


class RunFileError(FecError, ValueError):
    """A run file that is missing, unreadable or not what its writer writes: `path: problem`."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = Path(path), problem

    def __reduce__(self):  # rebuilt from its own arguments when a worker process sends it back
        return type(self), (self.path, self.problem)


class ReportError(FecError):
    """No run to report, or a path that is neither a run folder nor a folder of runs."""


# inference: a trained run applied to new text


class RunError(FecError, ValueError):
    """A run folder that cannot be used for prediction: one line naming the file."""
