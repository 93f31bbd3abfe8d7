"""Pool the seeds of finished runs that share a recipe into one table row, so the reproduction
tables are regenerated from the run folders instead of being copied by hand.

    python report.py                          # every finished run under Logs/, one row per recipe
    python report.py --task ED                # one task
    python report.py Logs/ED_20261122-075750 Logs/ED_20261122-082150   # chosen run folders
    python report.py --format csv > pooled.csv

Runs of main.py, finetune.py and baselines/tfidf.py pool when the same script trained the same
recipe on the same features (fine-tuning: the same model weights; TF-IDF: the same CSVs):
- every option that changes what is trained, by its value (so runs that recorded other defaults
  pool only where they trained alike); not -seeds/-runs, the device, folders, logging or the
  evaluation batch size;
- for main.py, the compat setting as resolved (`-compat reference` pools with its four explicit
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
A script's option defaults come from the run's own config.json (`option_defaults`, recorded at
training time); runs written before that take the ones the caller passes (`report.py` passes
today's, from the trainers' settings: `fec.api.report.trainer_defaults`). The table is written by `fec.runs.report_format`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from fec.core.compat_setting import QUIRKS, compat_options
from fec.core.errors import ReportError, RunFileError
from fec.core.metrics import MULTILABEL_HEADLINE, SINGLE_LABEL_KEYS, mean_std_stats
from fec.runs.folder import failure, run_dir_started
from fec.runs.run_files import compat_setting, read_config, read_results
from fec.runs.tune_folder import SEARCH_RECORD

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
    "recipe",  # the recipe file: its values are in the run's options already
}
# Options added with a default that changed what a script does: a run that predates the option
# did what this value does (not today's default).
PREDATED = {"baselines/tfidf.py": {"analyzer": "word"}, "finetune.py": {"cv": 0}}
# Option names a run's config.json may hold from before they were renamed, and their old values.
RENAMED = {"dataset": "task", "precision": "dtype"}
OLD_VALUES = {"dtype": {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}}
# The script that wrote a run, told by what only its config.json holds.
SCRIPTS = {"train_config": "main.py", "finetune_config": "finetune.py", "C_grid": "baselines/tfidf.py", "ensemble": "tune.py"}
# What a fine-tuning or TF-IDF run read, so runs of one recipe on other inputs stay apart: the weights, the CSVs;
# an ensemble: its members.
INPUTS = {"finetune.py": "model_fingerprint", "baselines/tfidf.py": "csv_sha256", "tune.py": "ensemble"}


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
    compat: str = ""  # main.py's compat setting (corrected, reference, custom:...)
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
    stats: dict[str, dict[str, float | None]]  # metric -> {"mean", "std"}, as fec.core.metrics.summarise gives
    runs: list[str] = field(default_factory=list)
    chance_flags: list[bool | None] = field(default_factory=list)  # per seed; None where the run did not record it
    cv: dict[str, dict[str, float | None]] | None = None  # out-of-fold metrics mean±std, when selected by CV
    ensemble: dict | None = None  # one run's seed ensemble over exactly these seeds (not a single model)
    script: str = "main.py"
    compat: str = ""
    folders: list[Path] = field(default_factory=list)  # the run folders its seeds come from
    created: str = ""  # when the newest of them was created

    @property
    def headline(self) -> tuple[str, ...]:
        """The metrics the cv and ensemble cells show: accuracy, or macro- and micro-F1 for multi-label rows."""
        return ("acc",) if "acc" in self.stats else MULTILABEL_HEADLINE


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


def saved_args(config: dict) -> dict:
    """config.json's `args` under today's option names and values (`-dataset` was `-task`'s name, ...)."""
    renamed = {RENAMED.get(name, name): value for name, value in config["args"].items()}
    return {name: today_value(name, value) for name, value in renamed.items()}


def today_value(name: str, value):
    """An option's value as today's spelling of it (`fp32` -> `float32`)."""
    return OLD_VALUES.get(name, {}).get(value, value) if isinstance(value, str) else value


def run_option_defaults(folder: Path, config: dict, script: str, fallback: dict[str, dict] | None) -> dict:
    """The defaults of `script`'s options the run is compared with: those it recorded when it trained
    (`option_defaults`), else `fallback[script]`, the caller's (today's) for runs from before that."""
    if "option_defaults" in config:
        return config["option_defaults"]
    if fallback and script in fallback:
        return fallback[script]
    raise RunFileError(
        folder / "config.json",
        f"no `option_defaults` (written before runs recorded them); read it with `python report.py {folder}`, "
        f"which knows today's defaults of {script}",
    )


def main_py_options(folder: Path, config: dict) -> tuple[str, list[str], dict, str]:
    """A main.py run's compat setting, the options it stands for, and what each feature slot read:
    its identity (model, pooling, dtype, data checksum, for the pooling key) and the table's words."""
    compat, _ = compat_setting(config)
    try:
        options = compat_options(compat or "corrected")
    except ValueError as err:
        raise RunFileError(folder / "config.json", str(err)) from err
    manifests = config.get("feature_manifests", {}).get("train", {})
    identity = {slot: manifest.get("settings", manifest.get("model")) for slot, manifest in manifests.items()}
    features = " + ".join(f"{slot}: {manifest.get('model', '?')}" for slot, manifest in manifests.items())
    return compat, options, identity, features


def finished_run_files(folder: Path) -> tuple[dict, dict, str | None] | None:
    """A run's config.json, results.json and the error it stopped on (failed.json); None (logged)
    for a folder where no seed finished or that no script of SCRIPTS wrote, or that holds a
    search or a probe."""
    if any((folder / name).is_file() for name in (SEARCH_RECORD, "probe.csv")):  # a search's or probe's folder
        log.debug("%s: a search or probe folder, not a run", folder)
        return None
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
    if "args" not in config or not any(key in config for key in SCRIPTS):
        log.info("%s: skipped, not a run of %s", folder, ", ".join(SCRIPTS.values()))
        return None
    return config, results, failed


def load_run(folder: Path, defaults: dict[str, dict] | None = None) -> Run | None:
    """A run folder of one of SCRIPTS with at least one finished seed as a `Run`; None (logged)
    for a folder that is not one. A damaged config.json or results.json is a `RunFileError`, and so
    is a run that recorded no option defaults when `defaults` (script -> its defaults) has none."""
    files = finished_run_files(folder)
    if files is None:
        return None
    config, results, failed = files
    script = next(name for key, name in SCRIPTS.items() if key in config)
    saved, script_defaults = saved_args(config), run_option_defaults(folder, config, script, defaults)
    # Options a run predates take the defaults (or the value they stood for), so old and new runs of one recipe pool.
    args = script_defaults | PREDATED.get(script, {}) | saved
    skip = RUN_ONLY | (set(QUIRKS) if script == "main.py" else set())
    options = changed_options(args, script_defaults, skip)
    if script == "main.py":
        compat, compat_words, identity, features = main_py_options(folder, config)
        options = compat_words + options
    else:
        compat, identity, features = "", config.get(INPUTS[script]), ""
    task = str(results.get("task") or saved.get("task", "?"))
    # Every option's value, not only the changed ones: runs whose recorded defaults differ pool only when they trained alike.
    trained = {name: value for name, value in args.items() if name not in skip}
    recipe = {"script": script, "task": task, "compat": compat, "options": trained, "features": identity}
    key = json.dumps(recipe, sort_keys=True, default=str)
    command = " ".join(["python", script, "-dataset", task, *options])
    if script == "tune.py":  # a candidate ensemble: no one command trains it; it is its member runs, weighted
        members = " ".join(f"{m.get('run')} x{float(m.get('weight', 0)):.2f}" for m in config["ensemble"].get("members", []))
        command = f"python tune.py --task {task} (the candidate ensemble of {members})"
    return Run(
        folder,
        task,
        config.get("created", ""),
        command,
        features,
        key,
        {int(entry["seed"]): entry for entry in results.get("seeds", [])},
        script,
        compat,
        results.get("finished", True),  # written after every seed; older results.json files exist only for finished runs
        failed,
        results.get("ensemble"),
    )


def load_listed_run(folder: Path, defaults: dict[str, dict] | None = None) -> Run | None:
    """`load_run` for a folder found in a folder of runs: a damaged one is skipped with a warning
    naming its file, so it does not stop the report of the others."""
    try:
        return load_run(folder, defaults)
    except RunFileError as err:
        log.warning("%s: skipped (%s)", err.path, err.problem)
        return None


def find_runs(paths: list[Path], defaults: dict[str, dict] | None = None, task: str | None = None) -> list[Run]:
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
        metrics = SINGLE_LABEL_KEYS if "wf1" in entries[0][split] else MULTILABEL_HEADLINE
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
                first.compat,
                sorted({chosen[seed][0].folder for seed in chosen}),
                max(chosen[seed][0].created for seed in chosen),
            )
        )
    return sorted(rows, key=lambda row: row.task)  # stable: recipes of a task stay in the order they first ran
