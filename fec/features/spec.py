"""Which features an extraction computes: pooling modes, hidden layers and prompts, validated,
named in the store, and recorded in the manifest.

    python llama2_rep_extract.py --task ED --layers all --pooling mean last            # dataset/ED/llama-mean+last-all/
    python bert_rep_extract.py --task ED --layers all --pooling mean first             # dataset/ED/bert-mean+first-all/
    python llama2_rep_extract.py --task ED --layers all --pooling last \\
        --prompt 'This sentence : "{text}" means in one word:"' --chat_template        # dataset/ED/llama-last-all-p<hash>/

Without --pooling, --prompt or --chat_template and with a count of layers, an extraction is the
published one for its slot and goes to the slot's own folder (`llama/`, `bert/`, `roberta/`),
shaped (N, L, H) for the LLaMA slot and (N, H) for the encoders. Any other choice is a
*variant*: one forward pass computes every pooling asked for at every layer asked for, stored
as one (N, P, L, H) tensor (poolings, then layers in the order of `layer_indices`, 0 being the
embedding output) in half precision, so layer and pooling choices are made at training time
without extracting again.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from fec.core.errors import UsageError
from fec.core.paths import plain_name_problem

POOLINGS = ("mean", "first", "pooler", "last")
POOLING_HELP = {
    "mean": "mean over the real tokens (attention mask)",
    "first": "the first token's state (CLS for encoders, BOS or the first word for decoders)",
    "pooler": "the model's trained pooler output (BERT-style models that have one; last layer only)",
    "last": "the last real token's state (right padding), the natural one for decoders and prompts",
}
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
                raise UsageError(f"--layers {self.count}: the model has {num_hidden_states} hidden states (embeddings + layers)")
            return [num_hidden_states - k for k in range(1, self.count + 1)]
        resolved = []
        for index in self.indices:
            if not -num_hidden_states <= index < num_hidden_states:
                raise UsageError(
                    f"--layers {self.text}: index {index} is outside the model's {num_hidden_states} hidden states "
                    f"(0 to {num_hidden_states - 1}, or -1 to -{num_hidden_states})"
                )
            resolved.append(index % num_hidden_states)
        if len(set(resolved)) != len(resolved):
            raise UsageError(f"--layers {self.text}: names the same layer twice ({resolved})")
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
        raise UsageError(f"--layers {text}: give a count, 'all', or layer indices such as -1 -4 12")
    numbers = [int(item) for item in items]
    if not explicit_list and numbers[0] > 0:
        return LayerChoice(count=numbers[0])
    if not explicit_list and numbers[0] == 0:
        raise UsageError("--layers 0: a count must be at least 1 (for the embedding output alone write --layers 0,)")
    return LayerChoice(indices=tuple(numbers))


def check_prompt(template: str) -> str:
    """A prompt template must hold `{text}` exactly once (where the text goes)."""
    if template.count(TEXT_FIELD) != 1:
        raise UsageError(f"--prompt {template!r}: the template must contain {TEXT_FIELD} exactly once")
    return template


# What a variant pools when --pooling or --layers is left out: the slot's published choice where
# it exists per layer (the pooler does not: an encoder's variant defaults to its first token).
VARIANT_POOLING = {"llama": "mean", "bert": "first", "roberta": "first"}
VARIANT_LAYERS = {"llama": 5, "bert": 1, "roberta": 1}


@dataclass(frozen=True)
class FeatureSpec:
    """What one extraction computes for one slot. The published extraction leaves `poolings`,
    `layers` (or, for the LLaMA slot, gives a count), `prompts` and `chat_template` unset; any
    other choice is a variant, whose unset pooling and layers take VARIANT_POOLING and
    VARIANT_LAYERS."""

    slot: str
    poolings: tuple[str, ...] = ()
    layers: LayerChoice | None = None
    prompts: tuple[str, ...] = ()
    chat_template: bool = False
    store_dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        if self.is_variant:
            object.__setattr__(self, "poolings", self.poolings or (VARIANT_POOLING[self.slot],))
            object.__setattr__(self, "layers", self.layers or LayerChoice(count=VARIANT_LAYERS[self.slot]))

    @property
    def is_variant(self) -> bool:
        """False for the published extraction of the slot (its own store folder and shapes)."""
        if self.prompts or self.chat_template or self.poolings:
            return True
        if self.layers is None:
            return False
        return not (self.slot == "llama" and self.layers.count is not None)

    @property
    def published_layers(self) -> int | None:
        """The LLaMA slot's layer count for the published extraction (None for encoders and variants)."""
        if self.slot != "llama" or self.is_variant:
            return None
        return self.layers.count if self.layers else VARIANT_LAYERS["llama"]

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

    def check_model(self, config) -> None:
        """Refuse what the model's configuration alone rules out, before the weights load: layer
        indices it does not have, and the pooler on a model without one (a decoder)."""
        if self.layers is not None and not self.layers.every:
            self.layers.resolve(int(config.num_hidden_layers) + 1)
        if "pooler" in self.poolings and not has_pooler(config):
            raise UsageError(f"--pooling pooler: {config.model_type} models have no pooler (choose mean, first or last)")


def has_pooler(config) -> bool:
    """Whether the base model transformers builds for `config` has a pooler layer (BERT, RoBERTa,
    MPNet do; decoders and DistilBERT do not): its class takes `add_pooling_layer`."""
    import inspect

    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        model_class = MODEL_MAPPING[type(config)]
    except KeyError:  # a model type transformers does not map (remote code): the weights will tell
        return True
    return "add_pooling_layer" in inspect.signature(model_class.__init__).parameters


