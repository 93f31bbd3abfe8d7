"""Bringing the data into `data/TASK/` (train.csv, valid.csv, test.csv, label2idx.txt): the published
tasks copied or downloaded, or a task made from your own table.

    import fec
    fec.prepare_data()                                          # download ED and go_emotion -> [data/ED, data/go_emotion]
    fec.prepare_data("../shared/data", tasks=["ED"])            # copy ED from a folder of task folders
    fec.prepare_data("mine.jsonl", task="mine")                 # -> data/mine, valid and test carved from it
    fec.prepare_data(frame, task="mine", label_column="emotion")          # a pandas DataFrame
    fec.prepare_data(dataset_dict, task="mine", label_column="labels")    # a datasets DatasetDict: its own splits

The published CSVs are third-party data, never committed: copied from a folder holding one
sub-folder per task, or downloaded from havelhakimi/LLM-FusionClassifier at a pinned commit, every
known file sha256-checked (`fec.core.fetch`). Your own data comes as a CSV, TSV, JSON Lines or
Parquet file, a folder saved by `datasets`' save_to_disk, a pandas DataFrame, or a `datasets`
Dataset or DatasetDict (`datasets` itself is not needed for files and folders); splits not given
are carved from train (`fec.core.data_import`). The command is `fec data` (prepare_data.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from fec.core import fetch
from fec.core.data_import import ImportSpec, import_task, in_memory
from fec.core.errors import FecError, SettingError, UsageError
from fec.core.settings import (
    BadValue,
    Settings,
    default_of,
    documented,
    existing_file,
    fraction,
    given_path,
    given_record,
    non_negative_int,
    setting,
    task_name,
    text,
)
from fec.core.tables import FORMATS, data_format
from fec.runs.output_rule import output_problem

# Settings that only making a task of your own data (`task`) uses.
IMPORT_OPTIONS = (
    "valid",
    "test",
    "text_column",
    "label_column",
    "label_columns",
    "label_separator",
    "valid_fraction",
    "test_fraction",
    "seed",
)


def data_source(value):
    """A folder (of task folders, or saved by datasets) or a data file, as a Path; or a table in
    memory (a DataFrame, a datasets Dataset or DatasetDict), as it is."""
    if in_memory(value):
        return value
    if not isinstance(value, str | Path):
        raise BadValue(f"not a path, a DataFrame or a datasets Dataset: {value!r}")
    path = given_path(value)
    if not path.exists():
        raise BadValue(f"{value}: no such {'file' if path.suffix.lower() in FORMATS else 'folder'}")
    return path


def split_source(value):
    """One split given on its own: a data file, as a Path; or a DataFrame or a datasets Dataset."""
    if in_memory(value) == "DatasetDict":
        raise BadValue("a DatasetDict brings its own splits; give it as the source")
    return value if in_memory(value) else existing_file(value)


@dataclass(kw_only=True)
class PrepareSettings(Settings):
    """What `fec.prepare_data` brings and where (`fec data -h` lists the same settings as options)."""

    source: object = setting(
        None,
        check=data_source,
        help="copy from DIR/{task}/ instead of downloading; with --task: the data file (or datasets folder) to read",
    )
    tasks: list[str] | None = setting(
        None,
        check=task_name,
        many=True,
        help=f"tasks to fetch (default: all known tasks, {' '.join(fetch.known_tasks())}, skipping those absent from "
        f"--from DIR; without --from, the downloadable ones: {' '.join(fetch.DOWNLOADS)}). With --from any task folder "
        "name works; unknown tasks are copied unverified",
    )
    data_dir: Path = setting(Path("data"), check=given_path, help="destination folder")
    force: bool = setting(
        False, help="fetch again even if a file is present, replacing it (with --task: replace the task's data)"
    )
    task: str | None = setting(None, check=task_name, help="make data/NAME/ from the file (or datasets folder) given with --from")
    valid: object = setting(None, check=split_source, help="the valid split as its own file (default: carved from train)")
    test: object = setting(None, check=split_source, help="the test split as its own file (default: carved from train)")
    text_column: str = setting("text", check=text, help="the column holding the texts")
    label_column: str = setting(
        "label",
        check=text,
        help="the column holding each row's label; lists there (or strings split at --label_separator) make the task multi-label",
    )
    label_columns: list[str] | None = setting(None, check=text, many=True, help="several 0/1 columns, one per label: multi-label")
    label_separator: str | None = setting(None, help="split --label_column's strings at SEP (e.g. ,): multi-label")
    valid_fraction: float = setting(0.1, check=fraction, help="share of train carved out as valid when no --valid FILE")
    test_fraction: float = setting(
        0.1, check=fraction, help="share of train carved out as test when no --test FILE (0: no test split)"
    )
    seed: int = setting(0, check=non_negative_int, help="seed of the carving")


@documented(PrepareSettings)
def prepare_data(source: object = None, *, settings: PrepareSettings | None = None, **options) -> Path | list[Path]:
    """Bring a task's data into `data_dir`: with `task`, make `data_dir/TASK/` from `source` and
    return that folder; without, copy (from the folder `source`) or download the published
    `tasks` and return their folders. Everything is checked before the first file is written.

    fec.prepare_data(frame, task="mine", text_column="text", label_column="emotion")   # -> data/mine
    """
    settings = given_record(PrepareSettings, settings, source=source, **options) or PrepareSettings(source=source, **options)
    check_options(settings, set(options) | changed(settings))
    check_sources_kept(settings)
    if settings.task is None:
        outcomes = fetch.prepare(settings.data_dir, src=settings.source, tasks=settings.tasks, force=settings.force)
        return [settings.data_dir / task for task in dict.fromkeys(outcome.task for outcome in outcomes)]
    spec = ImportSpec(
        text_column=settings.text_column,
        label_column=None if settings.label_columns else settings.label_column,
        label_columns=tuple(settings.label_columns or ()),
        label_separator=settings.label_separator,
        valid_fraction=settings.valid_fraction,
        test_fraction=settings.test_fraction,
        seed=settings.seed,
    )
    import_task(settings.source, settings.task, settings.data_dir, spec, settings.valid, settings.test, settings.force)
    return settings.data_dir / settings.task


def changed(settings: PrepareSettings) -> set[str]:
    """The settings whose value is not the default (a table in memory is never a default)."""
    found = set()
    for field in fields(settings):
        value, default = getattr(settings, field.name), default_of(field)
        if (value is not None) if default is None else (value != default):
            found.add(field.name)
    return found


def check_options(settings: PrepareSettings, given: set[str]) -> None:
    """Refuse combinations that would silently do something else than asked (`given`: the settings
    named by the caller, e.g. on the command line, even at their default)."""
    source = settings.source
    if settings.task is None:
        used = [name for name in IMPORT_OPTIONS if name in given]
        if used:
            raise UsageError(f"--{used[0]}: only with --task NAME (bringing your own data from --from FILE)")
        if in_memory(source):
            raise SettingError("task", None, f"name the task to make from the {in_memory(source)}")
        if source is not None and (source.is_file() or data_format_or_none(source) == "datasets"):
            raise UsageError(f"--from {source}: a data file or datasets folder; name the task to make from it with --task NAME")
        return
    if source is None:
        raise UsageError("--task NAME: give the data with --from FILE (to download or copy published tasks, use --tasks)")
    if settings.tasks is not None:
        raise UsageError(
            "--tasks and --task: give --tasks to copy or download published tasks, --task to make one from --from FILE"
        )
    for mode in ("valid", "test"):
        if getattr(settings, mode) is not None and f"{mode}_fraction" in given:
            raise UsageError(f"--{mode}_fraction: the {mode} split is the file given with --{mode}; give one or the other")
    if settings.label_columns and "label_column" in given:
        raise UsageError("--label_column and --label_columns: give one or the other")
    if settings.label_separator is not None and settings.label_columns:
        raise UsageError("--label_separator: applies to --label_column, not to --label_columns")
    if settings.label_separator == "":
        raise UsageError("--label_separator: give a non-empty separator, e.g. ,")


def check_sources_kept(settings: PrepareSettings) -> None:
    """What is written never replaces what is read or kept: with `task`, no source file lies in the
    task folder it makes (replaced with `force`), valid and test are not train's file; copying
    tasks, the source is not `data_dir` itself; and no task folder lands in a feature store, a
    run, search or model folder (`fec.runs.output_rule`)."""
    data_dir = settings.data_dir
    given = (("from", settings.source), ("valid", settings.valid), ("test", settings.test))
    files = {name: value for name, value in given if isinstance(value, Path)}  # (tables in memory are no files)
    if settings.task is None:
        if "from" in files and files["from"].resolve() == data_dir.resolve():
            raise UsageError(f"--from {files['from']}: is --data_dir itself; copy from another folder")
        tasks = settings.tasks or fetch.known_tasks()
    else:
        tasks = [settings.task]
        target = data_dir / settings.task
        for option, source in files.items():
            if source.resolve().is_relative_to(target.resolve()):
                raise UsageError(
                    f"--{option} {source}: lies in {target}, which --task {settings.task} writes; move it out first, so "
                    "the data is kept"
                )
        for option, other in (("valid", "from"), ("test", "from"), ("test", "valid")):
            if option in files and other in files and files[option].resolve() == files[other].resolve():
                raise UsageError(f"--{option} {files[option]}: is the --{other} file; each split is a file of its own rows")
    for task in tasks:
        target = data_dir / task
        problem = output_problem(target, {}, replacing=target)
        if problem:
            raise UsageError(f"--data_dir {data_dir}: {target} {problem}")


def data_format_or_none(path: Path) -> str | None:
    try:
        return data_format(path)
    except FecError:
        return None
