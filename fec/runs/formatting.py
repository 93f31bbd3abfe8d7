"""Mean±std over seeds written out: a table cell (`49.36±0.53`) and a run's summary line, as the
trainers log it, runs.csv stores it and the report, pages and model cards show it. The numbers
themselves come from `fec.core.metrics` (`summarise`, `mean_std_stats`).

    from fec.runs.formatting import format_summary, mean_std_cell
    mean_std_cell({"mean": 49.357, "std": 0.531})   # "49.36±0.53"
    format_summary(summarise(results)["test"])      # "Acc: 60.44±0.47 | wF1: 59.80±0.54 | macro-F1: .."
"""

from __future__ import annotations


def mean_std_cell(stats: dict | None) -> str:
    """`49.36±0.53` from `{"mean": .., "std": ..}` (no ± for one seed); empty when there are no stats."""
    if not stats:
        return ""
    return f"{stats['mean']:.2f}" + (f"±{stats['std']:.2f}" if stats.get("std") is not None else "")


def format_summary(stats: dict) -> str:
    """`Acc: 60.44±0.47 | wF1: 59.80±0.54 | macro-F1: 45.10±0.70`, as the paper reports; multi-label:
    `macro-F1: 60.10±0.70 | micro-F1: 65.20±0.40 | subset acc: 40.00±1.00 | Jaccard: 55.00±0.50`."""
    if "wf1" not in stats:
        return (
            f"macro-F1: {mean_std_cell(stats['macro_f1'])} | micro-F1: {mean_std_cell(stats['micro_f1'])} | "
            f"subset acc: {mean_std_cell(stats['subset_acc'])} | Jaccard: {mean_std_cell(stats['jaccard'])}"
        )
    return (
        f"Acc: {mean_std_cell(stats['acc'])} | wF1: {mean_std_cell(stats['wf1'])} | macro-F1: {mean_std_cell(stats['macro_f1'])}"
    )
