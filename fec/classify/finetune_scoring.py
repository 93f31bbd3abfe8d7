"""What a fine-tuned seed reports (`fec.classify.finetuning`): metrics and predictions from the
logits the Hugging Face `Trainer` returns, and its log as epoch rows and train.log lines.

    from fec.classify.finetune_scoring import score_splits, split_metrics
    metrics, preds = split_metrics(logits, labels, multilabel=False)
    scored, predictions, thresholds, valid_at_05 = score_splits(logits, labels, None, names, multilabel, seed)

The rules are the fusion classifier's (`fec.classify.fusion_training`): the loss the model trains
on, argmax or per-label thresholds tuned on valid, the same metrics.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from fec.classify.outputs import to_predictions, to_probabilities
from fec.core.metrics import classification_metrics, multilabel_metrics, tune_thresholds

log = logging.getLogger(__name__)


def logits_tensor(logits: np.ndarray) -> torch.Tensor:
    """The Trainer's logits (any float dtype) as a float32 CPU tensor."""
    return torch.from_numpy(np.asarray(logits, dtype=np.float32))


def output_probabilities(logits: np.ndarray, multilabel: bool) -> np.ndarray:
    """Softmax over labels, or one sigmoid per label for multi-label heads."""
    return to_probabilities(logits_tensor(logits), multilabel).numpy()


def split_metrics(
    logits: np.ndarray, labels: np.ndarray, multilabel: bool, thresholds=0.5, label_names: list[str] | None = None
) -> tuple[dict, np.ndarray]:
    """(metrics, predictions) from raw logits, with the loss the model trains on."""
    logits_t = logits_tensor(logits)
    if multilabel:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits_t, torch.from_numpy(labels).float()).item()
        preds = to_predictions(to_probabilities(logits_t, True).numpy(), True, thresholds)
        return {"loss": loss, **multilabel_metrics(labels, preds, label_names)}, preds
    loss = torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(labels).long()).item()
    preds = logits_t.argmax(dim=1).numpy()
    return {"loss": loss, **classification_metrics(labels, preds)}, preds


def score_splits(
    logits: dict,
    labels: dict,
    threshold: float | None,
    label_names: list[str],
    multilabel: bool,
    seed: int,
    thresholds: list[float] | None = None,
):
    """Metrics and predictions of every split from its logits; multi-label runs first tune one
    threshold per label on valid (or take the global `threshold`, or `thresholds` as given).
    Returns (metrics per split, predictions per split, thresholds, valid metrics at 0.5)."""
    predictions: dict[str, np.ndarray] = {}
    valid_at_05 = None
    if multilabel:
        if thresholds is None:
            probs = output_probabilities(logits["valid"], True)
            tuned = tune_thresholds(labels["valid"], probs) if threshold is None else np.full(len(label_names), threshold)
            thresholds = [float(t) for t in tuned]
        valid_at_05, _ = split_metrics(logits["valid"], labels["valid"], True, 0.5, label_names)
    scored = {}
    for mode in logits:
        scored[mode], predictions[mode] = split_metrics(
            logits[mode], labels[mode], multilabel, thresholds if multilabel else 0.5, label_names if multilabel else None
        )
    if multilabel:
        shown = " ".join(f"{n}={t:.2f}" for n, t in zip(label_names, thresholds, strict=True))
        at = (valid_at_05["macro_f1"], scored["valid"]["macro_f1"])
        log.info("seed %d: thresholds %s | valid macro-F1 %.2f at 0.5, %.2f at these", seed, shown, *at)
    return scored, predictions, thresholds, valid_at_05


def make_callbacks(seed: int, multilabel: bool):
    """The Trainer's progress bars, and one train.log line per epoch (`LogEpochs`)."""
    from transformers import ProgressCallback, TrainerCallback

    class StepProgress(ProgressCallback):
        """The Trainer's tqdm bars over steps and evaluation batches, without its raw log dicts
        (LogEpochs writes those as lines)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    class LogEpochs(TrainerCallback):
        """One line per epoch in train.log: train loss, then the validation loss and metrics."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            epoch = state.epoch or 0
            if "eval_loss" in logs:
                keys = ("macro_f1", "micro_f1") if multilabel else ("acc", "wf1", "macro_f1")
                shown = " ".join(f"{k} {logs.get('eval_' + k, float('nan')):.2f}" for k in keys)
                log.info("seed %d epoch %5.2f | valid loss %.4f %s", seed, epoch, logs["eval_loss"], shown)
            elif "loss" in logs:
                lr = logs.get("learning_rate", 0.0)
                log.info("seed %d epoch %5.2f | train loss %.4f lr %.2e", seed, epoch, logs["loss"], lr)

    return [StepProgress(), LogEpochs()]


def epoch_history(log_history: list[dict]) -> list[dict]:
    """The Trainer's log as `main.py`-style rows: {epoch (0-based), train: {loss}, valid: {loss, ...}}."""
    rows: dict[int, dict] = {}
    for entry in log_history:
        if "epoch" not in entry:
            continue
        epoch = int(round(entry["epoch"])) - 1
        row = rows.setdefault(epoch, {"epoch": epoch})
        if "eval_loss" in entry:
            row["valid"] = {
                k.removeprefix("eval_"): v
                for k, v in entry.items()
                if k.startswith("eval_") and isinstance(v, (int, float)) and not k.endswith(("runtime", "per_second"))
            }
        elif "loss" in entry:
            row["train"] = {"loss": entry["loss"], "learning_rate": entry.get("learning_rate")}
    return [rows[e] for e in sorted(rows)]
