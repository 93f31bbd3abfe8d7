"""Train and evaluate the fusion classifier: the published recipe, with selection on validation only.

    from fec.classify.fusion_training import TrainConfig, train_seed
    result = train_seed(data, TrainConfig(), seed=0)
    result.test, result.best_epoch

Adam, lr 1e-4, batch 10, up to 200 epochs; an epoch improves when validation loss falls below
its best OR validation weighted F1 rises above its best; training stops after `early_stop`
epochs without improvement. The state of the last improving epoch is kept in memory and the
test split is evaluated once, on that state.

Multi-label tasks (multi-hot labels, e.g. SemEval 2025 Task 11) use the same loop with
BCE-with-logits on the multi-hot targets, and validation macro-F1 (at the global threshold:
0.5, or `threshold` when set) in place of weighted F1 in the improvement rule. After training,
one decision threshold per label is tuned on validation (`tune_thresholds`: the grid
0.05..0.95, each label's F1 maximised) unless a global `threshold` is set; test is evaluated
once with those thresholds. Metrics: macro-F1 (SemEval's official one), micro-F1, per-label F1,
subset accuracy and Jaccard (samples average).

The loop is built for speed: features stay resident on the device, batches are drawn by
shuffled index (no DataLoader), metrics are computed once per epoch on the whole split, Adam is
the fused kernel, and on CPU freed gradient buffers stay in the process (fec/classify/allocator.py).
"""

from __future__ import annotations

import copy
import logging
import random
import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from fec.classify.allocator import keep_freed_memory
from fec.classify.fusion import DownstreamModel, FusionOptions
from fec.classify.fusion_inputs import FusionData, SplitInputs
from fec.classify.outputs import to_predictions, to_probabilities
from fec.classify.seed_result import SeedResultBase, scored_splits
from fec.core.errors import SettingError
from fec.core.metrics import classification_metrics, multilabel_metrics, tune_thresholds

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 200
    early_stop: int = 10
    batch_size: int = 10
    lr: float = 1e-4
    sigma: float = 1.0
    pn: str = "sigmoid"
    dropout: float = 0.5
    norm: str = "zscore"
    fusion_dim: int | None = None
    raw_inputs: str = "decoder"  # "all": the encoder vectors reach the MLP directly too (not published)
    eval_batch_size: int = 2048
    threshold: float | None = None  # multi-label only: None = per-label thresholds tuned on validation
    # K-fold CV on train picks epochs (and thresholds); 0 = on valid; None (main.py's default) = decided
    # from the splits' sizes by fec.classify.cross_validation.folds_for
    cv: int | None = None


@dataclass
class SeedResult(SeedResultBase):
    """One seed of the fusion classifier (or of fine-tuning, `fec.classify.finetuning`), selected
    and scored; `summary()` is its entry in results.json."""

    seed: int
    best_epoch: int
    epochs_run: int
    valid: dict
    test: dict | None
    train_seconds: float
    history: list[dict] = field(default_factory=list)
    state_dict: dict | None = None
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # split -> predicted ids (multi-hot rows when multi-label)
    thresholds: list[float] | None = None  # multi-label: the per-label decision thresholds used for valid/test
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (N, C) softmax / sigmoid outputs
    valid_at_05: dict | None = None  # multi-label: validation metrics at the global threshold 0.5, for comparison
    pn_saturated: float | None = None  # fusion: % of pooled values on valid with |value| > SATURATION_LEVEL
    # Single-label main.py runs: the best validation loss was no lower than guessing the train label
    # frequencies (`at_chance`); report.py counts these, since a mean over such seeds hides two outcomes.
    at_chance: bool | None = None
    cv: dict | None = None  # selected by K-fold CV on train: folds, each fold's best epoch, out-of-fold metrics

    UNSUMMARISED: ClassVar[tuple[str, ...]] = ("state_dict", "predictions", "probabilities")
    OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ("thresholds", "valid_at_05", "pn_saturated", "at_chance", "cv")


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def input_stats(inputs: list[torch.Tensor], eps: float = 1e-6) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-source, per-feature mean and std of the training split (std floored at `eps`)."""
    stats = []
    for x in inputs:
        x = x.double()
        stats.append((x.mean(dim=0).float(), x.std(dim=0, unbiased=False).clamp(min=eps).float()))
    return stats


def step_flops(model: torch.nn.Module, batch_size: int) -> float:
    """About the arithmetic of one training step: forward and backward, 6 FLOPs per weight and row."""
    return 6.0 * sum(p.numel() for p in model.parameters()) * batch_size


def build_model(data: FusionData, cfg: TrainConfig) -> DownstreamModel:
    """The fusion model for `data`'s features and labels with `cfg`'s settings, standardising its
    inputs with the train split's statistics under `-norm zscore`."""
    options = FusionOptions(fusion_dim=cfg.fusion_dim, sigma=cfg.sigma, pn=cfg.pn, dropout=cfg.dropout, raw_inputs=cfg.raw_inputs)
    model = DownstreamModel(len(data.label_names), data.decoder_shapes, data.encoder_dims, options)
    if cfg.norm == "zscore":
        # Frozen LLM states carry massive activations (a few dims thousands of times larger than
        # the rest); fed raw, the published model trains at chance on them. Train statistics only.
        model.set_input_stats(input_stats([x.cpu() for x in data.splits["train"].inputs]))
    elif cfg.norm != "none":
        raise SettingError("norm", cfg.norm, "choose zscore or none")
    return model


