"""An independent numpy reading of a Gemma 3 GGUF checkpoint: its blocks, and the model they make.

A test helper, not a test. fec converts a GGUF once through transformers, which dequantises with
gguf-py (`gguf.quants.dequantize`) and builds the model from its own reading of the metadata. This
module redoes both from the other side, so a test can compare them:

- `dequantize` unpacks ggml's block formats from the C layout in llama.cpp's ggml-quants.c
  (`dequantize_row_q4_K`, `_q6_K`, `_q5_0`, `_q8_0`), in float32 with the same order of operations.
  It does not call gguf-py's dequantiser; `gguf.GGUFReader` is used only for the raw bytes, the
  shapes, the type ids and the metadata.
- `Gemma3Reference` is a float64 forward pass of the Gemma 3 text decoder the way llama.cpp runs it
  (llama-model.cpp, `LLM_ARCH_GEMMA3`): the hyperparameters come from the `gemma3.*` keys, plus the
  ones llama.cpp fixes in code for this architecture (see `Gemma3HParams.from_reader`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFReader

# ggml type ids (ggml.h), and each block's (values, bytes)
F32, F16, Q5_0, Q8_0, Q4_K, Q6_K, BF16 = 0, 1, 6, 8, 12, 14, 30
QK_K = 256
BLOCK = {F32: (1, 4), F16: (1, 2), BF16: (1, 2), Q5_0: (32, 22), Q8_0: (32, 34), Q4_K: (QK_K, 144), Q6_K: (QK_K, 210)}
TYPE_NAMES = {F32: "F32", F16: "F16", BF16: "BF16", Q5_0: "Q5_0", Q8_0: "Q8_0", Q4_K: "Q4_K", Q6_K: "Q6_K"}

# GGUF tensor name (after `blk.N.`) -> the parameter of transformers' Gemma3TextModel it becomes
HF_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_output": "self_attn.o_proj",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "post_ffw_norm": "post_feedforward_layernorm",
}


def hf_name(gguf_name: str) -> str:
    """`blk.3.attn_q.weight` -> `layers.3.self_attn.q_proj.weight` (Gemma3TextModel's state dict)."""
    if gguf_name == "token_embd.weight":
        return "embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "norm.weight"
    _, layer, stem, suffix = gguf_name.split(".")
    return f"layers.{layer}.{HF_NAMES[stem]}.{suffix}"


# ---------------------------------------------------------------------------- blocks


def _f16(two_bytes: np.ndarray) -> np.ndarray:
    """A (n, 2) uint8 column pair -> (n,) float32: ggml's ggml_half scale fields."""
    return np.ascontiguousarray(two_bytes).view("<f2")[:, 0].astype(np.float32)


def _q4_k(b: np.ndarray) -> np.ndarray:
    # block_q4_K: d, dmin (f16), scales[12], qs[128]; eight sub-blocks of 32, each with a 6-bit
    # scale and min packed as in get_scale_min_k4: the first four in the low 6 bits of bytes 0-3
    # (scales) and 4-7 (mins), the last four in the nibbles of bytes 8-11 plus the top 2 bits of 0-7.
    d, dmin, s, qs = _f16(b[:, 0:2]), _f16(b[:, 2:4]), b[:, 4:16], b[:, 16:144]
    sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)], axis=1)
    mn = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    # each 64 values are 32 bytes: their low nibbles are sub-block 2c, their high nibbles 2c + 1
    q = qs.reshape(-1, 4, 1, 32)
    q = np.concatenate([q & 0xF, q >> 4], axis=2).reshape(-1, 8, 32)
    d1 = (d[:, None] * sc.astype(np.float32))[:, :, None]  # float32, as the C code rounds them
    m1 = (dmin[:, None] * mn.astype(np.float32))[:, :, None]
    return d1 * q.astype(np.float32) - m1


def _q6_k(b: np.ndarray) -> np.ndarray:
    # block_q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (int8, one per 16 values),
    # d (f16) last. Each half of 128 values takes 64 bytes of ql and 32 of qh: value l, l+32, l+64,
    # l+96 are ql[l] low, ql[l+32] low, ql[l] high, ql[l+32] high nibble, with qh[l]'s bit pairs 0-3.
    ql, qh = b[:, 0:128].reshape(-1, 2, 64), b[:, 128:192].reshape(-1, 2, 32)
    sc, d = b[:, 192:208].view(np.int8), _f16(b[:, 208:210])
    lo = np.concatenate([ql[..., :32] & 0xF, ql[..., 32:] & 0xF, ql[..., :32] >> 4, ql[..., 32:] >> 4], axis=-1)
    hi = np.concatenate([(qh >> shift) & 3 for shift in (0, 2, 4, 6)], axis=-1)
    q = ((lo | (hi << 4)).astype(np.int16) - 32).reshape(-1, 16, 16)
    return (d[:, None] * sc.astype(np.float32))[:, :, None] * q.astype(np.float32)


