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
(`fec.train.tune_thresholds`, or `-threshold T` for a global one) and the same metrics.
test is optional: without `test.csv` the run reports validation; a test file added later is
evaluated by the next run, with no code change.
"""

from __future__ import annotations

import argparse
import copy
import gc
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fec.backbones import ModelError, ensure_pad_token, model_fingerprint, pick_device, resolve_model
from fec.cli import add_common_logging, run_script
from fec.data import DataError, Split, available_modes, load_splits
from fec.options import (
    ArgumentParser,
    add_seed_options,
    chosen_seeds,
    device,
    dropout_rate,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    task_name,
)
from fec.provenance import provenance
from fec.runlog import finish_run, run_folder, write_json, write_results
from fec.train import (
    SeedResult,
    classification_metrics,
    multilabel_metrics,
    tune_thresholds,
)

log = logging.getLogger("fec.finetune")

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
    precision: str = "auto"


class TextDataset(torch.utils.data.Dataset):
    """Tokenised texts (unpadded id lists) and labels: int ids, or float multi-hot rows."""

    def __init__(self, encodings: dict[str, list], labels: np.ndarray, multilabel: bool):
        self.encodings, self.multilabel = encodings, multilabel
        self.labels = torch.tensor(labels, dtype=torch.float32 if multilabel else torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {**{k: v[i] for k, v in self.encodings.items()}, "labels": self.labels[i]}


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
    return [a for a in DROPOUT_ATTRIBUTES
            if isinstance(getattr(config, a, None), (int, float)) and not isinstance(getattr(config, a), bool)]


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


def split_metrics(logits: np.ndarray, labels: np.ndarray, multilabel: bool, thresholds=0.5,
                  label_names: list[str] | None = None) -> tuple[dict, np.ndarray]:
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
    from transformers import TrainerCallback

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
                log.info("seed %d epoch %5.2f | train loss %.4f lr %.2e", seed, epoch, logs["loss"], logs.get("learning_rate", 0.0))

    return [LogEpochs()]


def epoch_history(log_history: list[dict]) -> list[dict]:
    """The Trainer's log as `main.py`-style rows: {epoch (0-based), train: {loss}, valid: {loss, ...}}."""
    rows: dict[int, dict] = {}
    for entry in log_history:
        if "epoch" not in entry:
            continue
        epoch = int(round(entry["epoch"])) - 1
        row = rows.setdefault(epoch, {"epoch": epoch})
        if "eval_loss" in entry:
            row["valid"] = {k.removeprefix("eval_"): v for k, v in entry.items()
                            if k.startswith("eval_") and isinstance(v, (int, float)) and not k.endswith(("runtime", "per_second"))}
        elif "loss" in entry:
            row["train"] = {"loss": entry["loss"], "learning_rate": entry.get("learning_rate")}
    return [rows[e] for e in sorted(rows)]


