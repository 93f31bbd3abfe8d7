"""The fine-tuning baseline: one encoder fine-tuned end to end with the Hugging Face `Trainer`.

    python finetune.py -dataset semeval_eng -model offline:all-minilm-l6-v2 -runs 3
    python finetune.py -dataset ED -model bert-large-cased -device cuda
    python finetune.py -dataset semeval_eng -model /models/my-bert -threshold 0.5

The comparison point for the fusion classifier (frozen features, `main.py`): the same data
contract (`data/{task}/{train,valid,test}.csv`, single-label or one 0/1 column per label), the
same `Logs/` layout and a row in the same `Logs/runs.csv` (sources `finetune:MODEL`, mode
`finetune`), so both show side by side.

Defaults follow the common recipe (e.g. BERT-large-cased on SemEval 2025 Task 11): AdamW, lr 3e-5,
batch 16, up to 15 epochs with early stopping after 2 epochs without a lower validation loss,
the epoch with the lowest validation loss kept; 1000 linear-warmup steps, capped at 10% of the
planned steps so a small task (2768 rows: 2595 steps in 15 epochs) still reaches the peak
learning rate; linear decay to 0; weight decay 0.01 (not on biases and LayerNorm, the Trainer's
rule); max grad norm 1.0; hidden and attention dropout 0.2.

Multi-label tasks use `problem_type="multi_label_classification"` (BCE-with-logits on the
multi-hot labels), then per-label decision thresholds tuned on validation as `main.py` does
(`fec.classify.fusion_training.tune_thresholds`, or `-threshold T` for a global one) and the same metrics.
test is optional: without `test.csv` the run reports validation; a test file added later is
evaluated by the next run, with no code change.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fec.classify.cross_validation import fold_assignment, out_of_fold_selection
from fec.classify.fusion_training import SeedResult
from fec.core.metrics import classification_metrics, multilabel_metrics, tune_thresholds
from fec.features.backbones import ModelError

log = logging.getLogger("fec.classify.finetuning")

DEFAULT_MODEL = "bert-large-cased"
# Config attributes that hold the hidden and attention dropout, across encoder families.
DROPOUT_ATTRIBUTES = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout")


@dataclass
class FinetuneConfig:
    model: str = DEFAULT_MODEL
    lr: float = 3e-5
    batch_size: int = 16
    eval_batch_size: int = 64
    epochs: int = 15
    patience: int = 2
    warmup_steps: int = 1000
    warmup_cap: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    dropout: float = 0.2
    max_len: int = 200
    threshold: float | None = None
    dtype: str = "auto"  # mixed precision of the Trainer: auto = bfloat16 on CUDA when supported, else float32
    cv: int | None = (
        None  # K-fold CV on train selects epochs and thresholds; None: auto (fec.classify.cross_validation.folds_for)
    )


class TextDataset(torch.utils.data.Dataset):
    """Tokenised texts (unpadded id lists) and labels: int ids, or float multi-hot rows."""

    def __init__(self, encodings: dict[str, list], labels: np.ndarray, multilabel: bool):
        self.encodings, self.multilabel = encodings, multilabel
        self.labels = torch.tensor(labels, dtype=torch.float32 if multilabel else torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {**{k: v[i] for k, v in self.encodings.items()}, "labels": self.labels[i]}

    def subset(self, rows: np.ndarray) -> TextDataset:
        encodings = {k: [v[i] for i in rows] for k, v in self.encodings.items()}
        return TextDataset(encodings, self.labels[rows].numpy(), self.multilabel)


class Collator:
    """Pad each batch to its longest text (the tokenizer's own padding); stack the labels as they are."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, items: list[dict]) -> dict:
        labels = torch.stack([item["labels"] for item in items])
        batch = self.tokenizer.pad([{k: v for k, v in item.items() if k != "labels"} for item in items], return_tensors="pt")
        return {**batch, "labels": labels}


def planned_warmup(cfg: FinetuneConfig, train_rows: int) -> tuple[int, int]:
    """(warmup steps, planned optimiser steps): `warmup_steps`, capped at `warmup_cap` of the steps
    `epochs` full epochs would take."""
    total = math.ceil(train_rows / cfg.batch_size) * cfg.epochs
    return min(cfg.warmup_steps, int(cfg.warmup_cap * total)), total


def load_config(resolved):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(resolved))
    except (OSError, ValueError) as err:
        raise ModelError(f"{resolved}: cannot read its config ({str(err).splitlines()[0]})") from err


