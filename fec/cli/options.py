"""The one option layer every script shares: a parser whose mistakes are `UsageError`s, typed
validators, parent parsers for the options several commands take, and options made from the
fields of a config dataclass (so each default is written once).

    from fec.cli.options import ArgumentParser, common_options, flag, positive_int, task_name
    parser = ArgumentParser(description="...", parents=[common_options()])
    parser.add_argument(*flag("task"), type=task_name, required=True)       # --task and -task
    parser.add_argument(*flag("batch_size"), type=positive_int, default=64)

A validator is an argparse `type`: it returns the parsed value or raises
`argparse.ArgumentTypeError`, and argparse puts the option's name in front of the message
(`argument --batch_size/-batch_size: must be a positive integer, got -5`). The parser raises
that as a `UsageError`, which `fec.cli.script.run_script` prints as one `error: ...` line with exit
code 2, so every check runs before any data or model is loaded and before any folder is made.
A value that can only be a mistake is refused, never clamped.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Callable
from pathlib import Path

from fec.core.errors import SettingError, UsageError
from fec.features.store_slots import slot_name_problem


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` with option defaults shown in `-h` and errors raised as
    `UsageError` instead of printing usage and exiting, so they are reported like any other
    bad input."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(message)


def _number(text: str, kind: type, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def _checked(text: str, kind: type, what: str, ok) -> int | float:
    value = _number(text, kind, what)
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def positive_int(text: str) -> int:
    return _checked(text, int, "a positive integer", lambda v: v >= 1)


def non_negative_int(text: str) -> int:
    return _checked(text, int, "an integer >= 0", lambda v: v >= 0)


def positive_float(text: str) -> float:
    return _checked(text, float, "a number > 0", lambda v: v > 0)


def non_negative_float(text: str) -> float:
    return _checked(text, float, "a number >= 0", lambda v: v >= 0)


def probability(text: str) -> float:
    """Strictly between 0 and 1: a decision threshold."""
    return _checked(text, float, "a number strictly between 0 and 1", lambda v: 0 < v < 1)


def dropout_rate(text: str) -> float:
    """In [0, 1): 1 would drop every unit."""
    return _checked(text, float, "a rate in [0, 1)", lambda v: 0 <= v < 1)


def fraction(text: str) -> float:
    """In [0, 1]."""
    return _checked(text, float, "a fraction in [0, 1]", lambda v: 0 <= v <= 1)


TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def task_name(text: str) -> str:
    """A task is named with ASCII letters, digits, `.`, `_` and `-`, a letter or digit first (`ED`,
    `go_emotion`, `semeval_eng`): the name becomes folder names under the data, dataset and Logs
    folders, and is written into pages, model cards, URLs, YAML and CSV, where such a name needs no
    quoting and cannot leave its folder."""
    if not TASK_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a task name: use letters, digits, '.', '_' and '-' (e.g. ED, go_emotion)"
        )
    return text


def slot_name(text: str) -> str:
    """A slot: a published one or one of the user's (`fec.features.store_slots`): a lowercase letter, then
    lowercase letters, digits or `_`, and not a pooling name."""
    problem = slot_name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return text


def existing_file(text: str) -> Path:
    path = given_path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; name a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def existing_dir(text: str) -> Path:
    path = given_path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file; name a folder")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    return path


def given_path(text: str) -> Path:
    """A path option's value; an empty one is a mistake (Path("") would be the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; name a file or folder")
    return Path(text)


def output_file(text: str) -> Path:
    """A file to write: its folder is made if needed, but it must not be a folder itself (nor an
    input of the command: `fec.cli.outputs`)."""
    path = given_path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; name a file to write")
    return path


def output_dir(text: str) -> Path:
    """A folder to write into: made if needed, but not an existing file (nor inside an input of the
    command: `fec.cli.outputs`)."""
    path = given_path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file; name a folder to write into")
    return path


def device(text: str) -> str:
    """`auto`, or a device string torch accepts and this machine has (`cpu`, `cuda`, `cuda:1`, `mps`)."""
    if text == "auto":
        return text
    import torch

    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text}: CUDA is not available on this machine; use cpu or auto")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text}: MPS is not available on this machine; use cpu or auto")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text}: unsupported device type {parsed.type!r}; use auto, cpu, cuda or cuda:N")
    return text


