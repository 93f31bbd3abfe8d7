"""The feature core: texts in, pooled hidden states out, for any backbone in a slot.

    from fec.features.backbones import load_backbone
    from fec.features.forward_pass import extract_features
    backbone = load_backbone("offline:all-minilm-l6-v2", torch.device("cpu"), torch.float32)
    features, info = extract_features(backbone, ["I finally got the job!"], "bert")
    extract_features(backbone, texts, "llama", plan=PoolingPlan(layers=5), batching=Batching(max_len=200))

Texts are tokenised once, sorted by length and cut into batches under a token budget, padded
only to the longest text of their batch (on the right), run through the base model under
`torch.inference_mode`, pooled per slot, and returned in the order given. The extraction
scripts (`fec.features.extract`), prediction (`fec.inference.classifier`) and the benchmarks share this one function.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from fec.core.compat_setting import BATCH_SIZE
from fec.core.errors import NonFiniteFeaturesError, SettingError
from fec.core.slots import KINDS, PUBLISHED_KINDS
from fec.features import pooling
from fec.features.backbones import SLOTS, Backbone
from fec.features.spec import TEXT_FIELD, FeatureSpec, format_prompt

log = logging.getLogger(__name__)

REFERENCE_PAD_TOKEN = "[PAD]"
FLUSH_ROWS = 4096
# Padded tokens per batch when none is asked for. A CPU runs fastest with batches whose activations
# stay in its caches (bench/RESULTS.md 1d: up to 256 texts under 2048 tokens, 1.03-1.14x faster than
# 64 texts under 16384); a GPU wants large ones.
CPU_MAX_TOKENS = 2048
GPU_MAX_TOKENS = 16384


@dataclass(frozen=True)
class Batching:
    """How texts become batches: cut to `max_len` tokens, then `order` = `length` (longest first,
    each batch at most `batch_size` texts and `max_tokens` padded tokens: None = the device's
    default, CPU_MAX_TOKENS or GPU_MAX_TOKENS) or `file` (consecutive rows, `batch_size` at a time:
    the published order). Only `max_len` changes what a text's features are; the rest decides
    speed and memory (up to float rounding)."""

    max_len: int = 200
    batch_size: int = BATCH_SIZE
    max_tokens: int | None = None
    order: str = "length"

    def token_budget(self, device: torch.device) -> int:
        """Padded tokens per batch on `device`: as asked, else the device's default."""
        if self.max_tokens is not None:
            return self.max_tokens
        return CPU_MAX_TOKENS if device.type == "cpu" else GPU_MAX_TOKENS


@dataclass(frozen=True)
class PoolingPlan:
    """What each text's hidden states are pooled into: the slot's published pooling over the
    LLaMA slot's last `layers` layers (`llama_pooling` = `masked`, or the published
    `unmasked_padded`), or, for a variant `spec`, every pooling it names at every layer it names."""

    layers: int = 5
    llama_pooling: str = "masked"
    spec: FeatureSpec | None = None


@dataclass(frozen=True)
class ForwardPass:
    """What `forward_batches` needs besides the rows: the encoded texts, how they are padded
    (`padded_width` None = to the longest text of each batch) and how they are pooled."""

    slot: str
    encoded: list[list[int]]
    pad_id: int
    padded_width: int | None
    layers: int
    llama_pooling: str
    variant: tuple[tuple[str, ...], list[int]] | None
    decoder: bool = False  # a slot of the decoder kind: run without a KV cache

    @classmethod
    def of(cls, backbone: Backbone, slot: str, plan: PoolingPlan, variant, encoded: list[list[int]], max_len: int) -> ForwardPass:
        """The published LLaMA pooling pads every text to `max_len` with the "[PAD]" string's id;
        everything else pads to the batch's longest text with the tokenizer's pad token. `variant`
        is a variant spec's (poolings, hidden-state indices), else None."""
        padded_width = max_len if slot == "llama" and plan.llama_pooling == "unmasked_padded" else None
        pad_id = reference_pad_id(backbone.tokenizer) if padded_width else backbone.tokenizer.pad_token_id
        decoder = KINDS[plan.spec.slot_kind if plan.spec else PUBLISHED_KINDS[slot]].layered
        return cls(slot, encoded, pad_id, padded_width, plan.layers, plan.llama_pooling, variant, decoder)