def dropout_attributes(config) -> list[str]:
    """The config's hidden/attention dropout settings (names differ across encoder families; a
    numeric value marks a setting, so `0` counts and a `None` placeholder does not)."""
    return [
        a
        for a in DROPOUT_ATTRIBUTES
        if isinstance(getattr(config, a, None), (int, float)) and not isinstance(getattr(config, a), bool)
    ]


def classifier_config(resolved, label_names: list[str], multilabel: bool, dropout: float, pad_token_id):
    """The pretrained config set up once for the run: the recipe's dropout, the task's labels and
    problem type. Returns (config, {dropout attribute: value set}) for config.json."""
    config = load_config(resolved)
    dropout_set = {}
    for attribute in dropout_attributes(config):
        setattr(config, attribute, dropout)
        dropout_set[attribute] = dropout
    config.num_labels = len(label_names)
    config.problem_type = "multi_label_classification" if multilabel else "single_label_classification"
    config.id2label = dict(enumerate(label_names))
    config.label2id = {name: i for i, name in enumerate(label_names)}
    if getattr(config, "pad_token_id", None) is None:  # decoder-style models need it to find the last token
        config.pad_token_id = pad_token_id
    return config, dropout_set


def load_classifier(resolved, config):
    """A sequence classifier on the pretrained encoder with a new head; `config` from `classifier_config`
    (copied, so one seed's model never changes the next seed's settings)."""
    import transformers
    from transformers import AutoModelForSequenceClassification

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "newly initialized: classifier.weight" is the point here
    try:
        return AutoModelForSequenceClassification.from_pretrained(str(resolved), config=copy.deepcopy(config))
    except (OSError, ValueError) as err:
        raise ModelError(f"{resolved}: cannot load as a sequence classifier ({str(err).splitlines()[0]})") from err
    finally:
        transformers.logging.set_verbosity(verbosity)


def split_metrics(
    logits: np.ndarray, labels: np.ndarray, multilabel: bool, thresholds=0.5, label_names: list[str] | None = None
) -> tuple[dict, np.ndarray]:
    """(metrics, predictions) from raw logits, with the loss the model trains on."""
    logits_t = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    if multilabel:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits_t, torch.from_numpy(labels).float()).item()
        preds = (torch.sigmoid(logits_t).numpy() >= np.asarray(thresholds)).astype(np.int64)
        return {"loss": loss, **multilabel_metrics(labels, preds, label_names)}, preds
    loss = torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(labels).long()).item()
    preds = logits_t.argmax(dim=1).numpy()
    return {"loss": loss, **classification_metrics(labels, preds)}, preds


def make_callbacks(seed: int, multilabel: bool):
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
                log.info(
                    "seed %d epoch %5.2f | train loss %.4f lr %.2e", seed, epoch, logs["loss"], logs.get("learning_rate", 0.0)
                )

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


def pick_precision(dtype: str, device: torch.device) -> dict:
    """The Trainer's mixed-precision flags for `--dtype`."""
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    if dtype != "float32" and device.type != "cuda":
        raise ModelError(f"--dtype {dtype}: mixed precision needs CUDA; use float32 on CPU")
    return {"bf16": dtype == "bfloat16", "fp16": dtype == "float16"}


def training_arguments(cfg: FinetuneConfig, seed: int, device: torch.device, work: Path, warmup: int, keep_last: bool = False):
    """The Trainer's arguments for one seed: the recipe above, a checkpoint per epoch in `work`,
    the lowest-validation-loss epoch restored at the end (`keep_last`: all epochs, the last kept)."""
    from transformers import TrainingArguments

    selection = dict(save_strategy="no", load_best_model_at_end=False) if keep_last else dict(
        save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
        save_total_limit=1)  # fmt: skip
    return TrainingArguments(
        output_dir=str(work), per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        num_train_epochs=cfg.epochs, learning_rate=cfg.lr, lr_scheduler_type="linear", warmup_steps=warmup,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, eval_strategy="epoch", logging_strategy="epoch",
        **selection, save_only_model=True, seed=seed, data_seed=seed, report_to="none", disable_tqdm=True,
        use_cpu=device.type == "cpu", dataloader_num_workers=0, **pick_precision(cfg.dtype, device),
    )  # fmt: skip


