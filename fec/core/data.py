"""Read and validate `data/{task}/{mode}.csv`, the one data contract every script shares.

Single-label tasks (ED, go_emotion): a `text` column and a `label` column holding an integer id
(names in `label2idx.txt`, one `name id` per line) or a label name mapped through that file.
Multi-label tasks (semeval_eng): `text` plus one 0/1 column per label, names from the header;
an all-zero row is "neutral".

    from fec.core.data import load_split
    split = load_split("data", "ED", "train")
    split.texts[:2], split.labels[:2], split.label_names[:3]

A task has at least two labels, and its train split holds at least two of them (`load_splits`).
Every problem raises `DataError` with one line naming the file and, where it applies, the row
(rows count data rows from 1, the header not counted) or the column.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fec.core.errors import DataError
from fec.core.files import sha256_file
from fec.core.paths import plain_name_problem

log = logging.getLogger(__name__)

MODES = ("train", "valid", "test")
LABEL_FILE = "label2idx.txt"
# utf-8-sig reads plain UTF-8 and drops a byte-order mark (Excel and Notepad write one), which
# would otherwise become part of the first label or column name.
ENCODING = "utf-8-sig"
# ASCII digits only: str.isdigit() also accepts "²" and "①", which int() then refuses.
INTEGER = re.compile(r"-?[0-9]+")
# Columns that are never labels in the multi-label (one 0/1 column per label) layout.
NON_LABEL_COLUMNS = {"id", "text", "aug_text"}


@dataclass
class Split:
    """One validated split: texts, integer labels (N,) or multi-hot labels (N, K), label names."""

    task: str
    mode: str
    path: Path
    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    multilabel: bool
    csv_sha256: str
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def split_path(data_dir: Path | str, task: str, mode: str) -> Path:
    return Path(data_dir) / task / f"{mode}.csv"


def available_modes(data_dir: Path | str, task: str) -> list[str]:
    """The splits of `task` that exist on disk, in train/valid/test order."""
    return [m for m in MODES if split_path(data_dir, task, m).is_file()]


def read_label_map(path: Path) -> dict[str, int]:
    """Parse `label2idx.txt` (`name id` per line; blank lines ignored) into name -> id."""
    mapping: dict[str, int] = {}
    try:
        lines = path.read_text(encoding=ENCODING).splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: {not_utf8(err)}") from err
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not INTEGER.fullmatch(parts[1]):
            raise DataError(f"{path}: line {lineno}: expected 'name id', got {raw!r}")
        name, idx = parts[0], int(parts[1])
        check_label_name(name, f"{path}: line {lineno}")
        if name in mapping:
            raise DataError(f"{path}: line {lineno}: label {name!r} listed twice")
        if idx in mapping.values():
            raise DataError(f"{path}: line {lineno}: id {idx} given to two labels")
        mapping[name] = idx
    if not mapping:
        raise DataError(f"{path}: no labels in file")
    ids = sorted(mapping.values())
    if ids != list(range(len(ids))):
        raise DataError(f"{path}: label ids must be 0..{len(ids) - 1} without gaps, got {ids[:5]}...")
    return mapping


def check_label_name(name: str, where: str) -> None:
    """Label names end up in file names and pages (per-label reports, explanations): refuse the
    ones that could leave a folder or break a line."""
    problem = plain_name_problem(name)
    if problem:
        raise DataError(f"{where}: label name {name!r} {problem}")


def not_utf8(err: UnicodeDecodeError) -> str:
    return f"not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); save it as UTF-8"


def read_delimited(path: Path, sep: str = ",") -> pd.DataFrame:
    """A CSV (or TSV) with every cell as text: no NA guessing, so an empty cell stays "" and is
    reported as such, and numeric-looking texts ("100%") are not turned into floats. Refuses an
    unreadable or empty file and a header naming a column twice (pandas would rename the second
    `name.1` and the wrong one would be read)."""
    what = "TSV" if sep == "\t" else "CSV"
    try:
        header = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding=ENCODING, header=None, nrows=1)
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding=ENCODING)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: {not_utf8(err)}") from err
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path}: the file is empty (expected a header row and data rows)") from err
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: not readable as {what} ({str(err).splitlines()[0]})") from err
    names = [str(name) for name in header.iloc[0].tolist()]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DataError(f"{path}: header: column(s) {', '.join(map(repr, twice))} appear more than once")
    return frame


def _read_csv(path: Path) -> pd.DataFrame:
    """A data-contract CSV (`read_delimited`) that exists and has data rows."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (bring the data with `python prepare_data.py`)")
    frame = read_delimited(path)
    if frame.empty:
        raise DataError(f"{path}: no data rows (only a header)")
    return frame


