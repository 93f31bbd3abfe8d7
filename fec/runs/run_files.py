"""A run folder's files read back (config.json, results.json, model.json, failed.json,
checkpoints/seedN.safetensors) through one validated reader: a file edited by hand, cut short or
written by something else is one `RunFileError` naming the file and what is wrong with it, never a
traceback from the code that uses it.

    config = read_config(run_dir)             # an object; `args` an object where present, ...
    results = read_results(run_dir)           # seeds with their scores checked
    spec = read_model_spec(run_dir)           # label names, sources and their manifests checked
    state = read_checkpoint(run_dir / "checkpoints" / "seed0.safetensors")

Each file's expected shape is written out below (`Fields`): the fields the code reads, with their
JSON types; other fields are left alone. The caller decides what a damaged file means: a command
given one run folder ends on the error (one line, exit code 2); one reading many folders
(`report.py` over Logs/) skips the folder with a warning naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import GenericAlias, NoneType
from typing import Any, get_args, get_origin

from fec.core.errors import RunFileError
from fec.core.metrics import MULTILABEL_HEADLINE, SINGLE_LABEL_KEYS


@dataclass(frozen=True)
class Fields:
    """A JSON object's expected fields: each required one present, each present one of its shape.
    A shape is a type (`dict`, `str`, `int`, `float`, `bool`, `None`), `list[shape]`,
    `dict[str, shape]`, a nested `Fields`, or a tuple of alternatives."""

    required: dict[str, Any] = field(default_factory=dict)
    optional: dict[str, Any] = field(default_factory=dict)


SCORES = Fields(optional={name: float for name in (*SINGLE_LABEL_KEYS, *MULTILABEL_HEADLINE)})
SEED = Fields(
    required={"seed": int, "valid": SCORES},
    optional={"test": (SCORES, None), "cv": (Fields(required={"oof": SCORES}), None), "at_chance": (bool, None)},
)
RESULTS = Fields(
    required={"seeds": list[SEED]},
    optional={
        "task": str,
        "finished": bool,
        "best_seed": int,
        "summary": dict[str, dict],
        "ensemble": Fields(optional={"seeds": list[int], "valid": SCORES, "test": SCORES}),
    },
)
CONFIG = Fields(
    optional={
        "args": dict,
        "option_defaults": dict,
        "created": str,
        "compat": str,
        "recipe_file": (str, None),
        "recipe": str,  # before `compat` and `recipe_file`: either's value (`recipe:NAME` for a recipe file)
        "mode": str,  # before `recipe`
        "label_names": list[str],
        "rows": dict,
        "feature_manifests": dict[str, dict[str, dict]],
    },
)
# max_len is null for the lexical source, which has no tokens to cut.
MANIFEST = Fields(required={"slot": str, "model": str, "model_fingerprint": dict, "max_len": (int, None), "dtype": str})
PICK = Fields(required={"pick": str, "pooling": str, "layer_indices": list[int], "prompts": list[str], "chat_template": bool})
THRESHOLDS = {"multilabel": bool, "thresholds": dict[str, list[float]]}
FUSION_MODEL = Fields(
    required={"label_names": list[str], "model": dict, "sources": list[str], "feature_manifests": dict[str, MANIFEST]},
    optional={"store_dirs": dict[str, str], "feature_picks": dict[str, PICK], "ensemble_thresholds": list[float], **THRESHOLDS},
)
FINETUNE_MODEL = Fields(required={"label_names": list[str], "max_len": int}, optional=THRESHOLDS)
MEMBER = Fields(required={"run": str, "weight": float})
ENSEMBLE_MODEL = Fields(required={"label_names": list[str], "members": list[MEMBER]}, optional=THRESHOLDS)
FAILED = Fields(optional={"error": str})

JSON_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    NoneType: "null",
}


def kind_of(value: Any) -> str:
    """What a parsed JSON value is, in JSON's words."""
    return JSON_NAMES.get(type(value), type(value).__name__)


def describe(shape: Any) -> str:
    if isinstance(shape, tuple):
        return " or ".join(describe(s) for s in shape)
    if isinstance(shape, Fields):
        return "an object"
    if isinstance(shape, GenericAlias):
        return JSON_NAMES[get_origin(shape)]
    return JSON_NAMES[NoneType if shape is None else shape]


def fits(value: Any, shape: Any) -> bool:
    """Whether `value` has the outer JSON type of `shape` (true/false is not a number here)."""
    if isinstance(shape, tuple):
        return any(fits(value, s) for s in shape)
    if isinstance(shape, Fields):
        return isinstance(value, dict)
    if isinstance(shape, GenericAlias):
        return isinstance(value, get_origin(shape))
    if shape is None:
        return value is None
    if isinstance(value, bool):
        return shape is bool
    return isinstance(value, (int, float) if shape is float else shape)