def pick_precision(precision: str, device: torch.device) -> dict:
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision != "fp32" and device.type != "cuda":
        raise ModelError(f"-precision {precision}: mixed precision needs CUDA; use fp32 on CPU")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def train_one_seed(cfg: FinetuneConfig, resolved, config, tokenizer, datasets: dict[str, TextDataset], label_names: list[str],
                   multilabel: bool, seed: int, device: torch.device, run_dir: Path, warmup: int) -> SeedResult:
    from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, TrainingArguments, set_seed

    set_seed(seed)  # the new head's initialisation
    model = load_classifier(resolved, config)
    global_threshold = 0.5 if cfg.threshold is None else cfg.threshold

    def compute_metrics(prediction) -> dict:
        metrics, _ = split_metrics(prediction.predictions, prediction.label_ids, multilabel, global_threshold)
        metrics.pop("loss")
        return metrics

    work = run_dir / f".trainer-seed{seed}"
    args = TrainingArguments(
        output_dir=str(work), per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        num_train_epochs=cfg.epochs, learning_rate=cfg.lr, lr_scheduler_type="linear", warmup_steps=warmup,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, eval_strategy="epoch", save_strategy="epoch",
        logging_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
        save_total_limit=1, save_only_model=True, seed=seed, data_seed=seed, report_to="none", disable_tqdm=True,
        use_cpu=device.type == "cpu", dataloader_num_workers=0, **pick_precision(cfg.precision, device),
    )
    trainer = Trainer(
        model=model, args=args, data_collator=Collator(tokenizer), train_dataset=datasets["train"],
        eval_dataset=datasets["valid"], compute_metrics=compute_metrics,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.patience), *make_callbacks(seed, multilabel)],
    )
    trainer.remove_callback(PrinterCallback)  # its raw dicts duplicate LogEpochs' lines
    started = time.perf_counter()
    trainer.train()
    train_seconds = round(time.perf_counter() - started, 2)
    history = epoch_history(trainer.state.log_history)
    valid_rows = [row for row in history if "valid" in row]
    best_epoch = min(valid_rows, key=lambda row: row["valid"]["loss"])["epoch"] if valid_rows else -1

    # The Trainer has restored the lowest-valid-loss epoch; every split is scored on that state.
    logits = {mode: trainer.predict(ds).predictions for mode, ds in datasets.items() if mode != "train"}
    labels = {mode: datasets[mode].labels.numpy() for mode in logits}
    predictions: dict[str, np.ndarray] = {}
    thresholds = valid_at_05 = None
    if multilabel:
        probs = torch.sigmoid(torch.from_numpy(np.asarray(logits["valid"], dtype=np.float32))).numpy()
        tuned = tune_thresholds(labels["valid"], probs) if cfg.threshold is None else np.full(len(label_names), cfg.threshold)
        thresholds = [float(t) for t in tuned]
        valid_at_05, _ = split_metrics(logits["valid"], labels["valid"], True, 0.5, label_names)
    scored = {}
    for mode in logits:
        scored[mode], predictions[mode] = split_metrics(logits[mode], labels[mode], multilabel,
                                                        thresholds if multilabel else 0.5, label_names if multilabel else None)
    if multilabel:
        log.info("seed %d: thresholds %s | valid macro-F1 %.2f at 0.5, %.2f at these", seed,
                 " ".join(f"{n}={t:.2f}" for n, t in zip(label_names, thresholds)), valid_at_05["macro_f1"], scored["valid"]["macro_f1"])

    out = run_dir / "checkpoints" / f"seed{seed}"
    trainer.model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    epochs_run = len(valid_rows)
    del trainer, model
    gc.collect()
    shutil.rmtree(work, ignore_errors=True)
    return SeedResult(seed, best_epoch, epochs_run, scored["valid"], scored.get("test"), train_seconds, history,
                      thresholds=thresholds, valid_at_05=valid_at_05, predictions=predictions)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Fine-tune one encoder end to end (Hugging Face Trainer) on a task's CSVs: the baseline the fusion "
        "classifier is compared with. Single- and double-dash spellings both work.",
    )
    parser.add_argument("-dataset", "--dataset", type=task_name, required=True, help="task folder under -data_dir (train.csv and valid.csv; test.csv when present)")
    parser.add_argument("-model", "--model", default=DEFAULT_MODEL, help="hub id, local model directory, or an offline stand-in (offline:all-minilm-l6-v2, offline:all-mpnet-base-v2)")
    parser.add_argument("-multilabel", "--multilabel", action="store_true", help="read the CSVs as multi-label (one 0/1 column per label) instead of detecting the layout")
    parser.add_argument("-lr", "--lr", type=positive_float, default=3e-5, help="peak AdamW learning rate")
    parser.add_argument("-batch_size", "--batch_size", type=positive_int, default=16, help="training batch size")
    parser.add_argument("-eval_batch_size", "--eval_batch_size", type=positive_int, default=64, help="batch size for validation/test passes")
    parser.add_argument("-epochs", "--epochs", type=positive_int, default=15, help="maximum number of epochs")
    parser.add_argument("-patience", "--patience", type=positive_int, default=2, help="stop after this many epochs without a lower validation loss")
    parser.add_argument("-warmup_steps", "--warmup_steps", type=non_negative_int, default=1000, help="linear warmup steps (capped by -warmup_cap)")
    parser.add_argument("-warmup_cap", "--warmup_cap", type=fraction, default=0.1, help="at most this fraction of the planned steps (epochs x batches) is warmup, so small tasks reach the peak rate")
    parser.add_argument("-weight_decay", "--weight_decay", type=non_negative_float, default=0.01, help="AdamW weight decay (not on biases and LayerNorm)")
    parser.add_argument("-max_grad_norm", "--max_grad_norm", type=positive_float, default=1.0, help="gradient clipping norm")
    parser.add_argument("-dropout", "--dropout", type=dropout_rate, default=0.2, help="hidden and attention dropout of the encoder")
    parser.add_argument("-max_len", "--max_len", type=positive_int, default=200, help="truncate texts to this many tokens")
    parser.add_argument("-threshold", "--threshold", type=probability, default=None, help="multi-label tasks: one global decision threshold; default: one per label, tuned on validation (0.05..0.95)")
    add_seed_options(parser)
    parser.add_argument("-limit", "--limit", type=positive_int, default=None, help="only the first N rows of each split (quick runs)")
    parser.add_argument("-device", "--device", type=device, default="auto", help="cuda, cpu, or auto (cuda when available)")
    parser.add_argument("-precision", "--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help="auto = bf16 on CUDA when supported, else fp32")
    parser.add_argument("-data_dir", "--data_dir", default="data", help="folder holding DATASET/MODE.csv")
    parser.add_argument("-out", "--out", default="Logs", help="folder for run folders and runs.csv")
    add_common_logging(parser)
    return parser


def read_splits(args: argparse.Namespace) -> dict[str, Split]:
    present = available_modes(args.data_dir, args.dataset)
    # train and valid are required (a missing one is a one-line DataError); test only when present.
    modes = ["train", "valid"] + (["test"] if "test" in present else [])
    splits = load_splits(args.data_dir, args.dataset, modes, multilabel=True if args.multilabel else None)
    if args.limit is not None:
        for split in splits.values():
            split.texts, split.labels = split.texts[: args.limit], split.labels[: args.limit]
    return splits


def run(args: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer

    seeds = chosen_seeds(args)
    splits = read_splits(args)
    train = splits["train"]
    multilabel, label_names = train.multilabel, train.label_names
    if args.threshold is not None and not multilabel:
        log.warning("-threshold applies to multi-label tasks only; %s is single-label, ignored", args.dataset)
    cfg = FinetuneConfig(
        model=args.model, lr=args.lr, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, epochs=args.epochs,
        patience=args.patience, warmup_steps=args.warmup_steps, warmup_cap=args.warmup_cap, weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm, dropout=args.dropout, max_len=args.max_len,
        threshold=args.threshold if multilabel else None, precision=args.precision,
    )
    device = pick_device(args.device)
    pick_precision(cfg.precision, device)  # refuse a bad combination before any work
    resolved = resolve_model(args.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(resolved))
    except (OSError, ValueError) as err:
        raise ModelError(f"{args.model}: cannot load its tokenizer ({str(err).splitlines()[0]})") from err
    ensure_pad_token(tokenizer)
    config, dropout_set = classifier_config(resolved, label_names, multilabel, cfg.dropout, tokenizer.pad_token_id)

    with run_folder(args.out, f"{args.dataset}_finetune") as run_dir:
        return finetune_run(args, run_dir, cfg, seeds, splits, resolved, tokenizer, config, dropout_set, device)


def finetune_run(args: argparse.Namespace, run_dir: Path, cfg: FinetuneConfig, seeds: list[int], splits: dict[str, Split],
                 resolved, tokenizer, config, dropout_set: dict, device: torch.device) -> dict:
    """Fine-tune every seed into `run_dir` and write the run's files."""
    train = splits["train"]
    multilabel, label_names = train.multilabel, train.label_names
    if "test" not in splits:
        log.warning("%s: no test.csv; reporting validation metrics only", args.dataset)
    warmup, planned = planned_warmup(cfg, len(train))
    log.info("run folder %s; model %s (%s); %s-label, %d labels; device %s; seeds %s; warmup %d of %d planned steps",
             run_dir, args.model, resolved, "multi" if multilabel else "single", len(label_names), device, seeds, warmup, planned)
    datasets = {
        mode: TextDataset(dict(tokenizer(split.texts, truncation=True, max_length=cfg.max_len)), split.labels, multilabel)
        for mode, split in splits.items()
    }
    for ds in datasets.values():
        ds.encodings = {k: v for k, v in ds.encodings.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    if not dropout_set:
        log.warning("%s: no hidden/attention dropout setting found in its config; -dropout has no effect", args.model)
    fingerprint = model_fingerprint(resolved)
    write_json(run_dir / "config.json", {
        "args": vars(args), "seeds": seeds, "finetune_config": asdict(cfg), "device": str(device),
        "model_path": str(resolved), "model_fingerprint": fingerprint, "model_type": config.model_type,
        "dropout_set": dropout_set, "warmup_steps_used": warmup, "planned_steps": planned,
        "problem_type": "multi_label_classification" if multilabel else "single_label_classification",
        "selection": f"lowest validation loss, early stop after {cfg.patience} epochs without improvement",
        "rows": {m: len(s.texts) for m, s in splits.items()}, "label_names": label_names,
        "csv_sha256": {m: s.csv_sha256 for m, s in splits.items()}, **provenance(),
    })
    model_spec = {
        "kind": "finetune", "model": args.model, "model_path": str(resolved), "model_fingerprint": fingerprint,
        "task": args.dataset, "label_names": label_names, "max_len": cfg.max_len,
    }
    if multilabel:
        model_spec |= {"multilabel": True, "threshold_rule": "global" if cfg.threshold is not None else "per-label, tuned on valid",
                       "thresholds": {}}
    write_json(run_dir / "model.json", model_spec)

    started = time.perf_counter()
    results = []
    for seed in seeds:
        result = train_one_seed(cfg, resolved, config, tokenizer, datasets, label_names, multilabel, seed, device, run_dir, warmup)
        shown, name = (result.test, "test") if result.test else (result.valid, "valid")
        if multilabel:
            model_spec["thresholds"][str(seed)] = result.thresholds
            write_json(run_dir / "model.json", model_spec)
            log.info("seed %d: best epoch %d of %d | %s macro-F1 %.2f micro-F1 %.2f subset acc %.2f Jaccard %.2f | %.1fs", seed,
                     result.best_epoch, result.epochs_run, name, shown["macro_f1"], shown["micro_f1"], shown["subset_acc"],
                     shown["jaccard"], result.train_seconds)
        else:
            log.info("seed %d: best epoch %d of %d | %s acc %.2f wF1 %.2f macro-F1 %.2f | %.1fs", seed, result.best_epoch,
                     result.epochs_run, name, shown["acc"], shown["wf1"], shown["macro_f1"], result.train_seconds)
        results.append(result)
        write_results(run_dir, args.dataset, results, sources=[f"finetune:{args.model}"], multilabel=multilabel, finished=False)
    seconds = round(time.perf_counter() - started, 2)

    settings = {"sources": f"finetune:{args.model}", "mode": "finetune", "norm": "-", "pn": "-", "sigma": "-",
                "raw_inputs": "-", "lr": cfg.lr, "batch_size": cfg.batch_size, "seeds": " ".join(map(str, seeds))}
    return finish_run(run_dir, args.out, args.dataset, results, sources=[f"finetune:{args.model}"],
                      labels={m: s.labels for m, s in splits.items()}, label_names=label_names, multilabel=multilabel,
                      threshold=cfg.threshold, settings=settings, seconds=seconds)


def run_without_hf_bars(args: argparse.Namespace) -> dict:
    """`run` with the Hub's per-file "Loading weights"/"Writing model shards" bars off (once per
    seed and epoch they drown the log), restored after."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return run(args)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run_without_hf_bars, (DataError, ModelError), argv)
