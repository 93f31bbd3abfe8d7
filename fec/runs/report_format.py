"""The pooled rows of `fec.runs.report` written out: the Markdown table `report.py` prints, its CSV
form, and the cells the index page (`fec.runs.index`) shares with them.

    python report.py                          # Markdown: mean±std cells, text from runs made inert
    python report.py --format csv > pooled.csv   # one mean and one std column per metric, 4 decimals
"""

from __future__ import annotations

import csv
import io

from fec.runs.escape import code_span, markdown_cell
from fec.runs.formatting import mean_std_cell
from fec.runs.report import Row

METRIC_NAMES = {"acc": "acc", "wf1": "wF1", "macro_f1": "macro-F1", "micro_f1": "micro-F1"}


def cv_cell(row: Row) -> str:
    """`acc 58.10±0.40`: the out-of-fold figure of rows selected by cross-validation; empty otherwise."""
    if not row.cv:
        return ""
    return " / ".join(f"{METRIC_NAMES[m]} {mean_std_cell(row.cv[m])}" for m in row.headline)


def ensemble_cell(row: Row) -> str:
    """`acc 59.20`: the seed ensemble on the row's split, where one run's seeds are exactly the row's."""
    scores = (row.ensemble or {}).get(row.split) or {}
    return " / ".join(f"{METRIC_NAMES[m]} {scores[m]:.2f}" for m in row.headline if m in scores)


def at_chance_cell(row: Row) -> str:
    """`2/5`: two of five seeds at chance; `1/3 (2 unknown)` where older runs did not say; `–` when none did."""
    known = [flag for flag in row.chance_flags if flag is not None]
    if not known:
        return "–"
    unknown = len(row.chance_flags) - len(known)
    return f"{sum(known)}/{len(known)}" + (f" ({unknown} unknown)" if unknown else "")


def shown_metrics(rows: list[Row]) -> list[str]:
    """The metrics of METRIC_NAMES some row has, in that order."""
    return [m for m in METRIC_NAMES if any(m in row.stats for row in rows)]


def format_markdown(rows: list[Row]) -> str:
    """`report.py`'s table: one row per recipe, the cv, ensemble and at-chance columns where some row has them."""
    metrics = shown_metrics(rows)
    with_cv, with_ensemble = any(row.cv for row in rows), any(row.ensemble for row in rows)
    header = ["task", "command", "features", "seeds", "split", *(METRIC_NAMES[m] for m in metrics)]
    header += ["cross-validated on train"] * with_cv + ["seed ensemble"] * with_ensemble + ["at chance", "runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        extra = [cv_cell(row)] * with_cv + [ensemble_cell(row)] * with_ensemble
        # Task, command, model names and folder names come from run folders: written inert.
        cells = [
            markdown_cell(row.task),
            code_span(row.command),
            markdown_cell(row.features),
            " ".join(map(str, row.seeds)),
            row.split,
            *(mean_std_cell(row.stats.get(m)) for m in metrics),
            *extra,
            at_chance_cell(row),
            markdown_cell(" ".join(row.runs)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_csv(rows: list[Row]) -> str:
    """`report.py --format csv`: the same rows with each metric's mean and std in columns of their own, for a spreadsheet."""
    metrics = shown_metrics(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    stat_columns = [f"{m}_{part}" for m in metrics for part in ("mean", "std")]
    writer.writerow(["task", "command", "features", "seeds", "split", *stat_columns, "at_chance", "runs"])
    for row in rows:
        values = []
        for m in metrics:
            stats = row.stats.get(m, {})
            mean, std = stats.get("mean"), stats.get("std")
            values += ["" if mean is None else f"{mean:.4f}", "" if std is None else f"{std:.4f}"]
        seeds = " ".join(map(str, row.seeds))
        writer.writerow([row.task, row.command, row.features, seeds, row.split, *values, at_chance_cell(row), " ".join(row.runs)])
    return buffer.getvalue()
