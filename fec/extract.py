"""The one extraction core behind `llama2_rep_extract.py`, `bert_rep_extract.py` and
`roberta_rep_extract.py`.

    python llama2_rep_extract.py -device cuda -task ED -mode train
    python bert_rep_extract.py -task ED -mode all -model offline:all-minilm-l6-v2

Texts are tokenised once, sorted by length and cut into batches under a token budget, padded
only to the longest text of their batch (on the right), run through the base model under
`torch.inference_mode`, pooled per slot, and written back in the CSV's row order to
`dataset/{task}/{slot}/{mode}.safetensors` with a manifest.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fec import pooling
from fec.backbones import (
    SLOTS,
    Backbone,
    ModelError,
    load_backbone,
    pick_device,
    pick_dtype,
)
from fec.cli import add_common_logging, fail, setup_logging
from fec.data import MODES, DataError, available_modes, load_splits
from fec.provenance import provenance
from fec.standins import PRESETS
from fec.store import StoreError, feature_path, manifest_path, save_features

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "fec-features/1"


class NonFiniteFeaturesError(RuntimeError):
    """Some rows came out NaN/inf (the fp16 overflow users hit with Llama-2); nothing is saved."""


def plan_batches(lengths: np.ndarray, batch_size: int, max_tokens: int) -> list[np.ndarray]:
    """Row indices per batch: longest texts first, each batch at most `batch_size` texts and at
    most `max_tokens` padded tokens (a single text longer than the budget still gets its own batch)."""
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = int(lengths[order[start]])
        size = max(1, min(batch_size, max_tokens // max(longest, 1)))
        batches.append(order[start : start + size])
        start += size
    return batches


def pad_right(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to the longest: (input_ids, attention_mask), both (B, T) int64."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def pool_batch(backbone: Backbone, slot: str, input_ids: torch.Tensor, mask: torch.Tensor, layers: int) -> torch.Tensor:
    """One forward pass and the slot's pooling, float32 on the model's device."""
    mode = pooling_used(backbone, slot)
    if mode == "layer_mean":
        # Ask only for the hidden states we pool, so the other layers are never kept.
        selection = list(range(-1, -layers - 1, -1))
        out = backbone.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=selection)
        return pooling.layer_mean(out.hidden_states, mask, layers)
    out = backbone.model(input_ids=input_ids, attention_mask=mask)
    if mode == "pooler":
        return out.pooler_output.float()
    return pooling.first_token(out.last_hidden_state)


def pooling_used(backbone: Backbone, slot: str) -> str:
    """What `pool_batch` does for this model: BERT-slot models without a trained pooler (none in
    the checkpoint, so transformers would initialise one randomly) fall back to the first token."""
    spec = SLOTS[slot]
    if spec.pooling == "pooler" and not backbone.has_trained_pooler:
        return "first_token"
    return spec.pooling


def extract_features(
    backbone: Backbone,
    texts: list[str],
    slot: str,
    *,
    layers: int = 5,
    max_len: int = 200,
    batch_size: int = 64,
    max_tokens: int = 16384,
    desc: str = "extract",
) -> tuple[torch.Tensor, dict]:
    """Features for `texts` in their given order: (N, layers, H) for the llama slot, else (N, H)."""
    if slot == "llama" and not 1 <= layers <= backbone.num_hidden_states:
        raise ModelError(f"-layers {layers}: the model has {backbone.num_hidden_states} hidden states (embeddings + layers)")
    encoded = backbone.tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]
    lengths = np.array([len(ids) for ids in encoded])
    pad_id = backbone.tokenizer.pad_token_id
    width = (layers, backbone.hidden_size) if slot == "llama" else (backbone.hidden_size,)
    features = torch.empty((len(texts), *width), dtype=torch.float32)
    finite = torch.ones(len(texts), dtype=torch.bool)
    batches = plan_batches(lengths, batch_size, max_tokens)
    with torch.inference_mode(), tqdm(total=len(texts), desc=desc, unit="text", leave=False) as bar:
        for rows in batches:
            ids, mask = pad_right([encoded[i] for i in rows], pad_id)
            pooled = pool_batch(backbone, slot, ids.to(backbone.device), mask.to(backbone.device), layers).cpu()
            index = torch.from_numpy(rows)
            features[index] = pooled
            finite[index] = torch.isfinite(pooled).flatten(1).all(dim=1)
            bar.update(len(rows))
    info = {
        "batches": len(batches),
        "tokens": int(lengths.sum()),
        "padded_tokens": int(sum(len(rows) * lengths[rows].max() for rows in batches)),
        "rows_at_max_len": int((lengths >= max_len).sum()),
    }
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().add(1).tolist()
        shown = ", ".join(map(str, bad[:20])) + (" ..." if len(bad) > 20 else "")
        raise NonFiniteFeaturesError(
            f"{len(bad)} row(s) gave non-finite features with dtype {str(backbone.dtype).removeprefix('torch.')} "
            f"(rows {shown}); nothing was saved; rerun with -dtype float32 or bfloat16"
        )
    return features, info


def build_parser(slot: str) -> argparse.ArgumentParser:
    spec = SLOTS[slot]
    parser = argparse.ArgumentParser(
        description=f"Extract {slot}-slot features: {spec.description}. Reads data/TASK/MODE.csv, writes "
        f"dataset/TASK/{slot}/MODE.safetensors and a JSON manifest beside it. Single- and double-dash "
        "spellings both work (-task / --task).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-task", "--task", required=True, help="task folder under -data_dir (any name, e.g. ED, go_emotion)")
    parser.add_argument("-mode", "--mode", default="all", choices=[*MODES, "all"], help="split to extract; all = every split present")
    parser.add_argument("-device", "--device", default="auto", help="cuda, cuda:1, cpu, or auto (cuda when available)")
    parser.add_argument("-model", "--model", default=None, help=f"hub id, local model directory, or offline:NAME stand-in (default: {spec.default_model}, or the -preset's model)")
    parser.add_argument("-preset", "--preset", default=None, choices=sorted(PRESETS), help="a named set of models, one per slot: offline = the stand-ins shipped in PyPI packages (requirements-standins.txt)")
    parser.add_argument("-max_len", "--max_len", type=int, default=200, help="truncate texts to this many tokens")
    parser.add_argument("-batch_size", "--batch_size", type=int, default=64, help="at most this many texts per batch")
    parser.add_argument("-max_tokens", "--max_tokens", type=int, default=16384, help="at most this many padded tokens per batch")
    parser.add_argument("-dtype", "--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"], help="model weights dtype; auto = bfloat16 on CUDA, float32 on CPU")
    if spec.pooling == "layer_mean":
        parser.add_argument("-layers", "--layers", type=int, default=5, help="pool each of the last L hidden layers")
    parser.add_argument("-limit", "--limit", type=int, default=None, help="only the first N rows of each split (quick runs)")
    parser.add_argument("-data_dir", "--data_dir", default="data", help="folder holding TASK/MODE.csv")
    parser.add_argument("-dataset_dir", "--dataset_dir", default="dataset", help="feature store root")
    parser.add_argument("-force", "--force", action="store_true", help="re-extract even when features with the same settings exist")
    parser.add_argument("-trust_remote_code", "--trust_remote_code", action="store_true", help="allow model code from the hub (off by default)")
    add_common_logging(parser)
    return parser


def settings_of(args: argparse.Namespace, slot: str, csv_sha256: str) -> dict:
    """The settings that determine the features; equal settings mean the stored file can be reused."""
    return {
        "slot": slot,
        "model": args.model,
        "pooling": SLOTS[slot].pooling,
        "layers": getattr(args, "layers", None),
        "max_len": args.max_len,
        "dtype": args.dtype,
        "limit": args.limit,
        "csv_sha256": csv_sha256,
    }


def already_extracted(path: Path, settings: dict) -> bool:
    mpath = manifest_path(path)
    if not (path.is_file() and mpath.is_file()):
        return False
    try:
        return json.loads(mpath.read_text(encoding="utf-8")).get("settings") == settings
    except json.JSONDecodeError:
        return False


def chosen_model(args: argparse.Namespace, slot: str) -> str:
    """-model wins; else the -preset's model for this slot; else the published default."""
    if args.model:
        return args.model
    if args.preset:
        return PRESETS[args.preset][slot]
    return SLOTS[slot].default_model


