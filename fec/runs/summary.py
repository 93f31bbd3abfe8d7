"""One finished run folder read back into what its page (`fec.runs.page`) and its model card
(`fec.runs.card`) show: headline metrics, seeds, per-label scores, confusions, example
predictions and provenance. Every number comes from the folder's own files.

    from fec.runs.summary import load_summary
    summary = load_summary(Path("Logs/ED_20261202-011000"))
    summary.stats["acc"]        # {"mean": 58.77, "std": 0.59}, over the seeds of results.json

A run's option defaults are its own (config.json's `option_defaults`); for runs written before
runs recorded them, `defaults` passes them in (`report.py --html` passes today's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fec.core.compat_setting import TRAIN_CORRECTED, TRAIN_REFERENCE
from fec.core.metrics import MULTILABEL_HEADLINE, SINGLE_LABEL_KEYS, binary_f1_grid
from fec.runs.catalogue import PAPER_RESULTS, BackboneInfo, DatasetInfo, backbone_info, dataset_info
from fec.runs.predictions import LABEL_JOIN, Predictions, read_predictions
from fec.runs.report import load_run
from fec.runs.run_files import compat_setting, read_config, read_model_spec, read_results

METHODS = {
    "main.py": "fusion of frozen features",
    "finetune.py": "fine-tuning",
    "baselines/tfidf.py": "TF-IDF baseline",
    "tune.py": "ensemble of fusion runs chosen by tune.py",
}
METHOD_TAGS = {"main.py": "frozen-features", "finetune.py": "fine-tuned", "baselines/tfidf.py": "tf-idf"}
EXAMPLE_ERRORS, EXAMPLE_CORRECT, PAIRS_SHOWN, TEXTS_PER_PAIR = 15, 5, 10, 2


@dataclass
class BackboneRow:
    """One row of the backbones table of a run's page and model card: a source, the model behind it and how it was read."""

    slot: str
    info: BackboneInfo
    pooling: str
    layers: str
    dtype: str
    store_dir: str


@dataclass
class RunSummary:
    folder: Path
    task: str
    script: str
    command: str
    compat: str  # main.py's compat setting (corrected, reference, custom:...); empty for other scripts
    recipe_file: str | None  # the --recipe file the run read its options from
    notes: list[str]  # the compat setting and the options that shape the run, in words
    config: dict
    results: dict
    label_names: list[str]
    multilabel: bool
    split: str  # the split the page reports: test, or valid without test
    stats: dict[str, dict]
    seeds: list[dict]
    per_label: pd.DataFrame | None
    predictions: Predictions | None
    backbones: list[BackboneRow]
    dataset: DatasetInfo
    files: list[str] = field(default_factory=list)

    @property
    def method(self) -> str:
        return METHODS.get(self.script, self.script)

    @property
    def metrics(self) -> tuple[str, ...]:
        return MULTILABEL_HEADLINE if self.multilabel else SINGLE_LABEL_KEYS

    @property
    def published(self) -> dict[str, float] | None:
        return PAPER_RESULTS.get(self.task) if self.split == "test" else None

    @property
    def ensemble(self) -> dict | None:
        scores = (self.results.get("ensemble") or {}).get(self.split)
        return {m: scores[m] for m in self.metrics if m in scores} if scores else None

    @property
    def cv(self) -> dict | None:
        return self.results.get("summary", {}).get("cv")

    def chance(self) -> str:
        """What guessing scores on the report split, from the per-label supports."""
        if self.per_label is None or self.per_label.empty:
            return "unknown"
        support = self.per_label["support"].to_numpy(dtype=float)
        if self.multilabel:
            rows = self.config.get("rows", {}).get(self.split) or (len(self.predictions.table) if self.predictions else None)
            if not rows:
                return "unknown"
            prevalence = support / rows
            return f"macro-F1 {100 * np.mean(2 * prevalence / (1 + prevalence)):.2f} by predicting every label for every text"
        majority = int(support.argmax())
        return (
            f"accuracy {100 * support.max() / support.sum():.2f} by always predicting the most frequent label "
            f"({self.label_names[majority]}); {100 / len(support):.2f} by a uniform guess"
        )


