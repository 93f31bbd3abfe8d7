"""Training-time picks: which pooling and layers of a variant's stored (N, P, L, H) features a
fusion source reads, so layer and pooling choices need no second extraction.

    python main.py -dataset ED --features llama:mean:-1,-9,-17 roberta:mean:-1,-2
    python main.py -dataset ED --features llama:last:-1@llama-last-all-p1a2b3c4d   # a named folder

`parse_pick` reads one `SLOT:POOLING:LAYERS[@FOLDER]`; `FeaturePick.select` takes its features
out of a store file, checked against the file's manifest; `FeaturePick.record` is what a run
keeps so that prediction recomputes the same features from text (`spec_of_pick`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fec.core.errors import SettingError, UsageError
from fec.core.paths import plain_name_problem
from fec.core.slots import PUBLISHED_KINDS, SLOT_NAMES, slot_kind
from fec.features.pooling import POOLINGS
from fec.features.spec import FeatureSpec, LayerChoice, parse_layers
from fec.features.store_slots import an, slot_name_problem


@dataclass(frozen=True)
class FeaturePick:
    """Which stored features one fusion source reads: `SLOT:POOLING:LAYERS[@FOLDER]`, e.g.
    `llama:mean:-1,-9,-17` (three layers of the decoder, each a vector of the fusion) or
    `roberta:mean:-1,-2` (an encoder's layers are averaged into its one vector); a slot of the
    user's is read through a pick only (`e5:mean:-1`). Without
    `@FOLDER`, the one unprompted variant folder of the slot holding that pooling and those
    layers is used."""

    slot: str
    pooling: str
    layers: LayerChoice
    folder: str | None = None

    @property
    def text(self) -> str:
        return f"{self.slot}:{self.pooling}:{self.layers.text}" + (f"@{self.folder}" if self.folder else "")

    def __str__(self) -> str:  # how config.json and report.py's commands show it
        return self.text

    def layer_indices(self, num_hidden_states: int) -> list[int]:
        """The pick's hidden-state indices in a model with this many; a layer it lacks is an
        error naming the pick (the layers came from --features, not --layers)."""
        try:
            return self.layers.resolve(num_hidden_states)
        except SettingError as err:
            raise UsageError(f"--features {self.text}: {err}") from err

    def select(self, features, manifest: dict):
        """(N, k, H) float32 of the chosen pooling and layers from a variant's (N, P, L, H) features."""
        where = manifest.get("store_dir", "?")
        problem = slot_mismatch(self.slot, manifest)
        if problem:
            raise UsageError(f"--features {self.text}: {where} {problem}")
        if manifest.get("feature_axes") != ["row", "pooling", "layer", "hidden"]:
            raise UsageError(
                f"--features {self.text}: {where} is a published extraction, not a variant; leave the slot out of --features "
                "to read it"
            )
        if self.pooling not in manifest["poolings"]:
            raise UsageError(f"--features {self.text}: {where} holds poolings {', '.join(manifest['poolings'])}")
        wanted = self.layer_indices(manifest["num_hidden_states"])
        missing = [i for i in wanted if i not in manifest["layer_indices"]]
        if missing:
            raise UsageError(
                f"--features {self.text}: {where} has no hidden state {missing[0]} (it holds {manifest['layer_indices']})"
            )
        positions = [manifest["layer_indices"].index(i) for i in wanted]
        return features[:, manifest["poolings"].index(self.pooling), positions].float()

    def record(self, manifest: dict) -> dict:
        """What predict.py needs to compute the same features from text."""
        return {
            "pick": self.text,
            "folder": manifest["store_dir"],
            "pooling": self.pooling,
            "layer_indices": self.layer_indices(manifest["num_hidden_states"]),
            "prompts": manifest.get("prompts") or [],
            "chat_template": bool(manifest.get("chat_template")),
        }


def slot_mismatch(slot: str, manifest: dict, kind: str | None = None) -> str | None:
    """Why features stored with `manifest` cannot be read as `slot`'s, of `kind` (default: a
    published slot's own), or None: the manifest names the slot they were extracted for, and its
    kind. Training and prediction both ask this."""
    stored, stored_kind, kind = manifest.get("slot"), slot_kind(manifest), kind or PUBLISHED_KINDS.get(slot)
    kinds = f" ({stored} is {an(stored_kind)}, {slot} {an(kind)})" if kind and stored_kind != kind else ""
    if stored != slot or kinds:
        return f"holds features extracted for the {stored} slot, not {slot}{kinds}; pick {an(slot)} folder"
    return None


def parse_pick(text: str) -> FeaturePick:
    """`SLOT:POOLING:LAYERS[@FOLDER]` -> a FeaturePick; every error names the whole pick. SLOT is a
    published slot or one of the user's (`fec.features.store_slots`)."""
    spec, _, folder = text.partition("@")
    parts = spec.split(":")
    if len(parts) != 3 or slot_name_problem(parts[0]) or parts[1] not in POOLINGS:
        raise UsageError(
            f"--features {text}: write SLOT:POOLING:LAYERS[@FOLDER], e.g. llama:mean:-1,-9 "
            f"(slots: {', '.join(SLOT_NAMES)} or one of yours; poolings: {', '.join(POOLINGS)})"
        )
    if folder and plain_name_problem(folder):
        raise UsageError(
            f"--features {text}: @{folder} {plain_name_problem(folder)}; @FOLDER is a folder of the task's store, "
            "e.g. llama-mean-all"
        )
    try:
        layers = parse_layers(parts[2])
    except SettingError as err:
        raise UsageError(f"--features {text}: {err}") from err
    return FeaturePick(parts[0], parts[1], layers, folder or None)


def spec_of_pick(slot: str, record: dict, kind: str = "") -> FeatureSpec:
    """The extraction that recomputes a recorded pick's features from text (one pooling, its layers)."""
    if record["pooling"] == "pooler":
        return FeatureSpec(slot, ("pooler",), slot_kind=kind)
    layers = LayerChoice(indices=tuple(record["layer_indices"]))
    return FeatureSpec(slot, (record["pooling"],), layers, tuple(record["prompts"]), record["chat_template"], slot_kind=kind)