def run(args: argparse.Namespace, slot: str) -> list[Path]:
    args.model = chosen_model(args, slot)
    modes = available_modes(args.data_dir, args.task) if args.mode == "all" else [args.mode]
    if not modes:
        raise DataError(f"{Path(args.data_dir) / args.task}: no train/valid/test CSV found (run `python prepare_data.py`)")
    splits = load_splits(args.data_dir, args.task, modes)
    todo = {}
    for mode, split in splits.items():
        path = feature_path(args.dataset_dir, args.task, slot, mode)
        settings = settings_of(args, slot, split.csv_sha256)
        if not args.force and already_extracted(path, settings):
            log.info("%s: already extracted with the same settings, skipped (-force to redo)", path)
            continue
        todo[mode] = (split, path, settings)
    if not todo:
        return []
    device = pick_device(args.device)
    backbone = load_backbone(args.model, device, pick_dtype(args.dtype, device), args.trust_remote_code)
    layers = getattr(args, "layers", None)
    written = []
    for mode, (split, path, settings) in todo.items():
        count = len(split) if args.limit is None else min(args.limit, len(split))
        started = time.perf_counter()
        features, info = extract_features(
            backbone, split.texts[:count], slot, layers=layers or 1, max_len=args.max_len,
            batch_size=args.batch_size, max_tokens=args.max_tokens, desc=f"{slot} {args.task}/{mode}",
        )
        elapsed = time.perf_counter() - started
        manifest = {
            "format": MANIFEST_FORMAT,
            "settings": settings,
            "task": args.task,
            "mode": mode,
            "slot": slot,
            "model": args.model,
            "model_path": backbone.resolved,
            "model_class": type(backbone.model).__name__,
            "model_fingerprint": backbone.fingerprint,
            "hidden_size": backbone.hidden_size,
            "pooling": pooling_used(backbone, slot),
            "missing_weights": backbone.missing_weights,
            "layers": layers,
            "layer_order": "last layer first" if layers else None,
            "max_len": args.max_len,
            "dtype": str(backbone.dtype).removeprefix("torch."),
            "device": str(device),
            "pad_token": backbone.pad_token,
            "padding": "right, to the longest text of each length-sorted batch; masked out of every pooled feature",
            "csv": str(split.path),
            "csv_sha256": split.csv_sha256,
            "csv_rows": len(split),
            "limit": args.limit,
            "multilabel": split.multilabel,
            "label_names": split.label_names,
            "extraction": {**info, "seconds": round(elapsed, 2), "texts_per_s": round(count / max(elapsed, 1e-9), 2)},
            **provenance(),
        }
        labels = torch.from_numpy(split.labels[:count])
        save_features(path, features, labels, manifest)
        log.info("%s: %s features for %d texts in %.1fs (%.1f texts/s)", path, tuple(features.shape[1:]), count, elapsed, count / max(elapsed, 1e-9))
        written.append(path)
    return written


def main(slot: str, argv: list[str] | None = None) -> int:
    args = build_parser(slot).parse_args(argv)
    setup_logging(args.log_level)
    try:
        run(args, slot)
    except (DataError, StoreError, ModelError, NonFiniteFeaturesError) as err:
        return fail(err)
    return 0

