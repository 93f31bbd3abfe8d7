"""Which slots a task's store holds, and of which kind, read from its manifests in one place.

    from fec.features.store_slots import store_slots, store_manifests
    store_slots("dataset", "ED")        # {"llama": "decoder", "bert": "encoder", "roberta": "encoder", "e5": "encoder"}
    store_manifests("dataset", "ED")    # store folder -> its train manifest (else valid's, else test's)

A slot of the user's is made by extracting under a new name (`python bert_rep_extract.py --task
ED --slot e5 --model intfloat/e5-small-v2 --layers all --pooling mean`): its name is a lowercase
letter, then lowercase letters, digits or `_`, and not a pooling name (`SLOT:POOLING:LAYERS` picks
stay readable); its kind is the extraction script's, and one name has one kind in a store.
Torch-free.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fec.core.errors import SettingError
from fec.core.slots import KINDS, LEXICAL_SLOT, PUBLISHED_KINDS, SCRIPTS, SLOT_NAMES, slot_kind, source_order
from fec.features.pooling import POOLINGS

SLOT_NAME = re.compile(r"[a-z][a-z0-9_]*")
MANIFEST_MODES = ("train", "valid", "test")


def slot_name_problem(name: str) -> str | None:
    """Why `name` cannot name a slot, or None."""
    if not SLOT_NAME.fullmatch(name):
        return "is not a slot name: use a lowercase letter, then lowercase letters, digits or _ (e.g. e5, qwen)"
    if name in POOLINGS:
        return f"is a pooling, not a slot name (poolings: {', '.join(POOLINGS)})"
    return None


def check_slot_name(name: str, setting: str = "slot") -> str:
    problem = slot_name_problem(name)
    if problem:
        raise SettingError(setting, repr(name), problem)
    return name


def store_manifests(dataset_dir: Path | str, task: str) -> dict[str, dict]:
    """Every folder of the task's store that holds a readable manifest -> that manifest (train's,
    else valid's, else test's), folders sorted by name."""
    root, found = Path(dataset_dir) / task, {}
    for folder in sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []:
        for mode in MANIFEST_MODES:
            try:
                manifest = json.loads((folder / f"{mode}.json").read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(manifest, dict) and isinstance(manifest.get("slot"), str):
                found[folder.name] = manifest
                break
    return found


def store_slots(dataset_dir: Path | str, task: str) -> dict[str, str]:
    """Slot -> kind of every slot the task's store holds, in the fusion's input order."""
    return slot_kinds(store_manifests(dataset_dir, task))


def slot_kinds(manifests: dict[str, dict]) -> dict[str, str]:
    """Slot -> kind of the slots these manifests (`store_manifests`) were extracted for, in the fusion's input order."""
    kinds: dict[str, str] = {}
    for manifest in manifests.values():
        kind = slot_kind(manifest)
        if kind in KINDS:
            kinds.setdefault(manifest["slot"], kind)
    return {slot: kinds[slot] for slot in source_order(kinds)}


def slot_kind_of(slot: str, kind: str | None) -> str:
    """A slot's kind: a published slot's own (a kind given must agree), else the kind given."""
    if slot == LEXICAL_SLOT:
        raise SettingError("slot", slot, f"is the lexical source ({SCRIPTS[slot]}); name your slot otherwise")
    published = PUBLISHED_KINDS.get(slot)
    if published and kind not in (None, published):
        raise SettingError("slot", slot, f"is the published {published} slot, not {an(kind)} one; name your slot otherwise")
    if not (published or kind):
        raise SettingError("slot", slot, f"is not a published slot ({', '.join(SLOT_NAMES)}), so its kind must be named")
    kind = published or kind
    if kind not in KINDS:
        raise SettingError("slot_kind", kind, f"choose {' or '.join(KINDS)}")
    return kind


def check_store_kind(dataset_dir: Path | str, task: str, slot: str, kind: str) -> None:
    """Refuse extracting `slot` as `kind` into a store that holds it as another kind."""
    for folder, manifest in store_manifests(dataset_dir, task).items():
        if manifest["slot"] == slot and slot_kind(manifest) != kind:
            where = Path(dataset_dir) / task / folder
            raise SettingError(
                "slot",
                slot,
                f"{where} holds it as {an(slot_kind(manifest))} slot, and this script extracts {an(kind)} one; "
                "name the slot otherwise",
            )


def an(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word
