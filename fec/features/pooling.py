"""Every pooling by name, in one registry: how a backbone's token states become one vector per layer.

`POOLINGS` (name -> `Pooling`: what it gives, the slot kinds that take it, its function) is the
one list: the `--pooling` choices and their help, the names a pick, a feature spec or a slot name
is checked against, and the dispatch of a variant extraction (`pool_layers`) all read it, so a new
pooling is one `register` call here and one test. The pooler is the one pooling that is not a
function of hidden states (`pool` None): the forward pass reads the model's `pooler_output`, for
the last layer of the plain text only.

The published extraction of each published slot is one of these (`fec.features.backbones.SLOTS`):
the LLaMA slot's `mean` at each of its last L layers (`layer_mean`, or the published
`unmasked_layer_mean` over every position, padding included), the BERT slot's `pooler`, and the
RoBERTa slot's `first` of the last layer. Their manifests and settings record `mean` and `first`
under the names stores have always been written with, `layer_mean` and `first_token`
(`recorded_name`; `registry_name` reads them back), so existing stores stay valid and are reused.

This module is torch-free until a pooling runs (torch is imported inside the functions): the
option layer reads the registry without loading a model library.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PoolFunction = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class Pooling:
    """One named pooling: what it gives (the `--pooling` help), the slot kinds whose models have
    what it reads, and `pool`: one layer's states (B, T, H) and attention mask (B, T) -> (B, H),
    float32 (None for the pooler, which reads the model's own output)."""

    name: str
    description: str
    kinds: tuple[str, ...]
    pool: PoolFunction | None


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `hidden` (B, T, H) over positions where `mask` (B, T) is 1, computed in float32.

    Padded positions are zeroed with `where`, not multiplied, so a NaN that a padded query row
    can produce never leaks into the sum. Rows without any real token give zeros, not NaN.
    """
    import torch

    keep = mask.bool().unsqueeze(-1)
    summed = torch.where(keep, hidden.float(), 0.0).sum(dim=1)
    counts = keep.sum(dim=1).clamp(min=1)
    return summed / counts


def first_state(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The state of each row's first token (CLS for encoders, BOS or the first word for decoders)."""
    return hidden[:, 0].float()


def last_state(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The state of each row's last real token (right padding: position mask.sum - 1)."""
    import torch

    last = (mask.sum(dim=1) - 1).clamp(min=0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()


POOLINGS: dict[str, Pooling] = {}


def register(pooling: Pooling) -> Pooling:
    """Add `pooling` to the registry under its name, which no other pooling may hold and which is
    a plain word: it goes into store folder names (`llama-mean+last-all`) and picks (`llama:last:-1`)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", pooling.name):
        raise ValueError(f"a pooling's name is lowercase letters, digits and _, not {pooling.name!r}")
    if pooling.name in POOLINGS:
        raise ValueError(f"a pooling named {pooling.name!r} is registered already")
    POOLINGS[pooling.name] = pooling
    return pooling


# In the order the `--pooling` help lists them.
register(Pooling("mean", "mean over the real tokens (attention mask)", ("decoder", "encoder"), masked_mean))
register(
    Pooling(
        "first",
        "the first token's state (CLS for encoders, BOS or the first word for decoders)",
        ("decoder", "encoder"),
        first_state,
    )
)
register(
    Pooling(
        "pooler",
        "the model's trained pooler output (BERT-style models that have one; last layer only)",
        ("encoder",),
        None,
    )
)
register(
    Pooling(
        "last",
        "the last real token's state (right padding), the natural one for decoders and prompts",
        ("decoder", "encoder"),
        last_state,
    )
)


# A published extraction's pooling as its manifest and settings record it, where the name differs.
RECORDED_NAMES = {"mean": "layer_mean", "first": "first_token"}


def recorded_name(name: str) -> str:
    """How a published extraction's manifest records the pooling `name`: `mean` -> `layer_mean`."""
    return RECORDED_NAMES.get(name, name)


def registry_name(recorded: str | None) -> str | None:
    """The pooling a published extraction's manifest records as `recorded`: `first_token` -> `first`
    (any other value, such as a variant's `variant`, unchanged)."""
    return {stored: name for name, stored in RECORDED_NAMES.items()}.get(recorded, recorded)


def hidden_state_choices(kind: str) -> str:
    """The poolings of hidden states a slot of `kind` takes, for a message: `mean, first or last`."""
    names = [p.name for p in POOLINGS.values() if p.pool is not None and kind in p.kinds]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


def layer_mean(hidden_states: tuple[torch.Tensor, ...], mask: torch.Tensor, layers: int) -> torch.Tensor:
    """The `mean` pooling of each of the last `layers` hidden states, last layer first: (B, layers, H).

    The order matches the published extractor (`hidden_states[-1]`, `[-2]`, ... `[-layers]`).
    """
    import torch

    return torch.stack([masked_mean(hidden_states[-k], mask) for k in range(1, layers + 1)], dim=1)


def unmasked_layer_mean(hidden_states: tuple[torch.Tensor, ...], layers: int) -> torch.Tensor:
    """The published LLaMA pooling: the plain mean over every position, padding included,
    taken in the model's dtype as the published code did, then cast to float32."""
    import torch

    return torch.stack([hidden_states[-k].mean(dim=1) for k in range(1, layers + 1)], dim=1).float()


def pool_layers(
    hidden_states: tuple[torch.Tensor, ...], mask: torch.Tensor, names: tuple[str, ...], indices: list[int]
) -> torch.Tensor:
    """Every pooling in `names` (each of hidden states) of every hidden state in `indices`: (B, P, L, H), float32."""
    import torch

    pools = [POOLINGS[name].pool for name in names]
    return torch.stack([torch.stack([pool(hidden_states[i], mask) for i in indices], dim=1) for pool in pools], dim=1)