@torch.inference_mode()
def predict_logits(model: DownstreamModel, split: SplitInputs, batch_size: int) -> torch.Tensor:
    model.eval()
    chunks = [model(*(x[start : start + batch_size] for x in split.inputs)) for start in range(0, len(split), batch_size)]
    return torch.cat(chunks)


SATURATION_LEVEL = 0.99
# A selected state whose validation loss is within 2% of the label prior's entropy learned nothing
# a constant guess of the train label frequencies would not give.
CHANCE_MARGIN = 0.98


def prior_entropy(labels: torch.Tensor) -> float:
    """Entropy (nats) of the label frequencies: the cross-entropy of always predicting them."""
    p = torch.bincount(labels.flatten().long()).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


def at_chance(valid_loss: float, chance_loss: float) -> bool:
    """True when a single-label model's validation cross-entropy is no better than `chance_loss`
    (`prior_entropy` of the train labels: their frequencies guessed for every text)."""
    return bool(valid_loss >= CHANCE_MARGIN * chance_loss)


@torch.inference_mode()
def pooled_saturation(model: DownstreamModel, split: SplitInputs, batch_size: int, level: float = SATURATION_LEVEL) -> float:
    """Percent of the power-normalised Gram values with |value| > `level` on a split. Near 100, the
    pooled interactions reach the MLP as little more than signs (too large a sigma for the inputs'
    scale); `main.py` logs it for the selected state."""
    model.eval()
    saturated = total = 0
    for start in range(0, len(split), batch_size):
        pooled = model.pooled(*(x[start : start + batch_size] for x in split.inputs))
        saturated += int((pooled.abs() > level).sum())
        total += pooled.numel()
    return 100.0 * saturated / max(total, 1)


@dataclass(frozen=True)
class Scoring:
    """How a split's logits become predictions and metrics: the argmax (single-label), or each label
    where its sigmoid reaches `thresholds` (one per label, or one for all), with per-label F1 when
    `label_names` are given."""

    multilabel: bool = False
    thresholds: np.ndarray | float = 0.5
    label_names: list[str] | None = None


SINGLE_LABEL = Scoring()


def evaluate(
    model: DownstreamModel,
    split: SplitInputs,
    batch_size: int,
    scoring: Scoring = SINGLE_LABEL,
    into: SeedResult | None = None,
    name: str = "",
) -> dict:
    """Loss and the task's metrics on a whole split: cross-entropy, accuracy, weighted and macro F1;
    multi-label: BCE and `multilabel_metrics`. With `into`, the predicted ids and the probabilities
    go to `into.predictions[name]` and `into.probabilities[name]`, for the run's files and the seed ensemble."""
    logits = predict_logits(model, split, batch_size)
    metrics, preds, probs = scored_logits(logits, split.labels, scoring, keep_probabilities=into is not None)
    if into is not None:
        into.predictions[name], into.probabilities[name] = preds, probs
    return metrics