def load_summary(folder: Path, defaults: dict[str, dict] | None = None) -> RunSummary:
    """The run in `folder`; a folder that is not a finished run is a ValueError, a damaged run file
    (or one without the option defaults `defaults` would stand in for) a
    `fec.core.errors.RunFileError` (a ValueError too)."""
    run = load_run(folder, defaults)
    if run is None:
        raise ValueError(f"{folder}: not a finished run folder (no results.json with a finished seed)")
    config, results = read_config(folder), read_results(folder)  # checked by load_run already
    model = read_model_spec(folder) if (folder / "model.json").is_file() else {}  # TF-IDF runs have none
    label_names = model.get("label_names") or config.get("label_names") or []
    per_label = pd.read_csv(folder / "per_label.csv", keep_default_na=False) if (folder / "per_label.csv").is_file() else None
    if not label_names and per_label is not None:
        label_names = per_label["label"].astype(str).tolist()
    entries = results.get("seeds", [])
    multilabel = bool(entries) and "micro_f1" in entries[0]["valid"]
    split = "test" if entries and all(entry.get("test") for entry in entries) else "valid"
    compat, recipe_file = compat_setting(config)
    return RunSummary(
        folder=folder,
        task=run.task,
        script=run.script,
        command=f"{run.command} -seeds {' '.join(map(str, run.seeds))}",
        compat=compat,
        recipe_file=recipe_file,
        notes=compat_notes(compat) + option_notes(config.get("args", {})) + member_notes(config),
        config=config,
        results=results,
        label_names=label_names,
        multilabel=multilabel,
        split=split,
        stats=results.get("summary", {}).get(split, {}),
        seeds=[seed_row(entry, split) for entry in entries],
        per_label=per_label,
        predictions=read_predictions(folder, label_names),
        backbones=backbones(config, model),
        dataset=dataset_info(run.task),
        files=sorted(p.name for p in folder.iterdir() if p.is_file()),
    )


def compat_notes(compat: str) -> list[str]:
    """The compat setting in words: which published defects are on."""
    if compat == "reference":
        return [f"published recipe with its defects: {k}={v}" for k, v in TRAIN_REFERENCE.items()]
    if compat.startswith("custom:"):
        return [f"published defect on: {quirk}" for quirk in compat.removeprefix("custom:").split("+")]
    if compat == "corrected":
        return ["every published defect fixed: " + ", ".join(f"{k}={v}" for k, v in TRAIN_CORRECTED.items())]
    return []


def member_notes(config: dict) -> list[str]:
    """An ensemble of runs' members, each with its weight (what predicts is their weighted mean)."""
    members = (config.get("ensemble") or {}).get("members") or []
    return [f"member {m.get('run')} weight {float(m.get('weight', 0)):.2f}" for m in members]


def option_notes(args: dict) -> list[str]:
    """The options that shape a run beyond its command line's numbers: the features it picked."""
    return ["features picked: " + " ".join(args["features"])] if args.get("features") else []


def seed_row(entry: dict, split: str) -> dict:
    """One seed as its table row: best epoch, epochs run, time and the scores."""
    return {
        "seed": entry["seed"],
        "best_epoch": entry.get("best_epoch"),
        "epochs_run": entry.get("epochs_run"),
        "seconds": entry.get("train_seconds", entry.get("seconds")),
        "valid": entry.get("valid", {}),
        "scores": entry.get(split) or {},
        "cv": (entry.get("cv") or {}).get("oof"),
        "at_chance": entry.get("at_chance"),
    }


def backbones(config: dict, model: dict) -> list[BackboneRow]:
    """Each slot's backbone, pooling, layers and dtype from the feature manifests (fusion runs), or
    the fine-tuned model; TF-IDF runs have none."""
    manifests = config.get("feature_manifests", {}).get("train", {})
    picks = model.get("feature_picks") or {}
    found = []
    for slot, manifest in manifests.items():
        pick = picks.get(slot)
        if pick:
            pooling, layers = pick["pooling"], ",".join(map(str, pick["layer_indices"]))
        else:
            pooling, layers = manifest.get("pooling", "?"), str(manifest.get("layers") or manifest.get("layer_choice") or "last")
        if manifest.get("prompts"):
            pooling += f" (prompted: {len(manifest['prompts'])} template(s))"
        info = backbone_info(manifest.get("model", "?"))
        dtype, folder = manifest.get("feature_dtype", "?"), manifest.get("store_dir", slot)
        found.append(BackboneRow(slot, info, pooling, layers, dtype, folder))
    if "model_fingerprint" in config:
        args = config.get("args", {})
        info = backbone_info(args.get("model", "?"))
        found.append(BackboneRow("fine-tuned", info, "classification head", "all", args.get("dtype", "?"), ""))
    return found


