"""Extracting a task's splits into the feature store, behind the three extraction scripts
(their command line is `fec.cli.extract`).

    from fec.cli.extract import build_parser
    from fec.features.extract import run
    run(build_parser("bert").parse_args(["--task", "ED", "--preset", "offline"]), "bert")

Every split asked for that is not already in the store with the same settings is extracted in
chunks of `--chunk_rows` rows written to `{mode}.parts/` (see `fec.features.chunks`) and merged at the
end, so a crash loses at most the chunks in flight: rerun the same command and finished chunks
are verified and skipped (`--no_resume` starts over). One process at a time extracts a split
(`fec.features.locks`). Under `accelerate launch` or `torchrun` the chunks are shared out among the
processes and rank 0 merges them; the result is the same store file a single process writes
(see `fec.features.scale`). The features themselves come from `fec.features.compute.extract_features`; the
merged file gets a manifest with every setting, the model's fingerprint and the CSV's sha256.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

from fec.core.compat import extraction_quirks, resolve_extraction, store_dir_of
from fec.core.data import DataError, Split, available_modes, load_splits
from fec.core.errors import FecError, UsageError
from fec.core.files import removed_if_left_empty
from fec.core.provenance import provenance
from fec.features.backbones import (
    SLOTS,
    Backbone,
    check_load_in,
    extraction_dtype,
    load_backbone,
    model_config,
    parse_max_memory,
    pick_device,
    placement,
    resolve_model,
)
from fec.features.chunks import (
    Chunk,
    finished_records,
    merge_chunks,
    parts_dir,
    plan_chunks,
    prepare_parts,
    settings_hash,
    write_chunk,
)
from fec.features.compute import (
    REFERENCE_PAD_TOKEN,
    NonFiniteFeaturesError,
    check_prompts,
    extract_features,
    non_finite_message,
    pooling_used,
    variant_indices,
)
from fec.features.locks import lock_path, split_lock
from fec.features.scale import Ranks, rank_device, ranks_from_env
from fec.features.spec import FeatureSpec, spec_from_args
from fec.features.standins import PRESETS
from fec.features.store import cast_for_store, feature_path, manifest_path

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "fec-features/1"
CHUNK_ROWS = 4096
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


class PeerFailed(FecError, RuntimeError):
    """Another process of a distributed extraction failed (it reports its own error)."""


def settings_of(args: argparse.Namespace, slot: str, csv_sha256: str) -> dict:
    """The settings that determine the features; equal settings mean the stored file can be reused.
    Recipe options appear only when they differ from the corrected recipe."""
    quirks, spec = extraction_quirks(args), args.feature_spec
    return {
        "slot": slot,
        "model": args.model,
        "pooling": SLOTS[slot].pooling,
        "layers": spec.published_layers,
        "max_len": args.max_len,
        "dtype": args.dtype,
        "limit": args.limit,
        "csv_sha256": csv_sha256,
        **quirks,
        **spec.settings(),
        # Quantised weights give different features; recorded only when used, so older stores stay valid.
        **({"load_in": args.load_in} if getattr(args, "load_in", None) else {}),
    }


def stored_settings(path: Path) -> dict | None:
    """The settings a finished store file was extracted with; None when there is none (no file, or
    a file without its manifest: a write cut off before the manifest, redone)."""
    mpath = manifest_path(path)
    if not (path.is_file() and mpath.is_file()):
        return None
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    settings = manifest.get("settings") if isinstance(manifest, dict) else None
    return settings if isinstance(settings, dict) else None


def already_extracted(path: Path, settings: dict) -> bool:
    return stored_settings(path) == settings


def shown(value) -> str:
    """A setting as a message shows it: checksums cut to 12 hex digits."""
    text = repr(value)
    return text[:13] + "...'" if isinstance(value, str) and len(value) == 64 else text


def refuse_replacing(path: Path, settings: dict) -> None:
    """Finished features extracted with other settings are hours of work: refuse to replace them,
    naming what differs and the ways out."""
    stored = stored_settings(path)
    if stored is None or stored == settings:
        return
    changed = [f"{key} {shown(stored.get(key))} -> {shown(settings.get(key))}" for key in sorted(set(stored) | set(settings))
               if stored.get(key) != settings.get(key)]  # fmt: skip
    raise UsageError(
        f"{path}: already extracted with other settings ({'; '.join(changed)}); keep it and write elsewhere with "
        "--dataset_dir (or a variant: --pooling/--layers/--prompt), or replace it with --overwrite"
    )


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
    resolve_extraction(args, slot)
    args.feature_spec = spec_from_args(args, slot)
    defaults = {"chunk_rows": CHUNK_ROWS, "resume": True, "device_map": None, "max_memory": None, "load_in": None, "wait": False}
    for name, default in defaults.items():
        setattr(args, name, getattr(args, name, default))  # callers that build their own Namespace
    if args.chunk_rows < 1:
        raise DataError(f"-chunk_rows {args.chunk_rows}: must be at least 1")
    modes = available_modes(args.data_dir, args.task) if args.mode == "all" else [args.mode]
    if not modes:
        raise DataError(f"{Path(args.data_dir) / args.task}: no train/valid/test CSV found (run `python prepare_data.py`)")
    splits = load_splits(args.data_dir, args.task, modes)
    resolved = resolve_model(args.model)  # a missing or broken model folder is refused before anything loads
    args.feature_spec.check_model(model_config(resolved, args.trust_remote_code))
    check_load_in(args.load_in)
    check_prompts(args.feature_spec, resolved, args.max_len, args.trust_remote_code)
    if args.max_memory and not args.device_map:
        raise UsageError(f"-max_memory {args.max_memory}: applies with -device_map only (it caps each device's share)")
    placed = dict(device_map=args.device_map, max_memory=parse_max_memory(args.max_memory))
    ranks = ranks_from_env(args.device)
    todo = splits_to_do(args, slot, splits, ranks)
    if not todo:
        return []
    # A load that fails (a missing package, a full GPU) leaves no empty store folder behind.
    with removed_if_left_empty([path.parent for _, path, _ in todo.values()]), ExitStack() as locks:
        todo = take_locks(args, todo, locks, ranks)
        if not todo:
            return []
        device = rank_device(pick_device(args.device), ranks)
        dtype = extraction_dtype(args.dtype, args.compat, device)
        # Every process loads; one that fails (a full GPU) tells the others instead of leaving them waiting.
        backbone = together(ranks, lambda: load_backbone(args.model, device, dtype, args.trust_remote_code,
                                                         load_in=args.load_in, **placed), "loading the model")  # fmt: skip
        float32_copy: list[Backbone] = []

        def float32_backbone() -> Backbone:
            if not float32_copy:
                float32_copy.append(load_backbone(args.model, device, torch.float32, args.trust_remote_code, **placed))
            return float32_copy[0]

        return [
            extract_split(args, slot, mode, split, path, settings, backbone, float32_backbone, ranks)
            for mode, (split, path, settings) in todo.items()
        ]


def store_dir(args: argparse.Namespace, slot: str) -> str:
    return args.feature_spec.store_dir(store_dir_of(slot, args.llama_pooling))


def splits_to_do(args: argparse.Namespace, slot: str, splits: dict[str, Split], ranks: Ranks) -> dict:
    """mode -> (split, store file, settings) for the splits not in the store with these settings."""
    todo = {}
    for mode, split in splits.items():
        path = feature_path(args.dataset_dir, args.task, store_dir(args, slot), mode)
        settings = settings_of(args, slot, split.csv_sha256)
        if not args.overwrite:
            refuse_replacing(path, settings)
        if not args.overwrite and already_extracted(path, settings):
            log.info("%s: already extracted with the same settings, skipped (--overwrite to redo)", path)
            if ranks.is_main and parts_dir(path).exists() and not lock_path(path).exists():
                # Chunks left by a run killed right after its merge; never those of a run still going.
                shutil.rmtree(parts_dir(path), ignore_errors=True)
            continue
        todo[mode] = (split, path, settings)
    return todo


def take_locks(args: argparse.Namespace, todo: dict, locks: ExitStack, ranks: Ranks) -> dict:
    """Rank 0 takes the lock of every split to do (`fec.features.locks`, held until `locks` closes) and
    drops the splits another process finished meanwhile; every process gets the same `todo`."""

    def lock_all() -> list[str]:
        left = []
        for mode, (_, path, settings) in todo.items():
            locks.enter_context(split_lock(path, wait=args.wait))
            if not args.overwrite and already_extracted(path, settings):
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
        raise PeerFailed(
            f"{ranks.prefix()}another process failed while {what} (see its error); finished chunks are kept, rerun to resume"
        )
    return result


def remove_stale_temp_files(path: Path) -> None:
    """Temp files of the store file and manifest left by a run killed while writing them."""
    for name in (path.name, manifest_path(path).name):
        for stale in path.parent.glob(f".{name}.*.tmp"):
            log.info("%s: temp file of an interrupted write, removed", stale)
            stale.unlink(missing_ok=True)


@dataclass
class SplitJob:
    """One split to extract, and everything its chunks are computed from."""

    args: argparse.Namespace
    slot: str
    mode: str
    split: Split
    path: Path
    settings: dict
    backbone: Backbone
    fallback: Callable[[], Backbone]
    ranks: Ranks
    run_id: str = ""

    def __post_init__(self) -> None:
        self.started = time.perf_counter()
        self.count = len(self.split) if self.args.limit is None else min(self.args.limit, len(self.split))
        self.spec: FeatureSpec = self.args.feature_spec
        self.layers = self.spec.published_layers
        self.chunks = plan_chunks(self.count, self.args.chunk_rows)
        self.parts = parts_dir(self.path)
        hidden = self.backbone.hidden_size
        if self.spec.is_variant:
            self.layer_indices = variant_indices(self.backbone, self.spec)
            self.width = [len(self.spec.poolings), len(self.layer_indices), hidden]
            self.dtype = getattr(torch, self.spec.store_dtype)
        else:
            self.layer_indices = None
            self.width = [self.layers, hidden] if self.slot == "llama" else [hidden]
            self.dtype = torch.float32
        # Everything that decides a chunk's contents; a chunk written under another key is redone.
        self.key = settings_hash({**self.settings, "model_fingerprint": self.backbone.fingerprint,
                                  "model_dtype": str(self.backbone.dtype), "chunk_rows": self.args.chunk_rows,
                                  "rows": self.count})  # fmt: skip


def extract_split(args: argparse.Namespace, slot: str, mode: str, split: Split, path: Path, settings: dict,
                  backbone: Backbone, fallback: Callable[[], Backbone], ranks: Ranks) -> Path:  # fmt: skip
    """One split: rank 0 plans (verifying finished chunks), every process extracts its share of
    the chunks left, rank 0 merges them into `path` with the manifest."""
    job = SplitJob(args, slot, mode, split, path, settings, backbone, fallback, ranks)
    job.run_id, left = ranks.broadcast(
        together(ranks, (lambda: plan_split(job)) if ranks.is_main else (lambda: None), "planning")
    )
    mine = [job.chunks[i] for i in left[ranks.rank :: ranks.world]]
    if ranks.distributed:
        log.info("%s%s: %d of the %d chunks left are this process's", ranks.prefix(), job.parts, len(mine), len(left))
    together(ranks, lambda: extract_chunks(job, mine), f"extracting {args.task}/{mode}")
    together(ranks, (lambda: merge_split(job)) if ranks.is_main else (lambda: None), f"merging {args.task}/{mode}")
    return path


def plan_split(job: SplitJob) -> tuple[str, list[int]]:
    """(a new run id, the indices of the chunks left to do), after tidying the parts folder."""
    remove_stale_temp_files(job.path)
    done, left = prepare_parts(job.parts, job.chunks, job.key, job.args.resume)
    if done:
        shown = ", ".join(str(c) for c in done[:8]) + (" ..." if len(done) > 8 else "")
        log.info("%s: resuming: %d of %d chunks already finished and verified, skipped (%s)", job.parts, len(done),
                 len(job.chunks), shown)  # fmt: skip
    return uuid.uuid4().hex, [c.index for c in left]


def extract_chunks(job: SplitJob, mine: list[Chunk]) -> None:
    """Extract and write this process's chunks; rows that came out non-finite are reported
    together at the end, after the other chunks are written."""
    args, bad_rows = job.args, []
    for number, chunk in enumerate(mine, 1):
        chunk_started = time.perf_counter()
        try:
            features, info = extract_features(
                job.backbone, job.split.texts[chunk.start : chunk.stop], job.slot, layers=job.layers or 1,
                max_len=args.max_len, batch_size=args.batch_size, max_tokens=args.max_tokens, llama_pooling=args.llama_pooling,
                batch_order=args.batch_order, desc=f"{job.ranks.prefix()}{job.slot} {args.task}/{job.mode} {chunk}",
                fallback=job.fallback, spec=job.spec,
            )  # fmt: skip
        except NonFiniteFeaturesError as err:
            bad_rows.extend(chunk.start + row for row in err.rows)
            continue  # the other chunks are still worth keeping
        info |= {"seconds": round(time.perf_counter() - chunk_started, 3), "run_id": job.run_id, "rank": job.ranks.rank}
        write_chunk(job.parts, chunk, cast_for_store(features, job.dtype, f"{job.parts}: {chunk}"), job.key, info)
        log.info("%s%s: chunk %s written (%d of %d)", job.ranks.prefix(), job.parts, chunk, number, len(mine))
    if bad_rows:
        saved = f"{job.path.name} was not written (the other chunks are kept)"
        raise NonFiniteFeaturesError(non_finite_message(sorted(bad_rows), job.backbone.dtype, saved), sorted(bad_rows))


def merge_split(job: SplitJob) -> None:
    """Stream the finished chunks into the store file with its manifest (rank 0)."""
    records = finished_records(job.parts, job.chunks, job.key, job.width, job.dtype)
    elapsed = time.perf_counter() - job.started
    fresh = sum(r["stop"] - r["start"] for r in records if r.get("run_id") == job.run_id)
    manifest = build_manifest(job, records, elapsed)
    labels = torch.from_numpy(job.split.labels[: job.count])
    merge_chunks(job.path, job.parts, job.chunks, records, job.key, labels, manifest, job.width, job.dtype)
    log.info("%s: %s features for %d texts in %.1fs (%d computed now, %.1f texts/s, %d process(es))", job.path,
             tuple(job.width), job.count, elapsed, fresh, fresh / max(elapsed, 1e-9), job.ranks.world)  # fmt: skip


def extraction_figures(job: SplitJob, records: list[dict], elapsed: float) -> dict:
    """How the split was extracted, summed over its chunk records."""
    keys = ("batches", "tokens", "padded_tokens", "rows_at_max_len", "float32_fallback_rows")
    figures = {k: sum(int(r.get(k, 0)) for r in records) for k in keys}
    fresh = sum(r["stop"] - r["start"] for r in records if r.get("run_id") == job.run_id)
    return figures | {
        "seconds": round(elapsed, 2), "texts_per_s": round(fresh / max(elapsed, 1e-9), 2), "chunk_rows": job.args.chunk_rows,
        "chunks": len(job.chunks), "chunks_resumed": sum(1 for r in records if r.get("run_id") != job.run_id),
        "processes": job.ranks.world,
    }  # fmt: skip


def build_manifest(job: SplitJob, records: list[dict], elapsed: float) -> dict:
    """The store manifest of a merged split: every setting, the model, the data, how it was extracted."""
    args, slot, split, backbone, layers = job.args, job.slot, job.split, job.backbone, job.layers
    settings, mode, info = job.settings, job.mode, extraction_figures(job, records, elapsed)
    return {
        "format": MANIFEST_FORMAT,
        "settings": settings,
        "task": args.task,
        "mode": mode,
        "slot": slot,
        "store_dir": store_dir(args, slot),
        "compat": args.compat,
        "llama_pooling": args.llama_pooling if slot == "llama" else None,
        "batch_order": args.batch_order,
        "batch_size": args.batch_size,
        "model": args.model,
        "model_path": backbone.resolved,
        "model_class": type(backbone.model).__name__,
        "model_fingerprint": backbone.fingerprint,
        "hidden_size": backbone.hidden_size,
        "pooling": "variant" if job.spec.is_variant else pooling_used(backbone, slot),
        **job.spec.manifest(job.layer_indices, backbone.num_hidden_states),
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