def scored_logits(
    logits: torch.Tensor, labels: torch.Tensor, scoring: Scoring, keep_probabilities: bool = False
) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """A split's loss and metrics from its logits, with the predictions and (multi-label, or when
    kept) the probabilities they came from."""
    probs = None
    if scoring.multilabel or keep_probabilities:  # multi-label predictions are thresholded probabilities
        probs = to_probabilities(logits.float(), scoring.multilabel).cpu().numpy()
    if scoring.multilabel:
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float()).item()
        preds = to_predictions(probs, True, scoring.thresholds)
        metrics = multilabel_metrics(labels.cpu().numpy(), preds, scoring.label_names)
    else:
        loss = F.cross_entropy(logits, labels).item()
        preds = logits.argmax(dim=1).cpu().numpy()
        metrics = classification_metrics(labels.cpu().numpy(), preds)
    return {"loss": loss, **metrics}, preds, probs


def score_splits(model: DownstreamModel, data: FusionData, batch_size: int, scoring: Scoring, result: SeedResult) -> None:
    """The selected state scored once on valid and on test (when the task has one), into `result`."""
    scored = {name: evaluate(model, data.splits[name], batch_size, scoring, result, name) for name in scored_splits(data.splits)}
    result.valid, result.test = scored["valid"], scored.get("test")


def train_seed(
    data: FusionData,
    cfg: TrainConfig,
    seed: int,
    device: torch.device | str = "cpu",
    *,
    keep_last: bool = False,
    thresholds: np.ndarray | None = None,
) -> SeedResult:
    """Train one seeded run; `data` should already be on `device`. `keep_last` trains exactly
    `cfg.epochs` epochs and keeps the last state (the epoch count was chosen elsewhere, by
    cross-validation); multi-label `thresholds` given are used instead of tuning them on valid."""
    generator = seed_everything(seed)
    if torch.device(device).type == "cpu":
        keep_freed_memory()  # no page faults on each step's fresh gradient buffers (fec/classify/allocator.py)
    model = build_model(data, cfg).to(device)
    # The fused kernel does the same Adam update in one pass over each parameter and its state
    # (the default per-tensor loop on CPU makes several); at batch 10 the update is a large part of a step.
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
    valid, multilabel = data.splits["valid"], data.multilabel
    # Multi-label: BCE on float multi-hot targets; selection and train metrics at the global threshold.
    select = "macro_f1" if multilabel else "wf1"
    global_threshold = 0.5 if cfg.threshold is None else cfg.threshold
    during = Scoring(multilabel, global_threshold)
    best_loss, best_score = float("inf"), -1.0
    best_state, best_epoch, stale = None, -1, 0
    history = []
    started = time.perf_counter()
    for epoch in range(cfg.epochs):
        epoch_start = time.perf_counter()
        train_metrics = train_epoch(model, optimizer, data, cfg, generator, global_threshold, device)
        valid_metrics = evaluate(model, valid, cfg.eval_batch_size, during)
        improved = keep_last
        if valid_metrics["loss"] < best_loss:
            best_loss, improved = valid_metrics["loss"], True
        if valid_metrics[select] > best_score:
            best_score, improved = valid_metrics[select], True
        if improved:
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            best_epoch, stale = epoch, 0
        else:
            stale += 1
        seconds = round(time.perf_counter() - epoch_start, 3)
        history.append({"epoch": epoch, "train": train_metrics, "valid": valid_metrics, "improved": improved, "seconds": seconds})
        log_epoch(seed, epoch, train_metrics, valid_metrics, improved, seconds, multilabel)
        if stale >= cfg.early_stop and not keep_last:
            log.info("seed %d: early stop after %d epochs without improvement", seed, stale)
            break
    train_seconds = round(time.perf_counter() - started, 2)
    model.load_state_dict(best_state)
    result = SeedResult(
        seed, best_epoch, len(history), valid={}, test=None, train_seconds=train_seconds, history=history, state_dict=best_state
    )
    if multilabel:
        finish_multilabel(model, data, cfg, result, thresholds)
    else:
        score_splits(model, data, cfg.eval_batch_size, SINGLE_LABEL, result)
    result.pn_saturated = pooled_saturation(model, valid, cfg.eval_batch_size)
    return result


def mean_probabilities(results: list[SeedResult]) -> dict[str, np.ndarray]:
    """Per split, the mean of the seeds' probabilities: what the seeds predict together."""
    return {name: np.mean([r.probabilities[name] for r in results], axis=0) for name in results[0].probabilities}


