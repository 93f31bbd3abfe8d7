"""Linear probes: L2-regularised logistic regression fitted with L-BFGS in torch (CPU or GPU),
C chosen on validation or by K-fold cross-validation on train.

    from fec.classify.linear_probe import select_and_fit
    probe = select_and_fit((x_train, y_train), (x_valid, y_valid), multilabel=False)
    probe.c, probe.selection, probe.predict_proba(x_test)

Single-label: multinomial (softmax) regression. Multi-label: one-vs-rest (one sigmoid per label)
with per-label thresholds tuned on the rows the selection used. The objective is sklearn's
(`C * sum of losses + ||W||^2 / 2`, written per row), so C means what it means there. Features
are standardised with the training rows' mean and std. The C grid is walked from strong to weak
regularisation, each fit starting from the previous solution (warm start), which makes a whole
grid cost little more than its hardest fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fec.classify.outputs import to_predictions, to_probabilities
from fec.core.metrics import classification_metrics, multilabel_metrics, selection_metric, tune_thresholds

C_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
MAX_ITER = 100
WARM_MAX_ITER = 40  # a warm-started fit begins at the previous C's solution
PATIENCE = 2
Rows = tuple[torch.Tensor, torch.Tensor]  # a split's features (N, H) and labels (ids, or multi-hot rows)


@dataclass
class Standardiser:
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor) -> Standardiser:
        return cls(x.mean(dim=0), x.std(dim=0).clamp(min=1e-6))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    c: float,
    multilabel: bool,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    classes: int | None = None,
    max_iter: int = MAX_ITER,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) minimising the mean loss + ||W||^2 / (2 C n) on standardised `x`."""
    n, d = x.shape
    k = y.shape[1] if multilabel else (classes or int(y.max()) + 1)
    weight = (init[0].clone() if init else torch.zeros(d, k, device=x.device)).requires_grad_(True)
    bias = (init[1].clone() if init else torch.zeros(k, device=x.device)).requires_grad_(True)
    optimiser = torch.optim.LBFGS(
        [weight, bias],
        lr=1,
        max_iter=max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-6,
        tolerance_change=1e-10,
    )
    target = y.float() if multilabel else y.long()

    def closure():
        optimiser.zero_grad()
        logits = x @ weight + bias
        if multilabel:  # one-vs-rest: each label's mean loss, summed over labels
            loss = F.binary_cross_entropy_with_logits(logits, target) * k
        else:
            loss = F.cross_entropy(logits, target)
        loss = loss + (weight**2).sum() / (2 * c * n)
        loss.backward()
        return loss

    optimiser.step(closure)
    return weight.detach(), bias.detach()


def probabilities(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, multilabel: bool) -> np.ndarray:
    """The probe's probabilities for the standardised rows `x`."""
    return to_probabilities(x @ weight + bias, multilabel).cpu().numpy()


def score(labels: np.ndarray, probs: np.ndarray, multilabel: bool, thresholds: np.ndarray | None = None) -> dict:
    """The task's metrics (percent) of probabilities: argmax, or per-label thresholds (0.5 if none)."""
    if multilabel:
        return multilabel_metrics(labels, to_predictions(probs, True, 0.5 if thresholds is None else thresholds))
    return classification_metrics(labels, to_predictions(probs, False))


@dataclass
class Probe:
    """A fitted probe: its standardiser, weights, chosen C, thresholds, and how it was chosen."""

    standardiser: Standardiser
    weight: torch.Tensor
    bias: torch.Tensor
    c: float
    multilabel: bool
    thresholds: np.ndarray | None
    selection: dict  # the chosen C's metrics on the rows the choice was made on (valid, or out-of-fold)
    selected_on: str  # "valid" or "cv5"
    curve: dict  # C -> selection metric

    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        return probabilities(self.standardiser(x.float()), self.weight, self.bias, self.multilabel)

    def evaluate(self, x: torch.Tensor, labels: np.ndarray) -> dict:
        return score(labels, self.predict_proba(x), self.multilabel, self.thresholds)


