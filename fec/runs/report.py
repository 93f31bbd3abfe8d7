"""Pool the seeds of finished runs that share a recipe into one table row, so the reproduction
tables are regenerated from the run folders instead of being copied by hand.

    python report.py                          # every finished run under Logs/, one row per recipe
    python report.py --task ED                # one task
    python report.py Logs/ED_20261122-075750 Logs/ED_20261122-082150   # chosen run folders
    python report.py --format csv > pooled.csv

Runs of main.py, finetune.py and baselines/tfidf.py pool when the same script trained the same
recipe on the same features (fine-tuning: the same model weights; TF-IDF: the same CSVs):
- every option that changes what is trained; not -seeds/-runs, the device, folders, logging or
  the evaluation batch size;
- for main.py, the quirk switches as resolved (`-compat reference` pools with its four explicit
  options) and, from the feature manifests, what each slot read (model, pooling, dtype, data
  checksum), so stand-in and published-model runs never mix.
A seed trained twice for one recipe counts once: the later run's. Each row gives the command that
trains the recipe (without its seeds), the seeds, and mean±std (sample std, ddof 1) over them of
the test metrics; valid where some seed has no test split. Runs stopped part-way count with the
seeds they finished (results.json is rewritten after every seed) and are marked `(unfinished)`,
or `(interrupted)` / `(failed)` when they stopped on Ctrl-C or an error (their `failed.json`).
The `at chance` column counts the seeds that never got below guessing the train label frequencies
(main.py flags them per seed), so a mean over trained and untrained seeds does not pass unnoticed;
seeds from runs older than that flag are counted as unknown.
Run files are read through `fec.runs.run_files`: a run with a damaged config.json or results.json is
skipped with a warning naming the file when found in a folder of runs (Logs/), and is the error
when the run folder itself is named.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from fec.core.compat import QUIRKS, recipe_options
from fec.core.errors import FecError
from fec.core.metrics import mean_std_cell, mean_std_stats
from fec.runs.escape import code_span, markdown_cell
from fec.runs.folder import failure, run_dir_started
from fec.runs.run_files import MULTILABEL_METRICS, SINGLE_LABEL_METRICS, RunFileError, read_config, read_results

log = logging.getLogger(__name__)

# Options that say where or how fast a run trained, not what it trained.
RUN_ONLY = {
    "task",
    "dataset",
    "seeds",
    "runs",
    "device",
    "dataset_dir",
    "data_dir",
    "out",
    "log_level",
    "eval_batch_size",
    "compat",
    "threads",
    "recipe",  # the file's values are in the run's options already
}
# Options added with a default that changed what a script does: a run that predates the option
# did what this value does (not today's default).
PREDATED = {"baselines/tfidf.py": {"analyzer": "word"}, "finetune.py": {"cv": 0}}
# Option names a run's config.json may hold from before they were renamed, and their old values.
RENAMED = {"dataset": "task", "precision": "dtype"}
OLD_VALUES = {"dtype": {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}}
# The script that wrote a run, told by what only its config.json holds.
SCRIPTS = {"train_config": "main.py", "finetune_config": "finetune.py", "C_grid": "baselines/tfidf.py"}
METRIC_NAMES = {"acc": "acc", "wf1": "wF1", "macro_f1": "macro-F1", "micro_f1": "micro-F1"}


class ReportError(FecError):
    """No run to report, or a path that is not a run folder nor a folder of runs."""


@dataclass
class Run:
    """One finished run folder, reduced to what pooling needs."""

    folder: Path
    task: str
    created: str
    command: str
    features: str
    key: str
    seeds: dict[int, dict]
    script: str = "main.py"
    recipe: str = ""  # main.py's recipe name (corrected, reference, custom:...)
    finished: bool = True
    failure: str | None = None  # the error it stopped on (failed.json); its finished seeds still count
    ensemble: dict | None = None  # results.json's seed ensemble (mean of the seeds' probabilities)

    @property
    def label(self) -> str:
        """The folder's name as the table shows it, with `(interrupted)`, `(failed)` or `(unfinished)`
        when it did not finish."""
        if self.failure:
            return f"{self.folder.name} ({'interrupted' if self.failure == 'interrupted' else 'failed'})"
        return self.folder.name + ("" if self.finished else " (unfinished)")


@dataclass
class Row:
    """One recipe: the seeds pooled over its runs and their mean±std."""

    task: str
    command: str
    features: str
    seeds: list[int]
    split: str
    stats: dict[str, dict[str, float | None]]  # metric -> {"mean", "std"}, as fec.classify.fusion_training.summarise gives
    runs: list[str] = field(default_factory=list)
    chance_flags: list[bool | None] = field(default_factory=list)  # per seed; None where the run did not record it
    cv: dict[str, dict[str, float | None]] | None = None  # out-of-fold metrics mean±std, when selected by CV
    ensemble: dict | None = None  # one run's seed ensemble over exactly these seeds (not a single model)
    script: str = "main.py"
    recipe: str = ""
    folders: list[Path] = field(default_factory=list)  # the run folders its seeds come from
    created: str = ""  # when the newest of them was created

    @property
    def headline(self) -> tuple[str, ...]:
        """The metrics the cv and ensemble cells show: accuracy, or macro- and micro-F1 for multi-label rows."""
        return ("acc",) if "acc" in self.stats else ("macro_f1", "micro_f1")

    def cv_cell(self) -> str:
        if not self.cv:
            return ""
        return " / ".join(f"{METRIC_NAMES[m]} {mean_std_cell(self.cv[m])}" for m in self.headline)

    def ensemble_cell(self) -> str:
        scores = (self.ensemble or {}).get(self.split) or {}
        return " / ".join(f"{METRIC_NAMES[m]} {scores[m]:.2f}" for m in self.headline if m in scores)

    def at_chance_cell(self) -> str:
        """`2/5`: two of five seeds at chance; `1/3 (2 unknown)` where older runs did not say; `–` when none did."""
        known = [flag for flag in self.chance_flags if flag is not None]
        if not known:
            return "–"
        unknown = len(self.chance_flags) - len(known)
        return f"{sum(known)}/{len(known)}" + (f" ({unknown} unknown)" if unknown else "")


def changed_options(args: dict, defaults: dict, skip: set[str]) -> list[str]:
    """The options in `args` that differ from the script's defaults, as a command line would give them."""
    options = []
    for name, value in args.items():
        if name in skip or value is None or value == defaults.get(name):
            continue
        if isinstance(value, bool):
            options += [f"-{name}"] if value else []
        elif isinstance(value, list):
            options += [f"-{name}", *map(str, value)]
        else:
            options += [f"-{name}", str(value)]
    return options


