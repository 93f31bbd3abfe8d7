"""Extracting a task's splits into the feature store, behind the three extraction scripts
(`fec.extract`, `fec.api.extract`, builds the `fec.features.config.ExtractionConfig` from its settings).

    from fec.features.config import ExtractionConfig
    from fec.features.extract import run
    run(ExtractionConfig(slot="bert", task="ED", model="offline:all-minilm-l6-v2"))

Every split asked for that is not already in the store with the same settings is extracted in
chunks of `chunk_rows` rows written to `{mode}.parts/` (see `fec.features.chunks`) and merged at the
end, so a crash loses at most the chunks in flight: rerun the same command and finished chunks
are verified and skipped (`--no_resume` starts over). One process at a time extracts a split
(`fec.features.locks`). Under `accelerate launch` or `torchrun` the chunks are shared out among the
processes and rank 0 merges them; the result is the same store file a single process writes
(see `fec.features.distributed`). The features themselves come from `fec.features.forward_pass.extract_features`; the
merged file gets a manifest with every setting, the model's fingerprint and the CSV's sha256.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch

from fec.core.data import Split, available_modes, load_splits
from fec.core.errors import DataError, NonFiniteFeaturesError, PeerFailed
from fec.core.files import removed_if_left_empty
from fec.core.provenance import provenance
from fec.core.threads import use_threads
from fec.features.backbones import (
    Backbone,
    check_load_in,
    check_spec_fits,
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
from fec.features.compiled import check_compile, compile_model
from fec.features.config import ExtractionConfig, already_extracted, keeping_stored_dtype, refuse_replacing
from fec.features.distributed import Ranks, rank_device, ranks_from_env
from fec.features.forward_pass import (
    REFERENCE_PAD_TOKEN,
    check_prompts,
    extract_features,
    forward_flops,
    non_finite_message,
    pooling_used,
    variant_indices,
)
from fec.features.locks import lock_path, split_lock
from fec.features.pooling import recorded_name
from fec.features.store import cast_for_store, feature_path, manifest_path
from fec.features.store_slots import check_store_kind

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "fec-features/1"


@dataclass(frozen=True)
class Pending:
    """A split to extract: its rows, the store file it goes to and the settings that file will record."""

    mode: str
    split: Split
    path: Path
    settings: dict


def run(config: ExtractionConfig, splits: dict[str, Split] | None = None) -> list[Path]:
    """Extract every split asked for that is not already in the store with the same settings
    (`splits`: what `checked_splits(config)` returned, when the caller checked it first).

    Alone, this process does every chunk; under a launcher (WORLD_SIZE > 1) every process runs
    this function, takes its share of the chunks, and rank 0 merges and writes the manifest.
    Returns the store files written (on rank 0; other ranks return the same paths)."""
    splits = splits if splits is not None else checked_splits(config)
    config = keeping_stored_dtype(config)
    ranks = ranks_from_env(config.device)
    todo = splits_to_do(config, splits, ranks)
    if not todo:
        return []
    # A load that fails (a missing package, a full GPU) leaves no empty store folder behind.
    with removed_if_left_empty([pending.path.parent for pending in todo.values()]), ExitStack() as locks:
        todo = take_locks(config, todo, locks, ranks)
        if not todo:
            return []
        backbone, float32_backbone = load_models(config, ranks)
        if backbone.device.type == "cpu" or config.threads:  # on a GPU, only -threads sets them
            work = forward_flops(backbone.model, config.batching.token_budget(backbone.device))  # one batch's
            use_threads(config.threads, work, "extraction", share=ranks.world)
        return [extract_split(config, pending, backbone, float32_backbone, ranks) for pending in todo.values()]


def checked_splits(config: ExtractionConfig) -> dict[str, Split]:
    """The splits asked for, read and checked, after refusing what can be refused before
    anything loads: a slot the store holds as another kind, a missing or broken model folder, what its configuration rules out, a
    quantisation that cannot run, prompts its tokenizer cannot serve."""
    modes = list(config.modes) or available_modes(config.data_dir, config.task)
    if not modes:
        raise DataError(f"{Path(config.data_dir) / config.task}: no train/valid/test CSV found (run `python prepare_data.py`)")
    splits = load_splits(config.data_dir, config.task, modes)
    check_store_kind(config.dataset_dir, config.task, config.slot, config.slot_kind)
    resolved = resolve_model(config.model)
    check_spec_fits(config.feature_spec, model_config(resolved, config.trust_remote_code))
    check_load_in(config.load_in)
    check_prompts(config.feature_spec, resolved, config.max_len, config.trust_remote_code)
    if config.compile:
        check_compile(pick_device(config.device), config.device_map, config.load_in)
    return splits


def load_models(config: ExtractionConfig, ranks: Ranks) -> tuple[Backbone, Callable[[], Backbone]]:
    """(the backbone, a function giving its float32 copy, loaded on first use for rows that
    overflow in half precision). Every process loads; one that fails (a full GPU) tells the
    others instead of leaving them waiting."""
    placed = dict(device_map=config.device_map, max_memory=parse_max_memory(config.max_memory))
    device = rank_device(pick_device(config.device), ranks)
    dtype = extraction_dtype(config.dtype, config.compat, device)
    trust = config.trust_remote_code

    def load() -> Backbone:
        return load_backbone(config.model, device, dtype, trust, load_in=config.load_in, **placed)

    backbone = together(ranks, load, "loading the model")
    if config.compile:
        compile_model(backbone.model)
    float32_copy: list[Backbone] = []

    def float32_backbone() -> Backbone:
        if not float32_copy:
            float32_copy.append(load_backbone(config.model, device, torch.float32, trust, **placed))
        return float32_copy[0]

    return backbone, float32_backbone


def splits_to_do(config: ExtractionConfig, splits: dict[str, Split], ranks: Ranks) -> dict[str, Pending]:
    """mode -> what to extract, for the splits not in the store with these settings."""
    todo = {}
    for mode, split in splits.items():
        path = feature_path(config.dataset_dir, config.task, config.store_dir, mode)
        settings = config.settings(split.csv_sha256)
        if not config.overwrite:
            refuse_replacing(path, settings)
        if not config.overwrite and already_extracted(path, settings):
            log.info("%s: already extracted with the same settings, skipped (--overwrite to redo)", path)
            if ranks.is_main and parts_dir(path).exists() and not lock_path(path).exists():
                # Chunks left by a run killed right after its merge; never those of a run still going.
                shutil.rmtree(parts_dir(path), ignore_errors=True)
            continue
        todo[mode] = Pending(mode, split, path, settings)
    return todo


def take_locks(config: ExtractionConfig, todo: dict[str, Pending], locks: ExitStack, ranks: Ranks) -> dict[str, Pending]:
    """Rank 0 takes the lock of every split to do (`fec.features.locks`, held until `locks` closes) and
    drops the splits another process finished meanwhile; every process gets the same `todo`."""

    def lock_all() -> list[str]:
        left = []
        for mode, pending in todo.items():
            locks.enter_context(split_lock(pending.path, wait=config.wait))
            if not config.overwrite and already_extracted(pending.path, pending.settings):
                log.info("%s: extracted by another process meanwhile, skipped", pending.path)
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

    config: ExtractionConfig
    pending: Pending
    backbone: Backbone
    fallback: Callable[[], Backbone]
    ranks: Ranks
    run_id: str = ""

    def __post_init__(self) -> None:
        self.started = time.perf_counter()
        self.slot, self.spec = self.config.slot, self.config.feature_spec
        pending = self.pending
        self.mode, self.split, self.path, self.settings = pending.mode, pending.split, pending.path, pending.settings
        self.count = len(self.split) if self.config.limit is None else min(self.config.limit, len(self.split))
        self.layers = self.spec.published_layers
        self.chunks = plan_chunks(self.count, self.config.chunk_rows)
        self.parts = parts_dir(self.path)
        hidden = self.backbone.hidden_size
        if self.spec.is_variant:
            self.layer_indices = variant_indices(self.backbone, self.spec)
            self.width = [len(self.spec.poolings), len(self.layer_indices), hidden]
            self.dtype = getattr(torch, self.spec.store_dtype)
        else:
            self.layer_indices = None
            self.width = [self.layers, hidden] if self.layers else [hidden]  # the published decoder's layers
            self.dtype = torch.float32
        # Everything that decides a chunk's contents; a chunk written under another key is redone.
        chunk_settings = {"model_fingerprint": self.backbone.fingerprint, "model_dtype": str(self.backbone.dtype)}
        chunk_settings |= {"chunk_rows": self.config.chunk_rows, "rows": self.count}
        self.key = settings_hash({**self.settings, **chunk_settings})


def extract_split(
    config: ExtractionConfig, pending: Pending, backbone: Backbone, fallback: Callable[[], Backbone], ranks: Ranks
) -> Path:
    """One split: rank 0 plans (verifying finished chunks), every process extracts its share of
    the chunks left, rank 0 merges them into its store file with the manifest."""
    job = SplitJob(config, pending, backbone, fallback, ranks)
    job.run_id, left = ranks.broadcast(
        together(ranks, (lambda: plan_split(job)) if ranks.is_main else (lambda: None), "planning")
    )
    mine = [job.chunks[i] for i in left[ranks.rank :: ranks.world]]
    if ranks.distributed:
        log.info("%s%s: %d of the %d chunks left are this process's", ranks.prefix(), job.parts, len(mine), len(left))
    where = f"{config.task}/{job.mode}"
    together(ranks, lambda: extract_chunks(job, mine), f"extracting {where}")
    together(ranks, (lambda: merge_split(job)) if ranks.is_main else (lambda: None), f"merging {where}")
    return job.path


def plan_split(job: SplitJob) -> tuple[str, list[int]]:
    """(a new run id, the indices of the chunks left to do), after tidying the parts folder."""
    remove_stale_temp_files(job.path)
    done, left = prepare_parts(job.parts, job.chunks, job.key, job.config.resume)
    if done:
        listed = ", ".join(str(c) for c in done[:8]) + (" ..." if len(done) > 8 else "")
        how_many = f"{len(done)} of {len(job.chunks)}"
        log.info("%s: resuming: %s chunks already finished and verified, skipped (%s)", job.parts, how_many, listed)
    return uuid.uuid4().hex, [c.index for c in left]


def extract_chunks(job: SplitJob, mine: list[Chunk]) -> None:
    """Extract and write this process's chunks; rows that came out non-finite are reported
    together at the end, after the other chunks are written."""
    config, bad_rows = job.config, []
    plan = config.pooling_plan(job.layers or 1)
    for number, chunk in enumerate(mine, 1):
        chunk_started = time.perf_counter()
        texts = job.split.texts[chunk.start : chunk.stop]
        desc = f"{job.ranks.prefix()}{job.slot} {config.task}/{job.mode} {chunk}"
        try:
            features, info = extract_features(
                job.backbone, texts, job.slot, plan=plan, batching=config.batching, desc=desc, fallback=job.fallback
            )
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
    merge_chunks(job.path, job.chunks, records, job.key, labels, manifest, job.width, job.dtype)
    speed = f"{fresh} computed now, {fresh / max(elapsed, 1e-9):.1f} texts/s, {job.ranks.world} process(es)"
    log.info("%s: %s features for %d texts in %.1fs (%s)", job.path, tuple(job.width), job.count, elapsed, speed)


def extraction_figures(job: SplitJob, records: list[dict], elapsed: float) -> dict:
    """How the split was extracted, summed over its chunk records."""
    keys = ("batches", "tokens", "padded_tokens", "rows_at_max_len", "float32_fallback_rows")
    figures = {k: sum(int(r.get(k, 0)) for r in records) for k in keys}
    fresh = sum(r["stop"] - r["start"] for r in records if r.get("run_id") == job.run_id)
    return figures | {
        "seconds": round(elapsed, 2),
        "texts_per_s": round(fresh / max(elapsed, 1e-9), 2),
        "chunk_rows": job.config.chunk_rows,
        "chunks": len(job.chunks),
        "chunks_resumed": sum(1 for r in records if r.get("run_id") != job.run_id),
        "processes": job.ranks.world,
    }


def build_manifest(job: SplitJob, records: list[dict], elapsed: float) -> dict:
    """The store manifest of a merged split: every setting, the model, the data, how it was extracted."""
    config, slot, split, backbone, layers = job.config, job.slot, job.split, job.backbone, job.layers
    published_padding = config.llama_pooling == "unmasked_padded"
    settings, mode, info = job.settings, job.mode, extraction_figures(job, records, elapsed)
    return {
        "format": MANIFEST_FORMAT,
        "settings": settings,
        "task": config.task,
        "mode": mode,
        "slot": slot,
        "slot_kind": config.slot_kind,
        "store_dir": config.store_dir,
        "compat": config.compat,
        "llama_pooling": config.llama_pooling if slot == "llama" else None,
        "batch_order": config.batch_order,
        "batch_size": config.batch_size,
        "compiled": config.compile,
        "max_tokens": config.batching.token_budget(backbone.device) if config.batch_order == "length" else None,
        "model": config.model,
        "model_path": backbone.resolved,
        "model_class": type(backbone.model).__name__,
        "model_fingerprint": backbone.fingerprint,
        "hidden_size": backbone.hidden_size,
        "pooling": "variant" if job.spec.is_variant else recorded_name(pooling_used(backbone, slot)),
        **job.spec.manifest(job.layer_indices, backbone.num_hidden_states),
        "missing_weights": backbone.missing_weights,
        "layers": layers,
        "layer_order": "last layer first" if layers else None,
        "max_len": config.max_len,
        "dtype": str(backbone.dtype).removeprefix("torch."),
        "device": str(backbone.device),
        "device_map": config.device_map,
        "device_placement": (placement(backbone.model) or {str(backbone.device): "all"}) if config.device_map else None,
        "load_in": config.load_in,
        "pad_token": REFERENCE_PAD_TOKEN if published_padding else backbone.pad_token,
        "padding": (
            f"right, every text to {config.max_len} tokens with the id of {REFERENCE_PAD_TOKEN!r}; included in the mean "
            "(published)"
            if published_padding
            else "right, to the longest text of each batch; masked out of every pooled feature"
        ),
        "csv": str(split.path),
        "csv_sha256": split.csv_sha256,
        "csv_rows": len(split),
        "limit": config.limit,
        "multilabel": split.multilabel,
        "label_names": split.label_names,
        "extraction": info,
        **provenance(),
    }
