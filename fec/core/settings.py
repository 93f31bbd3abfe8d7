"""Settings: the config records of the public API (`fec.api`), checked on construction with the
same one-line messages the command line gives, and the value checks both share.

    from dataclasses import dataclass
    from fec.core.settings import Settings, positive_int, setting, task_name

    @dataclass(kw_only=True)
    class ProbeSettings(Settings):
        task: str = setting(check=task_name, help="task folder, e.g. ED")
        folds: int = setting(5, check=positive_int, help="cross-validation folds")

    ProbeSettings(task="ED", folds=0)   # SettingError: folds: must be a positive integer, got 0

A check takes the value as given (a Python value, or the text of a command-line option or a
recipe file's entry), returns it converted, or raises `BadValue` saying what is wrong. The command
line builds its options from the same fields (`fec.cli.options.add_settings`), so a setting's
default, check, choices and help are written once; `documented` puts them in a function's
signature and docstring, so `help(fec.tune)` lists every setting.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from fec.core.errors import SettingError

T = TypeVar("T")
METADATA = "fec"  # the key of a field's metadata that holds its setting's check, choices and help


class BadValue(ValueError):
    """A value a check refuses: the text says what is wrong, the caller names the setting."""


# ---- checks -------------------------------------------------------------------------------------


def _number(value, kind: type, what: str):
    if isinstance(value, str):
        try:
            number = kind(value)
        except ValueError:
            raise BadValue(f"must be {what}, got {value!r}") from None
    elif isinstance(value, bool) or not isinstance(value, numbers.Real) or (kind is int and value != int(value)):
        raise BadValue(f"must be {what}, got {value!r}")
    else:
        number = kind(value)
    if kind is float and not math.isfinite(number):
        raise BadValue(f"must be {what}, got {value!r}")
    return number


def _checked(value, kind: type, what: str, ok) -> int | float:
    number = _number(value, kind, what)
    if not ok(number):
        raise BadValue(f"must be {what}, got {value}")
    return number


def positive_int(value) -> int:
    return _checked(value, int, "a positive integer", lambda v: v >= 1)


def non_negative_int(value) -> int:
    return _checked(value, int, "an integer >= 0", lambda v: v >= 0)


def positive_float(value) -> float:
    return _checked(value, float, "a number > 0", lambda v: v > 0)


def non_negative_float(value) -> float:
    return _checked(value, float, "a number >= 0", lambda v: v >= 0)


def probability(value) -> float:
    """Strictly between 0 and 1: a decision threshold."""
    return _checked(value, float, "a number strictly between 0 and 1", lambda v: 0 < v < 1)


def dropout_rate(value) -> float:
    """In [0, 1): 1 would drop every unit."""
    return _checked(value, float, "a rate in [0, 1)", lambda v: 0 <= v < 1)


def fraction(value) -> float:
    """In [0, 1]."""
    return _checked(value, float, "a fraction in [0, 1]", lambda v: 0 <= v <= 1)


TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def task_name(value) -> str:
    """A task is named with ASCII letters, digits, `.`, `_` and `-`, a letter or digit first (`ED`,
    `go_emotion`, `semeval_eng`): the name becomes folder names under the data, dataset and Logs
    folders, and is written into pages, model cards, URLs, YAML and CSV, where such a name needs no
    quoting and cannot leave its folder."""
    if not isinstance(value, str) or not TASK_NAME.fullmatch(value):
        raise BadValue(f"{value!r} is not a task name: use letters, digits, '.', '_' and '-' (e.g. ED, go_emotion)")
    return value


def given_path(value) -> Path:
    """A path setting's value; an empty one is a mistake (Path("") would be the current folder)."""
    if not isinstance(value, str | Path) or not str(value).strip():
        raise BadValue("an empty path; name a file or folder" if isinstance(value, str) else f"not a path: {value!r}")
    return Path(value)


def existing_file(value) -> Path:
    path = given_path(value)
    if path.is_dir():
        raise BadValue(f"{value}: is a folder; name a file")
    if not path.is_file():
        raise BadValue(f"{value}: no such file")
    return path


def existing_dir(value) -> Path:
    path = given_path(value)
    if path.exists() and not path.is_dir():
        raise BadValue(f"{value}: is a file; name a folder")
    if not path.is_dir():
        raise BadValue(f"{value}: no such folder")
    return path


def output_file(value) -> Path:
    """A file to write: its folder is made if needed, but it must not be a folder itself."""
    path = given_path(value)
    if path.is_dir():
        raise BadValue(f"{value}: is a folder; name a file to write")
    return path


def output_dir(value) -> Path:
    """A folder to write into: made if needed, but not an existing file."""
    path = given_path(value)
    if path.exists() and not path.is_dir():
        raise BadValue(f"{value}: is a file; name a folder to write into")
    return path


