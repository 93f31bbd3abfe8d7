"""The one rule for every output: what a job writes never lands on what it reads or on what the
project keeps. An output (a file or a folder) may not be an input of the job, nor lie in a run,
search or probe folder (known by their records); nor overwrite an existing file of a folder kept
by what it holds: a task's data (label2idx.txt, split.json, or train.csv beside valid.csv),
features (a store file beside its manifest, or a task's folder of them), a model (config.json
beside weights), nor a folder of runs' `runs.csv`. A new file beside kept ones changes nothing and
is allowed; a run's `explanations/` is written into freely (nothing reads it back). Every job
applies it to its settings' outputs before any work (`check_outputs`), the command line to every
output option at parse time (`fec.cli.outputs`), `fec.prepare_data` to the task folders it writes.

    output_problem(Path("data/ED/train.csv"), {})   # 'is inside the task data folder data/ED; write outside it, ...'
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fec.core import settings as checks
from fec.core.errors import SettingError
from fec.core.files import WEIGHT_SUFFIXES

EXPLANATIONS = "explanations"  # a run's folder of explain.py pages: written, never read back
PROJECT_DATA_FILES = ("label2idx.txt", "split.json")  # what prepare_data.py writes beside a task's splits
SPLITS = ("train", "valid")  # a folder holding both is a task's data
RUNS_INDEX = "runs.csv"  # a folder of runs' table, one row appended per run


def project_record(folder: Path) -> str | None:
    """What the project wrote `folder` as, by its record (None for any other folder)."""
    # Imported here: the run-folder modules load torch, and `fec data` (prepare_data) must not.
    from fec.runs.run_files import is_run_folder
    from fec.runs.tune_folder import SEARCH_RECORD

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
    from fec.runs.run_files import is_run_folder

    return target.is_relative_to(run / EXPLANATIONS) and is_run_folder(run)


def inputs_of(values) -> dict[str, Path]:
    """What a job reads, by what it is, from its settings record or parsed options: the task's data
    and store folders, an input file, the data it brings in (`source`), the run folder (a search
    folder it resumes is one by its search.json, as every search folder), the local model folders
    of `model`."""
    inputs = {}
    task = getattr(values, "task", None)
    if task and getattr(values, "data_dir", None):
        inputs[f"the data folder of task {task}"] = Path(values.data_dir) / task
    if task and getattr(values, "dataset_dir", None):
        inputs[f"the feature store of task {task}"] = Path(values.dataset_dir) / task
    named = {"input": "the -input file", "source": "the -from data", "run": "the run folder"}
    for name, what in named.items():
        value = getattr(values, name, None)
        if isinstance(value, str | Path):  # (extraction's --resume is a switch, not a folder; a DataFrame is no file)
            inputs[what] = Path(value)
    models = getattr(values, "model", None)
    if isinstance(models, dict):  # {slot: model}, as a search takes them from Python
        models = [f"{slot}={model}" for slot, model in models.items()]
    models = [models] if isinstance(models, str) else models or []
    for model in models:
        path = Path(model.partition("=")[2] if "=" in model else model)
        if path.exists():
            inputs[f"the model {model}"] = path
    return inputs


def check_outputs(settings) -> None:
    """Refuse any output of a settings record (a field checked as `output_file` or `output_dir`)
    set onto one of its inputs (`output_problem`), before any work."""
    inputs = inputs_of(settings)
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if checks.about(field)["check"] in (checks.output_file, checks.output_dir) and value is not None:
            problem = output_problem(Path(value), inputs)
            if problem:
                raise SettingError(field.name, value, problem)
