"""The published code's behaviour and the corrected one, in one place: what `--compat reference`
turns on for extraction and for training, and the compat setting runs are filed under.

    python llama2_rep_extract.py -task ED -compat reference   # padded unmasked mean, batches of 2 in file order
    python main.py -dataset ED -compat reference              # + the BERT loader defect, raw inputs

A training run's compat setting is `corrected` (every published defect fixed), `reference` (all
of them, as published) or `custom:` plus the quirks that are on, e.g.
`custom:bert_source=roberta+norm=none`; `compat_options` turns a setting back into the options
that train it. (A *recipe* is something else: a `--recipe` file of option values.) The defects
themselves are described in docs/design.md.
"""

from __future__ import annotations

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
BATCH_SIZE = 256  # a cap: the token budget (fec.features.forward_pass.Batching) sizes the batches


def resolve_compat(compat: str, chosen: dict[str, str | None], pn: str) -> tuple[str, dict[str, str]]:
    """The training quirks as they apply (`chosen` ones, explicit on the command line, win over the
    `compat` switch's; unset ones take its values) and the compat setting they make: `corrected`,
    `reference`, or `custom:` plus the quirks that are on (`custom:bert_source=roberta+norm=none`)."""
    base = TRAIN_REFERENCE if compat == "reference" else TRAIN_CORRECTED
    quirks = {key: chosen.get(key) or value for key, value in base.items()}
    if compat == "reference" and pn != "sigmoid":
        log.warning("-compat reference with -pn %s: the published code used sigmoid", pn)
    on = [f"{k}={quirks[k]}" for k, v in TRAIN_CORRECTED.items() if quirks[k] != v]
    if not on:
        return "corrected", quirks
    if len(on) == len(TRAIN_REFERENCE) and pn == "sigmoid":
        return "reference", quirks
    return "custom:" + "+".join(on), quirks


def compat_options(name: str) -> list[str]:
    """A compat setting back to the options that train it: `custom:bert_source=roberta+norm=none` ->
    `-bert_source roberta -norm none`; `reference` -> `-compat reference`; `corrected` -> none."""
    if name == "reference":
        return ["-compat", "reference"]
    if not name.startswith("custom:"):
        return []
    options = []
    for quirk in name.removeprefix("custom:").split("+"):
        key, sep, value = quirk.partition("=")
        if not sep or key not in QUIRKS:
            raise ValueError(f"compat setting {name!r}: {quirk!r} is not one of {', '.join(QUIRKS)} set to a value")
        options += [f"-{key}", value]
    return options


def training_folders(quirks: dict[str, str]) -> dict[str, str]:
    """Which store folder each source is read from: the BERT loader defect reads RoBERTa's
    features in BERT's position, the published LLaMA pooling has a folder of its own."""
    folders = {"bert": quirks["bert_source"]}
    if quirks["llama_pooling"] != "masked":
        folders["llama"] = f"llama_{quirks['llama_pooling']}"
    return folders


def resolve_extraction(
    slot: str, compat: str, llama_pooling: str | None = None, batch_order: str | None = None, batch_size: int | None = None
) -> dict:
    """The extraction's recipe choices, those left unset (None) taken from the `compat` switch
    (explicit ones win): {"llama_pooling", "batch_order", "batch_size"}. Only the LLaMA slot has
    a pooling choice; the encoders' is always `masked`."""
    reference = compat == "reference"
    recipe = EXTRACT_REFERENCE if reference else EXTRACT_CORRECTED
    return {
        "llama_pooling": (llama_pooling or recipe["llama_pooling"]) if slot == "llama" else "masked",
        "batch_order": batch_order or recipe["batch_order"],
        "batch_size": batch_size if batch_size is not None else (REFERENCE_BATCH_SIZE[slot] if reference else BATCH_SIZE),
    }


def extraction_quirks(llama_pooling: str, batch_order: str) -> dict:
    """The extraction choices that differ from the corrected recipe (they change the features)."""
    chosen = {"llama_pooling": llama_pooling, "batch_order": batch_order}
    return {k: chosen[k] for k, v in EXTRACT_CORRECTED.items() if chosen[k] != v}


def store_dir_of(slot: str, llama_pooling: str) -> str:
    """The store folder: variants that change the features get their own, so the published
    LLaMA pooling never overwrites the corrected features (`llama` vs `llama_unmasked_padded`)."""
    return slot if llama_pooling == "masked" else f"{slot}_{llama_pooling}"


SEED_OPTIONS = ("seeds", "runs")
