"""The fine-tuning baseline: one encoder fine-tuned end to end with the Hugging Face `Trainer`.

    python finetune.py -dataset semeval_eng -model offline:all-minilm-l6-v2 -runs 3
    python finetune.py -dataset ED -model bert-large-cased -device cuda
    python finetune.py -dataset semeval_eng -model /models/my-bert -threshold 0.5

    setup = FinetuneSetup(cfg, resolved, config, tokenizer, label_names, multilabel, device, run_dir)
    result = finetune_seed(setup, datasets, seed=0, plan=SeedPlan(warmup=planned_warmup(cfg, rows)[0]))

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
(`fec.core.metrics.tune_thresholds`, or `-threshold T` for a global one) and the same metrics
(`fec.classify.finetune_scoring`).
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
from fec.classify.finetune_scoring import epoch_history, make_callbacks, output_probabilities, score_splits, split_metrics
from fec.classify.fusion_training import SeedResult
from fec.classify.seed_result import scored_splits
from fec.core.errors import ModelError, SettingError

log = logging.getLogger(__name__)

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
    # K-fold CV on train selects epochs and thresholds; None: auto (fec.classify.cross_validation.folds_for)
    cv: int | None = None


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


def pick_precision(dtype: str, device: torch.device) -> dict:
    """The Trainer's mixed-precision flags for `--dtype`."""
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    if dtype != "float32" and device.type != "cuda":
        raise SettingError("dtype", dtype, "mixed precision needs CUDA; use float32 on CPU")
    return {"bf16": dtype == "bfloat16", "fp16": dtype == "float16"}


def training_arguments(cfg: FinetuneConfig, seed: int, device: torch.device, work: Path, warmup: int, keep_last: bool = False):
    """The Trainer's arguments for one seed: the recipe above, a checkpoint per epoch in `work`,
    the lowest-validation-loss epoch restored at the end (`keep_last`: all epochs, the last kept)."""
    from transformers import TrainingArguments

    selection = {"save_strategy": "no", "load_best_model_at_end": False}
    if not keep_last:  # one checkpoint per epoch, the best by validation loss kept and restored
        best = {"metric_for_best_model": "eval_loss", "greater_is_better": False, "save_total_limit": 1}
        selection = {"save_strategy": "epoch", "load_best_model_at_end": True, **best}
    return TrainingArguments(
        output_dir=str(work),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr,
        lr_scheduler_type="linear",
        warmup_steps=warmup,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        eval_strategy="epoch",
        logging_strategy="epoch",
        **selection,
        save_only_model=True,
        seed=seed,
        data_seed=seed,
        report_to="none",
        disable_tqdm=True,
        use_cpu=device.type == "cpu",
        dataloader_num_workers=0,
        **pick_precision(cfg.dtype, device),
    )


def scheduled_trainer(total_steps: int):
    """A Trainer whose learning-rate schedule spans `total_steps`, however many steps it trains: the
    final model of a cross-validated seed stops at the epoch count the folds chose, on the
    learning rates the folds had at that epoch."""
    from transformers import Trainer

    class ScheduledTrainer(Trainer):
        def create_scheduler(self, num_training_steps, optimizer=None):
            return super().create_scheduler(total_steps, optimizer)

    return ScheduledTrainer


@dataclass
class FinetuneSetup:
    """What every seed of a fine-tuning run shares: the recipe, the pretrained model it starts from
    (resolved path or hub id, the classifier config from `classifier_config`, its tokenizer), the
    task's labels, and where it trains and writes (checkpoints under `run_dir`)."""

    cfg: FinetuneConfig
    resolved: Path | str
    config: object
    tokenizer: object
    label_names: list[str]
    multilabel: bool
    device: torch.device
    run_dir: Path


@dataclass(frozen=True)
class SeedPlan:
    """How one fine-tuning differs from the recipe: `warmup` steps (`planned_warmup`); `keep_last`
    trains every epoch and keeps the last (the final model of a cross-validated seed);
    `thresholds` are used instead of tuned on valid; `checkpoint=False` saves nothing (a fold);
    `schedule_steps` stretches the linear learning-rate decay over that many steps."""

    warmup: int
    keep_last: bool = False
    thresholds: list[float] | None = None
    checkpoint: bool = True
    schedule_steps: int | None = None


def build_trainer(setup: FinetuneSetup, datasets: dict[str, TextDataset], seed: int, plan: SeedPlan, work: Path):
    """The Hugging Face `Trainer` of one seed: the pretrained encoder with a new head (initialised
    from `seed`), early stopping on valid unless `plan.keep_last`, fec's log callbacks, and the
    learning-rate plan (`plan.schedule_steps` stretches its decay)."""
    from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, set_seed

    set_seed(seed)  # the new head's initialisation
    model = load_classifier(setup.resolved, setup.config)
    cfg, multilabel = setup.cfg, setup.multilabel
    global_threshold = 0.5 if cfg.threshold is None else cfg.threshold

    def compute_metrics(prediction) -> dict:
        metrics, _ = split_metrics(prediction.predictions, prediction.label_ids, multilabel, global_threshold)
        metrics.pop("loss")
        return metrics

    stopping = [] if plan.keep_last else [EarlyStoppingCallback(early_stopping_patience=cfg.patience)]
    trainer = (Trainer if plan.schedule_steps is None else scheduled_trainer(plan.schedule_steps))(
        model=model,
        args=training_arguments(cfg, seed, setup.device, work, plan.warmup, plan.keep_last),
        data_collator=Collator(setup.tokenizer),
        train_dataset=datasets["train"],
        eval_dataset=datasets["valid"],
        compute_metrics=compute_metrics,
        callbacks=[*stopping, *make_callbacks(seed, multilabel)],
    )
    trainer.remove_callback(PrinterCallback)  # its raw dicts duplicate LogEpochs' lines; StepProgress shows progress
    return trainer


