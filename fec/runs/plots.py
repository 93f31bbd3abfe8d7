"""The pictures and per-label tables of a run folder: learning curves, confusion matrix, per-label scores.

from fec.runs.plots import plot_curves, write_label_report
plot_curves(run_dir, {0: result.history})            # curves.png
write_label_report(run_dir, "test", labels, preds, names)   # per_label.csv, confusion.png
"""

from __future__ import annotations

import logging
from pathlib import Path

from fec.core.files import atomic_write

log = logging.getLogger(__name__)


def plot_curves(
    run_dir: Path,
    histories: dict[int, list[dict]],
    metric: str = "wf1",
    metric_name: str = "weighted F1",
    loss_name: str = "cross-entropy",
) -> Path:
    """Loss (train solid, valid dashed) and the validation `metric` per epoch, one colour per seed;
    epochs without a train or valid entry (e.g. the Trainer's) are skipped on that line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(11, 4))
    for seed, history in histories.items():

        def points(split: str, key: str, history=history):
            rows = [row for row in history if row.get(split) and key in row[split]]
            return [row["epoch"] for row in rows], [row[split][key] for row in rows]

        line = ax_loss.plot(*points("train", "loss"), label=f"train, seed {seed}")[0]
        ax_loss.plot(*points("valid", "loss"), "--", color=line.get_color(), label=f"valid, seed {seed}")
        ax_f1.plot(*points("valid", metric), color=line.get_color(), label=f"seed {seed}")
    ax_loss.set(xlabel="epoch", ylabel=loss_name, title="loss (solid: train, dashed: valid)")
    ax_f1.set(xlabel="epoch", ylabel=f"{metric_name} (%)", title=f"validation {metric_name}")
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


def write_multilabel_report(run_dir: Path, split: str, labels, preds, label_names: list[str], thresholds) -> None:
    """`per_label.csv` for multi-hot labels: precision, recall, F1, support, times predicted and threshold."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import precision_recall_fscore_support

    labels, preds = np.asarray(labels).astype(int), np.asarray(preds).astype(int)
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, average=None, zero_division=0)
    table = pd.DataFrame(
        {
            "label": label_names,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
            "predicted": preds.sum(axis=0),
            "threshold": np.asarray(thresholds, dtype=float),
        }
    )
    log.info("per-label F1 on %s: %s", split, " ".join(f"{n} {100 * v:.1f}" for n, v in zip(label_names, f1, strict=False)))
    atomic_write(run_dir / "per_label.csv", lambda tmp: table.round(4).to_csv(tmp, index=False))


def plot_layer_curves(rows: list[dict], path: Path, key: str, selected_on: str) -> Path | None:
    """Probe metric per hidden layer: one panel per model, one colour per pooling (and prompt),
    solid = the selection rows (valid or out-of-fold), dashed = test. Views without a known depth
    (the published folders) are left out; they are in the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, dict[str, list[dict]]] = {}
    for row in rows:
        if row["num_hidden_states"]:
            line = row["pooling"] + (" + prompt" if row["prompt"] else "") + (" + chat" if row["chat_template"] else "")
            curves.setdefault(f"{row['slot']}: {row['model']}", {}).setdefault(line, []).append(row)
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 4), squeeze=False)
    for ax, (panel, lines) in zip(axes[0], sorted(curves.items()), strict=True):
        for line, points in sorted(lines.items()):
            points = sorted(points, key=lambda r: r["layer"])
            layers = [r["layer"] for r in points]
            drawn = ax.plot(layers, [r[f"selection_{key}"] for r in points], marker=".", label=line)[0]
            if f"test_{key}" in points[0]:
                ax.plot(layers, [r[f"test_{key}"] for r in points], "--", color=drawn.get_color())
        ax.set(xlabel="hidden layer (0 = embeddings)", ylabel=f"{key} (%)", title=panel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    has_test = any(f"test_{key}" in row for row in rows)
    fig.suptitle(f"linear probe per layer (solid: {selected_on}" + (", dashed: test)" if has_test else ")"))
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path
