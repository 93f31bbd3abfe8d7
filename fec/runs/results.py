"""A run's results: results.json (per seed, mean±std, the best seed), its figures and the closing
log lines, written by every trainer through `fec.runs.training_run`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fec.core.metrics import summarise
from fec.runs.folder import write_json
from fec.runs.formatting import format_summary
from fec.runs.plots import plot_curves, write_label_report, write_multilabel_report

log = logging.getLogger(__name__)


def write_results(
    run_dir: Path,
    task: str,
    results: list,
    *,
    sources: list[str],
    multilabel: bool,
    finished: bool,
    seconds: float | None = None,
    extra: dict | None = None,
) -> dict:
    """results.json for the seeds trained so far: per seed, mean/std, the best seed on validation.
    Training scripts call it after every seed (`finished` false), so a run stopped part-way keeps
    its finished seeds for `report.py` and `predict.py`; `finish_run` writes the final one."""
    best = max(results, key=lambda r: r.valid["macro_f1" if multilabel else "wf1"])
    payload = {
        "task": task,
        "sources": sources,
        "finished": finished,
        "seeds": [r.summary() for r in results],
        "summary": summarise(results),
        "best_seed": best.seed,
    }
    if seconds is not None:
        payload["seconds"] = seconds
    payload |= extra or {}
    write_json(run_dir / "results.json", payload)
    return payload


def write_figures(
    run_dir: Path, results: list, best, labels: dict, label_names: list[str], multilabel: bool, threshold: float | None
) -> None:
    """curves.png (runs with epochs) and the best seed's per-label report and confusion matrix, on
    test (valid without test)."""
    report_split = best.report_split
    histories = {r.seed: r.history for r in results if getattr(r, "history", None)}  # none for TF-IDF fits
    if multilabel:
        if histories:
            metric_name = f"macro-F1 at threshold {threshold if threshold is not None else 0.5}"
            plot_curves(run_dir, histories, metric="macro_f1", loss_name="binary cross-entropy", metric_name=metric_name)
        write_multilabel_report(
            run_dir, report_split, labels[report_split], best.predictions[report_split], label_names, best.thresholds
        )
        return
    if histories:
        plot_curves(run_dir, histories)
    write_label_report(run_dir, report_split, labels[report_split], best.predictions[report_split], label_names)


def log_summary(task: str, summary: dict, seeds: int, seconds: float | None, ensemble: dict | None, tuned: bool) -> None:
    """The run's closing log lines: the reported split's mean±std, the cross-validated figure, the
    seed ensemble, and (multi-label runs with tuned thresholds scored on valid) valid at 0.5."""
    split = "test" if "test" in summary else "valid"
    timing = f", {seconds:.0f}s" if seconds is not None else ""
    log.info("%s %s (%d seed%s%s): %s", task, split, seeds, "s" if seeds > 1 else "", timing, format_summary(summary[split]))
    if "cv" in summary:
        log.info("%s cross-validated on train, out of fold (the selection figure): %s", task, format_summary(summary["cv"]))
    if ensemble:
        shown = {k: {"mean": v, "std": None} for k, v in ensemble[split].items() if not isinstance(v, dict)}
        log.info(
            "%s %s, ensemble of the %d seeds (mean probabilities; not a single model): %s",
            task,
            split,
            seeds,
            format_summary(shown),
        )
    if tuned and split == "valid" and "valid_at_0.5" in summary:
        log.info(
            "%s valid at threshold 0.5 (not tuned on the split it scores): %s", task, format_summary(summary["valid_at_0.5"])
        )
