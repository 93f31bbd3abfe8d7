"""What produced an artifact: code version, git SHA, package versions, time. Recorded next to
every feature file and every run."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import subprocess
from pathlib import Path

VERSION = "0.1.0"  # the package version (pyproject.toml reads it from here)
REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("torch", "transformers", "accelerate", "safetensors", "numpy", "scikit-learn")


def git_sha() -> str | None:
    """The checkout's commit, with `-dirty` when it has uncommitted changes; None outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def provenance() -> dict:
    return {"code_version": VERSION, "git_sha": git_sha(), "packages": package_versions(), "created": now_iso()}
