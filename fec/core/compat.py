"""The published recipe and the corrected one, in one place: what `-compat reference` turns on
for extraction and for training, and the recipe names runs are filed under.

    python llama2_rep_extract.py -task ED -compat reference   # padded unmasked mean, batches of 2 in file order
    python main.py -dataset ED -compat reference              # + the BERT loader defect, raw inputs

A training run's recipe is `corrected` (every published defect fixed), `reference` (all of them,
as published) or `custom:` plus the quirks that are on, e.g. `custom:bert_source=roberta+norm=none`;
`recipe_options` turns a name back into the options that train it. The defects themselves are
described in docs/design.md.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

# Training: the three quirk switches, their corrected values and their published ones.
TRAIN_CORRECTED = {"llama_pooling": "masked", "bert_source": "bert", "norm": "zscore"}
TRAIN_REFERENCE = {"llama_pooling": "unmasked_padded", "bert_source": "roberta", "norm": "none"}
QUIRKS = tuple(TRAIN_CORRECTED)
# Extraction: pooling and batch order, and the published batch sizes per slot.
EXTRACT_CORRECTED = {"llama_pooling": "masked", "batch_order": "length"}
EXTRACT_REFERENCE = {"llama_pooling": "unmasked_padded", "batch_order": "file"}
REFERENCE_BATCH_SIZE = {"llama": 2, "bert": 50, "roberta": 50}
BATCH_SIZE = 64


def resolve_training(args: argparse.Namespace) -> str:
    """Fill the quirk options left unset from `args.compat` (explicit options win) and return the
    recipe's name: `corrected`, `reference`, or `custom:` plus the quirks that are on."""
    base = TRAIN_REFERENCE if args.compat == "reference" else TRAIN_CORRECTED
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.compat == "reference" and args.pn != "sigmoid":
        log.warning("-compat reference with -pn %s: the published code used sigmoid", args.pn)
    quirks = [f"{k}={getattr(args, k)}" for k, v in TRAIN_CORRECTED.items() if getattr(args, k) != v]
    if not quirks:
        return "corrected"
    if len(quirks) == len(TRAIN_REFERENCE) and args.pn == "sigmoid":
        return "reference"
    return "custom:" + "+".join(quirks)


def recipe_options(name: str) -> list[str]:
    """A recipe name back to the options that train it: `custom:bert_source=roberta+norm=none` ->
    `-bert_source roberta -norm none`; `reference` -> `-compat reference`; `corrected` -> none."""
    if name == "reference":
        return ["-compat", "reference"]
    if not name.startswith("custom:"):
        return []
    options = []
    for quirk in name.removeprefix("custom:").split("+"):
        key, sep, value = quirk.partition("=")
        if not sep or key not in QUIRKS:
            raise ValueError(f"recipe {name!r}: {quirk!r} is not one of {', '.join(QUIRKS)} set to a value")
        options += [f"-{key}", value]
    return options


def training_folders(args: argparse.Namespace) -> dict[str, str]:
    """Which store folder each source is read from: the BERT loader defect reads RoBERTa's
    features in BERT's position, the published LLaMA pooling has a folder of its own."""
    folders = {"bert": args.bert_source}
    if args.llama_pooling != "masked":
        folders["llama"] = f"llama_{args.llama_pooling}"
    return folders


def resolve_extraction(args: argparse.Namespace, slot: str) -> None:
    """Fill the extraction recipe options left unset from `args.compat` (explicit options win)."""
    reference = args.compat == "reference"
    recipe = EXTRACT_REFERENCE if reference else EXTRACT_CORRECTED
    args.llama_pooling = (getattr(args, "llama_pooling", None) or recipe["llama_pooling"]) if slot == "llama" else "masked"
    args.batch_order = args.batch_order or recipe["batch_order"]
    if args.batch_size is None:
        args.batch_size = REFERENCE_BATCH_SIZE[slot] if reference else BATCH_SIZE


def extraction_quirks(args: argparse.Namespace) -> dict:
    """The extraction options that differ from the corrected recipe (they change the features)."""
    return {k: getattr(args, k) for k, v in EXTRACT_CORRECTED.items() if getattr(args, k) != v}


def store_dir_of(slot: str, llama_pooling: str) -> str:
    """The store folder: variants that change the features get their own, so the published
    LLaMA pooling never overwrites the corrected features (`llama` vs `llama_unmasked_padded`)."""
    return slot if llama_pooling == "masked" else f"{slot}_{llama_pooling}"


SEED_OPTIONS = ("seeds", "runs")
