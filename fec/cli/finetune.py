"""`finetune.py` (`fec finetune`): fine-tune one encoder end to end, the baseline the fusion
classifier is compared with (the trainer itself is `fec.classify.finetuning`).

    python finetune.py --task semeval_eng --model offline:all-minilm-l6-v2 --runs 3
    python finetune.py -dataset ED -model bert-large-cased -device cuda
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from fec.classify.cross_validation import chosen_folds
from fec.classify.finetuning import (
    FinetuneConfig,
    FinetuneSetup,
    SeedPlan,
    TextDataset,
    classifier_config,
    finetune_seed,
    finetune_seed_cv,
    pick_precision,
    planned_warmup,
)
from fec.classify.fusion_training import SeedResult
from fec.cli.options import (
    ArgumentParser,
    add_fields,
    chosen_seeds,
    common_options,
    config_from,
    dropout_rate,
    flag,
    fraction,
    non_negative_float,
    non_negative_int,
    option_defaults,
    positive_float,
    positive_int,
    probability,
    seed_options,
    trainer_options,
)
from fec.cli.script import run_script
from fec.core.data import Split, available_modes, load_splits
from fec.features.backbones import DTYPES, ModelError, ensure_pad_token, model_fingerprint, pick_device, resolve_model
from fec.runs.training_run import Closing, RunPlan, ScoredSplits, train_run

log = logging.getLogger(__name__)


def dtype_name(text: str) -> str:
    """`--dtype`, with the short names `fp32`, `bf16`, `fp16` read as float32, bfloat16, float16."""
    name = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(text, text)
    if name != "auto" and name not in DTYPES:
        raise argparse.ArgumentTypeError(f"must be auto or one of {', '.join(DTYPES)}, got {text!r}")
    return name


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Fine-tune one encoder end to end (Hugging Face Trainer) on a task's CSVs: the baseline the fusion "
        "classifier is compared with. Every option also has its single-dash spelling.",
        parents=[trainer_options("folder holding TASK/MODE.csv"), seed_options(), common_options()],
    )
    add_fields(
        parser,
        FinetuneConfig,
        {
            "model": dict(
                help="hub id, local model directory, or an offline stand-in (offline:all-minilm-l6-v2, offline:all-mpnet-base-v2)"
            ),
            "lr": dict(type=positive_float, help="peak AdamW learning rate"),
            "batch_size": dict(type=positive_int, help="training batch size"),
            "eval_batch_size": dict(type=positive_int, help="batch size for validation/test passes"),
            "epochs": dict(type=positive_int, help="maximum number of epochs"),
            "patience": dict(type=positive_int, help="stop after this many epochs without a lower validation loss"),
            "warmup_steps": dict(type=non_negative_int, help="linear warmup steps (capped by --warmup_cap)"),
            "warmup_cap": dict(
                type=fraction,
                help="at most this fraction of the planned steps (epochs x batches) is warmup, so small tasks reach the peak "
                "rate",
            ),
            "weight_decay": dict(type=non_negative_float, help="AdamW weight decay (not on biases and LayerNorm)"),
            "max_grad_norm": dict(type=positive_float, help="gradient clipping norm"),
            "dropout": dict(type=dropout_rate, help="hidden and attention dropout of the encoder"),
            "max_len": dict(type=positive_int, help="truncate texts to this many tokens"),
            "threshold": dict(
                type=probability,
                help="multi-label tasks: one global decision threshold; default: one per label (0.05..0.95), tuned on "
                "validation, or out of fold under --cv",
            ),
            "cv": dict(
                type=non_negative_int,
                help="choose the epoch count (and multi-label thresholds) by K-fold cross-validation on train, then fine-tune "
                "on all of train; 0 = select on valid (default: 5 folds when valid has under 1000 rows and under a tenth of "
                "train's; valid is then kept as a check)",
            ),
            "dtype": dict(
                type=dtype_name,
                aliases=("-precision", "--precision"),
                help="mixed precision: auto = bfloat16 on CUDA when supported, else float32 (also fp32, bf16, fp16)",
            ),
        },
    )
    parser.add_argument(
        *flag("multilabel"),
        action="store_true",
        help="read the CSVs as multi-label (one 0/1 column per label) instead of detecting the layout",
    )
    parser.add_argument(*flag("limit"), type=positive_int, default=None, help="only the first N rows of each split (quick runs)")
    return parser


def read_splits(args: argparse.Namespace) -> dict[str, Split]:
    present = available_modes(args.data_dir, args.task)
    # train and valid are required (a missing one is a one-line DataError); test only when present.
    modes = ["train", "valid"] + (["test"] if "test" in present else [])
    splits = load_splits(args.data_dir, args.task, modes, multilabel=True if args.multilabel else None)
    if args.limit is not None:
        for split in splits.values():
            split.texts, split.labels = split.texts[: args.limit], split.labels[: args.limit]
    return splits


def run(args: argparse.Namespace) -> dict:
    """Read the data, resolve the options (folds: config.json records them as resolved), load the
    tokenizer and the model's configuration (a bad combination fails before the run folder exists),
    fine-tune every seed."""
    splits = read_splits(args)
    train = splits["train"]
    if args.threshold is not None and not train.multilabel:
        log.warning("-threshold applies to multi-label tasks only; %s is single-label, ignored", args.task)
    if "test" not in splits:
        log.warning("%s: no test.csv; reporting validation metrics only", args.task)
    folds = chosen_folds(args.cv, len(splits["valid"]), len(train))
    cfg = config_from(FinetuneConfig, args, threshold=args.threshold if train.multilabel else None, cv=folds)
    setup, dropout_set = encoder_setup(args, cfg, train)
    warmup, planned = planned_warmup(cfg, len(train))
    fingerprint = model_fingerprint(setup.resolved)
    record = run_record(args, setup, splits, folds) | {
        "model_fingerprint": fingerprint,
        "dropout_set": dropout_set,
        "warmup_steps_used": warmup,
        "planned_steps": planned,
    }
    model = {
        "kind": "finetune",
        "model": args.model,
        "model_path": str(setup.resolved),
        "model_fingerprint": fingerprint,
        "task": args.task,
        "label_names": train.label_names,
        "max_len": cfg.max_len,
    }
    if train.multilabel:
        rule = "global" if cfg.threshold is not None else f"per-label, tuned {'out of fold' if cfg.cv else 'on valid'}"
        model |= {"multilabel": True, "threshold_rule": rule, "thresholds": {}}
    scored = ScoredSplits.of(splits)
    plan = RunPlan(
        task=args.task,
        out=args.out,
        folder_name=f"{args.task}_finetune",
        method="finetune",
        seeds=chosen_seeds(args),
        sources=[f"finetune:{args.model}"],
        config=record,
        splits=scored,
        model=model,
        threshold=cfg.threshold,
    )
    datasets = tokenised(splits, setup.tokenizer, cfg.max_len, train.multilabel)
    return train_run(plan, FinetunedSeeds(args.model, setup, SeedPlan(warmup), datasets, scored))


def encoder_setup(args: argparse.Namespace, cfg: FinetuneConfig, train: Split) -> tuple[FinetuneSetup, dict]:
    """What every seed fine-tunes (the run folder is filled in once it exists), and which dropout
    settings of the model's config `--dropout` set; a model, tokenizer or precision that cannot
    work is refused here, before the run folder exists."""
    from transformers import AutoTokenizer

    device = pick_device(args.device)
    pick_precision(cfg.dtype, device)
    resolved = resolve_model(args.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(resolved))
    except (OSError, ValueError) as err:
        raise ModelError(f"{args.model}: cannot load its tokenizer ({str(err).splitlines()[0]})") from err
    ensure_pad_token(tokenizer)
    names, multilabel = train.label_names, train.multilabel
    config, dropout_set = classifier_config(resolved, names, multilabel, cfg.dropout, tokenizer.pad_token_id)
    if not dropout_set:
        log.warning("%s: no hidden/attention dropout setting found in its config; -dropout has no effect", args.model)
    return FinetuneSetup(cfg, resolved, config, tokenizer, names, multilabel, device, run_dir=None), dropout_set


def run_record(args: argparse.Namespace, setup: FinetuneSetup, splits: dict[str, Split], folds: int) -> dict:
    """config.json of a fine-tuning run: the options as resolved, the model and how seeds are selected."""
    cfg = setup.cfg
    if cfg.cv:
        selection = (
            f"{cfg.cv}-fold cross-validation on train (each fold: lowest held-out loss, early stop after "
            f"{cfg.patience} epochs), then all of train for the median epoch count"
        )
    else:
        selection = f"lowest validation loss, early stop after {cfg.patience} epochs without improvement"
    return {
        "args": vars(args) | {"cv": folds if folds and args.cv is None else args.cv},
        "option_defaults": option_defaults(build_parser()),
        "seeds": chosen_seeds(args),
        "finetune_config": asdict(cfg),
        "device": str(setup.device),
        "model_path": str(setup.resolved),
        "model_type": setup.config.model_type,
        "problem_type": "multi_label_classification" if setup.multilabel else "single_label_classification",
        "selection": selection,
        "rows": {m: len(s.texts) for m, s in splits.items()},
        "label_names": setup.label_names,
        "csv_sha256": {m: s.csv_sha256 for m, s in splits.items()},
    }


@dataclass
class FinetunedSeeds:
    """Fine-tuning's seeds (`fec.runs.training_run.SeedTrainer`): each fine-tunes the encoder end to
    end, saving its model under the run's checkpoints/seedN/."""

    model: str
    setup: FinetuneSetup
    plan: SeedPlan
    datasets: dict[str, TextDataset]
    splits: ScoredSplits

    def start(self, run_dir: Path) -> None:
        setup = self.setup
        log.info(
            "model %s (%s); %s-label, %d labels; device %s; warmup %d steps",
            self.model,
            setup.resolved,
            "multi" if setup.multilabel else "single",
            len(setup.label_names),
            setup.device,
            self.plan.warmup,
        )

    def train_seed(self, seed: int, run_dir: Path) -> SeedResult:
        setup = replace(self.setup, run_dir=run_dir)
        if setup.cfg.cv:
            return finetune_seed_cv(setup, self.datasets, seed)
        return finetune_seed(setup, self.datasets, seed, self.plan)

    def log_seed(self, result: SeedResult) -> None:
        log_seed(result, self.splits.multilabel)

    def closing(self, results: list[SeedResult]) -> Closing:
        cfg = self.setup.cfg
        settings = {"model": self.model, "lr": cfg.lr, "batch_size": cfg.batch_size, "epochs": cfg.epochs}
        return Closing(settings | ({"selection": f"cv{cfg.cv}"} if cfg.cv else {}))


