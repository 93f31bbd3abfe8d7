"""Read a user's data file into a pandas frame: CSV, TSV, JSON Lines, Parquet, or a folder that the
`datasets` library wrote with `save_to_disk`. pandas and pyarrow do the reading.

    from fec.core.tables import read_source
    splits = read_source(Path("mine.jsonl"))       # {"train": Table}
    splits = read_source(Path("saved_dataset"))    # {"train": ..., "validation": ..., "test": ...}
    splits["train"].frame, splits["train"].class_names

The format comes from the file's extension (`.csv`; `.tsv`, `.tab`; `.jsonl`, `.ndjson`, `.json`
as JSON Lines; `.parquet`, `.pq`) or, for a folder, from the `dataset_dict.json` / `state.json`
that `save_to_disk` writes. A `datasets` folder is read with pyarrow directly (its shards are Arrow
IPC streams), so the `datasets` package and its dependencies are not needed. Every problem raises
`DataError` with one line naming the file and, where it applies, the row (data rows count from 1).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fec.core.data import ENCODING, not_utf8, read_delimited
from fec.core.errors import DataError

log = logging.getLogger(__name__)

# JSON Lines under .json too: `datasets`' to_json and pandas' to_json(lines=True) write it there.
FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
DATASET_DICT = "dataset_dict.json"  # a DatasetDict: one sub-folder per split
DATASET_STATE = "state.json"  # one Dataset: its Arrow shards under `_data_files`


@dataclass
class Table:
    """One split as read: where it came from, its rows, and the class names `datasets` stored for
    integer-coded label columns (ClassLabel, or a list of them), by column."""

    path: Path
    format: str
    frame: pd.DataFrame
    files: list[Path]
    class_names: dict[str, list[str]]


def data_format(path: Path) -> str:
    """`csv`, `tsv`, `jsonl`, `parquet` or `datasets`; DataError for anything else."""
    if path.is_dir():
        if (path / DATASET_DICT).is_file() or (path / DATASET_STATE).is_file():
            return "datasets"
        raise DataError(f"{path}: a folder, but not one saved by datasets' save_to_disk (no {DATASET_DICT} or {DATASET_STATE})")
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        what = f"'{path.suffix}'" if path.suffix else "(no file extension)"
        raise DataError(
            f"{path}: unknown format {what}; use .csv, .tsv, .jsonl (or .json, .ndjson), .parquet, "
            "or a folder saved by datasets' save_to_disk"
        )
    return found


def read_source(path: Path) -> dict[str, Table]:
    """The splits of `path` by name: a file or a single saved Dataset is `train`; a saved
    DatasetDict keeps its own split names (`train`, `validation`, `test`, ...)."""
    kind = data_format(path)
    if kind == "datasets" and (path / DATASET_DICT).is_file():
        names = _json_file(path / DATASET_DICT).get("splits")
        if not isinstance(names, list) or not names:
            raise DataError(f"{path / DATASET_DICT}: no 'splits' list")
        return {str(name): _read_saved(path / str(name)) for name in names}
    return {"train": read_table(path)}


def read_table(path: Path) -> Table:
    """One file (or one saved Dataset folder), with at least one data row."""
    kind = data_format(path)
    if kind == "datasets":
        return _read_saved(path)
    if kind == "parquet":
        table = _arrow(path, "Parquet", lambda: pq.read_table(path))
        found = Table(path, kind, table.to_pandas(), [path], class_names(table.schema))
    elif kind == "jsonl":
        found = Table(path, kind, _read_json_lines(path), [path], {})
    else:
        found = Table(path, kind, read_delimited(path, "\t" if kind == "tsv" else ","), [path], {})
    if found.frame.empty:
        raise DataError(f"{path}: no data rows")
    return found


def _read_json_lines(path: Path) -> pd.DataFrame:
    """One JSON object per line; values keep their JSON types (a list stays a list)."""
    try:
        frame = pd.read_json(path, lines=True, dtype=False, encoding=ENCODING)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: {not_utf8(err)}") from err
    except (ValueError, TypeError) as err:
        raise DataError(f"{path}: {_json_lines_problem(path) or str(err).splitlines()[0]}") from err
    if not all(isinstance(name, str) for name in frame.columns):  # lines that are arrays or plain values
        raise DataError(f"{path}: {_json_lines_problem(path) or 'not JSON Lines (one {...} object per line)'}")
    return frame


def _json_lines_problem(path: Path) -> str | None:
    """Which row stops pandas, for the message only: the first line that is not a JSON object."""
    row = 0
    for line in path.read_text(encoding=ENCODING).splitlines():
        if not line.strip():
            continue  # pandas skips blank lines, so they are not rows
        row += 1
        try:
            value = json.loads(line)
        except ValueError as err:
            return f"row {row}: not valid JSON ({err})"
        if not isinstance(value, dict):
            return f"row {row}: not a JSON object (JSON Lines holds one {{...}} object per line)"
    return None


def _read_saved(folder: Path) -> Table:
    """One Dataset saved by `save_to_disk`: the Arrow shards listed in its state.json, in order."""
    state = _json_file(folder / DATASET_STATE)
    names = [entry.get("filename") for entry in state.get("_data_files", []) if isinstance(entry, dict)]
    if not names or not all(isinstance(name, str) and name for name in names):
        raise DataError(f"{folder / DATASET_STATE}: no '_data_files' list of Arrow files")
    files = [folder / name for name in names]
    for file in files:
        if not file.is_file():
            raise DataError(f"{file}: file not found (listed in {folder / DATASET_STATE})")
    tables = [_arrow(file, "an Arrow stream", lambda file=file: _read_stream(file)) for file in files]
    table = _arrow(folder, "one table", lambda: pa.concat_tables(tables))
    found = Table(folder, "datasets", table.to_pandas(), files, class_names(table.schema))
    if found.frame.empty:
        raise DataError(f"{folder}: no data rows")
    return found


def _read_stream(file: Path) -> pa.Table:
    with pa.memory_map(str(file)) as source:
        return pa.ipc.open_stream(source).read_all()


def _arrow(path: Path, what: str, read):
    try:
        return read()
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not readable as {what} ({str(err).splitlines()[0]})") from err


def _json_file(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding=ENCODING))
    except FileNotFoundError as err:
        raise DataError(f"{path}: file not found") from err
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not readable as JSON ({err})") from err
    if not isinstance(value, dict):
        raise DataError(f"{path}: not a JSON object")
    return value


def class_names(schema: pa.Schema) -> dict[str, list[str]]:
    """Names of the ClassLabel columns (or lists of ClassLabel) that `datasets` stored in the Arrow or
    Parquet schema's `huggingface` metadata: an integer label `i` there means `names[i]`."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        features = json.loads(raw)["info"]["features"] if raw else {}
    except (ValueError, KeyError, TypeError):
        log.warning("unreadable datasets metadata; integer labels are kept as numbers")
        return {}
    found = {}
    for column, spec in features.items() if isinstance(features, dict) else ():
        inner = spec.get("feature") if isinstance(spec, dict) and isinstance(spec.get("feature"), dict) else spec
        if isinstance(inner, dict) and inner.get("_type") == "ClassLabel" and isinstance(inner.get("names"), list):
            found[column] = [str(name) for name in inner["names"]]
    return found
