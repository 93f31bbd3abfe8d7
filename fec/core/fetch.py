"""Bring the third-party emotion CSVs into `data/{task}/`, sha256-checked.

The project never commits these files. Two sources:

* copy from a local folder holding one sub-folder per task (`copy_tasks`);
* download from the published LLM-FusionClassifier repository at a pinned commit
  (`download_tasks`; ED and go_emotion only).

Every file is written to a temporary name inside the destination folder, hashed while it is
written, checked against `SHA256` and only then moved into place with `os.replace`, so a
failed copy or download leaves no partial file and never touches files already there.

    from fec.core.fetch import prepare
    prepare("data", src="../shared/data")       # copy
    prepare("data", tasks=["ED"])               # download

Errors are raised as `FetchError` with a one-line message; progress is logged at INFO.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from fec.core.errors import FetchError
from fec.core.files import atomic_write, sha256_file

log = logging.getLogger(__name__)

PINNED_REPO = "havelhakimi/LLM-FusionClassifier"
PINNED_COMMIT = "9ce37d9025085ddc30ac985f71c84e2bab7ed303"
# `{BASE_URL}/{task}/{file}`; a module constant so tests (or a mirror) can point it elsewhere,
# e.g. at a `file://` folder.
BASE_URL = f"https://raw.githubusercontent.com/{PINNED_REPO}/{PINNED_COMMIT}/data"
DOWNLOAD_TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20

# Tasks published in the pinned repository, and the files fetched for each.
DOWNLOADS: dict[str, tuple[str, ...]] = {
    "ED": ("train.csv", "valid.csv", "test.csv", "label2idx.txt"),
    "go_emotion": ("train.csv", "valid.csv", "test.csv", "label2idx.txt"),
}

# sha256 of every known file (computed with sha256sum from the copies in /work/shared/data).
# A file listed here is required when copying a known task, unless it is in OPTIONAL_FILES.
SHA256: dict[str, dict[str, str]] = {
    "ED": {
        "train.csv": "3802033124c7f00b7aaa03f0d963752c8bd01175e2876ea39ed80b37b9e2ea4d",
        "valid.csv": "1cc46f314fbd67ee4bc1a6eacd3a21122bba52d8e8986abb938d71323d6e66bb",
        "test.csv": "d04847887b873dd2101b2c340caf19073ff7718caa16a160ea62bf7782ebfa21",
        "label2idx.txt": "4e5875bb545ecf30a1361afbe7220ef28fc6274a4795e3cf62c360c6b8046d57",
        "label_tree.tsv": "547d25a5052a0199c5028142bcf01cb291ef6e09f1662e9dba85554beb081f5c",
    },
    "go_emotion": {
        "train.csv": "eca4c568b23930b7b77bb69eb9fade01e8f8c281a8d6f9df0f2a37ae471731a8",
        "valid.csv": "c70e69b9b713edf32f57d3fce0bfceb51033b18ec4e52324b732ca03adaec4c3",
        "test.csv": "a499f1843bd3b107dbc90321a31970405fb3779b3bb5d55e761486107097e030",
        "label2idx.txt": "4be72a896b57ada7263916d258691dfdf208b2b7f7635fa2ded50fc6efa8ad91",
        "label_tree.tsv": "c31155b5fd7f0a4e1dd8493de937b87d096fad698d4c030582ff1c34b11f1b22",
    },
    "semeval_eng": {
        # The test split is held back; a test.csv dropped in later is copied unverified.
        "train.csv": "234dfe6ccb34d91d36c9cae1d7f4b867e26a1abbe38e5ac6f40ae3dd5f83d608",
        "valid.csv": "9e123425f99228d647d9051e78e6b469c389170b975e4519d9645462be7b265f",
    },
}

# Files of the data contract. Copied when present; only those in SHA256 (and not in
# OPTIONAL_FILES) are required for a known task.
STANDARD_FILES = ("train.csv", "valid.csv", "test.csv", "label2idx.txt", "label_tree.tsv")
OPTIONAL_FILES = frozenset({"label_tree.tsv"})
# Required for a task that is not in SHA256 (copied as-is, unverified).
UNKNOWN_TASK_REQUIRED = ("train.csv", "valid.csv")


@dataclass(frozen=True)
class FileJob:
    task: str
    name: str
    source: Path | str  # a local file (Path) or a URL (str)
    dest: Path
    expected: str | None  # sha256 from SHA256, None when unknown (unverified)


@dataclass(frozen=True)
class Outcome:
    task: str
    name: str
    dest: Path
    action: str  # "copied" | "downloaded" | "present"


def known_tasks() -> list[str]:
    return list(SHA256)


def _unique(tasks: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(tasks))


def _rel(job: FileJob) -> str:
    return f"{job.task}/{job.name}"


# --------------------------------------------------------------------------- planning


def _copy_plan(src_root: Path, dest_root: Path, tasks: Sequence[str] | None) -> list[FileJob]:
    if not src_root.is_dir():
        raise FetchError(f"source folder not found: {src_root}")
    explicit = tasks is not None
    names = _unique(tasks) if explicit else known_tasks()
    jobs: list[FileJob] = []
    found = 0
    for task in names:
        src_dir = src_root / task
        if not src_dir.is_dir():
            if explicit:
                raise FetchError(f"task folder not found: {src_dir}")
            log.info("%s: not in %s, skipped", task, src_root)
            continue
        found += 1
        table = SHA256.get(task)
        if table is None:
            log.warning("%s: unknown task, its files are copied as-is and NOT verified", task)
            required = list(UNKNOWN_TASK_REQUIRED)
            optional = sorted(
                p.name for p in src_dir.iterdir() if p.is_file() and not p.name.startswith(".") and p.name not in required
            )
        else:
            required = [n for n in table if n not in OPTIONAL_FILES]
            optional = [n for n in (*table, *STANDARD_FILES) if n not in required]
        for name in _unique([*required, *optional]):
            src = src_dir / name
            if not src.is_file():
                if name in required:
                    raise FetchError(f"missing required file: {src}")
                continue
            expected = table.get(name) if table is not None else None
            if expected is None and table is not None:
                log.warning("%s/%s: no known checksum, copied unverified", task, name)
            jobs.append(FileJob(task, name, src, dest_root / task / name, expected))
    if found == 0:
        raise FetchError(f"none of the tasks {', '.join(names)} found in {src_root}")
    return jobs


def _download_plan(dest_root: Path, tasks: Sequence[str] | None, base_url: str) -> list[FileJob]:
    if tasks is None:
        names = list(DOWNLOADS)
        for task in known_tasks():
            if task not in DOWNLOADS:
                log.info("%s: no public download, skipped (copy it with --from DIR)", task)
    else:
        names = _unique(tasks)
    jobs: list[FileJob] = []
    for task in names:
        if task not in DOWNLOADS:
            if task in SHA256:
                raise FetchError(f"task {task!r} has no pinned public download; copy it from a local folder with --from DIR")
            raise FetchError(
                f"unknown task {task!r} (downloadable: {', '.join(DOWNLOADS)}); other tasks must be copied with --from DIR"
            )
        for name in DOWNLOADS[task]:
            expected = SHA256.get(task, {}).get(name)
            if expected is None:  # never download something we cannot verify
                raise FetchError(f"no sha256 known for {task}/{name}; refusing to download it")
            url = f"{base_url.rstrip('/')}/{task}/{name}"
            jobs.append(FileJob(task, name, url, dest_root / task / name, expected))
    return jobs


# --------------------------------------------------------------------------- writing


def _open_source(job: FileJob, timeout: float) -> BinaryIO:
    if isinstance(job.source, Path):
        try:
            return open(job.source, "rb")
        except OSError as e:
            raise FetchError(f"cannot read {job.source}: {e.strerror}") from None
    try:
        return urllib.request.urlopen(job.source, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise FetchError(f"download failed: HTTP {e.code} {e.reason} for {job.source}") from None
    except urllib.error.URLError as e:
        raise FetchError(
            f"cannot download {job.source}: {e.reason} (network unreachable? copy the files with --from DIR)"
        ) from None
    except (TimeoutError, OSError) as e:
        raise FetchError(f"cannot download {job.source}: {e} (network unreachable? copy the files with --from DIR)") from None


def _write_verified(job: FileJob, expected: str, timeout: float) -> None:
    """Stream job.source to a temp file beside job.dest, check its sha256, then rename it into place."""
    new_dirs = [d for d in (job.dest.parent, *job.dest.parent.parents) if not d.exists()]

    def write(tmp: Path) -> None:
        h = hashlib.sha256()
        with _open_source(job, timeout) as src, open(tmp, "wb") as out:
            try:
                for chunk in iter(lambda: src.read(CHUNK_BYTES), b""):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            except (OSError, http.client.HTTPException) as e:  # timeout, dropped connection
                raise FetchError(f"copying {job.source} to {job.dest} failed: {e}") from None
        actual = h.hexdigest()
        if actual != expected:
            raise FetchError(f"checksum mismatch for {job.source}: expected {expected}, actual {actual}")

    try:
        atomic_write(job.dest, write)
    except BaseException:
        for d in new_dirs:  # leave no empty folder behind either
            try:
                d.rmdir()
            except OSError:
                break
        raise


def _run(jobs: list[FileJob], force: bool, action: str, timeout: float) -> list[Outcome]:
    # Decide everything before writing anything: a conflict leaves the destination untouched.
    todo: list[tuple[FileJob, str]] = []
    outcomes: list[Outcome] = []
    for job in jobs:
        expected = job.expected or sha256_file(job.source)  # unverified: match the source
        if job.dest.exists():
            if not job.dest.is_file():
                raise FetchError(f"destination is not a file: {job.dest}")
            if not force:
                actual = sha256_file(job.dest)
                if actual != expected:
                    raise FetchError(
                        f"{job.dest} exists with a different checksum "
                        f"(expected {expected}, actual {actual}); "
                        f"use --force to replace it"
                    )
                log.info("%s: already present, checksum ok, skipped", _rel(job))
                outcomes.append(Outcome(job.task, job.name, job.dest, "present"))
                continue
        todo.append((job, expected))
    for job, expected in todo:
        log.info("%s: %s %s", _rel(job), "copying" if action == "copied" else "downloading", job.source)
        _write_verified(job, expected, timeout)
        outcomes.append(Outcome(job.task, job.name, job.dest, action))
    return outcomes


# --------------------------------------------------------------------------- public API


def copy_tasks(
    src_root: str | os.PathLike, dest_root: str | os.PathLike, tasks: Sequence[str] | None = None, force: bool = False
) -> list[Outcome]:
    """Copy `src_root/{task}/` into `dest_root/{task}/`, verifying known checksums.

    tasks=None copies every known task found in src_root (absent ones are skipped); named
    tasks must exist. Tasks not in SHA256 are copied as-is with a warning.
    """
    jobs = _copy_plan(Path(src_root), Path(dest_root), tasks)
    return _run(jobs, force, "copied", DOWNLOAD_TIMEOUT_S)


def download_tasks(
    dest_root: str | os.PathLike,
    tasks: Sequence[str] | None = None,
    force: bool = False,
    base_url: str | None = None,
    timeout: float | None = None,
) -> list[Outcome]:
    """Download the published CSVs of `tasks` (default: all in DOWNLOADS) into dest_root."""
    jobs = _download_plan(Path(dest_root), tasks, base_url or BASE_URL)
    return _run(jobs, force, "downloaded", timeout or DOWNLOAD_TIMEOUT_S)


def prepare(
    dest_root: str | os.PathLike, src: str | os.PathLike | None = None, tasks: Sequence[str] | None = None, force: bool = False
) -> list[Outcome]:
    """Copy from `src` when given, else download; log a one-line summary."""
    if src is not None:
        outcomes = copy_tasks(src, dest_root, tasks, force)
    else:
        outcomes = download_tasks(dest_root, tasks, force)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.action] = counts.get(o.action, 0) + 1
    summary = ", ".join(f"{n} {a}" for a, n in counts.items()) or "nothing to do"
    task_list = " ".join(_unique(o.task for o in outcomes))
    log.info("data ready in %s (%s): %s", dest_root, task_list, summary)
    return outcomes
