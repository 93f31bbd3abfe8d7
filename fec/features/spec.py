"""Which features an extraction computes: pooling modes, hidden layers and prompts, validated,
named in the store, and recorded in the manifest.

    python llama2_rep_extract.py --task ED --layers all --pooling mean last            # dataset/ED/llama-mean+last-all/
    python bert_rep_extract.py --task ED --layers all --pooling mean first             # dataset/ED/bert-mean+first-all/
    python llama2_rep_extract.py --task ED --layers all --pooling last \\
        --prompt 'This sentence : "{text}" means in one word:"' --chat_template        # dataset/ED/llama-last-all-p<hash>/
    python bert_rep_extract.py --task ED --slot e5 --model intfloat/e5-small-v2 --layers all --pooling mean  # e5-mean-all/

Without --pooling, --prompt or --chat_template and with a count of layers, an extraction is the
published one for its slot and goes to the slot's own folder (`llama/`, `bert/`, `roberta/`),
shaped (N, L, H) for the LLaMA slot and (N, H) for the encoders. Any other choice, and every
extraction of a slot of the user's (`--slot NAME`, `fec.features.store_slots`), is a *variant*: one
forward pass computes every pooling asked for at every layer asked for, stored as one
(N, P, L, H) tensor (poolings, then layers in the order of `layer_indices`, 0 being the
embedding output) in half precision, so layer and pooling choices are made at training time
without extracting again (`fec.features.picks`). What the model's configuration rules out is
checked by `fec.features.backbones.check_spec_fits`; the extraction settings become a
FeatureSpec in `fec.api.extract.feature_spec`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from fec.core.errors import SettingError
from fec.core.slots import KINDS, PUBLISHED_KINDS
from fec.features.pooling import POOLINGS

POOLING_HELP = {name: pooling.description for name, pooling in POOLINGS.items()}
TEXT_FIELD = "{text}"
LAYERS_HELP = (
    "hidden layers to pool: a count N (the last N, last first; published 5), 'all' (every hidden state, embeddings "
    "first: stored (N, P, L+1, H) for P poolings), or indices (negative from the end), e.g. --layers -1 -4 12 or --layers 12,16"
)
STORE_DTYPES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class LayerChoice:
    """`count` last layers (last first), `every` hidden state, or explicit `indices`."""

    count: int | None = None
    every: bool = False
    indices: tuple[int, ...] = ()

    @property
    def text(self) -> str:
        if self.every:
            return "all"
        if self.count is not None:
            return str(self.count)
        if len(self.indices) == 1 and self.indices[0] >= 0:
            return f"{self.indices[0]},"  # `12` alone would read back as a count of last layers
        return ",".join(str(i) for i in self.indices)

    @property
    def tag(self) -> str:
        """The layers' part of a store folder name."""
        if self.every:
            return "all"
        if self.count is not None:
            return f"last{self.count}"
        return "L" + "_".join(str(i).replace("-", "m") for i in self.indices)

    def resolve(self, num_hidden_states: int) -> list[int]:
        """Absolute hidden-state indices (0 = embeddings) for a model with this many hidden states."""
        if self.every:
            return list(range(num_hidden_states))
        if self.count is not None:
            if self.count > num_hidden_states:
                raise SettingError("layers", self.count, f"the model has {num_hidden_states} hidden states (embeddings + layers)")
            return [num_hidden_states - k for k in range(1, self.count + 1)]
        resolved = []
        for index in self.indices:
            if not -num_hidden_states <= index < num_hidden_states:
                raise SettingError(
                    "layers",
                    self.text,
                    f"index {index} is outside the model's {num_hidden_states} hidden states "
                    f"(0 to {num_hidden_states - 1}, or -1 to -{num_hidden_states})",
                )
            resolved.append(index % num_hidden_states)
        if len(set(resolved)) != len(resolved):
            raise SettingError("layers", self.text, f"names the same layer twice ({resolved})")
        return resolved


def parse_layers(values: list[str] | str) -> LayerChoice:
    """`5` -> the last 5; `all`; `-1 -4 12` or `12,16` (or `12,` for one index) -> those indices."""
    words = [values] if isinstance(values, str) else list(values)
    items = [part.strip() for word in words for part in word.split(",")]
    text = " ".join(words)
    if items == ["all"]:
        return LayerChoice(every=True)
    explicit_list = len(words) > 1 or "," in text
    items = [item for item in items if item]
    if not items or any(not re.fullmatch(r"-?\d+", item) for item in items):
        raise SettingError("layers", text, "give a count, 'all', or layer indices such as -1 -4 12")
    numbers = [int(item) for item in items]
    if not explicit_list and numbers[0] > 0:
        return LayerChoice(count=numbers[0])
    if not explicit_list and numbers[0] == 0:
        raise SettingError("layers", 0, "a count must be at least 1 (the embedding output alone is the index list `0,`)")
    return LayerChoice(indices=tuple(numbers))