def load_run(folder: Path, defaults: dict[str, dict]) -> Run | None:
    """A run folder of one of SCRIPTS with at least one finished seed as a `Run`; None (logged)
    for a folder that is not one. A damaged config.json or results.json is a `RunFileError`."""
    failed = failure(folder)
    if not (folder / "results.json").exists():
        if failed:
            log.warning("%s: skipped, the run failed before a seed finished (%s)", folder, failed)
        else:
            log.info("%s: skipped, no seed finished (no results.json)", folder)
        return None
    if failed:
        log.warning("%s: the run failed (%s); its finished seeds are kept", folder, failed)
    config, results = read_config(folder), read_results(folder)
    script = next((name for key, name in SCRIPTS.items() if key in config), None)
    if script is None or "args" not in config:
        log.info("%s: skipped, not a run of %s", folder, ", ".join(SCRIPTS.values()))
        return None
    # Options a run predates take today's defaults, so old and new runs of one recipe pool.
    saved = {RENAMED.get(name, name): value for name, value in config["args"].items()}
    saved = {name: OLD_VALUES.get(name, {}).get(value, value) if isinstance(value, str) else value
             for name, value in saved.items()}  # fmt: skip
    args = defaults[script] | PREDATED.get(script, {}) | saved
    options = changed_options(args, defaults[script], RUN_ONLY | (set(QUIRKS) if script == "main.py" else set()))
    features = ""
    if script == "main.py":
        try:
            options = recipe_options(str(config.get("recipe", config.get("mode", "corrected")))) + options
        except ValueError as err:
            raise RunFileError(folder / "config.json", str(err)) from err
        manifests = config.get("feature_manifests", {}).get("train", {})
        identity = {slot: manifest.get("settings", manifest.get("model")) for slot, manifest in manifests.items()}
        features = " + ".join(f"{slot}: {manifest.get('model', '?')}" for slot, manifest in manifests.items())
    elif script == "finetune.py":
        identity = config.get("model_fingerprint")
    else:
        identity = config.get("csv_sha256")
    task = str(results.get("task") or saved.get("task", "?"))
    command = " ".join(["python", script, "-dataset", task, *options])
    key = json.dumps({"script": script, "task": task, "options": options, "features": identity}, sort_keys=True)
    seeds = {int(entry["seed"]): entry for entry in results.get("seeds", [])}
    # Written after every seed; results.json files older than that flag exist only for finished runs.
    finished = results.get("finished", True)
    return Run(folder, task, config.get("created", ""), command, features, key, seeds, script, config.get("recipe", ""),
               finished, failed, results.get("ensemble"))  # fmt: skip


