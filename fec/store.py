"""The feature store: `dataset/{task}/{slot}/{mode}.safetensors` plus a JSON manifest beside it.

One path helper serves the writers (the extraction scripts) and the reader (`main.py`), so the
published `llama2_7b_chatt/` vs `llama2_7b_chat/` mismatch cannot happen here.

    from fec.store import feature_path, load_features
    feats = load_features(feature_path("dataset", "ED", "llama", "train"))
    feats.features.shape, feats.manifest["model"]

Writes go to a temporary name in the same folder and are renamed into place; the manifest is
written last and records the features file's sha256, so a reader never takes a half-written or
mismatched pair for a finished one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from fec.data import sha256_file

MANIFEST_SUFFIX = ".json"


class StoreError(ValueError):
    """Features missing, incomplete, or inconsistent with their manifest (one line, names the file)."""


@dataclass
class StoredFeatures:
    features: torch.Tensor
    labels: torch.Tensor
    manifest: dict
    path: Path


def feature_path(dataset_dir: Path | str, task: str, slot: str, mode: str) -> Path:
    return Path(dataset_dir) / task / slot / f"{mode}.safetensors"


def manifest_path(path: Path) -> Path:
    return path.with_suffix(MANIFEST_SUFFIX)


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)` on a temporary sibling of `path`, then rename it over `path`.

    On any failure the temporary file is removed and whatever was at `path` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes owner-only files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_features(path: Path, features: torch.Tensor, labels: torch.Tensor, manifest: dict) -> dict:
    """Save features and labels, then the manifest (with shapes and the file's sha256 added)."""
    if features.shape[0] != labels.shape[0]:
        raise StoreError(f"{path}: {features.shape[0]} feature rows but {labels.shape[0]} labels")
    tensors = {"features": features.contiguous(), "labels": labels.contiguous()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
    manifest = {
        **manifest,
        "rows": int(features.shape[0]),
        "feature_shape": list(features.shape[1:]),
        "feature_dtype": str(features.dtype).removeprefix("torch."),
        "features_file": path.name,
        "features_sha256": sha256_file(path),
    }
    atomic_write_text(manifest_path(path), json.dumps(manifest, indent=2) + "\n")
    return manifest


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


def load_features(path: Path | str, *, verify_hash: bool = True) -> StoredFeatures:
    """Load features and labels and check them against the manifest."""
    path = Path(path)
    manifest = read_manifest(path)
    if verify_hash and sha256_file(path) != manifest.get("features_sha256"):
        raise StoreError(f"{path}: contents do not match its manifest's sha256 (overwritten or corrupt); extract again")
    tensors = load_file(str(path))
    features, labels = tensors["features"], tensors["labels"]
    if features.shape[0] != manifest["rows"] or list(features.shape[1:]) != manifest["feature_shape"]:
        raise StoreError(f"{path}: shape {tuple(features.shape)} disagrees with its manifest")
    return StoredFeatures(features, labels, manifest, path)
