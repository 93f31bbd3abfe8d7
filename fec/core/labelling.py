"""The texts and labels of one user's table (fec.core.tables), checked row by row: what
fec.core.data_import turns into the data contract.

    from fec.core.labelling import label_rows, ordered_names
    part = label_rows(table, "text", "label", (), None)      # one label per row
    part = label_rows(table, "text", "labels", (), ",")      # "joy,anger": several per row
    part = label_rows(table, "text", None, ("joy", "anger"), None)  # 0/1 columns
    ordered_names(part)                                      # ['anger', 'joy']

A label cell may be a name, an integer (a `datasets` ClassLabel index is turned into its name),
a list of those (multi-label), or a string split at the separator (multi-label). Every problem
raises DataError naming the file, the row (data rows count from 1) and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fec.core.data import INTEGER, NON_LABEL_COLUMNS, check_label_name
from fec.core.errors import DataError
from fec.core.tables import Table

# Multi-label names become CSV columns beside `text`; these would be read as something else.
RESERVED = sorted(NON_LABEL_COLUMNS | {"label"})


@dataclass
class Labelled:
    """One table's texts and, per row, a label name (single-label) or a list of names (multi-label)."""

    table: Table
    field: str  # the column(s) the labels came from, for messages
    texts: list[str]
    labels: list
    multilabel: bool
    declared: tuple[str, ...] = ()  # label columns given by name: labels even without a positive row


def label_rows(
    table: Table, text_column: str, label_column: str | None, label_columns: tuple[str, ...], separator: str | None
) -> Labelled:
    """Check and read `table`'s texts and labels (from `label_columns` when given, else `label_column`)."""
    _require(table, [text_column], "--text_column")
    texts = [_text(table, row, cell, text_column) for row, cell in enumerate(table.frame[text_column].tolist(), start=1)]
    if label_columns:
        _require(table, list(label_columns), "--label_columns")
        for name in label_columns:
            _check_name(name, f"{table.path}: --label_columns", multilabel=True)
        labels = [[] for _ in texts]
        for name in label_columns:
            for row, cell in enumerate(table.frame[name].tolist(), start=1):
                if _binary(table, row, name, cell):
                    labels[row - 1].append(name)
        return Labelled(table, ", ".join(label_columns), texts, labels, True, tuple(label_columns))
    _require(table, [label_column], "--label_column")
    classes = table.class_names.get(label_column)
    cells = table.frame[label_column].tolist()
    labels = [_label(table, row, label_column, cell, classes, separator) for row, cell in enumerate(cells, start=1)]
    multilabel = isinstance(labels[0], list)
    for row, value in enumerate(labels, start=1):
        if isinstance(value, list) != multilabel:
            held = "several labels (a list)" if isinstance(value, list) else "one label"
            first = "one label" if isinstance(value, list) else "a list"
            raise DataError(
                f"{table.path}: row {row}: field {label_column!r} holds {held}, but row 1 holds {first}: "
                f"mixed single- and multi-label"
            )
    seen: set[str] = set()
    for row, value in enumerate(labels, start=1):
        for name in value if multilabel else [value]:
            if name not in seen:
                seen.add(name)
                _check_name(name, f"{table.path}: row {row}: field {label_column!r}", multilabel)
    return Labelled(table, label_column, texts, labels, multilabel)


def ordered_names(part: Labelled) -> list[str]:
    """The label names, sorted: numerically when every name is an integer, else as text."""
    names = set(part.declared)
    for value in part.labels:
        names.update(value if part.multilabel else [value])
    numeric = all(INTEGER.fullmatch(name) for name in names)
    return sorted(names, key=int if numeric else None)


def _require(table: Table, columns: list[str], option: str) -> None:
    missing = [name for name in columns if name not in table.frame.columns]
    if missing:
        there = ", ".join(map(str, table.frame.columns))
        raise DataError(f"{table.path}: no column {', '.join(map(repr, missing))} (columns: {there}); name it with {option}")


def _missing(cell) -> bool:
    """None, NaN or pandas' NA: what pandas and pyarrow make of an absent value."""
    return cell is None or cell is pd.NA or (isinstance(cell, (float, np.floating)) and math.isnan(cell))


def _text(table: Table, row: int, cell, column: str) -> str:
    where = f"{table.path}: row {row}: field {column!r}"
    if _missing(cell) or (isinstance(cell, str) and not cell.strip()):
        raise DataError(f"{where}: empty text")
    if not isinstance(cell, str):
        raise DataError(f"{where}: not text ({type(cell).__name__} {cell!r})")
    return cell


def _label(table: Table, row: int, column: str, cell, classes: list[str] | None, separator: str | None):
    """One row's label name, or its list of names (a list cell, or any cell when `separator` is set)."""
    where = f"{table.path}: row {row}: field {column!r}"
    if isinstance(cell, (list, tuple, np.ndarray)):
        return [_name(value, classes, where) for value in cell]
    if _missing(cell) or (isinstance(cell, str) and not cell.strip() and separator is None):
        raise DataError(f"{where}: empty label")
    if separator is not None:
        parts = cell.split(separator) if isinstance(cell, str) else [cell]
        return [_name(part, classes, where) for part in parts if not isinstance(part, str) or part.strip()]
    return _name(cell, classes, where)


def _name(value, classes: list[str] | None, where: str) -> str:
    """A label value as its name: text stripped, an integer as digits or as the ClassLabel's name."""
    if isinstance(value, str):
        return value.strip()
    if _missing(value):
        raise DataError(f"{where}: empty label")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DataError(f"{where}: not a label ({type(value).__name__} {value!r}); give a name or an integer")
    if float(value).is_integer():
        value = int(value)
        if classes is not None:
            if not 0 <= value < len(classes):
                raise DataError(
                    f"{where}: label {value} is not one of the dataset's {len(classes)} class names (0..{len(classes) - 1})"
                )
            return classes[value]
    return str(value)


def _binary(table: Table, row: int, column: str, cell) -> bool:
    text = cell.strip() if isinstance(cell, str) else cell
    if isinstance(text, (bool, np.bool_)) or text in (0, 1, "0", "1"):
        return text in (1, True, "1")
    raise DataError(f"{table.path}: row {row}: field {column!r}: must be 0 or 1, got {cell!r}")


def _check_name(name: str, where: str, multilabel: bool) -> None:
    check_label_name(name, where)
    if multilabel and name in RESERVED:
        raise DataError(f"{where}: label {name!r} cannot name a label column (reserved: {', '.join(RESERVED)})")
