"""One rule for every output option of every command: what a command writes never lands on what it
reads or on what the project keeps. An output (a file or a folder given by an option typed
`output_file` or `output_dir`) may not be an input file of the command, nor lie in the task's
data folder or feature store, nor in a run, search or probe folder (known by their records); nor
overwrite an existing file of a folder kept by what it holds: a task's data (label2idx.txt,
split.json, or train.csv beside valid.csv), features (a store file beside its manifest, or a
task's folder of them), a model (config.json beside weights), nor a folder of runs' `runs.csv`.
A new file beside kept ones changes nothing and is allowed; a run's `explanations/` is written
into freely (nothing reads it back). `run_script` applies the rule to every command after
parsing, before any work; a file's folder is made when the file is written, so only an existing
file where a folder must be is refused here.

    check_outputs(parser, args)   # raises SettingError: --save data/ED/train.csv: is inside the data ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fec.cli.options import output_dir, output_file
from fec.core.errors import SettingError
from fec.core.files import WEIGHT_SUFFIXES
from fec.runs.run_files import is_run_folder
from fec.runs.tune_folder import SEARCH_RECORD

EXPLANATIONS = "explanations"  # a run's folder of explain.py pages: written, never read back
PROJECT_DATA_FILES = ("label2idx.txt", "split.json")  # what prepare_data.py writes beside a task's splits
SPLITS = ("train", "valid")  # a folder holding both is a task's data
RUNS_INDEX = "runs.csv"  # a folder of runs' table, one row appended per run


def command_inputs(args: argparse.Namespace) -> dict[str, Path]:
    """What the parsed command reads, by what it is: the task's data and store folders, an
    -input file, the data -from, the -run folder (a search folder it resumes is one by its
    search.json, as every search folder), the local model folders of -model."""
    inputs = {}
    task = getattr(args, "task", None)
    if task and getattr(args, "data_dir", None):
        inputs[f"the data folder of task {task}"] = Path(args.data_dir) / task
    if task and getattr(args, "dataset_dir", None):
        inputs[f"the feature store of task {task}"] = Path(args.dataset_dir) / task
    named = {"input": "the -input file", "src": "the -from data", "run": "the run folder"}
    for dest, what in named.items():
        value = getattr(args, dest, None)
        if isinstance(value, (str, Path)):  # (extraction's --resume is a switch, not a folder)
            inputs[what] = Path(value)
    models = getattr(args, "model", None)
    for model in [models] if isinstance(models, str) else models or []:
        path = Path(model.partition("=")[2] if "=" in model else model)
        if path.exists():
            inputs[f"the model {model}"] = path
    return inputs


def project_record(folder: Path) -> str | None:
    """What the project wrote `folder` as, by its record (None for any other folder)."""
    if (folder / SEARCH_RECORD).is_file():
        return "the search folder"
    if is_run_folder(folder):
        return "the run folder"
    if (folder / "config.json").is_file() and (folder / "probe.csv").is_file():
        return "the probe folder"
    return None


def kept_folder(folder: Path) -> str | None:
    """What the project keeps in `folder`, by what it holds: a task's data, features, a model
    (None for a folder of nothing kept; its records are `project_record`'s)."""
    if any((folder / name).is_file() for name in PROJECT_DATA_FILES) or all((folder / f"{m}.csv").is_file() for m in SPLITS):
        return "the task data folder"
    if any(p.with_suffix(".json").is_file() for p in folder.glob("*.safetensors")):
        return "the feature store folder"
    if any(p.with_suffix(".safetensors").is_file() for p in folder.glob("*/train.json")):
        return "the feature store of a task"
    if (folder / "config.json").is_file() and any(p.name.endswith(WEIGHT_SUFFIXES) for p in folder.glob("*")):
        return "the model folder"
    return None


def output_problem(path: Path, inputs: dict[str, Path], replacing: Path | None = None) -> str | None:
    """Why writing `path` would change an input or what the project keeps (None when it would
    not): the command's inputs; any run, search or probe folder around it (by their records);
    an existing file of a folder kept by what it holds, or an existing such folder (a new file
    beside kept ones changes nothing). `replacing` is a task data folder the command replaces on
    purpose (prepare_data's)."""
    target = path.resolve()
    for what, source in inputs.items():
        where = source.resolve()
        if target == where and not source.is_dir():
            return f"is {what}; name another file so the input is kept"
        if target.is_relative_to(where) and source.is_dir() and not in_explanations(target, where):
            return f"is inside {what} {source}; write outside it, so its files stay as they are"
    for folder in [target, *target.parents]:
        what = project_record(folder) if folder.is_dir() else None
        if what and not in_explanations(target, folder):
            return f"is inside {what} {folder}; write outside it, so its files stay as they are"
    holder = target if target.is_dir() else target.parent if target.is_file() else None
    what = kept_folder(holder) if holder is not None else None
    if what == "the task data folder" and replacing is not None and holder == replacing.resolve():
        what = None
    if what:
        return f"is inside {what} {holder}; write outside it, so its files stay as they are"
    if target.name == RUNS_INDEX and target.is_file():
        return f"is the table of runs of {target.parent}; name another file so it is kept"
    blocking = next((folder for folder in target.parents if folder.exists()), None)
    if blocking is not None and not blocking.is_dir():
        return f"{blocking} is a file, so no folder can be made there"
    return None


def in_explanations(target: Path, run: Path) -> bool:
    return target.is_relative_to(run / EXPLANATIONS) and is_run_folder(run)


def check_outputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse any output option of `parser` whose value `args` sets onto an input (`output_problem`)."""
    inputs = command_inputs(args)
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if action.type in (output_file, output_dir) and value is not None:
            problem = output_problem(Path(value), inputs)
            if problem:
                raise SettingError(action.dest, value, problem)