def read_text_column(path: Path) -> tuple[list[str], pd.DataFrame]:
    """The validated `text` column of any CSV (e.g. texts to classify) and the whole frame."""
    frame = _read_csv(path)
    return _check_texts(path, frame), frame


def check_texts(texts: list[str], where: str) -> None:
    """Refuse empty texts given other than in a CSV (`where` names their source, e.g. `-text`)."""
    for number, text in enumerate(texts, start=1):
        if not text.strip():
            raise DataError(f"{where} {number}: empty text")


def _check_texts(path: Path, frame: pd.DataFrame) -> list[str]:
    if "text" not in frame.columns:
        raise DataError(f"{path}: no 'text' column (columns: {', '.join(frame.columns)})")
    texts = frame["text"].tolist()
    for row, text in enumerate(texts, start=1):
        if not isinstance(text, str):
            raise DataError(f"{path}: row {row}: text is not a string ({type(text).__name__})")
        if not text.strip():
            raise DataError(f"{path}: row {row}: empty text")
    return texts


def _single_labels(path: Path, frame: pd.DataFrame, label_map: dict[str, int] | None) -> tuple[np.ndarray, list[str]]:
    if "label" not in frame.columns:
        raise DataError(f"{path}: no 'label' column (columns: {', '.join(frame.columns)})")
    if label_map is None:
        raise DataError(f"{path.parent / LABEL_FILE}: file not found; single-label tasks name their labels there")
    names = sorted(label_map, key=label_map.get)
    num = len(names)
    labels = np.empty(len(frame), dtype=np.int64)
    for row, cell in enumerate(frame["label"].tolist(), start=1):
        cell = cell.strip()
        if INTEGER.fullmatch(cell):
            idx = int(cell)
            if not 0 <= idx < num:
                raise DataError(f"{path}: row {row}: label id {idx} is outside {LABEL_FILE} (ids 0..{num - 1})")
        elif cell in label_map:
            idx = label_map[cell]
        else:
            raise DataError(f"{path}: row {row}: label {cell!r} is neither an id nor a name in {LABEL_FILE}")
        labels[row - 1] = idx
    return labels, names


def _multi_labels(path: Path, frame: pd.DataFrame, label_names: list[str] | None) -> tuple[np.ndarray, list[str]]:
    present = [c for c in frame.columns if c not in NON_LABEL_COLUMNS]
    names = label_names or present
    for name in present:
        check_label_name(name, f"{path}: header")
    if not names:
        raise DataError(f"{path}: no label columns beside {sorted(NON_LABEL_COLUMNS)}")
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing label column(s) {', '.join(missing)} (expected {', '.join(names)})")
    extra = [c for c in present if c not in names]
    if extra:
        raise DataError(f"{path}: label column(s) {', '.join(extra)} not in the other splits (expected {', '.join(names)})")
    labels = np.zeros((len(frame), len(names)), dtype=np.int64)
    for j, name in enumerate(names):
        for row, cell in enumerate(frame[name].tolist(), start=1):
            cell = cell.strip()
            if cell not in ("0", "1"):
                raise DataError(f"{path}: row {row}: column {name!r} must be 0 or 1, got {cell!r}")
            labels[row - 1, j] = int(cell)
    return labels, names


def is_multilabel_frame(frame: pd.DataFrame) -> bool:
    """No `label` column and every other non-text column is 0/1: the one-column-per-label layout."""
    if "label" in frame.columns:
        return False
    candidates = [c for c in frame.columns if c not in NON_LABEL_COLUMNS]
    return bool(candidates) and all(frame[c].str.strip().isin(["0", "1"]).all() for c in candidates)