def _walk_grid(x_fit, y_fit, x_eval, labels, multilabel, grid, classes, patience: int | None = PATIENCE) -> list:
    """(probabilities on `x_eval`, fitted weights) for each C of the grid, warm-started, stopping once
    the selection metric on `labels` has not improved for `patience` values of C in a row (the
    curve over C rises to one peak and falls; the weakest penalties cost the most). With
    `patience=None` (or no labels) every C is fitted."""
    out, init, best, since = [], None, None, 0
    for c in grid:
        init = fit_logistic(x_fit, y_fit, c, multilabel, init, classes, max_iter=MAX_ITER if init is None else WARM_MAX_ITER)
        probs = probabilities(x_eval, *init, multilabel)
        out.append((probs, init))
        if patience is None:
            continue
        value = score(labels, probs, multilabel, tune_thresholds(labels, probs) if multilabel else None)
        value = value[selection_metric(multilabel)]
        best, since = (value, 0) if best is None or value > best else (best, since + 1)
        if since >= patience:
            break
    return out


def _choose(labels: np.ndarray, probs_per_c: list[np.ndarray], multilabel: bool, grid) -> tuple[int, np.ndarray | None, dict]:
    """Index of the best C by the selection metric (thresholds tuned on the same rows), its thresholds and curve."""
    key, best, curve = selection_metric(multilabel), None, {}
    for i, (c, probs) in enumerate(zip(grid, probs_per_c, strict=True)):
        thresholds = tune_thresholds(labels, probs) if multilabel else None
        metrics = score(labels, probs, multilabel, thresholds)
        curve[c] = metrics[key]
        if best is None or metrics[key] > best[2][key]:
            best = (i, thresholds, metrics)
    return best[0], best[1], best[2] | {"curve": curve}


def select_and_fit(
    train: Rows, valid: Rows | None, multilabel: bool, *, cv: int = 0, seed: int = 0, grid=C_GRID, device: str = "cpu"
) -> Probe:
    """Choose C (and multi-label thresholds) on `valid`, or with `cv` > 1 by `cv`-fold
    cross-validation on train (out-of-fold predictions; `valid` may then be None), then return the
    probe trained on all of `train`."""
    (x_train, y_train), (x_valid, y_valid) = train, valid or (None, None)
    device = torch.device(device)
    standardiser = Standardiser.fit(x_train.float().to(device))
    xt, yt = standardiser(x_train.float().to(device)), y_train.to(device)
    classes = None if multilabel else int(max(int(y_train.max()), int(y_valid.max()) if y_valid is not None else 0)) + 1
    if cv > 1:
        folds = np.random.default_rng(seed).permutation(len(xt)) % cv
        oof = [np.zeros((len(xt), y_train.shape[1] if multilabel else classes), dtype=np.float32) for _ in grid]
        raw = x_train.float().to(device)
        for fold in range(cv):
            held = torch.from_numpy(folds == fold).to(device)
            fold_scale = Standardiser.fit(raw[~held])  # the held-out rows never inform the scaling
            fitted = _walk_grid(
                fold_scale(raw[~held]), yt[~held], fold_scale(raw[held]), None, multilabel, grid, classes, patience=None
            )
            for i, (probs, _) in enumerate(fitted):
                oof[i][held.cpu().numpy()] = probs
        index, thresholds, chosen = _choose(y_train.numpy(), oof, multilabel, grid)
        weight, bias = None, None
        for c in grid[: index + 1]:  # the same warm-started path as the folds took
            warm = (weight, bias) if weight is not None else None
            weight, bias = fit_logistic(xt, yt, c, multilabel, warm, classes, max_iter=WARM_MAX_ITER if warm else MAX_ITER)
        selected_on = f"cv{cv}"
    else:
        xv = standardiser(x_valid.float().to(device))
        fitted = _walk_grid(xt, yt, xv, y_valid.numpy(), multilabel, grid, classes)
        index, thresholds, chosen = _choose(y_valid.numpy(), [p for p, _ in fitted], multilabel, grid[: len(fitted)])
        weight, bias = fitted[index][1]
        selected_on = "valid"
    curve = chosen.pop("curve")
    return Probe(standardiser, weight, bias, grid[index], multilabel, thresholds, chosen, selected_on, curve)
