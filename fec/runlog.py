"""Run folders under `Logs/`: config, log, results, checkpoints, curves, and the table across runs.

    Logs/ED_20261122-101500/
        config.json          all arguments, git SHA, package versions, feature manifests
        train.log            everything the run printed
        results.json         per seed: best epoch, valid/test metrics, time; summary mean/std
        model.json           what rebuilds the model (constructor config, sources, labels)
        checkpoints/seedN.safetensors   the selected state of each seed
        curves.png           train/valid loss and valid wF1 per epoch, one line per seed
        confusion.png        row-normalised confusion matrix of the best seed on test (valid without test)
        per_label.csv        precision, recall, F1 and support per label, same split
    Logs/runs.csv            one row per run: `column -s, -t Logs/runs.csv`
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
from pathlib import Path

from safetensors.torch import save_file

from fec.store import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

RUNS_TABLE = "runs.csv"
RUNS_COLUMNS = [
    "finished", "task", "sources", "mode", "norm", "pn", "sigma", "lr", "batch_size", "seeds",
    "best_epoch", "valid_wf1", "test_acc", "test_wf1", "test_macro_f1", "run_dir",
]


def make_run_dir(out: Path | str, task: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(out) / f"{task}_{stamp}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    run_dir.mkdir(parents=True)
    return run_dir


def write_json(path: Path, payload) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def save_checkpoint(run_dir: Path, seed: int, state_dict: dict) -> Path:
    path = run_dir / "checkpoints" / f"seed{seed}.safetensors"
    tensors = {k: v.contiguous() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"seed": str(seed)}))
    return path


def plot_curves(run_dir: Path, histories: dict[int, list[dict]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(11, 4))
    for seed, history in histories.items():
        epochs = [row["epoch"] for row in history]
        line = ax_loss.plot(epochs, [row["train"]["loss"] for row in history], label=f"train, seed {seed}")[0]
        ax_loss.plot(epochs, [row["valid"]["loss"] for row in history], "--", color=line.get_color(), label=f"valid, seed {seed}")
        ax_f1.plot(epochs, [row["valid"]["wf1"] for row in history], color=line.get_color(), label=f"seed {seed}")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss (solid: train, dashed: valid)")
    ax_f1.set(xlabel="epoch", ylabel="weighted F1 (%)", title="validation weighted F1")
    ax_f1.legend(fontsize="small")
    fig.tight_layout()
    path = run_dir / "curves.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def write_label_report(run_dir: Path, split: str, labels, preds, label_names: list[str]) -> None:
    """`per_label.csv` and `confusion.png` (rows: true label, normalised; labels by name)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    ids = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
    table = pd.DataFrame({"label": label_names, "precision": precision, "recall": recall, "f1": f1, "support": support})
    atomic_write(run_dir / "per_label.csv", lambda tmp: table.round(4).to_csv(tmp, index=False))

    counts = confusion_matrix(labels, preds, labels=ids)
    normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.32 * len(label_names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(ids, label_names, rotation=90, fontsize=8)
    ax.set_yticks(ids, label_names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=f"{split} confusion matrix (rows sum to 1)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    atomic_write(run_dir / "confusion.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def _cell(stats: dict | None) -> str:
    if not stats:
        return ""
    return f"{stats['mean']:.2f}" + (f"±{stats['std']:.2f}" if stats.get("std") is not None else "")


def append_run_row(out: Path | str, row: dict) -> Path:
    """Append one row to `Logs/runs.csv` (header written when the file is new)."""
    path = Path(out) / RUNS_TABLE
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RUNS_COLUMNS, extrasaction="ignore", lineterminator="\n")
    if not path.exists():
        writer.writeheader()
    writer.writerow(row)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(buffer.getvalue())
    return path


def runs_row(task: str, run_dir: Path, settings: dict, summary: dict, best_epochs: list[int]) -> dict:
    test, valid = summary.get("test", {}), summary.get("valid", {})
    return {
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
        "task": task,
        **settings,
        "best_epoch": "/".join(map(str, best_epochs)),
        "valid_wf1": _cell(valid.get("wf1")),
        "test_acc": _cell(test.get("acc")),
        "test_wf1": _cell(test.get("wf1")),
        "test_macro_f1": _cell(test.get("macro_f1")),
        "run_dir": str(run_dir),
    }