def forward_flops(model: torch.nn.Module, tokens: int) -> float:
    """About the arithmetic of one forward pass over `tokens` padded tokens: 2 FLOPs per weight and token."""
    return 2.0 * sum(p.numel() for p in model.parameters()) * tokens


def non_finite_message(rows: list[int], dtype: torch.dtype, saved: str = "nothing was saved") -> str:
    shown = ", ".join(str(r + 1) for r in rows[:20]) + (" ..." if len(rows) > 20 else "")
    return (
        f"{len(rows)} row(s) gave non-finite features with dtype {str(dtype).removeprefix('torch.')} "
        f"(rows {shown}); {saved}; rerun with -dtype float32 or bfloat16"
    )


def plan_batches(lengths: np.ndarray, batch_size: int, max_tokens: int, order: str = "length") -> list[np.ndarray]:
    """Row indices per batch.

    `length`: longest texts first, each batch at most `batch_size` texts and at most `max_tokens`
    padded tokens (a single text longer than the budget still gets its own batch).
    `file`: consecutive rows in file order, `batch_size` at a time (the published recipe).
    """
    if batch_size < 1 or max_tokens < 1:
        raise ValueError(f"batch_size {batch_size} and max_tokens {max_tokens} must both be at least 1")
    if order == "file":
        return [np.arange(start, min(start + batch_size, len(lengths))) for start in range(0, len(lengths), batch_size)]
    if order != "length":
        raise ValueError(f"unknown batch order {order!r}; choose length or file")
    by_length = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(by_length):
        longest = int(lengths[by_length[start]])
        size = max(1, min(batch_size, max_tokens // max(longest, 1)))
        batches.append(by_length[start : start + size])
        start += size
    return batches


def pad_right(sequences: list[list[int]], pad_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to `width` (default: the longest): (input_ids, attention_mask), (B, T) int64."""
    width = width or max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def reference_pad_id(tokenizer) -> int:
    """The published LLaMA extractor set `pad_token = "[PAD]"`, a string not in LLaMA's
    vocabulary, so every pad position carried the unknown-token id. Same lookup here."""
    return tokenizer.convert_tokens_to_ids(REFERENCE_PAD_TOKEN)


def pool_batch(backbone: Backbone, forward: ForwardPass, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One forward pass and the slot's pooling, float32 on the model's device. A variant
    (`forward.variant` = poolings, hidden-state indices) gives every pooling at every index: (B, P, L, H)."""
    variant, layers, llama_pooling = forward.variant, forward.layers, forward.llama_pooling
    decoder = {"use_cache": False} if forward.decoder else {}
    if variant is not None:
        poolings, indices = variant
        if poolings == ("pooler",):
            out = backbone.model(input_ids=input_ids, attention_mask=mask, **decoder)
            return out.pooler_output.float()[:, None, None]
        out = backbone.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True, **decoder)
        return pooling.pool_layers(out.hidden_states, mask, poolings, indices)
    mode = pooling_used(backbone, forward.slot)
    if mode == "mean":
        # Ask only for the hidden states we pool, so the other layers are never kept.
        selection = list(range(-1, -layers - 1, -1))
        out = backbone.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=selection, **decoder)
        if llama_pooling == "unmasked_padded":
            return pooling.unmasked_layer_mean(out.hidden_states, layers)
        return pooling.layer_mean(out.hidden_states, mask, layers)
    out = backbone.model(input_ids=input_ids, attention_mask=mask)
    if mode == "pooler":
        return out.pooler_output.float()
    return pooling.POOLINGS[mode].pool(out.last_hidden_state, mask)


def pooling_used(backbone: Backbone, slot: str) -> str:
    """The pooling `pool_batch` applies for this model in a published slot: the slot's own, except
    that BERT-slot models without a trained pooler (none in the checkpoint, so transformers would
    initialise one randomly) fall back to `first`."""
    spec = SLOTS[slot]
    if spec.pooling == "pooler" and not backbone.has_trained_pooler:
        return "first"
    return spec.pooling


def encode_texts(tokenizer, texts: list[str], max_len: int, template: str | None = None, chat: bool = False) -> list[list[int]]:
    """Token ids per text, at most `max_len`. With a prompt `template` ("... {text} ...") and/or
    the tokenizer's chat template, a text too long is cut inside the template, so the prompt's
    ending (what `last` pooling reads) always survives truncation."""
    if template is None and not chat:
        return tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]
    template = template or TEXT_FIELD
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise SettingError("chat_template", None, "this tokenizer has no chat template")
        messages = [{"role": "user", "content": template}]
        template = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if template.count(TEXT_FIELD) != 1:
            raise SettingError("chat_template", None, "the chat template changed the prompt's {text} field")
    special = {"add_special_tokens": not chat}  # a rendered chat template already holds its special tokens
    formatted = [format_prompt(template, text) for text in texts]
    encoded = tokenizer(formatted, **special)["input_ids"]
    overhead = len(tokenizer(format_prompt(template, ""), **special)["input_ids"])
    if overhead >= max_len:
        raise SettingError("max_len", max_len, f"the prompt alone takes {overhead} tokens")
    for row, ids in enumerate(encoded):
        budget = max_len - overhead
        while len(ids) > max_len:
            # Cut the text, not the prompt: shrink it until the whole prompted text fits (a text
            # tokenised alone can take a token more or less than inside the template).
            text_ids = tokenizer(texts[row], add_special_tokens=False)["input_ids"][: max(budget, 0)]
            ids = tokenizer(format_prompt(template, tokenizer.decode(text_ids, skip_special_tokens=True)), **special)["input_ids"]
            budget -= max(1, len(ids) - max_len)
        encoded[row] = ids
    return encoded


