"""From a classifier's logits to probabilities and predicted labels, one rule for every classifier.

    from fec.classify.outputs import to_predictions, to_probabilities
    probs = to_probabilities(logits, multilabel).cpu().numpy()
    preds = to_predictions(probs, multilabel, thresholds)

Single-label: softmax over the labels, the most probable label predicted. Multi-label: one sigmoid
per label, each label predicted where its probability reaches its decision threshold.
"""

from __future__ import annotations

import numpy as np
import torch


def to_probabilities(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """(N, C) probabilities of (N, C) logits, in the logits' dtype and device."""
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


def to_predictions(probs: np.ndarray, multilabel: bool, thresholds: np.ndarray | float = 0.5) -> np.ndarray:
    """Predicted ids (N,), or multi-hot rows (N, C) where each probability reaches `thresholds`
    (one per label, or one for all)."""
    if multilabel:
        return (probs >= np.asarray(thresholds)).astype(np.int64)
    return probs.argmax(axis=1)
