"""Bring your own data: make `data/{task}/` (the data contract of fec.core.data) from a user's CSV, TSV,
JSON Lines or Parquet file, a folder written by `datasets`' `save_to_disk`, or a table in memory:
a pandas DataFrame, a `datasets` Dataset or DatasetDict.

    python prepare_data.py --from mine.jsonl --task mine                           # carve valid and test, 10% each
    python prepare_data.py --from train.jsonl --valid valid.jsonl --test test.jsonl --task mine
    python prepare_data.py --from saved_dataset --task mine --label_column labels  # its own splits

    from fec.core.data_import import ImportSpec, import_task
    manifest = import_task(Path("mine.jsonl"), "mine", Path("data"), ImportSpec(label_column="emotion"))
    manifest = import_task(frame, "mine", Path("data"), ImportSpec())             # a DataFrame in memory

Labels come from the data: single-label when `label_column` holds one label per row; multi-label
when it holds lists (or strings split at `label_separator`), or with `label_columns` (0/1 columns).
Label names are sorted (numerically when all are integers) and ids follow that order; train must
hold at least two labels (two label columns for multi-label data). A split not
given is carved from train with its fraction, seeded, stratified by label for single-label data.
Everything is read and checked before the first file is written; each file is written under a
temporary name and renamed into place; `split.json` records the sources' sha256, the options and
the row counts. A problem raises DataError (UsageError for options) naming the file, row and field.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fec.core.data import LABEL_FILE
from fec.core.errors import DataError, SettingError, UsageError
from fec.core.files import atomic_write_text, sha256_file
from fec.core.labelling import Labelled, label_rows, ordered_names
from fec.core.paths import inside
from fec.core.provenance import VERSION
from fec.core.tables import Table, class_names, read_source, read_table

log = logging.getLogger(__name__)

MANIFEST = "split.json"
# The contract's files: with --force those not written this time are removed, so no stale split stays.
CONTRACT_FILES = ("train.csv", "valid.csv", "test.csv", LABEL_FILE, "label_tree.tsv", MANIFEST)
# What a `datasets` folder may call its splits.
SPLIT_NAMES = {"train": "train", "validation": "valid", "valid": "valid", "dev": "valid", "test": "test"}


@dataclass(frozen=True)
class ImportSpec:
    """Which columns hold what, and how to carve the splits that are not given."""

    text_column: str = "text"
    label_column: str | None = "label"
    label_columns: tuple[str, ...] = ()  # several 0/1 columns: multi-label, label_column unused
    label_separator: str | None = None  # split label_column's strings here: multi-label
    valid_fraction: float = 0.1
    test_fraction: float = 0.1  # 0: no test split
    seed: int = 0


def import_task(
    source: object,
    task: str,
    data_dir: Path,
    spec: ImportSpec,
    valid: object = None,
    test: object = None,
    force: bool = False,
) -> dict:
    """Make `data_dir/task/` from `source` (plus `valid`/`test`), each a file's Path or a table in
    memory (`in_memory`); returns the manifest written."""
    dest = inside(data_dir, task)
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise UsageError(f"{dest}: the task folder exists; --force replaces its data")
    given = given_splits(source, valid, test)
    columns = (spec.text_column, spec.label_column, spec.label_columns, spec.label_separator)
    parts = {mode: label_rows(table, *columns) for mode, table in given.items()}
    train = parts["train"]
    for part in parts.values():
        if part.multilabel != train.multilabel:
            raise DataError(
                f"{part.table.path}: row 1: field {part.field!r}: {_layout(part)}, but {train.table.path} is "
                f"{_layout(train)}: mixed single- and multi-label"
            )
    names = ordered_names(train)
    for part in list(parts.values())[1:]:
        _refuse_unseen(part, train, set(names))
    _refuse_fewer_than_two(train, names)
    splits = carve(parts, spec)
    files = render(splits, names, train.multilabel)
    manifest = _manifest(given, splits, names, train.multilabel, spec)
    files[MANIFEST] = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    for name, text in files.items():
        atomic_write_text(dest / name, text)
    for name in CONTRACT_FILES:
        if name not in files and (dest / name).is_file():
            (dest / name).unlink()  # left by an earlier import (--force)
    rows = ", ".join(f"{n} {mode}" for mode, n in manifest["rows"].items())
    log.info("%s: %s rows, %d labels (%s-label) written to %s", task, rows, len(names), _kind(train), dest)
    return manifest


def given_splits(source: object, valid: object, test: object) -> dict[str, Table]:
    """train (and valid, test) as given: `source` with `valid`/`test`, or a `datasets` folder's (or
    DatasetDict's) own splits."""
    found = read_source(source) if isinstance(source, Path) else held_splits(source)
    where = source if isinstance(source, Path) else in_memory(source)
    if len(found) > 1 or "train" not in found:  # a DatasetDict
        if valid is not None or test is not None:
            if isinstance(source, Path):
                raise UsageError(f"{source}: a datasets folder brings its own splits; --valid and --test are for files")
            raise UsageError("a DatasetDict brings its own splits; valid and test are for a DataFrame or a Dataset")
        unknown = [name for name in found if name not in SPLIT_NAMES]
        if "train" not in found:
            raise DataError(f"{where}: no 'train' split (splits: {', '.join(found)})")
        for name in unknown:
            log.warning("%s: split %r is not train, validation or test: not used", where, name)
        splits = {SPLIT_NAMES[name]: table for name, table in found.items() if name not in unknown}
        if len(splits) < sum(name in SPLIT_NAMES for name in found):
            raise DataError(f"{where}: two splits mean the same one (splits: {', '.join(found)})")
        return dict(sorted(splits.items(), key=lambda item: ["train", "valid", "test"].index(item[0])))
    splits = {"train": found["train"]}
    for mode, given in (("valid", valid), ("test", test)):
        if given is not None:
            splits[mode] = read_table(given) if isinstance(given, Path) else held_table(given, f"{mode} {in_memory(given)}")
    return splits


