"""Train and evaluate the fusion classifier: the published recipe, with selection on validation only.

    from fec.train import TrainConfig, train_seed
    result = train_seed(data, TrainConfig(), seed=0)
    result.test, result.best_epoch

Adam, lr 1e-4, batch 10, up to 200 epochs; an epoch improves when validation loss falls below
its best OR validation weighted F1 rises above its best; training stops after `early_stop`
epochs without improvement. The state of the last improving epoch is kept in memory and the
test split is evaluated once, on that state.

The loop is built for speed: features stay resident on the device, batches are drawn by
shuffled index (no DataLoader), and metrics are computed once per epoch on the whole split.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score

from fec.fusion import DownstreamModel
from fec.fusion_data import FusionData, SplitInputs

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
    eval_batch_size: int = 2048


@dataclass
class SeedResult:
    seed: int
    best_epoch: int
    epochs_run: int
    valid: dict
    test: dict | None
    train_seconds: float
    history: list[dict] = field(default_factory=list)
    state_dict: dict | None = None
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # split -> predicted ids

    def summary(self) -> dict:
        out = asdict(self)
        out.pop("state_dict")
        out.pop("predictions")
        return out


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


def build_model(data: FusionData, cfg: TrainConfig) -> DownstreamModel:
    model = DownstreamModel(
        num_classes=len(data.label_names),
        decoder_shape=data.decoder_shape,
        encoder_dims=data.encoder_dims,
        fusion_dim=cfg.fusion_dim,
        sigma=cfg.sigma,
        pn=cfg.pn,
        dropout=cfg.dropout,
    )
    if cfg.norm == "zscore":
        # Frozen LLM states carry massive activations (a few dims thousands of times larger than
        # the rest); fed raw, the published model trains at chance on them. Train statistics only.
        model.set_input_stats(input_stats([x.cpu() for x in data.splits["train"].inputs]))
    elif cfg.norm != "none":
        raise ValueError(f"-norm {cfg.norm}: choose zscore or none")
    return model


def classification_metrics(labels: np.ndarray, preds: np.ndarray) -> dict:
    return {
        "acc": 100 * accuracy_score(labels, preds),
        "wf1": 100 * f1_score(labels, preds, average="weighted", zero_division=0),
        "macro_f1": 100 * f1_score(labels, preds, average="macro", zero_division=0),
    }


@torch.inference_mode()
def predict_logits(model: DownstreamModel, split: SplitInputs, batch_size: int) -> torch.Tensor:
    model.eval()
    chunks = [
        model(*(x[start : start + batch_size] for x in split.inputs)) for start in range(0, len(split), batch_size)
    ]
    return torch.cat(chunks)


def evaluate(model: DownstreamModel, split: SplitInputs, batch_size: int, preds_out: dict | None = None, name: str = "") -> dict:
    """Loss, accuracy, weighted and macro F1 on a whole split; predicted ids go to `preds_out[name]`."""
    logits = predict_logits(model, split, batch_size)
    loss = F.cross_entropy(logits, split.labels).item()
    preds = logits.argmax(dim=1).cpu().numpy()
    if preds_out is not None:
        preds_out[name] = preds
    return {"loss": loss, **classification_metrics(split.labels.cpu().numpy(), preds)}


def train_seed(data: FusionData, cfg: TrainConfig, seed: int, device: torch.device | str = "cpu") -> SeedResult:
    """Train one seeded run; `data` should already be on `device`."""
    generator = seed_everything(seed)
    model = build_model(data, cfg).to(device)
    # The fused kernel does the same Adam update in one pass over the parameters: at batch 10 the
    # optimiser step, not the model, dominates a step's time on CPU (5 ms vs 18-80 ms measured).
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
    train, valid = data.splits["train"], data.splits["valid"]
    n = len(train)
    best_loss, best_wf1 = float("inf"), -1.0
    best_state, best_epoch, stale = None, -1, 0
    history = []
    started = time.perf_counter()
    for epoch in range(cfg.epochs):
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        loss_sum = torch.zeros((), device=device)
        preds = torch.empty(n, dtype=torch.long, device=device)
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            logits = model(*(x[idx] for x in train.inputs))
            loss = F.cross_entropy(logits, train.labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(idx)
            preds[idx] = logits.detach().argmax(dim=1)
        train_metrics = {"loss": (loss_sum / n).item(), **classification_metrics(train.labels.cpu().numpy(), preds.cpu().numpy())}
        valid_metrics = evaluate(model, valid, cfg.eval_batch_size)
        improved = False
        if valid_metrics["loss"] < best_loss:
            best_loss, improved = valid_metrics["loss"], True
        if valid_metrics["wf1"] > best_wf1:
            best_wf1, improved = valid_metrics["wf1"], True
        if improved:
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            best_epoch, stale = epoch, 0
        else:
            stale += 1
        row = {"epoch": epoch, "train": train_metrics, "valid": valid_metrics, "improved": improved,
               "seconds": round(time.perf_counter() - epoch_start, 3)}
        history.append(row)
        log.info(
            "seed %d epoch %3d | train loss %.4f acc %.2f wF1 %.2f | valid loss %.4f acc %.2f wF1 %.2f%s | %.1fs",
            seed, epoch, train_metrics["loss"], train_metrics["acc"], train_metrics["wf1"],
            valid_metrics["loss"], valid_metrics["acc"], valid_metrics["wf1"], " *" if improved else "", row["seconds"],
        )
        if stale >= cfg.early_stop:
            log.info("seed %d: early stop after %d epochs without improvement", seed, stale)
            break
    train_seconds = time.perf_counter() - started
    model.load_state_dict(best_state)
    predictions: dict[str, np.ndarray] = {}
    valid_best = evaluate(model, valid, cfg.eval_batch_size, predictions, "valid")
    test = evaluate(model, data.splits["test"], cfg.eval_batch_size, predictions, "test") if "test" in data.splits else None
    return SeedResult(seed, best_epoch, len(history), valid_best, test, round(train_seconds, 2), history, best_state, predictions)


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample std (ddof=1); std is None for a single value."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def summarise(results: list[SeedResult]) -> dict:
    summary = {}
    for split in ("valid", "test"):
        rows = [getattr(r, split) for r in results if getattr(r, split) is not None]
        if rows:
            summary[split] = {k: dict(zip(("mean", "std"), mean_std([r[k] for r in rows]))) for k in ("acc", "wf1", "macro_f1")}
    return summary


def format_summary(stats: dict) -> str:
    """`Acc: 60.44±0.47 | wF1: 59.80±0.54 | macro-F1: 45.10±0.70`, as the paper reports."""
    def one(m):
        return f"{m['mean']:.2f}" + (f"±{m['std']:.2f}" if m["std"] is not None else "")

    return f"Acc: {one(stats['acc'])} | wF1: {one(stats['wf1'])} | macro-F1: {one(stats['macro_f1'])}"
