"""Resumable extraction storage: a split's features as fixed-size row chunks, merged at the end.

    dataset/{task}/{slot_dir}/{mode}.parts/rows-0000000000-0000004096.safetensors   features of rows [0, 4096)
    dataset/{task}/{slot_dir}/{mode}.parts/rows-0000000000-0000004096.json          its record

A chunk's safetensors file carries its row range and the settings hash in its metadata; the
record beside it (written after the file, both by temp name + rename) repeats them and adds the
file's sha256 and how the chunk was computed. A chunk counts as finished only when its record
exists, names the current settings and row range, and the file's sha256 matches, so a chunk cut
off by a crash (a stray temp file, a file without its record) or damaged later is redone, never
merged. The merge streams the chunks into the normal store file (`fec.features.store.save_features_streamed`),
checking each chunk's sha256 as it reads it, then removes the parts folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from fec.core.errors import SettingError, StoreError
from fec.core.files import atomic_write, atomic_write_text, sha256_file
from fec.features.store import read_safetensors_header, save_features_streamed, write_safetensors

log = logging.getLogger(__name__)

PARTS_SUFFIX = ".parts"
CHUNK_FORMAT = "fec-chunk/1"
MERGE_BLOCK = 16 << 20  # bytes read and written at a time while merging


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"rows-{self.start:010d}-{self.stop:010d}"

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def __str__(self) -> str:
        return f"rows {self.start}-{self.stop - 1}"


def plan_chunks(rows: int, chunk_rows: int) -> list[Chunk]:
    """Consecutive row ranges of `chunk_rows` (the last one shorter)."""
    if chunk_rows < 1:
        raise SettingError("chunk_rows", chunk_rows, "must be at least 1")
    return [Chunk(i, start, min(start + chunk_rows, rows)) for i, start in enumerate(range(0, rows, chunk_rows))]


def parts_dir(path: Path) -> Path:
    """`dataset/ED/llama/train.safetensors` -> `dataset/ED/llama/train.parts`."""
    return path.with_name(path.stem + PARTS_SUFFIX)


def chunk_file(parts: Path, chunk: Chunk) -> Path:
    return parts / f"{chunk.name}.safetensors"


def record_file(parts: Path, chunk: Chunk) -> Path:
    return parts / f"{chunk.name}.json"


def settings_hash(settings: dict) -> str:
    """sha256 of everything that decides the chunks' contents (canonical JSON)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def write_chunk(parts: Path, chunk: Chunk, features: torch.Tensor, key: str, info: dict) -> None:
    """Write one chunk's features and then its record, each to a temp name renamed into place.

    An OSError (disk full, permission denied) becomes a one-line StoreError naming the file;
    chunks already written stay as they are."""
    if features.shape[0] != chunk.rows:
        raise StoreError(f"{chunk_file(parts, chunk)}: {features.shape[0]} rows for {chunk}")
    target = chunk_file(parts, chunk)
    metadata = {"format": CHUNK_FORMAT, "start": str(chunk.start), "stop": str(chunk.stop), "settings_sha256": key}
    digest = {}

    def write(tmp: Path) -> None:
        digest["sha256"] = write_safetensors(tmp, {"features": features}, metadata)

    record = {
        "format": CHUNK_FORMAT,
        "start": chunk.start,
        "stop": chunk.stop,
        "settings_sha256": key,
        "file": target.name,
        "feature_shape": list(features.shape[1:]),
        "feature_dtype": str(features.dtype).removeprefix("torch."),
        **info,
    }
    current = target
    try:
        parts.mkdir(parents=True, exist_ok=True)
        atomic_write(target, write)
        current = record_file(parts, chunk)
        atomic_write_text(current, json.dumps({**record, "sha256": digest["sha256"]}, indent=1) + "\n")
    except OSError as err:
        reason = err.strerror or str(err)
        raise StoreError(f"{current}: cannot write ({reason}); finished chunks are kept, rerun to resume") from err


