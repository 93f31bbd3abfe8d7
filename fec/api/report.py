"""The table of finished runs: the seeds of runs that trained one recipe pooled into one row
(`fec.runs.report` has the pooling rule), and the run pages written again.

    import fec
    table = fec.report("ED")                             # every finished run of ED under Logs/
    table = fec.report(runs=["Logs/ED_20261122-075750"])  # chosen run folders, or folders of them
    table[["command", "seeds", "acc_mean", "acc_std"]]
    fec.api.report.write_pages(runs=["Logs"])            # Logs/index.html, and any run page missing

A row per recipe, with the columns of `report.py --format csv`: task, command (the command that
trains the recipe, without its seeds), features, seeds (a list), split (test, or valid where some
seed has none), `{metric}_mean` and `{metric}_std` of each metric some row has (acc, wf1, macro_f1,
micro_f1), at_chance (`2/5`: seeds that never beat guessing), runs (the folder names, marked
`(unfinished)`, `(failed)` or `(interrupted)`), and folders (their paths). The command `fec report`
(report.py) prints the same rows as Markdown or CSV (`fec.runs.report_format`).

A run is compared with the defaults of the settings it trained with, recorded in its config.json
(`option_defaults`); runs from before that are read with today's defaults of each trainer's settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fec.api.finetune import FinetuneSettings
from fec.api.tfidf import TfidfSettings
from fec.api.train import TrainSettings
from fec.core.settings import BadValue, Settings, documented, given_path, given_record, setting, task_name
from fec.runs.index import write_html
from fec.runs.report import Row, find_runs, pool
from fec.runs.report_format import at_chance_cell, shown_metrics

# The trainers whose runs are read back, by the script name their runs are filed under.
TRAINER_SETTINGS = {"main.py": TrainSettings, "finetune.py": FinetuneSettings, "baselines/tfidf.py": TfidfSettings}


def run_folders(value) -> list[Path]:
    """One path or several: run folders, or folders of run folders (Logs/)."""
    paths = [value] if isinstance(value, str | Path) else value
    if not isinstance(paths, list | tuple) or not paths:
        raise BadValue(f"name run folders or folders of them, got {value!r}")
    return [given_path(path) for path in paths]


@dataclass(kw_only=True)
class ReportSettings(Settings):
    """Which runs `fec.report` reads (`fec report -h` lists the same settings as options)."""

    runs: list[Path] = setting([Path("Logs")], check=run_folders, help="run folders, or folders of run folders")
    task: str | None = setting(
        None, check=task_name, help="only runs of this task (e.g. ED, go_emotion); with --html, in index_TASK.html"
    )


def trainer_defaults() -> dict[str, dict]:
    """Today's setting defaults of each trainer, by script: what runs written before runs recorded
    their own (config.json's `option_defaults`) are compared with."""
    return {script: settings.defaults() for script, settings in TRAINER_SETTINGS.items()}


def pooled_rows(settings: ReportSettings) -> list[Row]:
    """The report's rows as `fec.runs.report` pools them (what `fec.runs.report_format` writes out)."""
    return pool(find_runs(settings.runs, trainer_defaults(), settings.task))


@documented(ReportSettings)
def report(task: str | None = None, *, settings: ReportSettings | None = None, **options) -> pd.DataFrame:
    """The finished runs, one row per recipe with its seeds pooled.

    fec.report("ED")   # -> DataFrame: command, seeds, acc_mean, acc_std, ...
    """
    settings = given_record(ReportSettings, settings, task=task, **options) or ReportSettings(task=task, **options)
    rows = pooled_rows(settings)
    metrics = shown_metrics(rows)
    records = []
    for row in rows:
        record = {"task": row.task, "command": row.command, "features": row.features, "seeds": row.seeds, "split": row.split}
        for metric in metrics:
            stats = row.stats.get(metric) or {}
            record |= {f"{metric}_mean": stats.get("mean"), f"{metric}_std": stats.get("std")}
        records.append(record | {"at_chance": at_chance_cell(row), "runs": row.runs, "folders": row.folders})
    return pd.DataFrame(records)


@documented(ReportSettings)
def write_pages(task: str | None = None, *, settings: ReportSettings | None = None, **options) -> list[Path]:
    """Write the pages again: a run folder's index.html and model card (README.md); a folder of
    runs' index.html (index_TASK.html for one task) and the page of each of its runs without one.

    fec.api.report.write_pages(runs=["Logs"])   # -> [Path("Logs/index.html")]
    """
    settings = given_record(ReportSettings, settings, task=task, **options) or ReportSettings(task=task, **options)
    return write_html(settings.runs, trainer_defaults(), settings.task)