def check_prompts(spec: FeatureSpec, resolved, max_len: int, trust_remote_code: bool = False) -> None:
    """A prompt or chat template the tokenizer cannot serve is refused before the weights load."""
    if not (spec.prompts or spec.chat_template):
        return
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(resolved), trust_remote_code=trust_remote_code)
    for template in spec.prompts or (None,):
        encode_texts(tokenizer, ["a"], max_len, template, spec.chat_template)


def extract_features(
    backbone: Backbone,
    texts: list[str],
    slot: str,
    *,
    plan: PoolingPlan = PoolingPlan(),
    batching: Batching = Batching(),
    desc: str = "extract",
    fallback: Callable[[], Backbone] | None = None,
) -> tuple[torch.Tensor, dict]:
    """Features for `texts` in their given order: (N, layers, H) for the llama slot, else (N, H);
    for a variant `plan.spec` (see `fec.features.spec`), (N, P, L, H): every pooling at every
    layer, averaged over the spec's prompts.

    `plan.llama_pooling="unmasked_padded"` reproduces the published LLaMA recipe: every text
    padded to `batching.max_len` with the "[PAD]" string's id and the mean taken over all positions.
    `fallback` returns a float32 copy of the backbone, used only for rows whose features come
    out non-finite in half precision.
    """
    max_len, spec = batching.max_len, plan.spec
    if max_len < 1:
        raise SettingError("max_len", max_len, "must be at least 1 (0 would turn truncation off)")
    variant = None
    if spec is not None and spec.is_variant:
        variant = (spec.poolings, variant_indices(backbone, spec))
    elif slot not in PUBLISHED_KINDS:
        raise SettingError("slot", slot, "is not a published slot: its features are a variant's (give its FeatureSpec)")
    elif PUBLISHED_KINDS[slot] == "decoder" and not 1 <= plan.layers <= backbone.num_hidden_states:
        raise SettingError(
            "layers", plan.layers, f"the model has {backbone.num_hidden_states} hidden states (embeddings + layers)"
        )
    if backbone.max_tokens is not None and max_len > backbone.max_tokens:
        raise SettingError("max_len", max_len, f"{backbone.spec} has positions for {backbone.max_tokens} tokens at most")
    templates = (spec.prompts or (None,)) if variant else (None,)
    chat = bool(variant and spec.chat_template)
    features, info = None, {}
    for number, template in enumerate(templates, 1):
        encoded = encode_texts(backbone.tokenizer, texts, max_len, template, chat)
        label = desc if len(templates) == 1 else f"{desc} prompt {number}/{len(templates)}"
        forward = ForwardPass.of(backbone, slot, plan, variant, encoded, max_len)
        part, part_info = _extract_encoded(backbone, forward, batching, label, fallback)
        # MetaEOL: the features of several prompts are averaged.
        features = part if features is None else features.add_(part)
        info = {k: info.get(k, 0) + v for k, v in part_info.items()}
    if len(templates) > 1:
        features /= len(templates)
    return features, info