def in_memory(source: object) -> str | None:
    """What a table in memory is: `DataFrame`, `Dataset` or `DatasetDict` (`datasets`' types, known
    without importing the package: whoever holds one has imported it); None for anything else."""
    if isinstance(source, pd.DataFrame):
        return "DataFrame"
    datasets = sys.modules.get("datasets")
    for kind in ("DatasetDict", "Dataset"):
        if datasets is not None and isinstance(source, getattr(datasets, kind)):
            return kind
    return None


def held_splits(source: object) -> dict[str, Table]:
    """A table in memory by split, as `read_source` reads a file: a DataFrame or a Dataset is `train`;
    a DatasetDict keeps its split names (`train`, `validation`, `test`, ...)."""
    if in_memory(source) == "DatasetDict":
        return {str(name): held_table(split, f"DatasetDict[{str(name)!r}]") for name, split in source.items()}
    return {"train": held_table(source, in_memory(source))}


def held_table(source: object, name: str) -> Table:
    """A DataFrame or a Dataset (its rows after any select or shuffle, and the names of its ClassLabel
    columns) as one table; `name` says which in messages, where a file's path would."""
    if isinstance(source, pd.DataFrame):
        found = Table(Path(name), "DataFrame", source.reset_index(drop=True), [], {})
    else:
        found = Table(Path(name), "Dataset", source.to_pandas(), [], class_names(source.features.arrow_schema))
    if found.frame.empty:
        raise DataError(f"{name}: no data rows")
    return found


def _layout(part: Labelled) -> str:
    return "one label per row" if not part.multilabel else "several labels per row"


def _kind(part: Labelled) -> str:
    return "multi" if part.multilabel else "single"


def _refuse_unseen(part: Labelled, train: Labelled, seen: set[str]) -> None:
    """A label in valid or test that train never shows cannot be learnt: refused, row named."""
    for row, labels in enumerate(part.labels, start=1):
        for label in [labels] if isinstance(labels, str) else labels:
            if label not in seen:
                known = ", ".join(ordered_names(train)[:10]) + (", ..." if len(seen) > 10 else "")
                raise DataError(
                    f"{part.table.path}: row {row}: field {part.field!r}: label {label!r} never appears in "
                    f"{train.table.path} (its labels: {known})"
                )


def _refuse_fewer_than_two(train: Labelled, names: list[str]) -> None:
    """A classifier needs two labels to tell apart (the data contract refuses fewer too); for
    multi-label data, two label columns."""
    if len(names) >= 2:
        return
    where = f"{train.table.path}: field {train.field!r}"
    if not train.multilabel:
        held = f"every row has the label {names[0]!r}"
    elif train.declared:
        held = "the only label column"
    else:
        held = f"the only label in its rows is {names[0]!r}" if names else "no row has a label"
    raise DataError(f"{where}: {held}; a task needs at least two labels")


