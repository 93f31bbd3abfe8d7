"""One rule for every output option of every command: what a command writes never lands on what it
reads or on what the project keeps. An output (a file or a folder given by an option typed
`output_file` or `output_dir`) may not be an input file of the command, nor lie in the task's
data folder or feature store, nor in a run, search or probe folder (known by their records); nor
overwrite an existing file of a folder kept by what it holds: a task's data (label2idx.txt,
split.json, or train.csv beside valid.csv), features (a store file beside its manifest, or a
task's folder of them), a model (config.json beside weights), nor a folder of runs' `runs.csv`.
A new file beside kept ones changes nothing and is allowed; a run's `explanations/` is written
into freely (nothing reads it back). `run_script` applies the rule (`fec.runs.output_rule`) to every command after
parsing, before any work; a file's folder is made when the file is written, so only an existing
file where a folder must be is refused here.

    check_output_options(parser, args)   # raises SettingError: --save data/ED/train.csv: is inside the data ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fec.cli.options import output_dir, output_file
from fec.core.errors import SettingError
from fec.runs.output_rule import inputs_of, output_problem


def check_output_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse any output option of `parser` whose value `args` sets onto an input (`output_problem`):
    at parse time, for every command (the library checks a settings record's outputs again, for
    callers from Python: `fec.runs.output_rule.check_outputs`)."""
    inputs = inputs_of(args)
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if action.type in (output_file, output_dir) and value is not None:
            problem = output_problem(Path(value), inputs)
            if problem:
                raise SettingError(action.dest, value, problem)
