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
import functools
from collections.abc import Callable

from fec.core import settings
from fec.core.errors import UsageError
from fec.core.settings import BadValue, about, default_of


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` with option defaults shown in `-h` and errors raised as
    `UsageError` instead of printing usage and exiting, so they are reported like any other
    bad input."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(message)


@functools.cache
def argument_type(check: Callable[[str], object]) -> Callable[[str], object]:
    """A setting's check (`fec.core.settings`) as an argparse `type`: its message after argparse's
    own prefix naming the option. One check gives one type, so an option made from a setting
    (`add_fields`) is the `output_dir` that `fec.cli.outputs.check_output_options` looks for."""

    def parse(text: str):
        try:
            return check(text)
        except BadValue as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = check.__name__
    return parse


positive_int = argument_type(settings.positive_int)
non_negative_int = argument_type(settings.non_negative_int)
task_name = argument_type(settings.task_name)
existing_file = argument_type(settings.existing_file)
existing_dir = argument_type(settings.existing_dir)
output_file = argument_type(settings.output_file)
output_dir = argument_type(settings.output_dir)
device = argument_type(settings.device)


class Distinct(argparse.Action):
    """A list option (`nargs="+"`) whose values must differ: `-seeds 1 1` is a mistake, not two runs."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = set()
        for value in values:
            if value in seen:
                raise argparse.ArgumentError(self, f"{value} is given twice; each value must be distinct")
            seen.add(value)
        setattr(namespace, self.dest, list(values))


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


def flag(name: str, *aliases: str) -> tuple[str, ...]:
    """The spellings of one option: `--name` (the documented one), `-name` (the single-dash
    form of the published command lines) and any older `aliases` (`-SIGMA`, `-early-stop`)."""
    return (f"--{name}", f"-{name}", *aliases)


def add_log_level(parser: argparse.ArgumentParser) -> None:
    """--log_level: how much a command logs (the command line's own option; jobs take no such setting)."""
    parser.add_argument(
        *flag("log_level"), default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging verbosity"
    )


def trainer_parser(description: str, settings: type, **specs: dict) -> ArgumentParser:
    """A trainer's parser (`main.py`, `finetune.py`, `baselines/tfidf.py`): its task (published
    spelling `-dataset`), folders, seeds or runs, device and --log_level first, then every other
    setting of `settings` in its order, with the argparse keywords of `specs`."""
    parser = ArgumentParser(description=description)
    first = ("task", "data_dir", "out", "seeds", "runs", "device")
    add_settings(parser, settings, first[:3], task={"aliases": ("--dataset", "-dataset")})
    add_settings(parser.add_mutually_exclusive_group(), settings, first[3:5])
    add_settings(parser, settings, first[5:])
    add_log_level(parser)
    add_settings(parser, settings, [name for name in settings.names() if name not in first], **specs)
    return parser


def common_options(device_help: str = "cuda, cuda:N, cpu, or auto (cuda when available)") -> argparse.ArgumentParser:
    """A parent parser with --device and --log_level, for the commands that take no job's settings (predict, explain)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(*flag("device"), type=device, default="auto", help=device_help)
    add_log_level(parent)
    return parent


def add_fields(parser: argparse.ArgumentParser, config: type, specs: dict[str, dict]) -> None:
    """One option per field of the dataclass `config` named in `specs`, so defaults are written
    once: its default, and for a `Settings` field (`fec.core.settings.setting`) its check (as the
    option's type), choices, list-ness and help; `specs` adds or overrides argparse keywords
    (`type`, `help`, `metavar`, `dest`) and gives extra spellings as `aliases` (or all of them as
    `flags`, for a command whose options have no single-dash forms)."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    for name, spec in specs.items():
        spec, field = dict(spec), fields[name]
        info, default = about(field), default_of(field)
        made = {"dest": name, "help": info["help"]}
        if default is dataclasses.MISSING:
            made["required"] = True
        else:
            made["default"] = default
        if info["check"] is not None and spec.get("action") not in ("store_true", "store_false"):  # a switch takes no value
            made["type"] = argument_type(info["check"])
        if info["choices"] is not None:
            made["choices"] = list(info["choices"])
        if info["many"]:
            made |= {"nargs": "+", "action": Distinct}
        flags = spec.pop("flags", None) or flag(name, *spec.pop("aliases", ()))
        parser.add_argument(*flags, **(made | spec))


def add_settings(parser: argparse.ArgumentParser, config: type, names: list[str] | tuple[str, ...], **specs: dict) -> None:
    """`add_fields` for the settings `names` of `config`, each with its own keywords from `specs`."""
    add_fields(parser, config, {name: specs.get(name, {}) for name in names})
