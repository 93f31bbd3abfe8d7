"""The one extraction core behind `llama2_rep_extract.py`, `bert_rep_extract.py` and
`roberta_rep_extract.py`.

    python llama2_rep_extract.py -device cuda -task ED -mode train
    python bert_rep_extract.py -task ED -mode all -model offline:all-minilm-l6-v2

Texts are tokenised once, sorted by length and cut into batches under a token budget, padded
only to the longest text of their batch (on the right), run through the base model under
`torch.inference_mode`, pooled per slot, and written back in the CSV's row order to
`dataset/{task}/{slot}/{mode}.safetensors` with a manifest.

Each split is extracted in chunks of `-chunk_rows` rows written to `{mode}.parts/` (see
`fec.chunks`) and merged at the end, so a crash loses at most the chunks in flight: rerun the
same command and finished chunks are verified and skipped (`-no_resume` starts over). Under
`accelerate launch` or `torchrun` the chunks are shared out among the processes and rank 0
merges them; the result is the same store file a single process writes (see `fec.scale`).

    accelerate launch --multi_gpu --num_processes 4 llama2_rep_extract.py -task ED -mode all
    torchrun --nproc_per_node 2 bert_rep_extract.py -task ED -mode valid -device cpu
    python llama2_rep_extract.py -task ED -mode all -device_map auto -load_in 8bit
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from fec import pooling
from fec.backbones import (
    SLOTS,
    Backbone,
    ModelError,
    pick_device,
    pick_dtype,
    resolve_model,
)
from fec.chunks import (
    Chunk,
    finished_records,
    merge_chunks,
    parts_dir,
    plan_chunks,
    prepare_parts,
    settings_hash,
    write_chunk,
)
from fec.cli import add_common_logging, run_script
from fec.data import MODES, DataError, available_modes, load_splits
from fec.locks import LockHeld, split_lock
from fec.options import ArgumentParser, device, positive_int, task_name
from fec.provenance import provenance
from fec.scale import (
    LOAD_IN,
    Ranks,
    close_distributed,
    load_placed_backbone,
    parse_max_memory,
    placement,
    rank_device,
    ranks_from_env,
)
from fec.standins import PRESETS
from fec.store import StoreError, feature_path, manifest_path

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "fec-features/1"
REFERENCE_PAD_TOKEN = "[PAD]"
# What `-compat reference` turns on: the published extraction, quirks included (design.md section 2).
REFERENCE_RECIPE = {"llama_pooling": "unmasked_padded", "batch_order": "file"}
REFERENCE_BATCH_SIZE = {"llama": 2, "bert": 50, "roberta": 50}
CORRECTED_RECIPE = {"llama_pooling": "masked", "batch_order": "length"}
FLUSH_ROWS = 4096
CHUNK_ROWS = 4096
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


class NonFiniteFeaturesError(RuntimeError):
    """Some rows came out NaN/inf (the fp16 overflow users hit with Llama-2); nothing is saved.
    `rows` holds their 0-based indices."""

    def __init__(self, message: str, rows: list[int] | None = None):
        super().__init__(message)
        self.rows = rows or []


class PeerFailed(RuntimeError):
    """Another process of a distributed extraction failed (it reports its own error)."""


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


def pool_batch(
    backbone: Backbone, slot: str, input_ids: torch.Tensor, mask: torch.Tensor, layers: int, llama_pooling: str = "masked"
) -> torch.Tensor:
    """One forward pass and the slot's pooling, float32 on the model's device."""
    mode = pooling_used(backbone, slot)
    if mode == "layer_mean":
        # Ask only for the hidden states we pool, so the other layers are never kept.
        selection = list(range(-1, -layers - 1, -1))
        out = backbone.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=selection, use_cache=False)
        if llama_pooling == "unmasked_padded":
            return pooling.unmasked_layer_mean(out.hidden_states, layers)
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
    llama_pooling: str = "masked",
    batch_order: str = "length",
    desc: str = "extract",
    fallback: Callable[[], Backbone] | None = None,
) -> tuple[torch.Tensor, dict]:
    """Features for `texts` in their given order: (N, layers, H) for the llama slot, else (N, H).

    `llama_pooling="unmasked_padded"` reproduces the published LLaMA recipe: every text padded to
    `max_len` with the "[PAD]" string's id and the mean taken over all positions.
    `fallback` returns a float32 copy of the backbone, used only for rows whose features come
    out non-finite in half precision.
    """
    if max_len < 1:
        raise ValueError(f"max_len {max_len}: must be at least 1 (0 would turn truncation off)")
    if slot == "llama" and not 1 <= layers <= backbone.num_hidden_states:
        raise ModelError(f"-layers {layers}: the model has {backbone.num_hidden_states} hidden states (embeddings + layers)")
    encoded = backbone.tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]
    lengths = np.array([len(ids) for ids in encoded])
    padded_width = max_len if slot == "llama" and llama_pooling == "unmasked_padded" else None
    pad_id = reference_pad_id(backbone.tokenizer) if padded_width else backbone.tokenizer.pad_token_id
    width = (layers, backbone.hidden_size) if slot == "llama" else (backbone.hidden_size,)
    features = torch.empty((len(texts), *width), dtype=torch.float32)
    finite = torch.ones(len(texts), dtype=torch.bool)
    batches = plan_batches(lengths, batch_size, max_tokens, batch_order)
    run = dict(slot=slot, encoded=encoded, pad_id=pad_id, padded_width=padded_width, layers=layers, llama_pooling=llama_pooling)
    with tqdm(total=len(texts), desc=desc, unit="text", leave=False) as bar:
        forward_batches(backbone, batches, features, finite, bar, **run)
    info = {
        "batches": len(batches),
        "tokens": int(lengths.sum()),
        "padded_tokens": int(sum(len(rows) * (padded_width or lengths[rows].max()) for rows in batches)),
        "rows_at_max_len": int((lengths >= max_len).sum()),
        "float32_fallback_rows": 0,
    }
    if not bool(finite.all()) and fallback is not None and backbone.dtype != torch.float32:
        # Half precision overflowed on some rows (LLaMA's massive activations): redo only those in float32.
        bad = (~finite).nonzero().flatten().numpy()
        log.warning("%d row(s) overflowed in %s; recomputing them in float32", len(bad), str(backbone.dtype).removeprefix("torch."))
        retry = [bad[i : i + batch_size] for i in range(0, len(bad), batch_size)]
        forward_batches(fallback(), retry, features, finite, None, **run)
        info["float32_fallback_rows"] = len(bad)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        raise NonFiniteFeaturesError(non_finite_message(bad, backbone.dtype), bad)
    return features, info


@torch.inference_mode()
def forward_batches(backbone: Backbone, batches: list[np.ndarray], features: torch.Tensor, finite: torch.Tensor, bar,
                    *, slot: str, encoded: list[list[int]], pad_id: int, padded_width: int | None, layers: int,
                    llama_pooling: str) -> None:
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
        ids, mask = pad_right([encoded[i] for i in rows], pad_id, padded_width)
        if cuda:
            ids, mask = ids.pin_memory().to(backbone.device, non_blocking=True), mask.pin_memory().to(backbone.device, non_blocking=True)
        pending.append((rows, pool_batch(backbone, slot, ids, mask, layers, llama_pooling)))
        if not cuda or sum(len(r) for r, _ in pending) >= FLUSH_ROWS:
            flush()
        if bar is not None:
            bar.update(len(rows))
    flush()


def build_parser(slot: str) -> argparse.ArgumentParser:
    spec = SLOTS[slot]
    parser = ArgumentParser(
        description=f"Extract {slot}-slot features: {spec.description}. Reads data/TASK/MODE.csv, writes "
        f"dataset/TASK/{slot}/MODE.safetensors and a JSON manifest beside it. Single- and double-dash "
        "spellings both work (-task / --task).",
    )
    parser.add_argument("-task", "--task", type=task_name, required=True, help="task folder under -data_dir (any name, e.g. ED, go_emotion)")
    parser.add_argument("-mode", "--mode", default="all", choices=[*MODES, "all"], help="split to extract; all = every split present")
    parser.add_argument("-device", "--device", type=device, default="auto", help="cuda, cuda:1, cpu, or auto (cuda when available)")
    parser.add_argument("-model", "--model", default=None, help=f"hub id, local model directory, or offline:NAME stand-in (default: {spec.default_model}, or the -preset's model)")
    parser.add_argument("-preset", "--preset", default=None, choices=sorted(PRESETS), help="a named set of models, one per slot: offline = the stand-ins shipped in PyPI packages (requirements-standins.txt)")
    parser.add_argument("-max_len", "--max_len", type=positive_int, default=200, help="truncate texts to this many tokens")
    parser.add_argument("-batch_size", "--batch_size", type=positive_int, default=None, help=f"at most this many texts per batch (default: 64; -compat reference: {REFERENCE_BATCH_SIZE[slot]}, as published)")
    parser.add_argument("-max_tokens", "--max_tokens", type=positive_int, default=16384, help="at most this many padded tokens per batch")
    parser.add_argument("-dtype", "--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"], help="model weights dtype; auto = bfloat16 on CUDA (float16 with -compat reference, as published), float32 on CPU")
    parser.add_argument("-compat", "--compat", default="none", choices=["none", "reference"], help="reference = the published extraction, quirks included: " + ("every text padded to -max_len with the '[PAD]' string (the unknown id), mean over all positions, batches of 2 in file order" if slot == "llama" else "batches of 50 in file order, padded to the longest"))
    parser.add_argument("-batch_order", "--batch_order", default=None, choices=["length", "file"], help="length = length-sorted batches under -max_tokens (default), file = consecutive rows (the published order)")
    if spec.pooling == "layer_mean":
        parser.add_argument("-layers", "--layers", type=positive_int, default=5, help="pool each of the last L hidden layers")
        parser.add_argument("-llama_pooling", "--llama_pooling", default=None, choices=["masked", "unmasked_padded"], help="masked = mean over real tokens (default); unmasked_padded = the published mean over all -max_len positions, padding included (stored in the llama_unmasked_padded/ folder)")
    parser.add_argument("-limit", "--limit", type=positive_int, default=None, help="only the first N rows of each split (quick runs)")
    parser.add_argument("-data_dir", "--data_dir", default="data", help="folder holding TASK/MODE.csv")
    parser.add_argument("-dataset_dir", "--dataset_dir", default="dataset", help="feature store root")
    parser.add_argument("-force", "--force", action="store_true", help="re-extract even when features with the same settings exist")
    parser.add_argument("-wait", "--wait", action="store_true", help="when another process is extracting the same split (its MODE.lock), wait for it instead of stopping")
    parser.add_argument("-chunk_rows", "--chunk_rows", type=positive_int, default=CHUNK_ROWS, help="rows per chunk written to dataset/TASK/SLOT/MODE.parts/ while extracting (the unit of resume and of work per process)")
    parser.add_argument("-resume", "--resume", dest="resume", action="store_true", default=True, help="reuse finished chunks of an interrupted extraction with the same settings after verifying their sha256 (default)")
    parser.add_argument("-no_resume", "--no_resume", dest="resume", action="store_false", help="discard chunks of an interrupted extraction and start the split over")
    parser.add_argument("-device_map", "--device_map", default=None, choices=DEVICE_MAPS, help="split the model over several devices with Accelerate big-model inference (GPUs, then CPU RAM, then disk); inputs go to the first module's device")
    parser.add_argument("-max_memory", "--max_memory", default=None, help="with -device_map: memory per device, e.g. 0=20GiB,1=20GiB,cpu=64GiB")
    parser.add_argument("-load_in", "--load_in", default=None, choices=LOAD_IN, help="load the weights quantised to 8 or 4 bits with bitsandbytes (pip install bitsandbytes); recorded in the manifest")
    parser.add_argument("-trust_remote_code", "--trust_remote_code", action="store_true", help="allow model code from the hub (off by default)")
    add_common_logging(parser)
    return parser


def extraction_dtype(requested: str, compat: str, device: torch.device) -> torch.dtype:
    """The weights' dtype: `-dtype` when given; else, with `-compat reference`, float16 on CUDA as the
    published extractor ran (float32 on CPU, where half precision is slow or missing); else `pick_dtype`'s
    auto (bfloat16 on CUDA, float32 on CPU)."""
    if requested == "auto" and compat == "reference" and device.type == "cuda":
        return torch.float16
    return pick_dtype(requested, device)


def apply_compat(args: argparse.Namespace, slot: str) -> None:
    """Fill the recipe options left unset from -compat (explicit options win)."""
    reference = args.compat == "reference"
    recipe = REFERENCE_RECIPE if reference else CORRECTED_RECIPE
    args.llama_pooling = (getattr(args, "llama_pooling", None) or recipe["llama_pooling"]) if slot == "llama" else "masked"
    args.batch_order = args.batch_order or recipe["batch_order"]
    if args.batch_size is None:
        args.batch_size = REFERENCE_BATCH_SIZE[slot] if reference else 64


def store_dir_of(slot: str, llama_pooling: str) -> str:
    """The store folder: variants that change the features get their own, so the published
    LLaMA pooling never overwrites the corrected features (`llama` vs `llama_unmasked_padded`)."""
    return slot if llama_pooling == "masked" else f"{slot}_{llama_pooling}"


def settings_of(args: argparse.Namespace, slot: str, csv_sha256: str) -> dict:
    """The settings that determine the features; equal settings mean the stored file can be reused.
    Recipe options appear only when they differ from the corrected recipe."""
    quirks = {k: getattr(args, k) for k, v in CORRECTED_RECIPE.items() if getattr(args, k) != v}
    return {
        "slot": slot,
        "model": args.model,
        "pooling": SLOTS[slot].pooling,
        "layers": getattr(args, "layers", None),
        "max_len": args.max_len,
        "dtype": args.dtype,
        "limit": args.limit,
        "csv_sha256": csv_sha256,
        **quirks,
        # Quantised weights give different features; recorded only when used, so older stores stay valid.
        **({"load_in": args.load_in} if getattr(args, "load_in", None) else {}),
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
    """Extract every split asked for that is not already in the store with the same settings.

    Alone, this process does every chunk; under a launcher (WORLD_SIZE > 1) every process runs
    this function, takes its share of the chunks, and rank 0 merges and writes the manifest.
    Returns the store files written (on rank 0; other ranks return the same paths)."""
    args.model = chosen_model(args, slot)
    apply_compat(args, slot)
    for name, default in (("chunk_rows", CHUNK_ROWS), ("resume", True), ("device_map", None), ("max_memory", None),
                          ("load_in", None), ("wait", False)):
        setattr(args, name, getattr(args, name, default))  # callers that build their own Namespace
    if args.chunk_rows < 1:
        raise DataError(f"-chunk_rows {args.chunk_rows}: must be at least 1")
    store_dir = store_dir_of(slot, args.llama_pooling)
    modes = available_modes(args.data_dir, args.task) if args.mode == "all" else [args.mode]
    if not modes:
        raise DataError(f"{Path(args.data_dir) / args.task}: no train/valid/test CSV found (run `python prepare_data.py`)")
    splits = load_splits(args.data_dir, args.task, modes)
    resolve_model(args.model)  # a missing or broken model folder is refused before anything loads
    placed = dict(device_map=args.device_map, max_memory=parse_max_memory(args.max_memory))
    ranks = ranks_from_env(args.device)
    todo = {}
    for mode, split in splits.items():
        path = feature_path(args.dataset_dir, args.task, store_dir, mode)
        settings = settings_of(args, slot, split.csv_sha256)
        if not args.force and already_extracted(path, settings):
            log.info("%s: already extracted with the same settings, skipped (-force to redo)", path)
            if ranks.is_main and parts_dir(path).exists():
                shutil.rmtree(parts_dir(path), ignore_errors=True)  # left by a run killed right after its merge
            continue
        todo[mode] = (split, path, settings)
    if not todo:
        return []
    with ExitStack() as locks:
        todo = take_locks(args, todo, locks, ranks)
        if not todo:
            return []
        device = rank_device(pick_device(args.device), ranks)
        backbone = load_placed_backbone(args.model, device, extraction_dtype(args.dtype, args.compat, device),
                                        args.trust_remote_code, load_in=args.load_in, **placed)
        float32_copy: list[Backbone] = []

        def float32_backbone() -> Backbone:
            if not float32_copy:
                float32_copy.append(load_placed_backbone(args.model, device, torch.float32, args.trust_remote_code, **placed))
            return float32_copy[0]

        return [extract_split(args, slot, mode, split, path, settings, backbone, float32_backbone, ranks)
                for mode, (split, path, settings) in todo.items()]


def take_locks(args: argparse.Namespace, todo: dict, locks: ExitStack, ranks: Ranks) -> dict:
    """Rank 0 takes the lock of every split to do (`fec.locks`, held until `locks` closes) and
    drops the splits another process finished meanwhile; every process gets the same `todo`."""

    def lock_all() -> list[str]:
        left = []
        for mode, (_, path, settings) in todo.items():
            locks.enter_context(split_lock(path, wait=args.wait))
            if not args.force and already_extracted(path, settings):
                log.info("%s: extracted by another process meanwhile, skipped", path)
                continue
            left.append(mode)
        return left

    left = ranks.broadcast(together(ranks, lock_all if ranks.is_main else (lambda: None), "locking the splits"))
    return {mode: todo[mode] for mode in left}


def together(ranks: Ranks, step: Callable[[], object], what: str):
    """Run `step` on this process, then agree with the others: if any process failed, every
    process raises (its own error, or PeerFailed), so none waits forever for a dead peer."""
    try:
        result, error = step(), None
    except Exception as err:  # re-raised below, after the peers have heard of it
        result, error = None, err
    everyone_ok = ranks.all_ok(error is None)
    if error is not None:
        raise error
    if not everyone_ok:
        raise PeerFailed(f"{ranks.prefix()}another process failed while {what} (see its error); finished chunks are kept, rerun to resume")
    return result


def remove_stale_temp_files(path: Path) -> None:
    """Temp files of the store file and manifest left by a run killed while writing them."""
    for name in (path.name, manifest_path(path).name):
        for stale in path.parent.glob(f".{name}.*.tmp"):
            log.info("%s: temp file of an interrupted write, removed", stale)
            stale.unlink(missing_ok=True)


def extract_split(args: argparse.Namespace, slot: str, mode: str, split, path: Path, settings: dict, backbone: Backbone,
                  fallback: Callable[[], Backbone], ranks: Ranks) -> Path:
    """One split: rank 0 plans (verifying finished chunks), every process extracts its share of
    the chunks left, rank 0 merges them into `path` with the manifest."""
    started = time.perf_counter()
    count = len(split) if args.limit is None else min(args.limit, len(split))
    layers = getattr(args, "layers", None)
    chunks = plan_chunks(count, args.chunk_rows)
    parts = parts_dir(path)
    # Everything that decides a chunk's contents; a chunk written under another key is redone.
    key = settings_hash({**settings, "model_fingerprint": backbone.fingerprint, "model_dtype": str(backbone.dtype),
                         "chunk_rows": args.chunk_rows, "rows": count})

    def plan() -> tuple[str, list[int]]:
        remove_stale_temp_files(path)
        done, left = prepare_parts(parts, chunks, key, args.resume)
        if done:
            log.info("%s: resuming: %d of %d chunks already finished and verified, skipped (%s)", parts, len(done),
                     len(chunks), ", ".join(str(c) for c in done[:8]) + (" ..." if len(done) > 8 else ""))
        return uuid.uuid4().hex, [c.index for c in left]

    run_id, left = ranks.broadcast(together(ranks, plan if ranks.is_main else (lambda: None), "planning"))
    mine = [chunks[i] for i in left[ranks.rank :: ranks.world]]
    if ranks.distributed:
        log.info("%s%s: %d of the %d chunks left are this process's", ranks.prefix(), parts, len(mine), len(left))

    def extract_mine() -> None:
        bad_rows: list[int] = []
        for number, chunk in enumerate(mine, 1):
            chunk_started = time.perf_counter()
            try:
                features, info = extract_features(
                    backbone, split.texts[chunk.start : chunk.stop], slot, layers=layers or 1, max_len=args.max_len,
                    batch_size=args.batch_size, max_tokens=args.max_tokens, llama_pooling=args.llama_pooling,
                    batch_order=args.batch_order, desc=f"{ranks.prefix()}{slot} {args.task}/{mode} {chunk}", fallback=fallback,
                )
            except NonFiniteFeaturesError as err:
                bad_rows.extend(chunk.start + row for row in err.rows)
                continue  # the other chunks are still worth keeping
            info = {**info, "seconds": round(time.perf_counter() - chunk_started, 3), "run_id": run_id, "rank": ranks.rank}
            write_chunk(parts, chunk, features, key, info)
            log.info("%s%s: chunk %s written (%d of %d)", ranks.prefix(), parts, chunk, number, len(mine))
        if bad_rows:
            raise NonFiniteFeaturesError(
                non_finite_message(sorted(bad_rows), backbone.dtype, f"{path.name} was not written (the other chunks are kept)"),
                sorted(bad_rows),
            )

    together(ranks, extract_mine, f"extracting {args.task}/{mode}")

    def merge() -> None:
        width = [layers, backbone.hidden_size] if slot == "llama" else [backbone.hidden_size]
        records = finished_records(parts, chunks, key, width)
        elapsed = time.perf_counter() - started
        fresh = sum(r["stop"] - r["start"] for r in records if r.get("run_id") == run_id)
        manifest = build_manifest(args, slot, mode, split, settings, backbone, records, chunks, elapsed, run_id, ranks)
        labels = torch.from_numpy(split.labels[:count])
        merge_chunks(path, parts, chunks, records, key, labels, manifest, width)
        log.info("%s: %s features for %d texts in %.1fs (%d computed now, %.1f texts/s, %d process(es))", path,
                 tuple(width), count, elapsed, fresh, fresh / max(elapsed, 1e-9), ranks.world)

    together(ranks, merge if ranks.is_main else (lambda: None), f"merging {args.task}/{mode}")
    return path


def build_manifest(args: argparse.Namespace, slot: str, mode: str, split, settings: dict, backbone: Backbone,
                   records: list[dict], chunks: list[Chunk], elapsed: float, run_id: str, ranks: Ranks) -> dict:
    """The store manifest of a merged split; extraction figures are summed over the chunk records."""
    layers = getattr(args, "layers", None)
    info = {k: sum(int(r.get(k, 0)) for r in records)
            for k in ("batches", "tokens", "padded_tokens", "rows_at_max_len", "float32_fallback_rows")}
    info.update(
        seconds=round(elapsed, 2),
        texts_per_s=round(sum(r["stop"] - r["start"] for r in records if r.get("run_id") == run_id) / max(elapsed, 1e-9), 2),
        chunk_rows=args.chunk_rows,
        chunks=len(chunks),
        chunks_resumed=sum(1 for r in records if r.get("run_id") != run_id),
        processes=ranks.world,
    )
    return {
        "format": MANIFEST_FORMAT,
        "settings": settings,
        "task": args.task,
        "mode": mode,
        "slot": slot,
        "store_dir": store_dir_of(slot, args.llama_pooling),
        "compat": args.compat,
        "llama_pooling": args.llama_pooling if slot == "llama" else None,
        "batch_order": args.batch_order,
        "batch_size": args.batch_size,
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
        "device": str(backbone.device),
        "device_map": args.device_map,
        "device_placement": (placement(backbone.model) or {str(backbone.device): "all"}) if args.device_map else None,
        "load_in": args.load_in,
        "pad_token": REFERENCE_PAD_TOKEN if args.llama_pooling == "unmasked_padded" else backbone.pad_token,
        "padding": (
            f"right, every text to {args.max_len} tokens with the id of {REFERENCE_PAD_TOKEN!r}; included in the mean (published)"
            if args.llama_pooling == "unmasked_padded"
            else "right, to the longest text of each batch; masked out of every pooled feature"
        ),
        "csv": str(split.path),
        "csv_sha256": split.csv_sha256,
        "csv_rows": len(split),
        "limit": args.limit,
        "multilabel": split.multilabel,
        "label_names": split.label_names,
        "extraction": info,
        **provenance(),
    }


def main(slot: str, argv: list[str] | None = None) -> int:
    return run_script(build_parser(slot), lambda args: run(args, slot),
                      (DataError, StoreError, ModelError, NonFiniteFeaturesError, PeerFailed, LockHeld), argv, cleanup=close_distributed)
