"""The feature store: `dataset/{task}/{slot}/{mode}.safetensors` plus a JSON manifest beside it.

One path helper serves the writers (the extraction scripts) and the reader (`main.py`), so the
published `llama2_7b_chatt/` vs `llama2_7b_chat/` mismatch cannot happen here.

    from fec.features.store import feature_path, load_features
    feats = load_features(feature_path("dataset", "ED", "llama", "train"))
    feats.features.shape, feats.manifest["model"]

Writes go to a temporary name in the same folder and are renamed into place; the manifest is
written last and records the features file's sha256, so a reader never takes a half-written or
mismatched pair for a finished one. `save_features_streamed` writes the same file from pieces
(the chunks of a resumable extraction) without ever holding all features in memory, and
`load_features(path, mmap=True)` maps the file instead of reading it, so a split larger than
RAM can still be read.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fec.core.errors import StoreError
from fec.core.files import atomic_write, atomic_write_text, sha256_file
from fec.core.paths import inside

MANIFEST_SUFFIX = ".json"
# safetensors dtype codes for the tensors the store holds (features and labels).
SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
TORCH_DTYPES = {code: dtype for dtype, code in SAFETENSORS_DTYPES.items()}


@dataclass
class StoredFeatures:
    features: torch.Tensor
    labels: torch.Tensor
    manifest: dict
    path: Path


def feature_path(dataset_dir: Path | str, task: str, slot: str, mode: str) -> Path:
    """`dataset_dir/task/slot/mode.safetensors`, refused when the names would lead outside `dataset_dir`."""
    return inside(dataset_dir, task, slot, f"{mode}.safetensors")


def manifest_path(path: Path) -> Path:
    return path.with_suffix(MANIFEST_SUFFIX)


def save_features(path: Path, features: torch.Tensor, labels: torch.Tensor, manifest: dict) -> dict:
    """Save features and labels, then the manifest (with shapes and the file's sha256 added)."""
    if features.shape[0] != labels.shape[0]:
        raise StoreError(f"{path}: {features.shape[0]} feature rows but {labels.shape[0]} labels")
    tensors = {"features": features.contiguous(), "labels": labels.contiguous()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
    return _write_manifest(path, list(features.shape), features.dtype, sha256_file(path), manifest)


def _write_manifest(path: Path, shape: list[int], dtype: torch.dtype, sha256: str, manifest: dict) -> dict:
    manifest = {
        **manifest,
        "rows": int(shape[0]),
        "feature_shape": list(shape[1:]),
        "feature_dtype": str(dtype).removeprefix("torch."),
        "features_file": path.name,
        "features_sha256": sha256,
    }
    atomic_write_text(manifest_path(path), json.dumps(manifest, indent=2) + "\n")
    return manifest


def _safetensors_header(
    entries: list[tuple[str, torch.dtype, list[int]]], metadata: dict[str, str] | None = None
) -> tuple[bytes, list[int]]:
    """A safetensors header for these tensors, in this order, as `save_file` writes it (compact
    JSON, `__metadata__` first, space-padded to a multiple of 8), and each tensor's size in bytes."""
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset, sizes = 0, []
    for name, dtype, shape in entries:
        size = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
        sizes.append(size)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, sizes


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Write `tensors` (in the order given) as a safetensors file straight from their memory, with
    no serialised copy, and return the file's sha256. Without metadata the bytes are those
    `save_file` writes for one tensor, or for tensors given in its order."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    header, _ = _safetensors_header([(n, t.dtype, list(t.shape)) for n, t in tensors.items()], metadata)
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        for block in (header, *(tensor_bytes(t) for t in tensors.values())):
            fh.write(block)
            digest.update(block)
    return digest.hexdigest()


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """A tensor's raw (little-endian) bytes without a copy when it is contiguous on the CPU."""
    return memoryview(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


def save_features_streamed(
    path: Path,
    shape: list[int],
    dtype: torch.dtype,
    pieces: Iterable[torch.Tensor | bytes | memoryview],
    labels: torch.Tensor,
    manifest: dict,
) -> dict:
    """Write the same store file as `save_features` from `pieces` of the features (row blocks in
    order, as tensors or raw bytes), then the manifest; only one piece is in memory at a time and
    the sha256 is computed while writing. Raises StoreError if the pieces do not add up to `shape`.
    """
    shape = [int(x) for x in shape]
    if shape[0] != labels.shape[0]:
        raise StoreError(f"{path}: {shape[0]} feature rows but {labels.shape[0]} labels")
    labels = labels.contiguous()
    # Same order as save_file: labels (int64, 8-byte alignment) before float features.
    entries = [("labels", labels.dtype, list(labels.shape)), ("features", dtype, shape)]
    header, (_, features_size) = _safetensors_header(entries)
    digest = hashlib.sha256()

    def write(tmp: Path) -> None:
        written = 0
        with open(tmp, "wb") as fh:
            for block in (header, tensor_bytes(labels)):
                fh.write(block)
                digest.update(block)
            for piece in pieces:
                if isinstance(piece, torch.Tensor):
                    if piece.dtype != dtype:
                        raise StoreError(f"{path}: a piece has dtype {piece.dtype}, expected {dtype}")
                    piece = tensor_bytes(piece)
                fh.write(piece)
                digest.update(piece)
                written += len(piece) if isinstance(piece, bytes) else piece.nbytes
            if written != features_size:
                raise StoreError(
                    f"{path}: the pieces hold {written} bytes of features, expected {features_size} for shape {tuple(shape)}"
                )
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write)
    return _write_manifest(path, shape, dtype, digest.hexdigest(), manifest)


def cast_for_store(features: torch.Tensor, dtype: torch.dtype, where: str) -> torch.Tensor:
    """Features in the store's dtype; a value float16 cannot hold is an error, never a silent inf."""
    cast = features.to(dtype)
    if dtype == torch.float16 and not bool(torch.isfinite(cast).all()):
        raise StoreError(f"{where}: values beyond float16's range; extract with --store_dtype bfloat16")
    return cast


def read_manifest(path: Path) -> dict:
    mpath = manifest_path(path)
    if not path.is_file():
        raise StoreError(f"{path}: features not found (extract them first, e.g. `python llama2_rep_extract.py ...`)")
    if not mpath.is_file():
        raise StoreError(f"{mpath}: manifest missing, so {path.name} is incomplete; extract again")
    try:
        return json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise StoreError(f"{mpath}: unreadable manifest ({err})") from err


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """(header, offset of the data section) of a safetensors file; StoreError if it is not one."""
    try:
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > 100_000_000:
                raise ValueError("header length out of range")
            header = json.loads(fh.read(length))
    except (OSError, ValueError, struct.error) as err:
        raise StoreError(f"{path}: not a readable safetensors file ({err})") from err
    return header, 8 + length


def mmap_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file as views of one private (copy-on-write) memory map of it:
    nothing is read until used, pages read are page cache the kernel can drop, and writing to a
    tensor never changes the file."""
    header, start = read_safetensors_header(path)
    size = path.stat().st_size
    raw = torch.from_file(str(path), shared=False, size=size, dtype=torch.uint8) if size else torch.empty(0, dtype=torch.uint8)
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = (start + x for x in entry["data_offsets"])
        if entry["dtype"] not in TORCH_DTYPES or end > size:
            raise StoreError(f"{path}: tensor {name!r} has an unsupported dtype or lies past the end of the file")
        dtype = TORCH_DTYPES[entry["dtype"]]
        block = raw[begin:end]
        if begin % torch.empty((), dtype=dtype).element_size():
            block = block.clone()  # unaligned (not written by safetensors >= 0.4): copy this one tensor
        tensors[name] = block.view(dtype).reshape(entry["shape"])
    return tensors


def load_features(path: Path | str, *, verify_hash: bool = True, mmap: bool = False) -> StoredFeatures:
    """Load features and labels and check them against the manifest.

    `mmap=True` maps the file instead of reading it (see `mmap_safetensors`): memory then stays
    near the pages actually touched, in the stored dtype, and a split larger than RAM still loads.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if verify_hash and sha256_file(path) != manifest.get("features_sha256"):
        raise StoreError(f"{path}: contents do not match its manifest's sha256 (overwritten or corrupt); extract again")
    tensors = mmap_safetensors(path) if mmap else load_file(str(path))
    features, labels = tensors["features"], tensors["labels"]
    if features.shape[0] != manifest["rows"] or list(features.shape[1:]) != manifest["feature_shape"]:
        raise StoreError(f"{path}: shape {tuple(features.shape)} disagrees with its manifest")
    return StoredFeatures(features, labels, manifest, path)
