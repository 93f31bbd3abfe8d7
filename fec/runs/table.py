"""`Logs/runs.csv`: one row per finished run of any trainer, `column -s, -t Logs/runs.csv` to read it.

Multi-label runs fill `valid_macro_f1`, `valid_micro_f1`, `test_macro_f1` and `test_micro_f1`;
accuracy and weighted-F1 cells stay empty for them. A `runs.csv` written before a column was
added is rewritten once with the new header (old rows keep their values, new cells empty).
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import io
import logging
from pathlib import Path

from fec.core.files import atomic_write_text
from fec.runs.formatting import mean_std_cell

log = logging.getLogger(__name__)

RUNS_TABLE = "runs.csv"
RUNS_COLUMNS = [
    "finished",
    "task",
    "method",
    "compat",
    "settings",
    "seeds",
    "best_epoch",
    "valid_wf1",
    "valid_macro_f1",
    "valid_micro_f1",
    "test_acc",
    "test_wf1",
    "test_macro_f1",
    "test_micro_f1",
    "ensemble_test",
    "run_dir",
]


def append_run_row(out: Path | str, row: dict) -> Path:
    """Append one row to `Logs/runs.csv` (header written when the file is new)."""
    path = Path(out) / RUNS_TABLE
    columns = _upgrade_header(path) if path.exists() else RUNS_COLUMNS
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writerow(row)
    with open(path, "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # runs finishing at once (tune.py --workers): one header, whole rows
        if fh.seek(0, io.SEEK_END) == 0:
            header = io.StringIO()
            csv.DictWriter(header, fieldnames=columns, lineterminator="\n").writeheader()
            fh.write(header.getvalue())
        fh.write(buffer.getvalue())
    return path


def _upgrade_header(path: Path) -> list[str]:
    """The table's columns; a table missing some of RUNS_COLUMNS (written by an older version) is
    rewritten with them, in RUNS_COLUMNS order and its own extra columns after, values kept."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        if not header or all(c in header for c in RUNS_COLUMNS):
            return header or RUNS_COLUMNS
        rows = list(reader)
    columns = RUNS_COLUMNS + [c for c in header if c not in RUNS_COLUMNS]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    log.info("%s: added column(s) %s", path, ", ".join(c for c in RUNS_COLUMNS if c not in header))
    return columns


def runs_row(
    task: str, run_dir: Path, method: str, compat: str, settings: dict, seeds: list[int], summary: dict, best_epochs: list[int]
) -> dict:
    """One `runs.csv` row for any method: `fusion` (compat `corrected`, `reference` or `custom:...`),
    `finetune` or `tfidf`, its settings as `key=value` words, the seeds and mean±std metrics."""
    test, valid = summary.get("test", {}), summary.get("valid", {})
    return {
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
        "task": task,
        "method": method,
        "compat": compat,
        "settings": " ".join(f"{k}={v}" for k, v in settings.items()),
        "seeds": " ".join(map(str, seeds)),
        "best_epoch": "/".join(map(str, best_epochs)),
        "valid_wf1": mean_std_cell(valid.get("wf1")),
        "valid_macro_f1": mean_std_cell(valid.get("macro_f1")),
        "valid_micro_f1": mean_std_cell(valid.get("micro_f1")),
        "test_acc": mean_std_cell(test.get("acc")),
        "test_wf1": mean_std_cell(test.get("wf1")),
        "test_macro_f1": mean_std_cell(test.get("macro_f1")),
        "test_micro_f1": mean_std_cell(test.get("micro_f1")),
        "run_dir": str(run_dir),
    }