def carve(parts: dict[str, Labelled], spec: ImportSpec) -> dict[str, tuple[list[str], list]]:
    """(texts, labels) per split: the given ones as they are, the missing ones drawn from train."""
    train = parts["train"]
    if "valid" not in parts and spec.valid_fraction <= 0:
        raise SettingError("valid_fraction", 0, "a valid split is required; give a fraction > 0 or --valid FILE")
    fractions = {"valid": spec.valid_fraction, "test": spec.test_fraction}
    carved = {mode: f for mode, f in fractions.items() if mode not in parts and f > 0}
    if sum(carved.values()) >= 1:
        raise UsageError(f"--valid_fraction + --test_fraction = {sum(carved.values()):g}: leaves nothing to train on")
    place = _places(train, carved, spec.seed)
    splits = {}
    for mode in ("train", "valid", "test"):
        if mode in parts and mode != "train":
            splits[mode] = (parts[mode].texts, parts[mode].labels)
        elif mode == "train" or mode in carved:
            keep = np.flatnonzero(place == mode)
            if keep.size == 0:
                hint = "lower the fractions" if mode == "train" else f"raise --{mode}_fraction or give --{mode} FILE"
                raise DataError(f"{train.table.path}: {_fractions(carved)} of its {len(place)} rows leave {mode} empty; {hint}")
            splits[mode] = ([train.texts[i] for i in keep], [train.labels[i] for i in keep])
    return splits


def _places(train: Labelled, carved: dict[str, float], seed: int) -> np.ndarray:
    """The split of each train row: `train` or one of `carved`, drawn with `seed`.

    The rows of each label (all rows together for multi-label data, which is not stratified) are
    shuffled and laid on [0, 1) at (j + u) / n, with u drawn once per label; those below the valid
    fraction go to valid, the next test fraction to test. Each label so puts the floor or the ceil
    of its share into each split (its expected share exactly), and keeps a row in train as long as
    the fractions leave it one, which a label with two rows always has below 0.5 in all."""
    stratified = bool(carved) and not train.multilabel
    if stratified:
        _refuse_single_examples(train)
    rng = np.random.default_rng(seed)
    groups = _groups(train) if stratified else [np.arange(len(train.texts))]
    place = np.full(len(train.texts), "train", dtype=object)
    for rows in groups:
        rows = rng.permutation(rows)
        position = (np.arange(len(rows)) + rng.random()) / len(rows)
        start = 0.0
        for mode, f in carved.items():
            place[rows[(position >= start) & (position < start + f)]] = mode
            start += f
        if stratified and not (place[rows] == "train").any():
            raise DataError(
                f"{train.table.path}: label {train.labels[rows[0]]!r} ({len(rows)} rows) has none left for train with "
                f"{_fractions(carved)}; lower the fractions"
            )
    return place


def _fractions(carved: dict[str, float]) -> str:
    return " and ".join(f"--{mode}_fraction {f:g}" for mode, f in carved.items())


def _groups(train: Labelled) -> list[np.ndarray]:
    labels = np.array(train.labels, dtype=object)
    return [np.flatnonzero(labels == name) for name in ordered_names(train)]


def _refuse_single_examples(train: Labelled) -> None:
    names, counts = np.unique(np.array(train.labels, dtype=object), return_counts=True)
    for name, count in zip(names, counts, strict=True):
        if count == 1:
            row = train.labels.index(name) + 1
            raise DataError(
                f"{train.table.path}: row {row}: field {train.field!r}: label {name!r} has one example; splitting "
                f"stratified by label needs at least 2 (add examples, drop it, or give --valid and --test files)"
            )


def render(splits: dict[str, tuple[list[str], list]], names: list[str], multilabel: bool) -> dict[str, str]:
    """The contract's files as text: `text` and `label` ids plus label2idx.txt, or `text` and one 0/1
    column per label. Every text is quoted: minimal quoting (pandas' default) looks only for the
    line terminator's characters, so a text holding a bare carriage return would be left unquoted
    and every reader would end the row there."""
    files = {}
    ids = {name: i for i, name in enumerate(names)}
    for mode, (texts, labels) in splits.items():
        frame = pd.DataFrame({"text": texts})
        if multilabel:
            for name in names:
                frame[name] = [int(name in row) for row in labels]
        else:
            frame["label"] = [ids[label] for label in labels]
        files[f"{mode}.csv"] = frame.to_csv(index=False, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    if not multilabel:
        files[LABEL_FILE] = "".join(f"{name} {i}\n" for i, name in enumerate(names))
    return files


def _manifest(given: dict[str, Table], splits: dict, names: list[str], multilabel: bool, spec: ImportSpec) -> dict:
    carved = [mode for mode in splits if mode not in given]
    sources = {
        mode: {
            "path": str(table.path.resolve()) if table.files else None,  # None: a table held in memory
            "format": table.format,
            "files": [{"path": str(file.resolve()), "sha256": sha256_file(file)} for file in table.files],
        }
        for mode, table in given.items()
    }
    options = asdict(spec) | {"label_columns": list(spec.label_columns)}
    return {
        "sources": sources,
        "carved_from_train": {mode: getattr(spec, f"{mode}_fraction") for mode in carved},
        "stratified": bool(carved) and not multilabel,
        "options": options,
        "rows": {mode: len(texts) for mode, (texts, _) in splits.items()},
        "multilabel": multilabel,
        "labels": names,
        "code_version": VERSION,
    }
