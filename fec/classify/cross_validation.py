"""Selection by K-fold cross-validation on train, for tasks whose validation split is too small
to choose on (semeval_eng's has 116 rows).

    from fec.classify.cross_validation import train_seed_cv
    result = train_seed_cv(data, TrainConfig(cv=5), seed=0)
    result.cv["oof"], result.cv["epochs_used"], result.test

For each of K folds of train, the model is trained on the other folds with the usual early
stopping, judged on the held-out fold; the out-of-fold predictions of the K selected states
give the cross-validated metric (the selection metric such a run reports) and, for multi-label
tasks, the per-label thresholds. The final model is then trained on all of train for the median
of the folds' best epoch counts and evaluated once on valid (kept as a check) and test.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import torch

from fec.classify.fusion_inputs import FusionData
from fec.classify.fusion_training import SeedResult, TrainConfig, train_seed
from fec.classify.members import Member, train_members
from fec.classify.outputs import to_predictions
from fec.core.errors import SettingError
from fec.core.metrics import classification_metrics, multilabel_metrics, tune_thresholds

log = logging.getLogger(__name__)

CV_AUTO_ROWS = 1000
CV_AUTO_FOLDS = 5


def folds_for(cfg_cv: int | None, valid_rows: int, train_rows: int) -> int:
    """The number of folds: as asked (0 = select on valid), else 5 when valid is small both in
    rows (under CV_AUTO_ROWS) and beside train (under a tenth of it), where cross-validation on
    train has many more rows to judge by."""
    if cfg_cv is not None:
        return cfg_cv
    return CV_AUTO_FOLDS if valid_rows < CV_AUTO_ROWS and valid_rows * 10 < train_rows else 0


def check_folds(folds: int, train_rows: int, zero: str | None = "select on valid") -> None:
    """The one rule for every command's `--cv` (the folds setting): 0 (when the command can `zero`, i.e. select
    without folds) or 2 to as many folds as train has rows; one fold holds nothing out."""
    if folds == 1 or folds > train_rows or (folds == 0 and zero is None):
        choices = f"0 ({zero}) or 2 to {train_rows} folds" if zero else f"2 to {train_rows} folds"
        raise SettingError("cv", folds, f"give {choices} (train has {train_rows} rows)")


def chosen_folds(cv: int | None, valid_rows: int, train_rows: int, auto: int | None = None) -> int:
    """A command's `--cv`, resolved: as given, or `folds_for`'s choice (`auto` stands in for an unset
    `--cv`). One fold, or more folds than train rows, is refused; a choice made here is logged (the
    command records it in config.json, so report.py never pools these runs with valid-selected ones)."""
    folds = folds_for(cv if cv is not None else auto, valid_rows, train_rows)
    check_folds(folds, train_rows)
    if folds and cv is None:
        log.info(
            "valid has %d rows: selecting by %d-fold cross-validation on train (--cv 0 to select on valid)", valid_rows, folds
        )
    return folds


def fold_assignment(rows: int, folds: int, seed: int) -> np.ndarray:
    """Each train row's fold, 0..folds-1: a seeded permutation, so fold sizes differ by at most one."""
    return np.random.default_rng(seed).permutation(rows) % folds


def out_of_fold_selection(
    labels: np.ndarray, oof: np.ndarray, multilabel: bool, threshold: float | None
) -> tuple[np.ndarray | None, dict]:
    """From out-of-fold probabilities: the multi-label thresholds (tuned per label, or the global
    `threshold`; None for single-label tasks) and the cross-validated metrics they give."""
    if not multilabel:
        return None, classification_metrics(labels, to_predictions(oof, False))
    thresholds = tune_thresholds(labels, oof) if threshold is None else np.full(oof.shape[1], threshold)
    return thresholds, multilabel_metrics(labels, to_predictions(oof, True, thresholds))


def fold_data(data: FusionData, fit: torch.Tensor, held: torch.Tensor) -> FusionData:
    """The task with train cut to `fit` and the held-out fold in valid's place (no test)."""
    train = data.splits["train"]
    splits = {"train": train.subset(fit), "valid": train.subset(held)}
    return dataclasses.replace(data, splits=splits)


@dataclass
class CrossValidated:
    """One seed's K folds: every train row's out-of-fold probabilities, the thresholds and metrics
    they give, and each fold's best epoch count."""

    seed: int
    folds: int
    oof: np.ndarray  # (train rows, labels)
    thresholds: np.ndarray | None
    metrics: dict
    fold_epochs: list[int]

    @property
    def epochs_used(self) -> int:
        """The epochs of the model trained on all of train: the median of the folds' best."""
        return max(1, int(np.median(self.fold_epochs)))


def cross_validate(data: FusionData, cfg: TrainConfig, seed: int, device: torch.device | str = "cpu") -> CrossValidated:
    """One seed's `cfg.cv` folds of train, each trained on the others and selected on itself: what
    the search scores a candidate by (the model on all of train is `train_seed_cv`'s last step)."""
    train, folds = data.splits["train"], cfg.cv
    if folds < 2 or folds > len(train):
        raise SettingError("cv", folds, f"needs 2 to {len(train)} folds")
    assignment = torch.from_numpy(fold_assignment(len(train), folds, seed)).to(train.labels.device)
    oof = np.zeros((len(train), len(data.label_names)), dtype=np.float32)
    epochs = []
    members = [
        Member(seed, (assignment != fold).nonzero().flatten(), (assignment == fold).nonzero().flatten()) for fold in range(folds)
    ]
    if torch.device(device).type == "cuda":  # one batched model: a GPU idles on one small head (on a CPU it is no faster)
        results = train_members(data, cfg, members, device)
    else:
        results = (train_seed(fold_data(data, member.fit, member.held), cfg, seed, device) for member in members)
    for fold, (member, result) in enumerate(zip(members, results, strict=True)):
        oof[member.held.cpu().numpy()] = result.probabilities["valid"]
        epochs.append(result.best_epoch + 1)
        log.info("seed %d: fold %d/%d: best epoch %d", seed, fold + 1, folds, result.best_epoch)
    thresholds, oof_metrics = out_of_fold_selection(train.labels.cpu().numpy(), oof, data.multilabel, cfg.threshold)
    return CrossValidated(seed, folds, oof, thresholds, oof_metrics, epochs)


def train_seed_cv(data: FusionData, cfg: TrainConfig, seed: int, device: torch.device | str = "cpu") -> SeedResult:
    """One seed selected by `cfg.cv`-fold cross-validation on train, then trained on all of train."""
    cv = cross_validate(data, cfg, seed, device)
    shown = " ".join(f"{k} {v:.2f}" for k, v in cv.metrics.items() if not isinstance(v, dict))
    log.info("seed %d: %d-fold CV: out-of-fold %s; training on all of train for %d epochs", seed, cv.folds, shown, cv.epochs_used)
    final = train_seed(
        data, dataclasses.replace(cfg, epochs=cv.epochs_used), seed, device, keep_last=True, thresholds=cv.thresholds
    )
    final.cv = {"folds": cv.folds, "fold_best_epochs": cv.fold_epochs, "epochs_used": cv.epochs_used, "oof": cv.metrics}
    return final