def tokenised(splits: dict[str, Split], tokenizer, max_len: int, multilabel: bool) -> dict[str, TextDataset]:
    """Every split tokenised once (unpadded; the collator pads each batch)."""
    datasets = {
        mode: TextDataset(dict(tokenizer(split.texts, truncation=True, max_length=max_len)), split.labels, multilabel)
        for mode, split in splits.items()
    }
    for ds in datasets.values():
        ds.encodings = {k: v for k, v in ds.encodings.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    return datasets


def log_seed(result, multilabel: bool) -> None:
    shown, name = (result.test, "test") if result.test else (result.valid, "valid")
    if multilabel:
        log.info(
            "seed %d: best epoch %d of %d | %s macro-F1 %.2f micro-F1 %.2f subset acc %.2f Jaccard %.2f | %.1fs",
            result.seed,
            result.best_epoch,
            result.epochs_run,
            name,
            shown["macro_f1"],
            shown["micro_f1"],
            shown["subset_acc"],
            shown["jaccard"],
            result.train_seconds,
        )
    else:
        log.info(
            "seed %d: best epoch %d of %d | %s acc %.2f wF1 %.2f macro-F1 %.2f | %.1fs",
            result.seed,
            result.best_epoch,
            result.epochs_run,
            name,
            shown["acc"],
            shown["wf1"],
            shown["macro_f1"],
            result.train_seconds,
        )


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
    return run_script(build_parser(), run_without_hf_bars, argv)
