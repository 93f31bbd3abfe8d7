"""Fine-tune one encoder end to end: the baseline the fusion classifier is compared with (the
recipe itself is `fec.classify.finetuning`; `python finetune.py` and `fec finetune` are its
command line).

    import fec
    run = fec.finetune("semeval_eng", model="offline:all-minilm-l6-v2", runs=3)
    run.metrics["valid"]["macro_f1"]
    run.classifier().predict(["I finally got the job!"])

Writes Logs/{task}_finetune_{stamp}/ (config.json, train.log, results.json, model.json,
checkpoints/seedN/, per_label.csv, curves.png, the page and model card) and a row in
Logs/runs.csv beside the fusion runs.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from fec.api.run import Run
from fec.api.trainer_settings import TrainerSettings
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
from fec.core.data import Split, available_modes, load_splits
from fec.core.errors import ModelError
from fec.core.settings import (
    BadValue,
    documented,
    dropout_rate,
    fraction,
    given_record,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    setting,
    text,
)
from fec.features.backbones import DTYPES, ensure_pad_token, model_fingerprint, pick_device, resolve_model
from fec.runs.output_rule import check_outputs
from fec.runs.training_run import Closing, RunPlan, ScoredSplits, train_run

log = logging.getLogger(__name__)


def dtype_name(value) -> str:
    """The Trainer's mixed precision: `auto`, or a dtype name, with the short names `fp32`, `bf16`,
    `fp16` read as float32, bfloat16, float16."""
    name = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(value, value)
    if name != "auto" and name not in DTYPES:
        raise BadValue(f"must be auto or one of {', '.join(DTYPES)}, got {value!r}")
    return name


@dataclass(kw_only=True)
class FinetuneSettings(TrainerSettings):
    """Every setting of a fine-tuning run (`python finetune.py -h` lists the same as options)."""

    model: str = setting(
        FinetuneConfig.model,
        check=text,
        help="hub id, local model directory, or an offline stand-in (offline:all-minilm-l6-v2, offline:all-mpnet-base-v2)",
    )
    lr: float = setting(FinetuneConfig.lr, check=positive_float, help="peak AdamW learning rate")
    batch_size: int = setting(FinetuneConfig.batch_size, check=positive_int, help="training batch size")
    eval_batch_size: int = setting(
        FinetuneConfig.eval_batch_size, check=positive_int, help="batch size for validation/test passes"
    )
    epochs: int = setting(FinetuneConfig.epochs, check=positive_int, help="maximum number of epochs")
    patience: int = setting(
        FinetuneConfig.patience, check=positive_int, help="stop after this many epochs without a lower validation loss"
    )
    warmup_steps: int = setting(
        FinetuneConfig.warmup_steps, check=non_negative_int, help="linear warmup steps (capped by --warmup_cap)"
    )
    warmup_cap: float = setting(
        FinetuneConfig.warmup_cap,
        check=fraction,
        help="at most this fraction of the planned steps (epochs x batches) is warmup, so small tasks reach the peak rate",
    )
    weight_decay: float = setting(
        FinetuneConfig.weight_decay, check=non_negative_float, help="AdamW weight decay (not on biases and LayerNorm)"
    )
    max_grad_norm: float = setting(FinetuneConfig.max_grad_norm, check=positive_float, help="gradient clipping norm")
    dropout: float = setting(FinetuneConfig.dropout, check=dropout_rate, help="hidden and attention dropout of the encoder")
    max_len: int = setting(FinetuneConfig.max_len, check=positive_int, help="truncate texts to this many tokens")
    threshold: float | None = setting(
        FinetuneConfig.threshold,
        check=probability,
        help="multi-label tasks: one global decision threshold; default: one per label (0.05..0.95), tuned on "
        "validation, or out of fold under --cv",
    )
    cv: int | None = setting(
        FinetuneConfig.cv,
        check=non_negative_int,
        help="choose the epoch count (and multi-label thresholds) by K-fold cross-validation on train, then fine-tune "
        "on all of train; 0 = select on valid (default: 5 folds when valid has under 1000 rows and under a tenth of "
        "train's; valid is then kept as a check)",
    )
    dtype: str = setting(
        FinetuneConfig.dtype,
        check=dtype_name,
        help="mixed precision: auto = bfloat16 on CUDA when supported, else float32 (also fp32, bf16, fp16)",
    )
    multilabel: bool = setting(
        False, help="read the CSVs as multi-label (one 0/1 column per label) instead of detecting the layout"
    )
    limit: int | None = setting(None, check=positive_int, help="only the first N rows of each split (quick runs)")


@documented(FinetuneSettings)
def finetune(task: str | None = None, *, settings: FinetuneSettings | None = None, **options) -> Run:
    """Fine-tune `settings.model` on the task, one run of every seed; returns the run folder.

    run = fec.finetune("ED", model="offline:all-minilm-l6-v2", epochs=3, seeds=[0, 1])

    The data is read and the settings resolved (folds: config.json records them as resolved), and
    the tokenizer and the model's configuration loaded before the run folder exists, so a bad
    combination leaves nothing behind. The Hub's per-file progress bars are off while it runs
    (once per seed and epoch they would drown the log)."""
    settings = given_record(FinetuneSettings, settings, task=task, **options) or FinetuneSettings(task=task, **options)
    check_outputs(settings)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return finetuned_run(settings)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def finetuned_run(settings: FinetuneSettings) -> Run:
    splits = read_splits(settings)
    train = splits["train"]
    if settings.threshold is not None and not train.multilabel:
        log.warning("-threshold applies to multi-label tasks only; %s is single-label, ignored", settings.task)
    if "test" not in splits:
        log.warning("%s: no test.csv; reporting validation metrics only", settings.task)
    folds = chosen_folds(settings.cv, len(splits["valid"]), len(train))
    given = {field.name: getattr(settings, field.name) for field in fields(FinetuneConfig)}
    cfg = FinetuneConfig(**given | {"threshold": settings.threshold if train.multilabel else None, "cv": folds})
    setup, dropout_set = encoder_setup(settings, cfg, train)
    warmup, planned = planned_warmup(cfg, len(train))
    fingerprint = model_fingerprint(setup.resolved)
    record = run_record(settings, setup, splits, folds) | {
        "model_fingerprint": fingerprint,
        "dropout_set": dropout_set,
        "warmup_steps_used": warmup,
        "planned_steps": planned,
    }
    model = {
        "kind": "finetune",
        "model": settings.model,
        "model_path": str(setup.resolved),
        "model_fingerprint": fingerprint,
        "task": settings.task,
        "label_names": train.label_names,
        "max_len": cfg.max_len,
    }
    if train.multilabel:
        rule = "global" if cfg.threshold is not None else f"per-label, tuned {'out of fold' if cfg.cv else 'on valid'}"
        model |= {"multilabel": True, "threshold_rule": rule, "thresholds": {}}
    scored = ScoredSplits.of(splits)
    plan = RunPlan(
        task=settings.task,
        out=settings.out,
        folder_name=f"{settings.task}_finetune",
        method="finetune",
        seeds=settings.chosen_seeds(),
        sources=[f"finetune:{settings.model}"],
        config=record,
        splits=scored,
        model=model,
        threshold=cfg.threshold,
    )
    datasets = tokenised(splits, setup.tokenizer, cfg.max_len, train.multilabel)
    finished = train_run(plan, FinetunedSeeds(settings.model, setup, SeedPlan(warmup), datasets, scored))
    return Run(Path(finished["run_dir"]))


def read_splits(settings: FinetuneSettings) -> dict[str, Split]:
    present = available_modes(settings.data_dir, settings.task)
    # train and valid are required (a missing one is a one-line DataError); test only when present.
    modes = ["train", "valid"] + (["test"] if "test" in present else [])
    splits = load_splits(settings.data_dir, settings.task, modes, multilabel=True if settings.multilabel else None)
    if settings.limit is not None:
        for split in splits.values():
            split.texts, split.labels = split.texts[: settings.limit], split.labels[: settings.limit]
    return splits


def encoder_setup(settings: FinetuneSettings, cfg: FinetuneConfig, train: Split) -> tuple[FinetuneSetup, dict]:
    """What every seed fine-tunes (the run folder is filled in once it exists), and which dropout
    settings of the model's config `dropout` set; a model, tokenizer or precision that cannot
    work is refused here, before the run folder exists."""
    from transformers import AutoTokenizer

    chosen_device = pick_device(settings.device)
    pick_precision(cfg.dtype, chosen_device)
    resolved = resolve_model(settings.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(resolved))
    except (OSError, ValueError) as err:
        raise ModelError(f"{settings.model}: cannot load its tokenizer ({str(err).splitlines()[0]})") from err
    ensure_pad_token(tokenizer)
    names, multilabel = train.label_names, train.multilabel
    config, dropout_set = classifier_config(resolved, names, multilabel, cfg.dropout, tokenizer.pad_token_id)
    if not dropout_set:
        log.warning("%s: no hidden/attention dropout setting found in its config; -dropout has no effect", settings.model)
    return FinetuneSetup(cfg, resolved, config, tokenizer, names, multilabel, chosen_device, run_dir=None), dropout_set


def run_record(settings: FinetuneSettings, setup: FinetuneSetup, splits: dict[str, Split], folds: int) -> dict:
    """config.json of a fine-tuning run: the settings as resolved, the model and how seeds are selected."""
    cfg = setup.cfg
    if cfg.cv:
        selection = (
            f"{cfg.cv}-fold cross-validation on train (each fold: lowest held-out loss, early stop after "
            f"{cfg.patience} epochs), then all of train for the median epoch count"
        )
    else:
        selection = f"lowest validation loss, early stop after {cfg.patience} epochs without improvement"
    return {
        "args": settings.record() | {"cv": folds if folds and settings.cv is None else settings.cv},
        "option_defaults": FinetuneSettings.defaults(),
        "seeds": settings.chosen_seeds(),
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


def log_seed(result: SeedResult, multilabel: bool) -> None:
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