def finetune_seed(setup: FinetuneSetup, datasets: dict[str, TextDataset], seed: int, plan: SeedPlan) -> SeedResult:
    """Fine-tune one seed, keep the lowest-validation-loss epoch (or, as `plan` says, the last),
    score valid and test on it and save it under `run_dir/checkpoints/seedN/` (unless a fold)."""
    cfg, multilabel = setup.cfg, setup.multilabel
    work = setup.run_dir / f".trainer-seed{seed}"
    trainer = build_trainer(setup, datasets, seed, plan, work)
    started = time.perf_counter()
    trainer.train()
    train_seconds = round(time.perf_counter() - started, 2)
    history = epoch_history(trainer.state.log_history)
    valid_rows = [row for row in history if "valid" in row]
    best_epoch = min(valid_rows, key=lambda row: row["valid"]["loss"])["epoch"] if valid_rows else -1
    if plan.keep_last:
        best_epoch = cfg.epochs - 1
    # The Trainer has restored the lowest-valid-loss epoch (or kept the last); every split is scored on that state.
    logits = {mode: trainer.predict(datasets[mode]).predictions for mode in scored_splits(datasets)}
    labels = {mode: datasets[mode].labels.numpy() for mode in logits}
    scored, predictions, thresholds, valid_at_05 = score_splits(
        logits, labels, cfg.threshold, setup.label_names, multilabel, seed, plan.thresholds
    )
    if plan.checkpoint:
        out = setup.run_dir / "checkpoints" / f"seed{seed}"
        trainer.model.save_pretrained(out)
        setup.tokenizer.save_pretrained(out)
    del trainer
    gc.collect()
    shutil.rmtree(work, ignore_errors=True)
    return SeedResult(
        seed,
        best_epoch,
        len(valid_rows),
        scored["valid"],
        scored.get("test"),
        train_seconds,
        history,
        thresholds=thresholds,
        valid_at_05=valid_at_05,
        predictions=predictions,
        probabilities={mode: output_probabilities(values, multilabel) for mode, values in logits.items()},
    )


def finetune_seed_cv(setup: FinetuneSetup, datasets: dict[str, TextDataset], seed: int) -> SeedResult:
    """One seed selected by `cfg.cv`-fold cross-validation on train, as `fec.classify.cross_validation` does
    for the fusion: each fold is fine-tuned with early stopping on its held-out part; the
    out-of-fold probabilities give the cross-validated metric and the multi-label thresholds; then
    the model is fine-tuned on all of train for the median best epoch count and scored once on
    valid (kept as a check) and test."""
    cfg, train = setup.cfg, datasets["train"]
    assignment = fold_assignment(len(train), cfg.cv, seed)
    oof = np.zeros((len(train), len(setup.label_names)), dtype=np.float32)
    epochs = []
    for fold in range(cfg.cv):
        held, fit = np.flatnonzero(assignment == fold), np.flatnonzero(assignment != fold)
        fold_sets = {"train": train.subset(fit), "valid": train.subset(held)}
        warmup, _ = planned_warmup(cfg, len(fit))
        result = finetune_seed(setup, fold_sets, seed, SeedPlan(warmup, checkpoint=False))
        oof[held] = result.probabilities["valid"]
        epochs.append(result.best_epoch + 1)
        log.info("seed %d: fold %d/%d: best epoch %d", seed, fold + 1, cfg.cv, result.best_epoch)
    thresholds, oof_metrics = out_of_fold_selection(train.labels.numpy(), oof, setup.multilabel, cfg.threshold)
    used = max(1, int(np.median(epochs)))
    shown = " ".join(f"{k} {v:.2f}" for k, v in oof_metrics.items() if not isinstance(v, dict))
    log.info("seed %d: %d-fold CV: out-of-fold %s; fine-tuning on all of train for %d epochs", seed, cfg.cv, shown, used)
    # The folds chose `used` epochs under warmup and decay planned for `cfg.epochs`: the final model keeps that plan.
    warmup, planned = planned_warmup(cfg, len(train))
    chosen = None if thresholds is None else [float(t) for t in thresholds]
    final_setup = dataclasses.replace(setup, cfg=dataclasses.replace(cfg, epochs=used))
    plan = SeedPlan(warmup, keep_last=True, thresholds=chosen, schedule_steps=planned)
    final = finetune_seed(final_setup, datasets, seed, plan)
    final.cv = {"folds": cfg.cv, "fold_best_epochs": epochs, "epochs_used": used, "oof": oof_metrics}
    return final
