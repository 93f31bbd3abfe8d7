"""One extraction per split at a time: a lock file beside the store file.

    dataset/{task}/{slot_dir}/{mode}.lock     {"pid": 4242, "host": "node1", "since": "2026-12-01T20:40:00"}

The lock is created with O_CREAT | O_EXCL, so of two processes that try at once exactly one
gets it. A second extraction of the same split stops with a one-line error naming the holder
(or, with `-wait`, waits until the holder is done). A lock left by a process that no longer
runs on this host (killed with -9, a crash), or that stayed unreadable for a minute, is taken
over; a lock from another host is only reported, since its holder cannot be checked from here.

    with split_lock(feature_path("dataset", "ED", "llama", "train"), wait=False):
        ...  # extract and merge
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fec.core.errors import LockHeld

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
POLL_SECONDS = 2.0
UNREADABLE_SECONDS = 60.0


def lock_path(path: Path) -> Path:
    """`dataset/ED/llama/train.safetensors` -> `dataset/ED/llama/train.lock`."""
    return path.with_suffix(LOCK_SUFFIX)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder(lock: Path) -> dict | None:
    """The lock's record, or None when it vanished meanwhile; an unreadable record (a holder
    killed between create and write) counts as a holder of unknown pid."""
    try:
        return json.loads(lock.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return {}


def _is_stale(lock: Path, holder: dict) -> bool:
    """Left by a process that no longer runs on this host, or unreadable for over UNREADABLE_SECONDS
    (its writer died between creating and filling it)."""
    if not holder:
        try:
            return time.time() - lock.stat().st_mtime > UNREADABLE_SECONDS
        except FileNotFoundError:
            return False
    here = holder.get("host") == socket.gethostname()
    return here and isinstance(holder.get("pid"), int) and not _alive(holder["pid"])


def _take_over(lock: Path, holder: dict) -> None:
    """Move a stale lock aside; of processes that race for it, each moves only the file it
    judged stale (a fresh lock moved by mistake is put back)."""
    aside = lock.with_name(f"{lock.name}.stale-{os.getpid()}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return  # another process took it over first
    if _holder(aside) != holder:  # it was already a new holder's: give it back
        try:
            os.link(aside, lock)
        except FileExistsError:
            pass
    else:
        log.warning("%s: left by %s, which no longer runs; taking it over", lock, describe(holder))
    aside.unlink(missing_ok=True)


def _try_take(lock: Path, record: dict) -> dict | None:
    """Take the lock (None) or return its holder's record."""
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        holder = _holder(lock)
        if holder is None:
            return _try_take(lock, record)
        if _is_stale(lock, holder):
            _take_over(lock, holder)
            return _try_take(lock, record)
        return holder
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(record, fh)
    return None


def describe(holder: dict) -> str:
    who = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}"
    return who + (f" since {holder['since']}" if holder.get("since") else "")


@contextmanager
def split_lock(path: Path, wait: bool = False, poll: float = POLL_SECONDS) -> Iterator[Path]:
    """Hold the lock of the store file `path` for the body of a `with`; LockHeld when another
    process holds it (with `wait`, poll until it is released)."""
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": dt.datetime.now().isoformat(timespec="seconds")}
    announced = False
    while (holder := _try_take(lock, record)) is not None:
        if not wait:
            raise LockHeld(
                f"{lock}: {path.stem} is being extracted by {describe(holder)}; wait for it to finish (or pass -wait), "
                "or delete the lock file if that process is gone"
            )
        if not announced:
            log.info("%s: held by %s; waiting", lock, describe(holder))
            announced = True
        time.sleep(poll)
    try:
        yield lock
    finally:
        if _holder(lock) == record:  # never remove a lock that is not this process's
            lock.unlink(missing_ok=True)