def scheduled_trainer(total_steps: int):
    """A Trainer whose learning-rate schedule spans `total_steps`, however many steps it trains: the
    final model of a cross-validated seed stops at the epoch count the folds chose, on the
    learning rates the folds had at that epoch."""
    from transformers import Trainer

    class ScheduledTrainer(Trainer):
        def create_scheduler(self, num_training_steps, optimizer=None):
            return super().create_scheduler(total_steps, optimizer)

    return ScheduledTrainer


def train_one_seed(cfg: FinetuneConfig, resolved, config, tokenizer, datasets: dict[str, TextDataset], label_names: list[str],
                   multilabel: bool, seed: int, device: torch.device, run_dir: Path, warmup: int, *, keep_last: bool = False,
                   thresholds: list[float] | None = None, checkpoint: bool = True,
                   schedule_steps: int | None = None) -> SeedResult:  # fmt: skip
    """Fine-tune one seed, keep the lowest-validation-loss epoch, score valid and test on it and
    save it under `run_dir/checkpoints/seedN/`. `keep_last` trains all `cfg.epochs` and keeps the
    last (the final model of a cross-validated seed), `thresholds` are used instead of tuned on
    valid, `checkpoint=False` saves nothing (a fold), and `schedule_steps` stretches the linear
    learning-rate decay over that many steps instead of the steps trained."""
    from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, set_seed

    set_seed(seed)  # the new head's initialisation
    model = load_classifier(resolved, config)
    global_threshold = 0.5 if cfg.threshold is None else cfg.threshold

    def compute_metrics(prediction) -> dict:
        metrics, _ = split_metrics(prediction.predictions, prediction.label_ids, multilabel, global_threshold)
        metrics.pop("loss")
        return metrics

    work = run_dir / f".trainer-seed{seed}"
    trainer = (Trainer if schedule_steps is None else scheduled_trainer(schedule_steps))(
        model=model, args=training_arguments(cfg, seed, device, work, warmup, keep_last), data_collator=Collator(tokenizer),
        train_dataset=datasets["train"], eval_dataset=datasets["valid"], compute_metrics=compute_metrics,
        callbacks=[*([] if keep_last else [EarlyStoppingCallback(early_stopping_patience=cfg.patience)]),
                   *make_callbacks(seed, multilabel)],
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # its raw dicts duplicate LogEpochs' lines; StepProgress shows progress
    started = time.perf_counter()
    trainer.train()
    train_seconds = round(time.perf_counter() - started, 2)
    history = epoch_history(trainer.state.log_history)
    valid_rows = [row for row in history if "valid" in row]
    best_epoch = min(valid_rows, key=lambda row: row["valid"]["loss"])["epoch"] if valid_rows else -1
    if keep_last:
        best_epoch = cfg.epochs - 1
    # The Trainer has restored the lowest-valid-loss epoch (or kept the last); every split is scored on that state.
    logits = {mode: trainer.predict(ds).predictions for mode, ds in datasets.items() if mode != "train"}
    labels = {mode: datasets[mode].labels.numpy() for mode in logits}
    scored, predictions, thresholds, valid_at_05 = score_splits(logits, labels, cfg, label_names, multilabel, seed, thresholds)
    if checkpoint:
        out = run_dir / "checkpoints" / f"seed{seed}"
        trainer.model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    del trainer, model
    gc.collect()
    shutil.rmtree(work, ignore_errors=True)
    probabilities = {mode: output_probabilities(values, multilabel) for mode, values in logits.items()}
    return SeedResult(seed, best_epoch, len(valid_rows), scored["valid"], scored.get("test"), train_seconds, history,
                      thresholds=thresholds, valid_at_05=valid_at_05, predictions=predictions,
                      probabilities=probabilities)  # fmt: skip


def train_one_seed_cv(cfg: FinetuneConfig, resolved, config, tokenizer, datasets: dict[str, TextDataset],
                      label_names: list[str], multilabel: bool, seed: int, device: torch.device,
                      run_dir: Path) -> SeedResult:  # fmt: skip
    """One seed selected by `cfg.cv`-fold cross-validation on train, as `fec.classify.cross_validation` does
    for the fusion: each fold is fine-tuned with early stopping on its held-out part; the
    out-of-fold probabilities give the cross-validated metric and the multi-label thresholds; then
    the model is fine-tuned on all of train for the median best epoch count and scored once on
    valid (kept as a check) and test."""
    train, folds = datasets["train"], cfg.cv
    assignment = fold_assignment(len(train), folds, seed)
    oof = np.zeros((len(train), len(label_names)), dtype=np.float32)
    epochs = []
    for fold in range(folds):
        held, fit = np.flatnonzero(assignment == fold), np.flatnonzero(assignment != fold)
        fold_sets = {"train": train.subset(fit), "valid": train.subset(held)}
        warmup, _ = planned_warmup(cfg, len(fit))
        result = train_one_seed(cfg, resolved, config, tokenizer, fold_sets, label_names, multilabel, seed, device, run_dir,
                                warmup, checkpoint=False)  # fmt: skip
        oof[held] = result.probabilities["valid"]
        epochs.append(result.best_epoch + 1)
        log.info("seed %d: fold %d/%d: best epoch %d", seed, fold + 1, folds, result.best_epoch)
    thresholds, oof_metrics = out_of_fold_selection(train.labels.numpy(), oof, multilabel, cfg.threshold)
    used = max(1, int(np.median(epochs)))
    log.info("seed %d: %d-fold CV: out-of-fold %s; fine-tuning on all of train for %d epochs", seed, folds,
             " ".join(f"{k} {v:.2f}" for k, v in oof_metrics.items() if not isinstance(v, dict)), used)  # fmt: skip
    # The folds chose `used` epochs under warmup and decay planned for `cfg.epochs`: the final model keeps that plan.
    warmup, planned = planned_warmup(cfg, len(train))
    chosen = None if thresholds is None else [float(t) for t in thresholds]
    final = train_one_seed(dataclasses.replace(cfg, epochs=used), resolved, config, tokenizer, datasets, label_names,
                           multilabel, seed, device, run_dir, warmup, keep_last=True, thresholds=chosen,
                           schedule_steps=planned)  # fmt: skip
    final.cv = {"folds": folds, "fold_best_epochs": epochs, "epochs_used": used, "oof": oof_metrics}
    return final


def output_probabilities(logits, multilabel: bool) -> np.ndarray:
    """Softmax over labels, or one sigmoid per label for multi-label heads."""
    logits_t = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    return (torch.sigmoid(logits_t) if multilabel else torch.softmax(logits_t, dim=1)).numpy()


def score_splits(logits: dict, labels: dict, cfg: FinetuneConfig, label_names: list[str], multilabel: bool, seed: int,
                 thresholds: list[float] | None = None):  # fmt: skip
    """Metrics and predictions of every split from its logits; multi-label runs first tune one
    threshold per label on valid (or take the global `cfg.threshold`, or `thresholds` as given).
    Returns (metrics per split, predictions per split, thresholds, valid metrics at 0.5)."""
    predictions: dict[str, np.ndarray] = {}
    valid_at_05 = None
    if multilabel:
        if thresholds is None:
            probs = output_probabilities(logits["valid"], True)
            tuned = tune_thresholds(labels["valid"], probs) if cfg.threshold is None else np.full(len(label_names), cfg.threshold)
            thresholds = [float(t) for t in tuned]
        valid_at_05, _ = split_metrics(logits["valid"], labels["valid"], True, 0.5, label_names)
    scored = {}
    for mode in logits:
        scored[mode], predictions[mode] = split_metrics(
            logits[mode], labels[mode], multilabel, thresholds if multilabel else 0.5, label_names if multilabel else None
        )
    if multilabel:
        shown = " ".join(f"{n}={t:.2f}" for n, t in zip(label_names, thresholds, strict=True))
        log.info("seed %d: thresholds %s | valid macro-F1 %.2f at 0.5, %.2f at these", seed, shown,
                 valid_at_05["macro_f1"], scored["valid"]["macro_f1"])  # fmt: skip
    return scored, predictions, thresholds, valid_at_05
