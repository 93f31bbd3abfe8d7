"""A `--recipe` file: a JSON object of a trainer's option values, read as the command line would
read them (types, choices, distinct values), holding only the options that decide what is trained.

    python main.py --task ED --recipe recipes/ED.json --runs 5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fec.cli.options import Distinct
from fec.core.errors import UsageError

SEED_OPTIONS = ("seeds", "runs")


def recipe_file_options(parser: argparse.ArgumentParser, path: Path | str, allowed: tuple[str, ...]) -> dict:
    """The option values of a recipe file (a JSON object of option names, as `main.py -h` spells
    them without dashes, to values), checked and converted as the command line would be. Keys
    starting with `_` are notes; a key outside `allowed` is refused, naming it."""
    where = f"--recipe {path}"
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{where}: not a readable JSON file ({err})") from err
    if not isinstance(values, dict):
        raise UsageError(f"{where}: must hold a JSON object of option values")
    actions = {a.dest: a for a in parser._actions}
    options = {}
    for key, value in values.items():
        if key.startswith("_"):  # notes: "_about", "_found_by"
            continue
        if key not in allowed:
            why = "says where or how a run goes, not what it trains" if key in actions else "is not an option"
            raise UsageError(f"{where}: {key!r} {why}; a recipe may set {', '.join(allowed)}")
        options[key] = converted(actions[key], key, value, where)
    if all(name in options for name in SEED_OPTIONS):
        raise UsageError(f"{where}: seeds and runs: give one of them")
    return options


def converted(action: argparse.Action, key: str, value, where: str):
    """One recipe value through its option's type, choices and distinctness checks."""
    many = action.nargs in ("+", "*")
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not many:
        raise UsageError(f"{where}: {key} takes one value, not a list")
    if not items:
        raise UsageError(f"{where}: {key}: an empty list")
    try:
        values = [action.type(str(v)) if action.type else v for v in items]
    except (UsageError, ValueError, TypeError, argparse.ArgumentTypeError) as err:
        raise UsageError(f"{where}: {key}: {err}") from err
    bad = [v for v in values if action.choices is not None and v not in action.choices]
    if bad:
        raise UsageError(f"{where}: {key}: {bad[0]!r} is not one of {', '.join(map(str, action.choices))}")
    if many and isinstance(action, Distinct) and len(set(map(str, values))) != len(values):
        raise UsageError(f"{where}: {key} names a value twice")
    return values if many else values[0]