def check_prompt(template: str) -> str:
    """A prompt template must hold `{text}` exactly once (where the text goes)."""
    if template.count(TEXT_FIELD) != 1:
        raise SettingError("prompt", repr(template), f"the template must contain {TEXT_FIELD} exactly once")
    return template


@dataclass(frozen=True)
class FeatureSpec:
    """What one extraction computes for one slot of a `slot_kind` (a published slot's own by default;
    `fec.core.slots`). The published extraction of a published slot leaves `poolings`, `layers`
    (or, for the decoder, gives a count), `prompts` and `chat_template` unset; any other choice,
    and any slot of the user's, is a variant, whose unset pooling and layers are its kind's
    `variant_pooling` and `variant_layers` (a published encoder's pooler exists for the last
    layer only, so its variant defaults to the first token)."""

    slot: str
    poolings: tuple[str, ...] = ()
    layers: LayerChoice | None = None
    prompts: tuple[str, ...] = ()
    chat_template: bool = False
    store_dtype: str = "bfloat16"
    slot_kind: str = ""

    def __post_init__(self) -> None:
        kind = self.slot_kind or PUBLISHED_KINDS.get(self.slot)
        if kind not in KINDS:
            raise SettingError("slot_kind", kind or None, f"{self.slot} needs its kind: {' or '.join(KINDS)}")
        object.__setattr__(self, "slot_kind", kind)
        for name in self.poolings:
            if name not in POOLINGS:
                raise SettingError("pooling", name, f"is not a pooling; choose {', '.join(POOLINGS)}")
        if self.is_variant:
            object.__setattr__(self, "poolings", self.poolings or (KINDS[kind].variant_pooling,))
            object.__setattr__(self, "layers", self.layers or LayerChoice(count=KINDS[kind].variant_layers))

    @property
    def is_variant(self) -> bool:
        """False for the published extraction of a published slot (its own store folder and shapes)."""
        if self.slot not in PUBLISHED_KINDS or self.prompts or self.chat_template or self.poolings:
            return True
        if self.layers is None:
            return False
        return not (KINDS[self.slot_kind].layered and self.layers.count is not None)

    @property
    def published_layers(self) -> int | None:
        """The published decoder's layer count for its published extraction (None for encoders and variants)."""
        if not KINDS[self.slot_kind].layered or self.is_variant:
            return None
        return self.layers.count if self.layers else KINDS[self.slot_kind].variant_layers

    @property
    def prompt_key(self) -> str:
        """A short hash naming the prompts (and the chat template switch) in folder names."""
        text = "\n".join(self.prompts) + ("\n<chat>" if self.chat_template else "")
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def store_dir(self, base: str) -> str:
        """`base` (the slot's published folder) for the published extraction, else
        `{slot}-{poolings}-{layers}[-p{prompt hash}][-{dtype}]` (`{slot}-pooler` for the pooler
        alone; the dtype only when not bfloat16)."""
        if not self.is_variant:
            return base
        pooled = "pooler" if self.poolings == ("pooler",) else f"{'+'.join(self.poolings)}-{self.layers.tag}"
        name = f"{self.slot}-{pooled}"
        if self.prompts or self.chat_template:
            name += f"-p{self.prompt_key}"
        return name + ("" if self.store_dtype == "bfloat16" else f"-{self.store_dtype}")

    def settings(self) -> dict:
        """What this spec adds to the extraction settings (empty for the published extraction,
        so stores written before these options existed stay valid)."""
        if not self.is_variant:
            return {}
        return {
            "poolings": list(self.poolings),
            "layer_choice": self.layers.text,
            "prompts": list(self.prompts),
            "chat_template": self.chat_template,
            "store_dtype": self.store_dtype,
        }

    def manifest(self, layer_indices: list[int], num_hidden_states: int) -> dict:
        """How a variant's (N, P, L, H) features are laid out, and the prompts they were computed with."""
        if not self.is_variant:
            return {}
        return {
            "feature_axes": ["row", "pooling", "layer", "hidden"],
            "poolings": list(self.poolings),
            "layer_indices": layer_indices,
            "layer_choice": self.layers.text,
            "num_hidden_states": num_hidden_states,
            "prompts": list(self.prompts),
            "chat_template": self.chat_template,
        }


def format_prompt(template: str, text: str) -> str:
    return template.replace(TEXT_FIELD, text)