def load_listed_run(folder: Path, defaults: dict[str, dict]) -> Run | None:
    """`load_run` for a folder found in a folder of runs: a damaged one is skipped with a warning
    naming its file, so it does not stop the report of the others."""
    try:
        return load_run(folder, defaults)
    except RunFileError as err:
        log.warning("%s: skipped (%s)", err.path, err.problem)
        return None


def find_runs(paths: list[Path], defaults: dict[str, dict], task: str | None = None) -> list[Run]:
    """Every run with a finished seed under `paths` (run folders, or folders of them such as Logs/).
    A run folder named in `paths` with a damaged file is a `RunFileError`; one found in a folder of
    runs is skipped (logged)."""
    found: list[Run | None] = []
    for path in paths:
        if (path / "config.json").exists():
            found.append(load_run(path, defaults))
        elif path.is_dir():
            found += [load_listed_run(p, defaults) for p in sorted(path.iterdir()) if (p / "config.json").exists()]
        else:
            raise ReportError(f"{path}: not a run folder nor a folder of runs")
    runs = [run for run in found if run is not None]
    if task is not None:
        runs = [run for run in runs if run.task == task]
    if not runs:
        raise ReportError(f"no finished run{f' of task {task}' if task else ''} under {', '.join(map(str, paths))}")
    return runs


def run_order(run: Run) -> tuple:
    """Oldest first, by when the run claimed its folder (`fec.runs.folder.run_dir_started`: the stamp and
    same-second number in its name, handed out by `mkdir` in start order). Not `created`: it is
    written after the data loads, up to seconds later, so a run can carry a later `created` than one
    started after it. Folders renamed since fall back to `created`."""
    claimed = run_dir_started(run.folder.name)
    if claimed is None:
        claimed = created_at(run.created), 1
    return *claimed, run.folder.name


def created_at(created: str) -> dt.datetime:
    """config.json's `created` as a time; a run without a readable one sorts first."""
    try:
        return dt.datetime.fromisoformat(created).astimezone()
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)


