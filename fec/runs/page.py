"""The page of one run, `Logs/RUN/index.html`: headline metrics beside the paper's, seeds, curves,
the confusion matrix, per-label scores, the most confused pairs with examples, example predictions
and provenance, in one self-contained file (inline CSS and script; images are the run folder's
own PNGs, linked relatively, so the folder can be moved or zipped). Written by every trainer's
finish step with the model card (`fec.runs.card`), and again by:

    python report.py --html Logs/ED_20261202-011000

Everything that comes from the run or the data is escaped (Jinja2 autoescaping), and a link to a
file of the run folder is a relative URL (`fec.runs.escape.url_path`): its name may be anything.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fec.core.files import atomic_write_text
from fec.runs.card import write_model_card
from fec.runs.catalogue import PAPER_RESULTS_CITATION
from fec.runs.rendering import environment
from fec.runs.summary import (
    RunSummary,
    confused_pairs,
    confusion_counts,
    example_rows,
    label_order,
    load_summary,
    threshold_rows,
)

log = logging.getLogger(__name__)

PAGE = "index.html"
# Linked first, in this order; the folder's other files follow by name.
LINKED_FILES = ("results.json", "config.json", "model.json", "train.log", "per_label.csv", "predictions.csv", "README.md")


def label_tree_path(summary: RunSummary) -> Path:
    """The task's `label_tree.tsv` under the run's data folder. A relative data folder is read from
    the current directory, or else from the project holding `Logs/RUN`, so the grouping does not
    depend on where `report.py --html` runs."""
    relative = Path(summary.config.get("args", {}).get("data_dir", "data")) / summary.task / "label_tree.tsv"
    if relative.is_absolute() or relative.is_file():
        return relative
    return summary.folder.resolve().parent.parent / relative


def confusion_view(summary: RunSummary) -> dict | None:
    """Rows of the confusion matrix, labels grouped by the task's label tree; each cell carries its
    count and its share of the gold row (the shade)."""
    if summary.multilabel or summary.predictions is None:
        return None
    counts = confusion_counts(summary.predictions)
    order = label_order(summary.label_names, label_tree_path(summary))
    names = [summary.label_names[i] for i in order]
    rows = []
    for i in order:
        total = max(int(counts[i].sum()), 1)
        cells = [{"count": int(counts[i, j]), "share": 100 * counts[i, j] / total, "diagonal": i == j} for j in order]
        rows.append({"label": summary.label_names[i], "total": int(counts[i].sum()), "cells": cells})
    return {"labels": names, "rows": rows}


def per_label_rows(summary: RunSummary) -> list[dict]:
    if summary.per_label is None:
        return []
    return [
        {
            "label": str(row["label"]),
            "precision": 100 * float(row["precision"]),
            "recall": 100 * float(row["recall"]),
            "f1": 100 * float(row["f1"]),
            "support": int(row["support"]),
        }
        for _, row in summary.per_label.iterrows()
    ]


def provenance_view(summary: RunSummary) -> dict:
    config = summary.config
    manifests = config.get("feature_manifests", {})
    return {
        "git_sha": config.get("git_sha") or "unknown",
        "code_version": config.get("code_version", "?"),
        "created": config.get("created", "?"),
        "device": config.get("device", "–"),
        "packages": config.get("packages", {}),
        "csv_sha256": config.get("csv_sha256")
        or {mode: next(iter(slots.values())).get("csv_sha256", "?") for mode, slots in manifests.items() if slots},
        "config_json": json.dumps(config, indent=2, default=str),
        "files": [name for name in LINKED_FILES if name in summary.files or name == "README.md"]
        + sorted(name for name in summary.files if name not in LINKED_FILES and name != PAGE and not name.startswith(".")),
        "checkpoints": sorted(p.relative_to(summary.folder).as_posix() for p in (summary.folder / "checkpoints").glob("*"))
        if (summary.folder / "checkpoints").is_dir()
        else [],
        "images": [name for name in ("curves.png", "confusion.png") if name in summary.files],
    }


def render_run_page(summary: RunSummary) -> str:
    """The run page's HTML, every section filled from `summary`."""
    per_label = per_label_rows(summary)
    template = environment().get_template("run.html.j2")
    return template.render(
        s=summary,
        title=f"{summary.task} · {summary.method} · {summary.folder.name}",
        best_seed=summary.results.get("best_seed"),
        published_source=PAPER_RESULTS_CITATION,
        per_label=per_label,
        f1_bars=sorted(per_label, key=lambda row: -row["f1"]),
        confusion=confusion_view(summary),
        pairs=confused_pairs(summary.predictions) if summary.predictions is not None else [],
        examples=example_rows(summary.predictions) if summary.predictions is not None else [],
        thresholds=threshold_rows(summary) if summary.multilabel else [],
        provenance=provenance_view(summary),
        seconds=summary.results.get("seconds") or sum(float(row["seconds"] or 0) for row in summary.seeds),
        epochs=[row["best_epoch"] for row in summary.seeds if row["best_epoch"] is not None],
    )


def write_run_page(run_dir: Path, defaults: dict[str, dict] | None = None) -> Path:
    """`run_dir/index.html` (and the model card beside it) from the folder's files; `defaults`
    (script -> option defaults) stand in for a run from before runs recorded their own."""
    summary = load_summary(run_dir, defaults)
    path = run_dir / PAGE
    atomic_write_text(path, render_run_page(summary))
    write_model_card(summary)
    return path


def write_run_pages_safely(run_dir: Path, defaults: dict[str, dict] | None = None) -> None:
    """The finish step's call: a page that cannot be written is a warning, not a lost run (its
    results are already on disk and `report.py --html RUN` writes the page again)."""
    try:
        path = write_run_page(run_dir, defaults)
    except Exception as err:  # noqa: BLE001 - any failure here must leave the trained run intact
        log.warning(
            "%s: the run page was not written (%s: %s); retry with: python report.py --html %s",
            run_dir,
            type(err).__name__,
            err,
            run_dir,
        )
        return
    log.info("run page: %s; model card: %s", path, run_dir / "README.md")
