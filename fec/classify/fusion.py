"""The fusion classifier (design.md section 1), with every size derived from the features.

    from fec.classify.fusion import DownstreamModel
    model = DownstreamModel(num_classes=32, decoder_shape=(5, 4096), encoder_dims=[1024, 1024])
    print(model.describe())
    tuned = DownstreamModel(num_classes=32, options=FusionOptions(sigma=0.5, pn="tanh"))
    same = DownstreamModel.from_config(tuned.config)   # as fec.inference rebuilds a saved run
    more = DownstreamModel(num_classes=32, decoder_shape=[(5, 4096), (3, 896)], encoder_dims=[1024, 1024, 384])

Any number of sources: decoders, each (L_k, Hd_k) (one vector per layer), then encoders, each a
vector. For a batch of B texts:
1. each decoder-layer vector (width Hd_k) goes through its own Linear(Hd_k, D) + ReLU + Dropout;
   each encoder vector whose width differs from D gets a Linear(width, D) (none when it equals D);
2. the n = sum L_k + encoders vectors are stacked, X: (B, n, D), and pooled by co-occurrence,
   P = X X^T (B, n*n);
3. power normalisation: `sigmoid` = 2*sigmoid(sigma*P) - 1 (the published code), `tanh` = tanh(2*sigma*P)
   (the published README's formula);
4. concatenated with each decoder's mean over its raw layers (Hd_k); without a decoder source,
   the raw encoder vectors are concatenated instead, because the Gram matrix of one or two vectors
   carries almost nothing. `raw_inputs="all"` (not in the published model) concatenates the raw
   encoder vectors beside the decoder means too, so the MLP sees each encoder directly and not only
   through its power-normalised inner products;
5. an MLP: Linear(in, 1024) + ReLU + Dropout, Linear(1024, 256) + ReLU + Dropout, Linear(256, C).

With the published dims (5x4096 decoder, two 1024 encoders) this is exactly the published
model: 5 x Linear(4096, 1024), a 7x7 Gram, 49 + 4096 = 4145 inputs to the MLP. More decoders
append their layers' Linears to `compress_layers`, so with one decoder the parameters, their
order and the state_dict keys are the published model's.

Inputs can be standardised inside the model (per source and feature, with training-split
statistics held as buffers), so a checkpoint carries its own normalisation to prediction time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import torch
import torch.nn as nn

PN_FORMS = ("sigmoid", "tanh")
RAW_INPUTS = ("decoder", "all")
PUBLISHED_FUSION_DIM = 1024


def decoder_shapes(decoder_shape) -> list[tuple[int, int]]:
    """`decoder_shape` as a list of (layers, width): None (no decoder), one (L, Hd), or a list of them."""
    if decoder_shape is None:
        return []
    if len(decoder_shape) == 2 and all(isinstance(n, Integral) for n in decoder_shape):
        decoder_shape = [decoder_shape]
    shapes = [(int(layers), int(width)) for layers, width in decoder_shape]
    if any(layers < 1 or width < 1 for layers, width in shapes):
        raise ValueError(f"decoder shapes must be positive (layers, width) pairs, not {shapes}")
    return shapes


def recorded_shape(shapes: list[tuple[int, int]]) -> list | None:
    """How `config` records the decoders: None, [L, Hd] for one (as published), [[L, Hd], ...] for several."""
    if len(shapes) == 1:
        return list(shapes[0])
    return [list(shape) for shape in shapes] or None


def default_fusion_dim(decoder_shape, encoder_dims: Sequence[int]) -> int:
    """D: the encoders' width when they agree (1024 for BERT/RoBERTa-large, as published), else
    the widest encoder, so no encoder is squeezed; with no encoder, min(widest Hd, 1024)."""
    if encoder_dims:
        return max(encoder_dims)
    return min(max(width for _, width in decoder_shapes(decoder_shape)), PUBLISHED_FUSION_DIM)


def power_normalise(p: torch.Tensor, form: str, sigma: float) -> torch.Tensor:
    if form == "sigmoid":
        return 2 * torch.sigmoid(sigma * p) - 1
    if form == "tanh":
        return torch.tanh(2 * sigma * p)
    raise ValueError(f"unknown power normalisation {form!r}; choose one of {', '.join(PN_FORMS)}")


@dataclass(frozen=True)
class FusionOptions:
    """How the features are fused and classified, beside the shapes the features fix (see the
    module docstring); the defaults are the published model's."""

    fusion_dim: int | None = None  # D; None: `default_fusion_dim`
    sigma: float = 1.0
    pn: str = "sigmoid"  # power normalisation, one of PN_FORMS
    dropout: float = 0.5
    hidden: Sequence[int] = (1024, 256)  # the MLP's hidden widths
    raw_inputs: str = "decoder"  # one of RAW_INPUTS