def seed_ensemble(
    results: list[SeedResult], labels: dict[str, np.ndarray], multilabel: bool, threshold: float | None = None
) -> dict | None:
    """Metrics of the mean of the seeds' probabilities (not a single model: every seed is needed
    to predict). Multi-label thresholds: a global `threshold` when set; under cross-validation
    the mean of the seeds' out-of-fold thresholds (valid stays a check); else tuned on the
    ensemble's valid probabilities. None for fewer than two seeds."""
    if len(results) < 2:
        return None
    probs = mean_probabilities(results)
    out: dict = {"seeds": [r.seed for r in results], "rule": "mean of the seeds' probabilities"}
    if multilabel:
        if threshold is not None:
            cut = np.full(probs["valid"].shape[1], threshold)
        elif results[0].cv:
            cut = np.mean([r.thresholds for r in results], axis=0)
        else:
            cut = tune_thresholds(labels["valid"], probs["valid"])
        out["thresholds"] = [float(t) for t in cut]
        for name, p in probs.items():
            out[name] = multilabel_metrics(labels[name], to_predictions(p, True, cut))
    else:
        for name, p in probs.items():
            out[name] = classification_metrics(labels[name], to_predictions(p, False))
    return out


def train_epoch(
    model: DownstreamModel, optimizer, data: FusionData, cfg: TrainConfig, generator: torch.Generator, threshold: float, device
) -> dict:
    """One pass over train in shuffled batches; the epoch's train loss and metrics."""
    train, multilabel = data.splits["train"], data.multilabel
    n = len(train)
    targets = train.labels.float() if multilabel else train.labels
    model.train()
    order = torch.randperm(n, generator=generator).to(device)
    loss_sum = torch.zeros((), device=device)
    preds = torch.empty(tuple(train.labels.shape), dtype=torch.long, device=device)
    for start in range(0, n, cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        logits = model(*(x[idx] for x in train.inputs))
        if multilabel:
            loss = F.binary_cross_entropy_with_logits(logits, targets[idx])
        else:
            loss = F.cross_entropy(logits, train.labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(idx)
        if multilabel:
            preds[idx] = (to_probabilities(logits.detach(), True) >= threshold).long()
        else:
            preds[idx] = logits.detach().argmax(dim=1)
    metrics = multilabel_metrics if multilabel else classification_metrics
    return {"loss": (loss_sum / n).item(), **metrics(train.labels.cpu().numpy(), preds.cpu().numpy())}


def log_epoch(seed: int, epoch: int, train: dict, valid: dict, improved: bool, seconds: float, multilabel: bool) -> None:
    """One line per epoch in train.log: train and valid loss and the selection metrics, `*` on an improving epoch."""
    if multilabel:
        shown = "train BCE %.4f macro-F1 %.2f | valid BCE %.4f macro-F1 %.2f micro-F1 %.2f"
        values = (train["loss"], train["macro_f1"], valid["loss"], valid["macro_f1"], valid["micro_f1"])
    else:
        shown = "train loss %.4f acc %.2f wF1 %.2f | valid loss %.4f acc %.2f wF1 %.2f"
        values = (train["loss"], train["acc"], train["wf1"], valid["loss"], valid["acc"], valid["wf1"])
    log.info("seed %d epoch %3d | " + shown + "%s | %.1fs", seed, epoch, *values, " *" if improved else "", seconds)


def finish_multilabel(
    model: DownstreamModel, data: FusionData, cfg: TrainConfig, result: SeedResult, chosen: np.ndarray | None = None
) -> None:
    """The selected state's thresholds (`chosen`, else tuned on validation, or the global one), then
    valid at 0.5 for comparison, and valid and test once at those thresholds, into `result`."""
    valid, names = data.splits["valid"], data.label_names
    if chosen is not None:
        thresholds = np.asarray(chosen)
    elif cfg.threshold is None:
        probs = to_probabilities(predict_logits(model, valid, cfg.eval_batch_size).float(), True).cpu().numpy()
        thresholds = tune_thresholds(valid.labels.cpu().numpy(), probs)
    else:
        thresholds = np.full(len(names), float(cfg.threshold))
    result.thresholds = [float(t) for t in thresholds]
    result.valid_at_05 = evaluate(model, valid, cfg.eval_batch_size, Scoring(True, 0.5, names))
    score_splits(model, data, cfg.eval_batch_size, Scoring(True, thresholds, names), result)
    log.info(
        "seed %d: thresholds %s | valid macro-F1 %.2f at 0.5, %.2f at these",
        result.seed,
        " ".join(f"{n}={t:.2f}" for n, t in zip(names, thresholds, strict=False)),
        result.valid_at_05["macro_f1"],
        result.valid["macro_f1"],
    )
