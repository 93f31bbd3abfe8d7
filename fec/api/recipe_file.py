"""A recipe file: a JSON object of a trainer's setting values, each checked as the setting itself
checks it (`fec.core.settings`), holding only the settings that decide what is trained.

    python main.py --task ED --recipe recipes/ED.json --runs 5
    fec.train("ED", recipe="recipes/ED.json", runs=5)

    recipe_file_values("recipes/ED.json", TrainSettings, RECIPE_SETTINGS)   # -> {"features": [...], "lr": ...}

Keys starting with `_` are notes (`_about`, `_found_by`). Every message names the file as the
command line's option does (`--recipe recipes/ED.json: lr: must be a number > 0, got 'fast'`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from fec.core.errors import UsageError
from fec.core.settings import BadValue, Settings, about

SEED_SETTINGS = ("seeds", "runs")  # a recipe's seed choice: one of them, replaced whole by either given beside the file


def recipe_file_values(path: Path | str, settings: type[Settings], allowed: tuple[str, ...]) -> dict:
    """The setting values a recipe file holds (a JSON object of setting names, as `main.py -h` spells
    them without dashes, to values), each checked and converted by its setting of `settings`. A key
    outside `allowed` is refused, naming it and what a recipe may set."""
    where = f"--recipe {path}"
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{where}: not a readable JSON file ({err})") from err
    if not isinstance(values, dict):
        raise UsageError(f"{where}: must hold a JSON object of option values")
    fields = {field.name: field for field in dataclasses.fields(settings)}
    checked = {}
    for key, value in values.items():
        if key.startswith("_"):
            continue
        if key not in allowed:
            why = "says where or how a run goes, not what it trains" if key in fields else "is not an option"
            raise UsageError(f"{where}: {key!r} {why}; a recipe may set {', '.join(allowed)}")
        checked[key] = converted(about(fields[key]), key, value, where)
    if all(name in checked for name in SEED_SETTINGS):
        raise UsageError(f"{where}: seeds and runs: give one of them")
    return checked


def converted(info: dict, key: str, value, where: str):
    """One recipe value through its setting's check, choices and distinctness (`info`: `about(field)`)."""
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not info["many"]:
        raise UsageError(f"{where}: {key} takes one value, not a list")
    if not items:
        raise UsageError(f"{where}: {key}: an empty list")
    try:
        values = [info["check"](item) if info["check"] else item for item in items]
    except BadValue as err:
        raise UsageError(f"{where}: {key}: {err}") from err
    choices = info["choices"]
    bad = [v for v in values if choices is not None and v not in choices]
    if bad:
        raise UsageError(f"{where}: {key}: {bad[0]!r} is not one of {', '.join(map(str, choices))}")
    if info["many"] and len(set(map(str, values))) != len(values):
        raise UsageError(f"{where}: {key} names a value twice")
    return values if info["many"] else values[0]