class Distinct(argparse.Action):
    """A list option (`nargs="+"`) whose values must differ: `-seeds 1 1` is a mistake, not two runs."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = set()
        for value in values:
            if value in seen:
                raise argparse.ArgumentError(self, f"{value} is given twice; each value must be distinct")
            seen.add(value)
        setattr(namespace, self.dest, list(values))


def chosen_seeds(args: argparse.Namespace) -> list[int]:
    """The seeds `seed_options` asked for."""
    if args.seeds is not None:
        return list(args.seeds)
    return list(range(args.runs)) if args.runs else [0]


def command_line_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The destinations of the options `argv` gives explicitly, defaults left out (so values from
    elsewhere, such as a recipe file, can yield to them)."""
    actions = parser._actions
    saved = [a.default for a in actions]
    try:
        for action in actions:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in zip(actions, saved, strict=True):
            action.default = default


def slot_models(pairs: list[str] | None, accepted: Callable[[str], bool], slots: str) -> dict[str, str]:
    """A command's `--model SLOT=MODEL` pairs as slot -> model, each SLOT one that `accepted` takes
    (`slots` says which, for the message), and each slot given once."""
    chosen = {}
    for pair in pairs or []:
        slot, sep, model = pair.partition("=")
        if not sep or not model or not accepted(slot):
            raise SettingError("model", pair, f"expected SLOT=MODEL with SLOT one of {slots}")
        if slot in chosen:
            raise SettingError("model", pair, f"the {slot} slot is given twice ({slot}={chosen[slot]}); give each slot once")
        chosen[slot] = model
    return chosen


def option_defaults(parser: argparse.ArgumentParser) -> dict:
    """Every option's default, by destination: recorded with a run, so its report and page can tell
    which options it changed without importing the command that trained it."""
    return {action.dest: action.default for action in parser._actions if action.dest != "help"}


def flag(name: str, *aliases: str) -> tuple[str, ...]:
    """The spellings of one option: `--name` (the documented one), `-name` (the single-dash
    form of the published command lines) and any older `aliases` (`-SIGMA`, `-early-stop`)."""
    return (f"--{name}", f"-{name}", *aliases)


COMPILE_HELP = (
    "compile the model with torch.compile before extracting: on one CPU core the decoder stand-in ran 1.25x faster after "
    "87 s of compiling (about 45,000 texts to pay off), the encoders no faster (fec.features.compiled); needs a C++ "
    "compiler on a CPU; not with --device_map or --load_in"
)
THREADS_HELP = "CPU threads (default: from the work per step and the cores other jobs leave free, logged; fec.core.threads)"


def common_options(device_help: str = "cuda, cuda:N, cpu, or auto (cuda when available)") -> argparse.ArgumentParser:
    """A parent parser with the options every command takes: --device and --log_level."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(*flag("device"), type=device, default="auto", help=device_help)
    parent.add_argument(
        *flag("log_level"), default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging verbosity"
    )
    return parent


def seed_options() -> argparse.ArgumentParser:
    """A parent parser with the trainers' `--seeds 0 3 7` or `--runs N` (seeds 0..N-1); one run
    with seed 0 by default."""
    parent = argparse.ArgumentParser(add_help=False)
    seeds = parent.add_mutually_exclusive_group()
    seeds.add_argument(
        *flag("seeds"),
        type=non_negative_int,
        nargs="+",
        action=Distinct,
        default=None,
        help="one run per seed, each seed once (default: 0)",
    )
    seeds.add_argument(*flag("runs"), type=positive_int, default=None, help="N runs with seeds 0..N-1")
    return parent


def trainer_options(data_help: str) -> argparse.ArgumentParser:
    """A parent parser with what the trainers share: the task (published spelling `-dataset`),
    where its CSVs are and where run folders go."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        *flag("task", "--dataset", "-dataset"),
        dest="task",
        type=task_name,
        required=True,
        help="task folder, e.g. ED, go_emotion, semeval_eng",
    )
    parent.add_argument(*flag("data_dir"), default="data", help=data_help)
    parent.add_argument(*flag("out"), type=output_dir, default="Logs", help="folder for run folders and runs.csv")
    return parent


def add_fields(parser: argparse.ArgumentParser, config: type, specs: dict[str, dict]) -> None:
    """One option per field of the dataclass `config`, its default taken from the field, so
    defaults are written once; `specs` gives each field's type, help and extra `aliases`."""
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    for name, spec in specs.items():
        spec = dict(spec)
        parser.add_argument(*flag(name, *spec.pop("aliases", ())), dest=name, default=defaults[name], **spec)


def config_from(config: type, args: argparse.Namespace, **overrides):
    """The dataclass `config` from the parsed options of the same names (`overrides` win)."""
    names = {f.name for f in dataclasses.fields(config)}
    return config(**{name: getattr(args, name) for name in names if hasattr(args, name)} | overrides)