PUBLISHED_FUSION_OPTIONS = FusionOptions()
SHAPE_KEYS = ("num_classes", "decoder_shape", "encoder_dims")


class DownstreamModel(nn.Module):
    """The fusion classifier. `decoder_shape` is None, one (L, Hd) or a list of them (one per
    decoder source, in input order); `config` records every setting, as model.json's `model`
    holds it: `DownstreamModel.from_config(config)` builds the same model again."""

    def __init__(
        self,
        num_classes: int,
        decoder_shape: tuple[int, int] | Sequence[tuple[int, int]] | None = (5, 4096),
        encoder_dims: Sequence[int] = (1024, 1024),
        options: FusionOptions = PUBLISHED_FUSION_OPTIONS,
    ):
        super().__init__()
        self.decoder_shapes = decoder_shapes(decoder_shape)
        if not self.decoder_shapes and not encoder_dims:
            raise ValueError("the model needs at least one source")
        if options.pn not in PN_FORMS:
            raise ValueError(f"unknown power normalisation {options.pn!r}; choose one of {', '.join(PN_FORMS)}")
        if options.raw_inputs not in RAW_INPUTS:
            raise ValueError(f"unknown raw_inputs {options.raw_inputs!r}; choose one of {', '.join(RAW_INPUTS)}")
        # Without a decoder the encoder vectors always reach the MLP (recorded as such).
        raw_inputs = options.raw_inputs if self.decoder_shapes else "all"
        dropout = options.dropout
        self.config = {
            "num_classes": int(num_classes),
            "decoder_shape": recorded_shape(self.decoder_shapes),
            "encoder_dims": [int(d) for d in encoder_dims],
            "fusion_dim": int(options.fusion_dim or default_fusion_dim(self.decoder_shapes, encoder_dims)),
            "sigma": float(options.sigma),
            "pn": options.pn,
            "dropout": float(dropout),
            "hidden": [int(h) for h in options.hidden],
            "raw_inputs": raw_inputs,
        }
        d = self.config["fusion_dim"]
        # Every decoder's layers in input order; with one decoder, the published `compress_layers`.
        self.compress_layers = nn.ModuleList(
            nn.Sequential(nn.Linear(hd, d), nn.ReLU(), nn.Dropout(dropout))
            for layers, hd in self.decoder_shapes
            for _ in range(layers)
        )
        self.encoder_projections = nn.ModuleList(nn.Identity() if width == d else nn.Linear(width, d) for width in encoder_dims)
        vectors = len(self.compress_layers) + len(encoder_dims)
        raw = sum(hd for _, hd in self.decoder_shapes) + (sum(encoder_dims) if raw_inputs == "all" else 0)
        self.head_in = vectors * vectors + raw
        widths = [self.head_in, *self.config["hidden"]]
        blocks: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=False):
            blocks += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
        blocks.append(nn.Linear(widths[-1], num_classes))
        self.mlp = nn.Sequential(*blocks)
        # Identity standardisation until `set_input_stats` is called (the published raw inputs).
        for i, shape in enumerate([*self.decoder_shapes, *((w,) for w in encoder_dims)]):
            self.register_buffer(f"input_mean_{i}", torch.zeros(shape))
            self.register_buffer(f"input_std_{i}", torch.ones(shape))

    @classmethod
    def from_config(cls, config: dict) -> DownstreamModel:
        """The model a `config` describes (model.json's `model` of a saved run); a setting it does
        not name takes its default, one the model does not know raises TypeError."""
        if not isinstance(config, dict):
            raise TypeError(f"a model config is a dict of settings, not {type(config).__name__}")
        shapes = {k: v for k, v in config.items() if k in SHAPE_KEYS}
        options = FusionOptions(**{k: v for k, v in config.items() if k not in SHAPE_KEYS})
        return cls(**shapes, options=options)

    @property
    def has_decoder(self) -> bool:
        return bool(self.decoder_shapes)

    def set_input_stats(self, stats: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Per-source (mean, std), in input order, from the training split."""
        for i, (mean, std) in enumerate(stats):
            getattr(self, f"input_mean_{i}").copy_(mean)
            getattr(self, f"input_std_{i}").copy_(std)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """inputs: each decoder's features (B, L, Hd) first, then each encoder's (B, H)."""
        decoders, encoders = self._split(self._standardised(inputs))
        raw = [decoder.mean(dim=1) for decoder in decoders]
        if self.config["raw_inputs"] == "all":
            raw += encoders
        return self.mlp(torch.cat([self._pooled(decoders, encoders), *raw], dim=1))

    def pooled(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The power-normalised Gram entries (B, n*n), the first part of the MLP's input; for
        diagnostics (values near ±1 carry little beyond their sign)."""
        return self._pooled(*self._split(self._standardised(inputs)))

    def _standardised(self, inputs) -> list[torch.Tensor]:
        return [(x.float() - getattr(self, f"input_mean_{i}")) / getattr(self, f"input_std_{i}") for i, x in enumerate(inputs)]

    def _split(self, inputs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        count = len(self.decoder_shapes)
        return inputs[:count], inputs[count:]

    def _pooled(self, decoders: list[torch.Tensor], encoders: list[torch.Tensor]) -> torch.Tensor:
        layers = [decoder[:, i] for decoder in decoders for i in range(decoder.shape[1])]
        vectors = [compress(layer) for compress, layer in zip(self.compress_layers, layers, strict=True)]
        vectors += [project(x) for project, x in zip(self.encoder_projections, encoders, strict=False)]
        stacked = torch.stack(vectors, dim=1)
        gram = torch.bmm(stacked, stacked.transpose(1, 2)).flatten(1)
        return power_normalise(gram, self.config["pn"], self.config["sigma"])

    def describe(self) -> str:
        c = self.config
        n = len(self.compress_layers) + len(self.encoder_projections)
        lines = []
        for layers, hd in self.decoder_shapes:
            lines.append(
                f"decoder: {layers} x ({hd}) -> {layers} x Linear({hd}, {c['fusion_dim']}) + ReLU + Dropout({c['dropout']})"
            )
        for width, proj in zip(c["encoder_dims"], self.encoder_projections, strict=False):
            lines.append(
                f"encoder: ({width}) -> " + ("as is" if isinstance(proj, nn.Identity) else f"Linear({width}, {c['fusion_dim']})")
            )
        raw = [f"mean of decoder layers ({hd})" for _, hd in self.decoder_shapes]
        if c["raw_inputs"] == "all":
            raw += [f"raw encoder vectors ({sum(c['encoder_dims'])})"]
        raw = " + ".join(raw)
        pn = "2*sigmoid(sigma*P)-1" if c["pn"] == "sigmoid" else "tanh(2*sigma*P)"
        lines.append(f"fusion: X ({n}, {c['fusion_dim']}) -> Gram {n}x{n} -> {pn}, sigma={c['sigma']} -> {n * n}")
        lines.append(f"concat: {n * n} + {raw} = {self.head_in}")
        lines.append("mlp: " + " -> ".join(str(w) for w in [self.head_in, *c["hidden"], c["num_classes"]]))
        lines.append(f"parameters: {sum(p.numel() for p in self.parameters()):,}")
        return "\n".join(lines)