def pool(runs: list[Run]) -> list[Row]:
    """One row per recipe, in the order each recipe first ran; a seed trained twice keeps the later run."""
    groups: dict[str, list[Run]] = {}
    for run in sorted(runs, key=run_order):
        groups.setdefault(run.key, []).append(run)
    rows = []
    for members in groups.values():
        chosen: dict[int, tuple[Run, dict]] = {}
        for run in members:
            for seed, entry in run.seeds.items():
                if seed in chosen:
                    log.info(
                        "%s seed %d: trained again in %s; the later run counts", chosen[seed][0].folder, seed, run.folder.name
                    )
                chosen[seed] = (run, entry)
        entries = [chosen[seed][1] for seed in sorted(chosen)]
        split = "test" if all(entry.get("test") for entry in entries) else "valid"
        metrics = SINGLE_LABEL_METRICS if "wf1" in entries[0][split] else MULTILABEL_METRICS
        first = members[0]
        used = sorted({chosen[seed][0].label for seed in chosen})
        cv = None
        if all(entry.get("cv") for entry in entries):
            cv = {m: mean_std_stats([entry["cv"]["oof"][m] for entry in entries]) for m in metrics}
        # An ensemble is one run's: shown only when that run's seeds are exactly the row's.
        ensemble = next((r.ensemble for r in members if r.ensemble and r.ensemble.get("seeds") == sorted(chosen)), None)
        rows.append(
            Row(
                first.task,
                first.command,
                first.features,
                sorted(chosen),
                split,
                {m: mean_std_stats([entry[split][m] for entry in entries]) for m in metrics},
                used,
                [entry.get("at_chance") for entry in entries],
                cv,
                ensemble,
                first.script,
                first.recipe,
                sorted({chosen[seed][0].folder for seed in chosen}),
                max(chosen[seed][0].created for seed in chosen),
            )
        )
    return sorted(rows, key=lambda row: row.task)  # stable: recipes of a task stay in the order they first ran


def format_markdown(rows: list[Row]) -> str:
    metrics = [m for m in METRIC_NAMES if any(m in row.stats for row in rows)]
    with_cv, with_ensemble = any(row.cv for row in rows), any(row.ensemble for row in rows)
    header = ["task", "command", "features", "seeds", "split", *(METRIC_NAMES[m] for m in metrics)]
    header += ["cross-validated on train"] * with_cv + ["seed ensemble"] * with_ensemble + ["at chance", "runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        extra = [row.cv_cell()] * with_cv + [row.ensemble_cell()] * with_ensemble
        # Task, command, model names and folder names come from run folders: written inert.
        cells = [
            markdown_cell(row.task),
            code_span(row.command),
            markdown_cell(row.features),
            " ".join(map(str, row.seeds)),
            row.split,
            *(mean_std_cell(row.stats.get(m)) for m in metrics),
            *extra,
            row.at_chance_cell(),
            markdown_cell(" ".join(row.runs)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_csv(rows: list[Row]) -> str:
    metrics = [m for m in METRIC_NAMES if any(m in row.stats for row in rows)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "task",
            "command",
            "features",
            "seeds",
            "split",
            *(f"{m}_{part}" for m in metrics for part in ("mean", "std")),
            "at_chance",
            "runs",
        ]
    )
    for row in rows:
        values = []
        for m in metrics:
            stats = row.stats.get(m, {})
            mean, std = stats.get("mean"), stats.get("std")
            values += ["" if mean is None else f"{mean:.4f}", "" if std is None else f"{std:.4f}"]
        writer.writerow(
            [
                row.task,
                row.command,
                row.features,
                " ".join(map(str, row.seeds)),
                row.split,
                *values,
                row.at_chance_cell(),
                " ".join(row.runs),
            ]
        )
    return buffer.getvalue()


def parser_defaults(parser: argparse.ArgumentParser, required: list[str]) -> dict:
    """A script's option defaults, read from its own parser (given its required options)."""
    return vars(parser.parse_args(required))


def script_defaults() -> dict[str, dict]:
    """Each of SCRIPTS' option defaults, as `load_run` needs them."""
    from fec.cli import finetune, tfidf, train  # the commands import the trainers, which import this module's users

    commands = {"main.py": train, "finetune.py": finetune, "baselines/tfidf.py": tfidf}
    return {script: parser_defaults(command.build_parser(), ["--task", "TASK"]) for script, command in commands.items()}