def _first_non_binary_cell(frame: pd.DataFrame) -> tuple[int, str, str] | None:
    """(row, column, value) of the first cell outside 0/1 among the would-be label columns."""
    for name in (c for c in frame.columns if c not in NON_LABEL_COLUMNS):
        for row, cell in enumerate(frame[name].tolist(), start=1):
            if cell.strip() not in ("0", "1"):
                return row, name, cell
    return None


def load_split(
    data_dir: Path | str,
    task: str,
    mode: str,
    *,
    multilabel: bool | None = None,
    label_names: list[str] | None = None,
) -> Split:
    """Load and validate one split. `multilabel=None` detects the layout from the columns."""
    path = split_path(data_dir, task, mode)
    frame = _read_csv(path)
    texts = _check_texts(path, frame)
    if multilabel is None:
        multilabel = is_multilabel_frame(frame)
        bad = None if multilabel or "label" in frame.columns else _first_non_binary_cell(frame)
        if bad:
            # Neither layout: say what would make it the multi-label one, not only "no label column".
            row, name, cell = bad
            raise DataError(
                f"{path}: no 'label' column, and not the multi-label layout either: "
                f"row {row}: column {name!r} must be 0 or 1, got {cell!r}"
            )
    if multilabel:
        labels, names = _multi_labels(path, frame, label_names)
    else:
        label_file = path.parent / LABEL_FILE
        label_map = read_label_map(label_file) if label_file.is_file() else None
        labels, names = _single_labels(path, frame, label_map)
    return Split(task, mode, path, texts, labels, names, multilabel, sha256_file(path))


def check_two_labels(split: Split, used: bool = False) -> None:
    """A task needs at least two labels: two names in label2idx.txt (single-label) or two label
    columns (multi-label); with `used`, a single-label split (train) must also hold two of them."""
    if split.multilabel:
        if split.num_labels < 2:
            raise DataError(
                f"{split.path}: header: the only label column is {split.label_names[0]!r}; a task needs at least two labels"
            )
        return
    if split.num_labels < 2:
        label_file = split.path.parent / LABEL_FILE
        raise DataError(f"{label_file}: the only label is {split.label_names[0]!r}; a task needs at least two labels")
    held = np.unique(split.labels)
    if used and held.size < 2:
        raise DataError(
            f"{split.path}: field 'label': every row has the label {split.label_names[held[0]]!r}; "
            "a task needs at least two labels"
        )


def load_splits(
    data_dir: Path | str, task: str, modes: list[str] | tuple[str, ...], *, multilabel: bool | None = None
) -> dict[str, Split]:
    """Load several splits of one task and check them against each other.

    The first split's layout (detected, or forced by `multilabel`) and, for multi-label tasks,
    its label columns are imposed on the others, so a missing or extra label column or a cell
    that is not 0/1 is named precisely. Layout and label names must agree across splits (a
    DataError otherwise); a label that appears in valid/test but never in train is only a
    warning, as the published data has none but user data may. The train split is read for that
    check even when not requested.
    """
    if not modes:
        raise DataError(f"{Path(data_dir) / task}: no splits requested")
    modes = list(modes)
    first = load_split(data_dir, task, modes[0], multilabel=multilabel)
    splits = {modes[0]: first}
    for mode in modes[1:]:
        splits[mode] = load_split(
            data_dir, task, mode, multilabel=first.multilabel, label_names=first.label_names if first.multilabel else None
        )
    for split in splits.values():
        if split.multilabel != first.multilabel or split.label_names != first.label_names:
            raise DataError(
                f"{split.path}: labels ({'multi' if split.multilabel else 'single'}-label, "
                f"{split.num_labels} names) differ from {first.path}'s"
            )
    train = splits.get("train")
    if train is None and split_path(data_dir, task, "train").is_file():
        train = load_split(data_dir, task, "train", multilabel=first.multilabel)
    check_two_labels(first)
    if train is not None:
        check_two_labels(train, used=True)
    if train is not None and not first.multilabel:
        seen = set(np.unique(train.labels).tolist())
        for split in splits.values():
            if split.mode == "train":
                continue
            unseen = sorted(set(np.unique(split.labels).tolist()) - seen)
            if unseen:
                names = ", ".join(split.label_names[i] for i in unseen)
                message = f"{split.path}: label(s) never seen in train: {names}"
                log.warning(message)
                split.warnings.append(message)
    return splits
