"""One rule for every output option of every command: what a command writes never lands on what it
reads. An output (a file or a folder given by an option typed `output_file` or `output_dir`) may
not be an input file of the command, nor lie in the task's data folder, its feature store, the
run or search folder the command was given, or any run or search folder at all (their files are
results); a run's `explanations/` is the exception (nothing reads it back). `run_script` applies
the rule to every command after parsing, before any work; a file's folder is made when the file
is written, so only an existing file where a folder must be is refused here.

    check_outputs(parser, args)   # raises SettingError: --save data/ED/train.csv: is inside the data ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fec.cli.options import output_dir, output_file
from fec.core.errors import SettingError
from fec.runs.run_files import enclosing_run
from fec.runs.tune_folder import enclosing_search

EXPLANATIONS = "explanations"  # a run's folder of explain.py pages: written, never read back


def command_inputs(args: argparse.Namespace) -> dict[str, Path]:
    """What the parsed command reads, by what it is: the task's data and store folders, an
    -input file, the data -from, the -run folder (a search folder it resumes is one by its
    search.json, as every search folder)."""
    inputs = {}
    task = getattr(args, "task", None)
    if task and getattr(args, "data_dir", None):
        inputs[f"the data folder of task {task}"] = Path(args.data_dir) / task
    if task and getattr(args, "dataset_dir", None):
        inputs[f"the feature store of task {task}"] = Path(args.dataset_dir) / task
    named = {"input": "the -input file", "src": "the -from data", "run": "the run folder"}  # search folders: by their record
    for dest, what in named.items():
        value = getattr(args, dest, None)
        if isinstance(value, (str, Path)):  # (extraction's --resume is a switch, not a folder)
            inputs[what] = Path(value)
    return inputs


def output_problem(path: Path, inputs: dict[str, Path]) -> str | None:
    """Why writing `path` would change an input (None when it would not)."""
    target = path.resolve()
    for what, source in inputs.items():
        if target == source.resolve() and not source.is_dir():
            return f"is {what}; name another file so the input is kept"
        if target.is_relative_to(source.resolve()) and source.is_dir() and not in_explanations(target, source.resolve()):
            return f"is inside {what} {source}; write outside it, so its files stay as they are"
    run = enclosing_run(target)
    if run is not None and not in_explanations(target, run):
        return f"is inside the run folder {run}; write outside it, so the run's files stay as they were trained"
    search = enclosing_search(target)
    if search is not None:
        return f"is inside the search folder {search}; write outside it, so the search's files stay as it wrote them"
    blocking = next((folder for folder in target.parents if folder.exists()), None)
    if blocking is not None and not blocking.is_dir():
        return f"{blocking} is a file, so no folder can be made there"
    return None


def in_explanations(target: Path, run: Path) -> bool:
    return target.is_relative_to(run / EXPLANATIONS) and enclosing_run(run) == run


def check_outputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse any output option of `parser` whose value `args` sets onto an input (`output_problem`)."""
    inputs = command_inputs(args)
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if action.type in (output_file, output_dir) and value is not None:
            problem = output_problem(Path(value), inputs)
            if problem:
                raise SettingError(action.dest, value, problem)