def device(value) -> str:
    """`auto`, or a device string torch accepts and this machine has (`cpu`, `cuda`, `cuda:1`, `mps`)."""
    if value == "auto":
        return value
    import torch

    try:
        parsed = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise BadValue(f"{value!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise BadValue(f"{value}: CUDA is not available on this machine; use cpu or auto")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise BadValue(f"{value}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise BadValue(f"{value}: MPS is not available on this machine; use cpu or auto")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise BadValue(f"{value}: unsupported device type {parsed.type!r}; use auto, cpu, cuda or cuda:N")
    return str(value)


def switch(value) -> bool:
    """True or False: a setting that turns something on."""
    if not isinstance(value, bool):
        raise BadValue(f"must be True or False, got {value!r}")
    return value


def text(value) -> str:
    """Any non-empty string."""
    if not isinstance(value, str) or not value:
        raise BadValue(f"must be a non-empty string, got {value!r}")
    return value


def problem_check(problem: Callable[[str], str | None]) -> Callable[[Any], str]:
    """A check from a function saying why a name cannot be used (or None), e.g. a slot name's."""

    def check(value) -> str:
        found = problem(value) if isinstance(value, str) else "is not a string"
        if found:
            raise BadValue(f"{value!r} {found}")
        return value

    check.__name__ = problem.__name__.removesuffix("_problem")
    return check


# ---- settings records ---------------------------------------------------------------------------


def setting(
    default: Any = dataclasses.MISSING,
    *,
    check: Callable[[Any], Any] | None = None,
    choices: tuple | list | None = None,
    many: bool = False,
    help: str = "",  # noqa: A002 (argparse's word)
) -> Any:
    """A field of a `Settings` record: its default (a list default is copied per record), the check
    each value passes, the values allowed, whether it holds a list (`many`, each value distinct),
    and the help the command line and `help()` show. A True/False setting is checked as one."""
    if check is None and isinstance(default, bool):
        check = switch
    metadata = {
        METADATA: {"check": check, "choices": tuple(choices) if choices is not None else None, "many": many, "help": help}
    }
    if isinstance(default, list | dict):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def about(field: dataclasses.Field) -> dict:
    """A field's check, choices, many and help (empty for a plain dataclass field)."""
    return field.metadata.get(METADATA, {"check": None, "choices": None, "many": False, "help": ""})


def default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def checked_value(name: str, value: Any, info: dict) -> Any:
    """One setting's value through its check and choices (each item of a list setting, distinct)."""
    if info["many"]:
        if isinstance(value, str | Path) or not isinstance(value, list | tuple):
            value = [value]
        if not value:
            raise SettingError(name, None, "an empty list; give at least one value or leave it out")
        items = [checked_value(name, item, info | {"many": False}) for item in value]
        seen = [str(item) for item in items]
        twice = next((item for i, item in enumerate(seen) if item in seen[:i]), None)
        if twice is not None:
            raise SettingError(name, None, f"{twice} is given twice; each value must be distinct")
        return items
    try:
        value = info["check"](value) if info["check"] else value
    except BadValue as err:
        raise SettingError(name, None, str(err)) from None
    if info["choices"] is not None and value not in info["choices"]:
        raise SettingError(name, repr(value), f"choose one of {', '.join(map(str, info['choices']))}")
    return value


class Settings:
    """The base of a job's settings (`@dataclass(kw_only=True)` subclasses with `setting` fields):
    every value is checked and converted on construction; None stands for "decided from the data"
    where a field's default is None, and is refused where a field has no default."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                if default_of(field) is dataclasses.MISSING:
                    raise SettingError(field.name, None, "required")
                continue
            setattr(self, field.name, checked_value(field.name, value, about(field)))

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_options(cls: type[T], options: Mapping[str, Any], **overrides) -> T:
        """The record from a mapping holding (at least) its fields, e.g. a parsed command line's
        `vars(args)`; other keys are left out, `overrides` win."""
        names = set(cls.names())
        return cls(**{k: v for k, v in options.items() if k in names} | overrides)

    def record(self) -> dict:
        """The settings as JSON values (paths as strings), for the records written beside an artifact."""
        return {name: plain(getattr(self, name)) for name in self.names()}

    @classmethod
    def defaults(cls) -> dict:
        """Every setting's default (a required one as None), as JSON values."""
        return {f.name: None if default_of(f) is dataclasses.MISSING else plain(default_of(f)) for f in dataclasses.fields(cls)}


def given_record(cls: type[T], settings: T | None, **options) -> T | None:
    """A job's `settings=` record, checked to be a `cls`, when one is given (then no keyword setting
    may be: it would be silently ignored); None when the keywords make the record."""
    if settings is None:
        return None
    if not isinstance(settings, cls):
        raise SettingError("settings", type(settings).__name__, f"must be a {cls.__name__} record")
    mixed = [name for name, value in options.items() if value is not None]
    if mixed:
        raise SettingError("settings", None, f"a {cls.__name__} record or keyword settings ({', '.join(mixed)}), not both")
    return settings


def plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def documented(settings: type[Settings]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Give a function that takes `**settings` its settings' signature and a "Settings:" section
    in its docstring, so `help()` and editors show every setting with its default and help."""

    def decorate(function: Callable[..., T]) -> Callable[..., T]:
        own = inspect.signature(function)
        kept = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        taken = {p.name for p in kept}
        lines = []
        for field in dataclasses.fields(settings):
            info, default = about(field), default_of(field)
            if field.name not in taken:
                shown = inspect.Parameter.empty if default is dataclasses.MISSING else plain(default)
                kept.append(inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=shown))
            choices = f" (one of: {', '.join(map(str, info['choices']))})" if info["choices"] else ""
            lines.append(f"    {field.name}: {info['help']}{choices}")
        function.__signature__ = own.replace(parameters=sorted(kept, key=lambda p: p.kind))
        function.__doc__ = (inspect.cleandoc(function.__doc__ or "") + "\n\nSettings:\n" + "\n".join(lines)).strip()
        return function

    return decorate