def _q5_0(b: np.ndarray) -> np.ndarray:
    # block_q5_0: d (f16), qh (u32: the 5th bit of all 32 values), qs[16]: value j is qs[j] low
    # nibble + qh bit j, value j+16 is qs[j] high nibble + qh bit j+16; stored offset by 16.
    d, qh, qs = _f16(b[:, 0:2]), np.ascontiguousarray(b[:, 2:6]).view("<u4").astype(np.int64), b[:, 6:22].astype(np.int64)
    j = np.arange(16)
    x0 = ((qs & 0xF) | (((qh >> j) << 4) & 0x10)) - 16
    x1 = ((qs >> 4) | ((qh >> (j + 12)) & 0x10)) - 16
    return np.concatenate([x0, x1], axis=1).astype(np.float32) * d[:, None]


def _q8_0(b: np.ndarray) -> np.ndarray:
    return b[:, 2:34].view(np.int8).astype(np.float32) * _f16(b[:, 0:2])[:, None]


def dequantize(raw: np.ndarray, ggml_type: int, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 array of `shape` (numpy order) that the bytes `raw` of a `ggml_type` tensor hold."""
    raw = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    if ggml_type == F32:
        out = raw.view("<f4")
    elif ggml_type == F16:
        out = raw.view("<f2").astype(np.float32)
    elif ggml_type == BF16:  # the top half of a float32
        out = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    elif ggml_type in (Q4_K, Q6_K, Q5_0, Q8_0):
        values, nbytes = BLOCK[ggml_type]
        blocks = raw.reshape(-1, nbytes)
        out = {Q4_K: _q4_k, Q6_K: _q6_k, Q5_0: _q5_0, Q8_0: _q8_0}[ggml_type](blocks).reshape(-1)
    else:
        raise NotImplementedError(f"ggml type {ggml_type} is not read by this reference")
    return out.reshape(shape).astype(np.float32, copy=False)


def read_tensors(reader: GGUFReader) -> dict[str, np.ndarray]:
    """Every tensor of the file, dequantised here, as float32 in numpy (row-major) order."""
    out = {}
    for t in reader.tensors:
        # GGUF lists dimensions innermost first (ne0 = the length of a row)
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))
        out[t.name] = dequantize(np.asarray(t.data), int(t.tensor_type), shape)
    return out


# ---------------------------------------------------------------------------- model


def _field(reader: GGUFReader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        return default
    value = field.parts[field.data[0]]
    return bytes(value).decode() if field.types[0].name == "STRING" else value.item()


@dataclass(frozen=True)
class Gemma3HParams:
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    eps: float
    rope_base: float  # full-attention layers
    rope_base_swa: float  # sliding-window layers
    rope_scale: float  # full-attention layers only
    swa_pattern: int
    sliding_window: int
    attn_scale: float

    @classmethod
    def from_reader(cls, reader: GGUFReader) -> Gemma3HParams:
        arch = _field(reader, "general.architecture")
        if arch != "gemma3":
            raise ValueError(f"not a gemma3 GGUF: {arch!r}")
        k = lambda name, default=None: _field(reader, f"gemma3.{name}", default)  # noqa: E731
        n_embd, n_head, head_dim = k("embedding_length"), k("attention.head_count"), k("attention.key_length")
        scaling = k("rope.scaling.type", "none")
        if scaling not in ("none", "linear"):
            raise NotImplementedError(f"rope scaling {scaling!r}")
        return cls(
            n_embd=n_embd,
            n_layer=k("block_count"),
            n_head=n_head,
            n_head_kv=k("attention.head_count_kv"),
            head_dim=head_dim,
            n_ff=k("feed_forward_length"),
            eps=k("attention.layer_norm_rms_epsilon"),
            rope_base=k("rope.freq_base", 1e6),
            rope_scale=1.0 / k("rope.scaling.factor", 1.0) if scaling == "linear" else 1.0,
            # Not in the file: llama.cpp sets these in code for LLM_ARCH_GEMMA3 (set_swa_pattern(6),
            # rope_freq_base_train_swa = 10000, unscaled); newer builds slide only with a window key.
            rope_base_swa=10000.0,
            swa_pattern=6 if k("attention.sliding_window", 0) > 0 else 0,
            sliding_window=k("attention.sliding_window", 0),
            # llama.cpp: 1/sqrt(head_dim), except the 27B, scaled by its hidden size per head
            # (transformers' query_pre_attn_scalar, which a GGUF does not carry)
            attn_scale=(n_embd // n_head if k("block_count") == 62 else head_dim) ** -0.5,
        )

    def is_sliding(self, layer: int) -> bool:
        """llama.cpp's set_swa_pattern(n): every n-th layer (the last of each group) attends fully."""
        return self.swa_pattern > 0 and layer % self.swa_pattern < self.swa_pattern - 1


def _rms(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    # the GGUF weight is Gemma's (1 + w) already (llama.cpp's converter adds the 1), so it multiplies as stored
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x: np.ndarray, pos: np.ndarray, base: float, scale: float) -> np.ndarray:
    # NEOX rotation (llama.cpp's rope type for Gemma): dimension i pairs with i + d/2, as in
    # transformers' rotate_half, so the GGUF q/k rows are used unpermuted (convert_hf_to_gguf
    # permutes only for the LLaMA family's interleaved pairs).
    half = x.shape[-1] // 2
    angle = (pos * scale)[:, None] * base ** (-np.arange(half) / half)
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


class Gemma3Reference:
    """Gemma 3 text decoder from a GGUF file, in numpy float64 (weights dequantised in float32)."""

    def __init__(self, path: str | Path):
        reader = GGUFReader(path)
        self.hp = Gemma3HParams.from_reader(reader)
        self.types = {t.name: int(t.tensor_type) for t in reader.tensors}
        self.weights = read_tensors(reader)
        del reader  # the tensors above are copies; let the memory map go

    def _w(self, name: str) -> np.ndarray:
        return self.weights[name].astype(np.float64)

    def logits(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """Next-token logits after each position of one sequence of token ids: (len(ids), vocab)."""
        hp, ids = self.hp, np.asarray(ids)
        n = len(ids)
        embd = self.weights["token_embd.weight"]
        x = embd[ids].astype(np.float64) * np.sqrt(hp.n_embd)
        pos = np.arange(n, dtype=np.float64)
        dist = pos[:, None] - pos[None, :]  # query - key
        for il in range(hp.n_layer):
            w = lambda name, il=il: self._w(f"blk.{il}.{name}.weight")  # noqa: E731
            sliding = hp.is_sliding(il)
            base, scale = (hp.rope_base_swa, 1.0) if sliding else (hp.rope_base, hp.rope_scale)

            h = _rms(x, w("attn_norm"), hp.eps)
            q = (h @ w("attn_q").T).reshape(n, hp.n_head, hp.head_dim)
            k = (h @ w("attn_k").T).reshape(n, hp.n_head_kv, hp.head_dim)
            v = (h @ w("attn_v").T).reshape(n, hp.n_head_kv, hp.head_dim)
            q = _rope(_rms(q, w("attn_q_norm"), hp.eps), pos, base, scale) * hp.attn_scale
            k = _rope(_rms(k, w("attn_k_norm"), hp.eps), pos, base, scale)
            # grouped-query attention: query head j reads key/value head j // (n_head / n_head_kv)
            group = hp.n_head // hp.n_head_kv
            k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
            scores = np.einsum("qhd,khd->hqk", q, k)
            masked = (dist < 0) | ((dist >= hp.sliding_window) if sliding else False)
            scores = np.where(masked[None], -np.inf, scores)
            p = np.exp(scores - scores.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            a = np.einsum("hqk,khd->qhd", p, v).reshape(n, hp.n_head * hp.head_dim)
            x = x + _rms(a @ w("attn_output").T, w("post_attention_norm"), hp.eps)

            h = _rms(x, w("ffn_norm"), hp.eps)
            f = (_gelu_tanh(h @ w("ffn_gate").T) * (h @ w("ffn_up").T)) @ w("ffn_down").T
            x = x + _rms(f, w("post_ffw_norm"), hp.eps)

        x = _rms(x, self._w("output_norm.weight"), hp.eps)
        out = self.weights.get("output.weight", embd)  # absent: tied to the embedding
        # in row chunks, so a 262k-token vocabulary never needs a float64 copy of the whole matrix
        step = 16384
        return np.concatenate([x @ out[i : i + step].astype(np.float64).T for i in range(0, len(out), step)], axis=1)