def variant_indices(backbone: Backbone, spec: FeatureSpec) -> list[int]:
    """The hidden-state indices a variant pools, checked against the model."""
    if spec.poolings == ("pooler",):
        if not backbone.has_trained_pooler:
            choices = pooling.hidden_state_choices(spec.slot_kind)
            raise SettingError("pooling", "pooler", f"{backbone.spec} has no trained pooler (choose {choices})")
        return [backbone.num_hidden_states - 1]
    return spec.layers.resolve(backbone.num_hidden_states)


def _extract_encoded(
    backbone: Backbone, forward: ForwardPass, batching: Batching, desc: str, fallback: Callable[[], Backbone] | None
) -> tuple[torch.Tensor, dict]:
    """Batch, run and pool token ids already encoded; see `extract_features`."""
    encoded, padded_width, variant = forward.encoded, forward.padded_width, forward.variant
    lengths = np.array([len(ids) for ids in encoded])
    if variant is not None:
        width = (len(variant[0]), len(variant[1]), backbone.hidden_size)
    else:
        width = (forward.layers, backbone.hidden_size) if forward.decoder else (backbone.hidden_size,)
    features = torch.empty((len(encoded), *width), dtype=torch.float32)
    finite = torch.ones(len(encoded), dtype=torch.bool)
    max_tokens = batching.token_budget(backbone.device)
    # Texts padded to a fixed width (the published LLaMA pooling) take that width each in the budget.
    widths = np.full(len(lengths), padded_width) if padded_width else lengths
    batches = plan_batches(widths, batching.batch_size, max_tokens, batching.order)
    with tqdm(total=len(encoded), desc=desc, unit="text", leave=False) as bar:
        forward_batches(backbone, batches, features, finite, bar, forward)
    info = {
        "batches": len(batches),
        "tokens": int(lengths.sum()),
        "padded_tokens": int(sum(len(rows) * (padded_width or lengths[rows].max()) for rows in batches)),
        "rows_at_max_len": int((lengths >= batching.max_len).sum()),
        "float32_fallback_rows": 0,
    }
    if not bool(finite.all()) and fallback is not None and backbone.dtype != torch.float32:
        # Half precision overflowed on some rows (LLaMA's massive activations): redo only those in float32.
        bad = (~finite).nonzero().flatten().numpy()
        log.warning(
            "%d row(s) overflowed in %s; recomputing them in float32", len(bad), str(backbone.dtype).removeprefix("torch.")
        )
        retry = [bad[i : i + batching.batch_size] for i in range(0, len(bad), batching.batch_size)]
        forward_batches(fallback(), retry, features, finite, None, forward)
        info["float32_fallback_rows"] = len(bad)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        raise NonFiniteFeaturesError(non_finite_message(bad, backbone.dtype), bad)
    return features, info


@torch.inference_mode()
def forward_batches(
    backbone: Backbone, batches: list[np.ndarray], features: torch.Tensor, finite: torch.Tensor, bar, forward: ForwardPass
) -> None:
    """Run `batches` of rows and write their pooled features (and finiteness) into the CPU tensors.

    On CUDA, inputs go through pinned memory with asynchronous copies and results stay on the
    device until about FLUSH_ROWS rows are pending, so the GPU is not stalled by a host sync
    after every batch.
    """
    cuda = backbone.device.type == "cuda"
    pending: list[tuple[np.ndarray, torch.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        index = torch.from_numpy(np.concatenate([rows for rows, _ in pending]))
        pooled = torch.cat([p for _, p in pending]).cpu()
        features[index] = pooled
        finite[index] = torch.isfinite(pooled).flatten(1).all(dim=1)
        pending.clear()

    for rows in batches:
        ids, mask = pad_right([forward.encoded[i] for i in rows], forward.pad_id, forward.padded_width)
        if cuda:
            ids, mask = (
                ids.pin_memory().to(backbone.device, non_blocking=True),
                mask.pin_memory().to(backbone.device, non_blocking=True),
            )
        batch_features = pool_batch(backbone, forward, ids, mask)
        pending.append((rows, batch_features))
        if not cuda or sum(len(r) for r, _ in pending) >= FLUSH_ROWS:
            flush()
        if bar is not None:
            bar.update(len(rows))
    flush()