def label_order(label_names: list[str], tree_path: Path | None) -> list[int]:
    """Label ids grouped by `label_tree.tsv` (child, parent rows; depth first from `root`), so
    related labels sit side by side in the confusion matrix; the file's order otherwise."""
    if tree_path is None or not tree_path.is_file():
        return list(range(len(label_names)))
    children: dict[str, list[str]] = {}
    for line in tree_path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) == 2:
            children.setdefault(parts[1].strip(), []).append(parts[0].strip())
    ordered: list[str] = []

    def walk(node: str, depth: int) -> None:
        for child in children.get(node, []):
            if child not in ordered and depth < 16:
                ordered.append(child)
                walk(child, depth + 1)

    walk("root", 0)
    index = {name: i for i, name in enumerate(label_names)}
    ids = [index[name] for name in ordered if name in index]
    return ids + [i for i in range(len(label_names)) if i not in ids]


def confusion_counts(predictions: Predictions) -> np.ndarray:
    """(C, C) counts, rows the gold label, columns the predicted one (single-label runs)."""
    index = {name: i for i, name in enumerate(predictions.label_names)}
    counts = np.zeros((len(index), len(index)), dtype=np.int64)
    for gold, predicted in zip(predictions.table["gold"], predictions.table["predicted"], strict=True):
        counts[index[gold], index[predicted]] += 1
    return counts


def confused_pairs(predictions: Predictions, limit: int = PAIRS_SHOWN) -> list[dict]:
    """The most frequent (gold, predicted) mistakes, with example texts. Multi-label: a gold label
    missed in a text where another label was predicted instead."""
    table, pairs = predictions.table, {}
    for gold_cell, predicted_cell, text in zip(table["gold"], table["predicted"], table["text"], strict=True):
        gold, predicted = set(filter(None, gold_cell.split(LABEL_JOIN))), set(filter(None, predicted_cell.split(LABEL_JOIN)))
        for missed in sorted(gold - predicted):
            for instead in sorted(predicted - gold):
                pairs.setdefault((missed, instead), []).append(text)
    gold_counts = table["gold"].str.split(LABEL_JOIN, regex=False).explode().value_counts()
    ranked = sorted(pairs.items(), key=lambda item: (-len(item[1]), item[0]))[:limit]
    return [
        {
            "gold": g,
            "predicted": p,
            "count": len(texts),
            "share": 100 * len(texts) / max(int(gold_counts.get(g, 0)), 1),
            "texts": texts[:TEXTS_PER_PAIR],
        }
        for (g, p), texts in ranked
    ]


def example_rows(predictions: Predictions, seed: int = 0) -> list[dict]:
    """A fixed sample of the report split: errors first, then correct ones, each with its top 3."""
    table = predictions.table
    rng = np.random.default_rng(seed)
    wrong, right = np.flatnonzero(table["correct"].to_numpy() == 0), np.flatnonzero(table["correct"].to_numpy() == 1)
    chosen = [*rng.permutation(wrong)[:EXAMPLE_ERRORS], *rng.permutation(right)[:EXAMPLE_CORRECT]]
    rows = []
    for i in chosen:
        top = []
        if predictions.probabilities is not None:
            order = np.argsort(-predictions.probabilities[i])[:3]
            top = [(predictions.label_names[j], 100 * float(predictions.probabilities[i, j])) for j in order]
        record = table.iloc[int(i)]
        rows.append(
            {
                "row": int(record["row"]),
                "text": record["text"],
                "gold": record["gold"],
                "predicted": record["predicted"],
                "correct": bool(record["correct"]),
                "top": top,
            }
        )
    return rows


def threshold_rows(summary: RunSummary) -> list[dict]:
    """Multi-label: each label's tuned threshold, its F1 there and its F1 at 0.5 on the report split."""
    if summary.per_label is None or "threshold" not in summary.per_label.columns:
        return []
    at_half = None
    if summary.predictions is not None and summary.predictions.probabilities is not None:
        gold = summary.predictions.multilabel_gold
        at_half = binary_f1_grid(gold, summary.predictions.probabilities, np.array([0.5]))[0]
    return [
        {
            "label": row["label"],
            "threshold": float(row["threshold"]),
            "f1": 100 * float(row["f1"]),
            "f1_at_half": None if at_half is None else 100 * float(at_half[i]),
        }
        for i, row in summary.per_label.iterrows()
    ]
