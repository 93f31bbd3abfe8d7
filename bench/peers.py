"""The extraction recipes `bench.extract_speed --peers` times beside the published one: what a user
would run instead of fec for the same features, and fec storing the same vector or every layer.

* `st_encode`: sentence-transformers' `SentenceTransformer(model).encode(texts, batch_size=64)` at
  its defaults (float32; its own pooling for a sentence-transformers model, else a mean over the
  last layer; length-sorted batches): the standard way to embed text with an encoder.
* `st_encode_same_dtype`: the same in the dtype fec's `auto` picks, so the ratio shows what the
  batching and pooling alone are worth.
* `pipeline`: transformers' `pipeline("feature-extraction")` (float32, batches of 64 in the given
  order), each text's token states averaged.
* `ours_vector`: fec's extractor storing the same single vector (the mean over the last layer).
* `ours_every_layer`: fec's extractor storing every hidden state with two poolings (mean, and first
  for encoders or last for decoders): what `tune.py --extract` stores.

Each returns `(extract, dtype)`; `extract(texts)` gives `(features, info)` with `tokens` (real
tokens), `padded_tokens` and `batches`, as `fec.features.forward_pass.extract_features` does.
sentence-transformers is a bench extra (`pip install sentence-transformers`), not a requirement.
"""

from __future__ import annotations

import math

import torch

from bench.layer_cost import non_embedding_parameters
from fec.core.slots import PUBLISHED_KINDS
from fec.features.backbones import load_backbone, pick_dtype
from fec.features.forward_pass import PoolingPlan, extract_features
from fec.features.spec import FeatureSpec, LayerChoice

BATCH = 64


def padded(tokenizer):
    """A decoder's tokenizer has no pad token: batching pads with its end-of-text token."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def peer_info(tokenizer, texts: list[str]) -> dict:
    """A peer's `info`: its real tokens (it reports no padding), batches of BATCH."""
    tokens = sum(len(ids) for ids in tokenizer(texts, truncation=True, max_length=200)["input_ids"])
    return {"tokens": tokens, "padded_tokens": tokens, "batches": math.ceil(len(texts) / BATCH)}


def st_encode(slot: str, model_path: str, device: torch.device, same_dtype: bool = False):
    from sentence_transformers import SentenceTransformer

    dtype = pick_dtype("auto", device) if same_dtype else torch.float32
    model = SentenceTransformer(model_path, device=str(device), model_kwargs={"dtype": dtype})
    tokenizer = padded(model.tokenizer)

    def extract(texts: list[str]):
        features = model.encode(texts, batch_size=BATCH, convert_to_tensor=True, show_progress_bar=False)
        return features.float().cpu(), peer_info(tokenizer, texts)

    return extract, dtype


def pipeline_means(slot: str, model_path: str, device: torch.device):
    from transformers import pipeline

    extractor = pipeline("feature-extraction", model=model_path, device=str(device), dtype=torch.float32)
    tokenizer = padded(extractor.tokenizer)

    def extract(texts: list[str]):
        outputs = extractor(texts, batch_size=BATCH, return_tensors=True, truncation=True, max_length=200)
        features = torch.stack([output[0].float().mean(dim=0) for output in outputs])
        return features, peer_info(tokenizer, texts)

    return extract, torch.float32


def ours(slot: str, model_path: str, device: torch.device, every_layer: bool):
    backbone = load_backbone(model_path, device, pick_dtype("auto", device))
    kind = PUBLISHED_KINDS[slot]
    if every_layer:
        spec = FeatureSpec(slot, ("mean", "last" if kind == "decoder" else "first"), LayerChoice(every=True))
    else:
        spec = FeatureSpec(slot, ("mean",), LayerChoice(indices=(-1,)))

    def extract(texts: list[str]):
        return extract_features(backbone, texts, slot, plan=PoolingPlan(spec=spec))

    return extract, backbone.dtype


PEERS = {
    "st_encode": lambda slot, path, device: st_encode(slot, path, device),
    "st_encode_same_dtype": lambda slot, path, device: st_encode(slot, path, device, same_dtype=True),
    "pipeline": pipeline_means,
    "ours_vector": lambda slot, path, device: ours(slot, path, device, every_layer=False),
    "ours_every_layer": lambda slot, path, device: ours(slot, path, device, every_layer=True),
}


def model_weights(model_path: str) -> int:
    """The weights a token passes through (`bench.layer_cost.non_embedding_parameters` of the
    model at `model_path`): 2 FLOPs each per real token."""
    from transformers import AutoModel

    return non_embedding_parameters(AutoModel.from_pretrained(model_path))