def read_record(parts: Path, chunk: Chunk, key: str) -> tuple[dict | None, str]:
    """(record, "") when the chunk's record names this chunk and settings, else (None, why not)."""
    rpath, fpath = record_file(parts, chunk), chunk_file(parts, chunk)
    if not rpath.is_file():
        return None, "partial (no record)" if fpath.exists() else "missing"
    try:
        record = json.loads(rpath.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None, "unreadable record"
    if record.get("settings_sha256") != key:
        return None, "extracted with other settings"
    if (record.get("start"), record.get("stop")) != (chunk.start, chunk.stop):
        return None, "row range differs"
    if not fpath.is_file():
        return None, "record without features file"
    return record, ""


def verify_chunk(parts: Path, chunk: Chunk, key: str) -> tuple[dict | None, str]:
    """(record, "") for a finished, intact chunk; (None, why) otherwise (checks the sha256)."""
    record, why = read_record(parts, chunk, key)
    if record is None:
        return None, why
    if sha256_file(chunk_file(parts, chunk)) != record.get("sha256"):
        return None, "checksum mismatch (corrupt)"
    return record, ""


def prepare_parts(parts: Path, chunks: list[Chunk], key: str, resume: bool) -> tuple[list[Chunk], list[Chunk]]:
    """Tidy the parts folder and sort the chunks into (finished, to do).

    Temp files left by a killed run and files that belong to no planned chunk are removed; with
    `resume=False` the whole folder is. Finished chunks are verified (record, settings, sha256);
    any other chunk's files are removed so it is written afresh.
    """
    if not resume and parts.exists():
        log.info("%s: -no_resume, removing earlier chunks", parts)
        shutil.rmtree(parts)
    if not parts.is_dir():
        return [], list(chunks)
    planned = {f"{c.name}{suffix}" for c in chunks for suffix in (".safetensors", ".json")}
    for stray in parts.iterdir():
        if stray.name not in planned:
            log.info(
                "%s: not part of this extraction (temp file of an interrupted write, or another -chunk_rows), removed", stray
            )
            stray.unlink(missing_ok=True) if not stray.is_dir() else shutil.rmtree(stray)
    done, todo = [], []
    for chunk in chunks:
        record, why = verify_chunk(parts, chunk, key)
        if record is not None:
            done.append(chunk)
            continue
        todo.append(chunk)
        if why != "missing":
            log.warning("%s: chunk %s is %s; redoing it", parts, chunk, why)
            chunk_file(parts, chunk).unlink(missing_ok=True)
            record_file(parts, chunk).unlink(missing_ok=True)
    return done, todo


def finished_records(
    parts: Path, chunks: list[Chunk], key: str, feature_shape: list[int], dtype: torch.dtype = torch.float32
) -> list[dict]:
    """The records of `chunks`, all of which must be finished with per-row shape `feature_shape`
    and `dtype` (StoreError naming the first that is not). The files' sha256 are checked by the merge."""
    feature_shape = [int(x) for x in feature_shape]
    dtype_name = str(dtype).removeprefix("torch.")
    records = []
    for chunk in chunks:
        record, why = read_record(parts, chunk, key)
        if record is None:
            raise StoreError(f"{chunk_file(parts, chunk)}: chunk {chunk} is {why}; rerun to redo it")
        if record.get("feature_shape") != feature_shape or record.get("feature_dtype") != dtype_name:
            raise StoreError(
                f"{chunk_file(parts, chunk)}: chunk {chunk} holds {record.get('feature_dtype')} "
                f"{record.get('feature_shape')}, expected {dtype_name} {feature_shape}; rerun with -no_resume"
            )
        records.append(record)
    return records


def merge_chunks(
    path: Path,
    chunks: list[Chunk],
    records: list[dict],
    key: str,
    labels: torch.Tensor,
    manifest: dict,
    feature_shape: list[int],
    dtype: torch.dtype = torch.float32,
) -> dict:
    """Stream the finished chunks (with their `finished_records`), in row order, from `path`'s
    parts folder into the store file `path` and its manifest, then remove the parts folder. Each
    chunk's sha256 and metadata are checked as it is read, and only one chunk is in memory at a
    time. Returns the manifest."""
    parts, rows = parts_dir(path), chunks[-1].stop if chunks else 0
    feature_shape = [int(x) for x in feature_shape]

    def pieces():
        for chunk, record in zip(chunks, records, strict=False):
            fpath = chunk_file(parts, chunk)
            header, start = read_safetensors_header(fpath)
            meta, entry = header.get("__metadata__", {}), header.get("features", {})
            if (meta.get("start"), meta.get("stop"), meta.get("settings_sha256")) != (
                str(chunk.start),
                str(chunk.stop),
                key,
            ) or entry.get("shape") != [chunk.rows, *feature_shape]:
                raise StoreError(f"{fpath}: metadata disagrees with its record; rerun to redo this chunk")
            begin, end = entry["data_offsets"]
            digest = hashlib.sha256()
            with open(fpath, "rb") as fh:
                digest.update(fh.read(start + begin))
                left = end - begin
                while left:
                    block = fh.read(min(MERGE_BLOCK, left))
                    if not block:
                        raise StoreError(f"{fpath}: truncated; rerun to redo this chunk")
                    digest.update(block)
                    left -= len(block)
                    yield block
                digest.update(fh.read())
            # Checked once the chunk is read: a bad chunk aborts the merge before the file is renamed into place.
            if digest.hexdigest() != record["sha256"]:
                raise StoreError(f"{fpath}: checksum mismatch (corrupt); rerun to redo this chunk")

    manifest = save_features_streamed(path, [rows, *feature_shape], dtype, pieces(), labels, manifest)
    shutil.rmtree(parts, ignore_errors=True)
    return manifest
