"""Run folders under `Logs/`: config, log, results, checkpoints, curves, and the table across runs.

    Logs/ED_20261122-101500/
        config.json          all arguments, git SHA, package versions, feature manifests
        train.log            everything the run printed
        results.json         per seed: best epoch, valid/test metrics, time; summary mean/std
                             (rewritten after every seed: `finished` is false until the last)
        model.json           what rebuilds the model (constructor config, sources, labels)
        failed.json          only when the run stopped on an error: what it was and when
        checkpoints/seedN.safetensors   the selected state of each seed
        curves.png           train/valid loss and valid wF1 (multi-label: macro-F1) per epoch, one line per seed
        confusion.png        row-normalised confusion matrix of the best seed on test (valid without test);
                             single-label runs only
        per_label.csv        precision, recall, F1 and support per label, same split (multi-label: also
                             the label's decision threshold and how often it was predicted)
        predictions.csv      the best seed's prediction and probabilities for every text of that split
        index.html           the run's page (fec.runs.page): open it in a browser, no server needed
        README.md            the model card, Hugging Face layout (fec.runs.card)
    Logs/runs.csv            one row per run: `column -s, -t Logs/runs.csv`

Multi-label runs fill `valid_macro_f1`, `valid_micro_f1`, `test_macro_f1` and `test_micro_f1`;
accuracy and weighted-F1 cells stay empty for them. A `runs.csv` written before a column was
added is rewritten once with the new header (old rows keep their values, new cells empty).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors.torch import save_file

from fec.core.errors import UsageError
from fec.core.files import atomic_write, atomic_write_text
from fec.core.logs import also_log_to
from fec.core.metrics import format_summary, mean_std_cell, summarise
from fec.core.paths import inside
from fec.runs.plots import plot_curves, write_label_report, write_multilabel_report
from fec.runs.predictions import write_predictions
from fec.runs.run_files import FAILED, RunFileError, read_run_json

log = logging.getLogger(__name__)

RUNS_TABLE = "runs.csv"
RUNS_COLUMNS = [
    "finished",
    "task",
    "method",
    "recipe",
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


RUN_STAMP_FORMAT = "%Y%m%d-%H%M%S"
RUN_FOLDER_STAMP = re.compile(r"_(\d{8}-\d{6})(?:-(\d+))?$")
FAILED_MARKER = "failed.json"


def make_run_dir(out: Path | str, task: str) -> Path:
    """A new folder `{task}_{YYYYmmdd-HHMMSS}` under `out` (`-2`, `-3`, ... appended when taken).
    Claimed by `mkdir` itself, so runs started in the same second by separate processes never share one."""
    stamp = dt.datetime.now().strftime(RUN_STAMP_FORMAT)
    base = inside(out, f"{task}_{stamp}")
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"-out {out}: cannot create the folder ({err.strerror or err})") from err
    n = 1
    while True:
        run_dir = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            n += 1
        except OSError as err:
            raise UsageError(f"-out {out}: cannot create a run folder in it ({err.strerror or err})") from err


@contextmanager
def run_folder(out: Path | str, task: str) -> Iterator[Path]:
    """A new run folder (`make_run_dir`) for the body of a `with`, every log line copied to its
    train.log; if the body fails, the folder
    gets `failed.json` (the error, its traceback, when), so `report.py` names it as failed
    instead of taking it for a run in progress. Seeds it finished stay usable."""
    run_dir = make_run_dir(out, task)
    try:
        with also_log_to(run_dir / "train.log"):
            yield run_dir
    except BaseException as err:
        mark_failed(run_dir, err)
        raise


def mark_failed(run_dir: Path, err: BaseException) -> None:
    reason = "interrupted" if isinstance(err, KeyboardInterrupt) else f"{type(err).__name__}: {err}"
    payload = {
        "failed": dt.datetime.now().isoformat(timespec="seconds"),
        "error": reason,
        "traceback": traceback.format_exception(err)[-6:],
    }
    try:
        write_json(run_dir / FAILED_MARKER, payload)
    except OSError as write_err:  # a full disk may refuse even this; the error itself is still reported
        log.warning("%s: cannot mark the run as failed (%s)", run_dir, write_err.strerror or write_err)


def failure(run_dir: Path) -> str | None:
    """The error a run stopped on (from its `failed.json`), or None for a run that did not fail."""
    path = run_dir / FAILED_MARKER
    if not path.is_file():
        return None
    try:
        return read_run_json(path, FAILED).get("error", "unknown error")
    except RunFileError as err:  # the marker still says the run failed; its finished seeds stay usable
        return f"unknown error ({FAILED_MARKER}: {err.problem})"


def run_dir_started(name: str) -> tuple[dt.datetime, int] | None:
    """When `make_run_dir` claimed the folder `name`: its local-time stamp and same-second number
    (1, 2, ...), in the order the claims were made; None for a name it did not make."""
    match = RUN_FOLDER_STAMP.search(name)
    if not match:
        return None
    return dt.datetime.strptime(match[1], RUN_STAMP_FORMAT).astimezone(), int(match[2] or 1)


def write_json(path: Path, payload) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def save_checkpoint(run_dir: Path, seed: int, state_dict: dict) -> Path:
    path = run_dir / "checkpoints" / f"seed{seed}.safetensors"
    tensors = {k: v.contiguous() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"seed": str(seed)}))
    return path


def append_run_row(out: Path | str, row: dict) -> Path:
    """Append one row to `Logs/runs.csv` (header written when the file is new)."""
    path = Path(out) / RUNS_TABLE
    columns = _upgrade_header(path) if path.exists() else RUNS_COLUMNS
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    if not path.exists():
        writer.writeheader()
    writer.writerow(row)
    with open(path, "a", encoding="utf-8") as fh:
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
    task: str, run_dir: Path, method: str, recipe: str, settings: dict, seeds: list[int], summary: dict, best_epochs: list[int]
) -> dict:
    """One `runs.csv` row for any method: `fusion` (recipe `corrected`, `reference` or `custom:...`),
    `finetune` or `tfidf`, its settings as `key=value` words, the seeds and mean±std metrics."""
    test, valid = summary.get("test", {}), summary.get("valid", {})
    return {
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
        "task": task,
        "method": method,
        "recipe": recipe,
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


def write_figures(run_dir: Path, results: list, best, labels: dict, label_names: list[str], multilabel: bool,
                  threshold: float | None) -> None:  # fmt: skip
    """curves.png (runs with epochs) and the best seed's per-label report and confusion matrix, on
    test (valid without test)."""
    report_split = "test" if "test" in best.predictions else "valid"
    histories = {r.seed: r.history for r in results if getattr(r, "history", None)}  # none for TF-IDF fits
    if multilabel:
        if histories:
            metric_name = f"macro-F1 at threshold {threshold if threshold is not None else 0.5}"
            plot_curves(run_dir, histories, metric="macro_f1", loss_name="binary cross-entropy", metric_name=metric_name)
        write_multilabel_report(run_dir, report_split, labels[report_split], best.predictions[report_split], label_names,
                                best.thresholds)  # fmt: skip
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
        log.info("%s %s, ensemble of the %d seeds (mean probabilities; not a single model): %s", task, split, seeds,
                 format_summary(shown))  # fmt: skip
    if tuned and split == "valid" and "valid_at_0.5" in summary:
        log.info(
            "%s valid at threshold 0.5 (not tuned on the split it scores): %s", task, format_summary(summary["valid_at_0.5"])
        )


def finish_run(
    run_dir: Path,
    out: Path | str,
    task: str,
    results: list,
    *,
    sources: list[str],
    labels: dict,
    label_names: list[str],
    multilabel: bool,
    threshold: float | None,
    method: str,
    recipe: str,
    settings: dict,
    seconds: float | None = None,
    extra: dict | None = None,
    ensemble: dict | None = None,
    texts: dict[str, list[str]] | None = None,
) -> dict:
    """Everything a training script writes once its seeds are done (fusion, fine-tuning, TF-IDF):
    results.json (per seed and mean/std, the best seed on validation), curves.png, the best seed's
    label report and predictions on test (valid without test), the row in `out`/runs.csv, the run
    page and model card, and the summary log lines.
    `labels` maps each split to its label array (ids, or multi-hot rows); `texts` the same splits to
    their texts (predictions.csv); `extra` adds keys to results.json;
    `ensemble` (`fec.classify.fusion_training.seed_ensemble`) is kept beside the per-seed summary, labelled as such."""
    extra = (extra or {}) | ({"ensemble": ensemble} if ensemble else {})
    payload = write_results(
        run_dir, task, results, sources=sources, multilabel=multilabel, finished=True, seconds=seconds, extra=extra
    )
    summary = payload["summary"]
    best = next(r for r in results if r.seed == payload["best_seed"])
    write_figures(run_dir, results, best, labels, label_names, multilabel, threshold)
    report_split = "test" if "test" in best.predictions else "valid"
    if texts and report_split in texts:
        write_predictions(run_dir, texts[report_split], labels[report_split], best.predictions[report_split],
                          best.probabilities.get(report_split), label_names, multilabel)  # fmt: skip
    best_epochs = [r.best_epoch for r in results if getattr(r, "best_epoch", None) is not None]
    row = runs_row(task, run_dir, method, recipe, settings, [r.seed for r in results], summary, best_epochs)
    if ensemble and "test" in ensemble:
        row["ensemble_test"] = f"{ensemble['test']['macro_f1' if multilabel else 'acc']:.2f}"
    table = append_run_row(out, row)
    log_summary(task, summary, len(results), seconds, ensemble, multilabel and threshold is None)
    # Imported here, not on top: fec.runs.page reads runs through fec.runs.report, which imports this module.
    from fec.runs.page import write_run_pages_safely

    write_run_pages_safely(run_dir)
    log.info("run folder: %s; all runs: column -s, -t %s", run_dir, table)
    return payload | {"run_dir": str(run_dir)}