def spec_from_args(args, slot: str) -> FeatureSpec:
    """The FeatureSpec of an extraction command line (after `resolve_extraction`)."""
    poolings = tuple(getattr(args, "pooling", None) or ())
    layers = getattr(args, "layers", None)
    choice = parse_layers(layers) if layers is not None else None
    prompts = tuple(check_prompt(p) for p in (getattr(args, "prompt", None) or ()))
    chat, store_dtype = bool(getattr(args, "chat_template", False)), getattr(args, "store_dtype", None)
    spec = FeatureSpec(slot, poolings, choice, prompts, chat, store_dtype or "bfloat16")
    if store_dtype and not spec.is_variant:
        raise UsageError(f"--store_dtype {store_dtype}: applies to variants (--pooling, --layers, --prompt); the "
                         "published extractions are stored in float32")  # fmt: skip
    if spec.is_variant and getattr(args, "llama_pooling", "masked") != "masked":
        raise UsageError("--llama_pooling unmasked_padded (or --compat reference) is the published extraction; "
                         "it does not combine with --pooling, --prompt, --chat_template or layer indices")  # fmt: skip
    if len(set(poolings)) != len(poolings):
        raise UsageError(f"--pooling {' '.join(poolings)}: names a pooling twice")
    if "pooler" in poolings and (len(poolings) > 1 or choice is not None or prompts or chat):
        raise UsageError(
            "--pooling pooler: the pooler output exists for the last layer of the plain text only; ask for it on its "
            "own, without --layers, --prompt or --chat_template (the BERT slot's published feature is the pooler)"
        )
    return spec


def format_prompt(template: str, text: str) -> str:
    return template.replace(TEXT_FIELD, text)


@dataclass(frozen=True)
class FeaturePick:
    """Which stored features one fusion source reads: `SLOT:POOLING:LAYERS[@FOLDER]`, e.g.
    `llama:mean:-1,-9,-17` (three layers of the decoder, each a vector of the fusion) or
    `roberta:mean:-1,-2` (an encoder's layers are averaged into its one vector). Without
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

    def select(self, features, manifest: dict):
        """(N, k, H) float32 of the chosen pooling and layers from a variant's (N, P, L, H) features."""
        where = manifest.get("store_dir", "?")
        problem = slot_mismatch(self.slot, manifest)
        if problem:
            raise UsageError(f"--features {self.text}: {where} {problem}")
        if manifest.get("feature_axes") != ["row", "pooling", "layer", "hidden"]:
            raise UsageError(f"--features {self.text}: {where} is a published extraction, not a variant; leave the slot out "
                             "of --features to read it")  # fmt: skip
        if self.pooling not in manifest["poolings"]:
            raise UsageError(f"--features {self.text}: {where} holds poolings {', '.join(manifest['poolings'])}")
        wanted = self.layers.resolve(manifest["num_hidden_states"])
        missing = [i for i in wanted if i not in manifest["layer_indices"]]
        if missing:
            raise UsageError(f"--features {self.text}: {where} has no hidden state {missing[0]} (it holds "
                             f"{manifest['layer_indices']})")  # fmt: skip
        positions = [manifest["layer_indices"].index(i) for i in wanted]
        return features[:, manifest["poolings"].index(self.pooling), positions].float()

    def record(self, manifest: dict) -> dict:
        """What predict.py needs to compute the same features from text."""
        return {
            "pick": self.text,
            "folder": manifest["store_dir"],
            "pooling": self.pooling,
            "layer_indices": self.layers.resolve(manifest["num_hidden_states"]),
            "prompts": manifest.get("prompts") or [],
            "chat_template": bool(manifest.get("chat_template")),
        }


def slot_mismatch(slot: str, manifest: dict) -> str | None:
    """Why features stored with `manifest` cannot be read as `slot`'s (the manifest names the slot
    they were extracted for), or None. Training and prediction both ask this."""
    stored = manifest.get("slot")
    if stored != slot:
        return f"holds features extracted for the {stored} slot, not {slot}; pick a {slot} folder"
    return None


def parse_pick(text: str, slots=("llama", "bert", "roberta")) -> FeaturePick:
    spec, _, folder = text.partition("@")
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] not in slots or parts[1] not in POOLINGS:
        raise UsageError(f"--features {text}: write SLOT:POOLING:LAYERS[@FOLDER], e.g. llama:mean:-1,-9 "
                         f"(slots: {', '.join(slots)}; poolings: {', '.join(POOLINGS)})")  # fmt: skip
    if folder and plain_name_problem(folder):
        raise UsageError(f"--features {text}: @{folder} {plain_name_problem(folder)}; @FOLDER is a folder of the task's "
                         "store, e.g. llama-mean-all")  # fmt: skip
    return FeaturePick(parts[0], parts[1], parse_layers(parts[2]), folder or None)


def spec_of_pick(slot: str, record: dict) -> FeatureSpec:
    """The extraction that recomputes a recorded pick's features from text (one pooling, its layers)."""
    if record["pooling"] == "pooler":
        return FeatureSpec(slot, ("pooler",))
    layers = LayerChoice(indices=tuple(record["layer_indices"]))
    return FeatureSpec(slot, (record["pooling"],), layers, tuple(record["prompts"]), record["chat_template"])
