"""Feature slots and their kinds, torch-free (the `fec` dispatcher names them without loading a
model library).

A *slot* is a named feature position with its own model; its *kind* says how the fusion reads it:
a `decoder` slot gives one vector per picked layer (each compressed by its own Linear), an
`encoder` slot one vector (its picked layers averaged). The three published slots keep their
names and kinds; any other slot is a user's, extracted under `--slot NAME` by the script of its
kind and recorded with `slot` and `slot_kind` in every manifest of its store folders (which
slots a task's store holds: `fec.features.store_slots`). What fills a published slot is
`fec.features.backbones.SLOTS`. One more source is not a model's: the lexical source `tfidf`,
the TF-IDF model's label probabilities (`fec.classify.lexical`), stored by
`baselines/tfidf.py --store` and read, like the published slots, from its own folder.

One more kind of source is one more entry of KINDS (and the code that extracts it).

    from fec.core.slots import KINDS, slot_kind
    KINDS[slot_kind(manifest)].layered     # True for a decoder slot: one vector per picked layer
    python bert_rep_extract.py --task ED --slot e5 --model intfloat/e5-small-v2 --layers all --pooling mean
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass

from fec.core.errors import SettingError

SLOT_NAMES = ("llama", "bert", "roberta")  # the published slots, in the order the fusion stacks them


@dataclass(frozen=True)
class SlotKind:
    """How a kind of slot is extracted and read. `layered`: a pick keeps one vector per layer
    (the fusion compresses each and adds their raw mean to the MLP's input); otherwise a pick's
    layers are averaged into one vector. `variant_pooling` and `variant_layers`: what a variant
    extraction stores when --pooling or --layers is left out."""

    name: str
    script: str  # the extraction script of this kind
    layered: bool
    variant_pooling: str
    variant_layers: int
    description: str


# In the order the fusion stacks the sources: every decoder's layer vectors, then every encoder's vector.
KINDS = {
    "decoder": SlotKind("decoder", "llama2_rep_extract.py", True, "mean", 5, "each picked layer is a vector of the fusion"),
    "encoder": SlotKind("encoder", "bert_rep_extract.py", False, "first", 1, "the picked layers are averaged into one vector"),
    "lexical": SlotKind("lexical", "baselines/tfidf.py --store", False, "", 0, "the TF-IDF model's label probabilities"),
}
PUBLISHED_KINDS = {"llama": "decoder", "bert": "encoder", "roberta": "encoder"}
LEXICAL_SLOT = "tfidf"
# The sources read from their own store folder, without a pick: the published slots and the lexical source.
FOLDER_KINDS = PUBLISHED_KINDS | {LEXICAL_SLOT: "lexical"}
SCRIPTS = {
    "llama": "llama2_rep_extract.py",
    "bert": "bert_rep_extract.py",
    "roberta": "roberta_rep_extract.py",
    LEXICAL_SLOT: KINDS["lexical"].script,
}


def slot_kind(manifest: dict) -> str:
    """The kind of the slot a store manifest was extracted for (manifests written before kinds
    were recorded are of a published slot, whose kind its name gives)."""
    return manifest.get("slot_kind") or FOLDER_KINDS.get(manifest.get("slot"), "")


def extraction_script(slot: str, kind: str) -> str:
    """The command that extracts `slot`: its published script, or its kind's with `--slot`."""
    return SCRIPTS.get(slot) or f"{KINDS[kind].script} --slot {slot}"


def extraction_hint(
    slot: str, kind: str | None, task: str, *, pooling: str = "mean", model: str | None = None, dataset_dir: object = "dataset"
) -> str:
    """The command line that puts `slot`'s features into the task's store, for a message: its
    published script, or its kind's with `--slot` and `--model` (`model`, else a placeholder); every
    layer of `pooling` (a variant any pick of that pooling reads). A slot of unknown `kind` (none
    stored yet) is given the encoder script, and the decoder one is named beside it.

        extraction_hint("q7", None, "ED")   # python bert_rep_extract.py --task ED --slot q7 --model MODEL --layers all ..."""
    elsewhere = f" --dataset_dir {dataset_dir}" if str(dataset_dir) != "dataset" else ""
    if kind == "lexical" or slot == LEXICAL_SLOT:
        return f"python {SCRIPTS[LEXICAL_SLOT]} --task {task}{elsewhere}"
    script = SCRIPTS.get(slot) or KINDS[kind or "encoder"].script
    chosen = f" --model {shlex.quote(model)}" if model else ""
    if slot not in SCRIPTS:
        chosen = f" --slot {slot} --model {shlex.quote(model) if model else 'MODEL'}"
    layers = "" if pooling == "pooler" else " --layers all"
    command = f"python {script} --task {task}{chosen}{layers} --pooling {pooling}{elsewhere}"
    return command if kind or slot in SCRIPTS else f"{command}, or {KINDS['decoder'].script} for a decoder model"


def source_order(kinds: dict[str, str]) -> list[str]:
    """The fusion's input order of sources (name -> kind): decoders first, then encoders, then the
    lexical source (KINDS' order); within a kind the published slots in their order, then the
    others by name. The published three keep their order: llama, bert, roberta."""
    rank = {name: i for i, name in enumerate(KINDS)}
    published = {name: i for i, name in enumerate(SLOT_NAMES)}
    return sorted(kinds, key=lambda s: (rank[kinds[s]], published.get(s, len(published)), s))


def slot_models(
    pairs: list[str] | None, accepted: Callable[[str], bool], slots: str, setting: str = "model", value: str = "MODEL"
) -> dict[str, str]:
    """A command's `--model SLOT=MODEL` pairs (or another `setting`'s SLOT=`value` pairs) as slot ->
    value, each SLOT one that `accepted` takes (`slots` says which, for the message), and each slot
    given once."""
    chosen = {}
    for pair in pairs or []:
        slot, sep, given = pair.partition("=")
        if not sep or not given or not accepted(slot):
            raise SettingError(setting, pair, f"expected SLOT={value} with SLOT one of {slots}")
        if slot in chosen:
            raise SettingError(setting, pair, f"the {slot} slot is given twice ({slot}={chosen[slot]}); give each slot once")
        chosen[slot] = given
    return chosen
