"""Predictions as a table, the CSV `predict.py --output` writes: one row per text.

    clf = EmotionClassifier.load("Logs/ED_20261122-101500")
    probs = clf.predict_proba(texts)
    prediction_table(clf, texts, probs, topk=3).to_csv("predictions.csv", index=False)

Columns: the input table's (or `text`), `label` (the most likely; for a multi-label run every
label at or above its threshold, joined by `+`), `prob` (the first label's probability; empty for
a multi-label text with none), `p_LABEL` per label for multi-label runs, and `topk`
(`label:prob` pairs, most likely first).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fec.inference.classifier import LabelRanking


def prediction_table(
    classifier: LabelRanking, texts: list[str], probs: np.ndarray, topk: int = 3, frame: pd.DataFrame | None = None
) -> pd.DataFrame:
    """`frame` (the table the texts came from; default a `text` column) with the predictions of `probs` added."""
    ranked = classifier.rank(probs, topk=topk)
    table = frame.copy() if frame is not None else pd.DataFrame({"text": texts})
    if classifier.multilabel:
        table["label"] = ["+".join(label for label, _ in labels) for labels in ranked]
        table["prob"] = [round(labels[0][1], 6) if labels else None for labels in ranked]
        for j, name in enumerate(classifier.label_names):
            table[f"p_{name}"] = probs[:, j].round(6)
    else:
        table["label"] = [labels[0][0] for labels in ranked]
        table["prob"] = [round(labels[0][1], 6) for labels in ranked]
    table["topk"] = [" ".join(f"{label}:{prob:.4f}" for label, prob in labels) for labels in ranked]
    return table
