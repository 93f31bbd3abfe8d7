"""Named pooling modes that turn a backbone's token states into one vector (or one per layer).

| mode          | input                         | output   | used by        |
|---------------|-------------------------------|----------|----------------|
| `layer_mean`  | hidden_states[-1], ..., [-L]  | (B, L, H)| LLaMA slot     |
| (unmasked)    | the same, padding included    | (B, L, H)| `-compat reference` |
| `pooler`      | `pooler_output`               | (B, H)   | BERT slot      |
| `first_token` | last_hidden_state[:, 0]       | (B, H)   | RoBERTa slot   |
| `pool_layers` | any hidden states, any of `mean`, `first`, `last` | (B, P, L, H) | `--pooling` variants |

`layer_mean` averages over real tokens only (the attention mask), in float32, so a text's
features do not depend on how much padding its batch carried.
"""

from __future__ import annotations

import torch


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `hidden` (B, T, H) over positions where `mask` (B, T) is 1, computed in float32.

    Padded positions are zeroed with `where`, not multiplied, so a NaN that a padded query row
    can produce never leaks into the sum. Rows without any real token give zeros, not NaN.
    """
    keep = mask.bool().unsqueeze(-1)
    summed = torch.where(keep, hidden.float(), 0.0).sum(dim=1)
    counts = keep.sum(dim=1).clamp(min=1)
    return summed / counts


def layer_mean(hidden_states: tuple[torch.Tensor, ...], mask: torch.Tensor, layers: int) -> torch.Tensor:
    """Masked mean of each of the last `layers` hidden states, last layer first: (B, layers, H).

    The order matches the published extractor (`hidden_states[-1]`, `[-2]`, ... `[-layers]`).
    """
    return torch.stack([masked_mean(hidden_states[-k], mask) for k in range(1, layers + 1)], dim=1)


def unmasked_layer_mean(hidden_states: tuple[torch.Tensor, ...], layers: int) -> torch.Tensor:
    """The published LLaMA pooling: the plain mean over every position, padding included,
    taken in the model's dtype as the published code did, then cast to float32."""
    return torch.stack([hidden_states[-k].mean(dim=1) for k in range(1, layers + 1)], dim=1).float()


def first_token(last_hidden_state: torch.Tensor) -> torch.Tensor:
    return last_hidden_state[:, 0].float()


def last_token(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The state of each row's last real token (right padding: position mask.sum - 1)."""
    last = (mask.sum(dim=1) - 1).clamp(min=0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()


def pool_tokens(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """One named pooling of one layer's states (B, T, H) -> (B, H), float32."""
    if mode == "mean":
        return masked_mean(hidden, mask)
    if mode == "first":
        return hidden[:, 0].float()
    if mode == "last":
        return last_token(hidden, mask)
    raise ValueError(f"unknown pooling {mode!r}; choose mean, first or last")


def pool_layers(
    hidden_states: tuple[torch.Tensor, ...], mask: torch.Tensor, modes: tuple[str, ...], indices: list[int]
) -> torch.Tensor:
    """Every pooling in `modes` of every hidden state in `indices`: (B, P, L, H), float32."""
    per_mode = [torch.stack([pool_tokens(hidden_states[i], mask, mode) for i in indices], dim=1) for mode in modes]
    return torch.stack(per_mode, dim=1)