def check(path: Path, value: Any, shape: Any, where: str) -> None:
    """Raise a RunFileError naming `where` (a field path like `seeds[0].valid`) at the first part of
    `value` that does not have its `shape`."""
    if not fits(value, shape):
        if not where:
            raise RunFileError(path, f"not a JSON object: it holds {kind_of(value)}")
        raise RunFileError(path, f"`{where}` is {kind_of(value)}, expected {describe(shape)}")
    if isinstance(shape, tuple):
        inner = next(s for s in shape if fits(value, s))
        check(path, value, inner, where)
    elif isinstance(shape, Fields):
        for key, inner in shape.required.items():
            if key not in value:
                raise RunFileError(path, f"no `{joined(where, key)}` ({describe(inner)} expected)")
        for key, inner in (shape.required | shape.optional).items():
            if key in value:
                check(path, value[key], inner, joined(where, key))
    elif get_origin(shape) is list:
        for i, item in enumerate(value):
            check(path, item, get_args(shape)[0], f"{where}[{i}]")
    elif get_origin(shape) is dict:
        for key, item in value.items():
            check(path, item, get_args(shape)[1], joined(where, key))


def joined(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def read_run_json(path: Path, shape: Fields) -> dict:
    """The JSON object in `path`, checked against `shape`; a RunFileError for a file that is
    missing, unreadable, not JSON or not of that shape."""
    if not path.is_file():
        raise RunFileError(path, f"not found; is {path.parent} a run folder?")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise RunFileError(path, f"not UTF-8 text (byte {err.object[err.start]:#x} at offset {err.start})") from err
    except json.JSONDecodeError as err:
        raise RunFileError(path, f"not JSON ({err})") from err
    except OSError as err:
        raise RunFileError(path, f"cannot be read ({err.strerror or err})") from err
    check(path, value, shape, "")
    return value


def read_config(run_dir: Path) -> dict:
    """config.json: the run's options, their defaults, its compat setting and what its features were read from."""
    return read_run_json(run_dir / "config.json", CONFIG)


def read_results(run_dir: Path) -> dict:
    """results.json, each seed's scores holding the metrics its kind of run reports (single- or
    multi-label), so seeds can be pooled and compared."""
    path = run_dir / "results.json"
    results = read_run_json(path, RESULTS)
    seeds = results["seeds"]
    metrics = SINGLE_LABEL_KEYS if seeds and "wf1" in seeds[0]["valid"] else MULTILABEL_HEADLINE
    for i, entry in enumerate(seeds):
        # An empty test is a run without one (`pool` reports valid then); valid and cv.oof are always read.
        scored = {"valid": entry["valid"], "test": entry.get("test") or None, "cv.oof": (entry.get("cv") or {}).get("oof")}
        for split, scores in scored.items():
            missing = [m for m in metrics if scores is not None and m not in scores]
            if missing:
                raise RunFileError(path, f"`seeds[{i}].{split}` has no `{missing[0]}`")
    return results


def compat_setting(config: dict) -> tuple[str, str | None]:
    """A main.py run's compat setting (`corrected`, `reference` or `custom:...`) and the recipe file
    it read its options from (None without one), from config.json in either form it was written in:
    `compat` and `recipe_file` today; one `recipe` (or, before that, `mode`) earlier, which held
    `recipe:NAME` for a run of a recipe file (the compat setting then was `corrected`). Empty for a
    run that records none (fine-tuning, TF-IDF)."""
    if "compat" in config:
        return config["compat"], config.get("recipe_file")
    old = config.get("recipe", config.get("mode", ""))
    if old.startswith("recipe:"):
        return "corrected", config.get("args", {}).get("recipe") or old.removeprefix("recipe:")
    return old, None


def read_model_spec(run_dir: Path) -> dict:
    """model.json of a `main.py` run (sources, their manifests and picks), of a `finetune.py` run
    (`"kind": "finetune"`) or of an ensemble of runs (`"kind": "ensemble"`: its members and weights)."""
    path = run_dir / "model.json"
    spec = read_run_json(path, Fields(optional={"kind": str}))
    if spec.get("kind") == "finetune":
        return read_run_json(path, FINETUNE_MODEL)
    if spec.get("kind") == "ensemble":
        return read_run_json(path, ENSEMBLE_MODEL)
    check(path, spec, FUSION_MODEL, "")
    tables = ["feature_manifests"] + (["store_dirs"] if spec.get("store_dirs") else [])  # older runs have no store_dirs
    for table in tables:
        missing = [name for name in spec["sources"] if name not in spec[table]]
        if missing:
            raise RunFileError(path, f"`{table}` has no `{missing[0]}`, a source of the model")
    return spec


def read_checkpoint(path: Path) -> dict:
    """A seed's `safetensors` state dict; a file that is not one is a RunFileError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise RunFileError(path, "not found")
    try:
        return load_file(str(path))
    except SafetensorError as err:
        raise RunFileError(path, f"not a safetensors checkpoint ({err})") from err
    except OSError as err:
        raise RunFileError(path, f"cannot be read ({err.strerror or err})") from err


def enclosing_run(path: Path) -> Path | None:
    """The run folder `path` is in or is (a folder holding config.json with model.json or
    results.json), nearest first; None outside every run folder."""
    return next((folder for folder in [path, *path.parents] if is_run_folder(folder)), None)


def is_run_folder(folder: Path) -> bool:
    """A folder holding config.json with model.json or results.json: what a trainer writes."""
    return (folder / "config.json").is_file() and any((folder / name).is_file() for name in ("model.json", "results.json"))
