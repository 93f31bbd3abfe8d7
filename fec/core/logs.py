"""Log lines: one format for the console and the run folder's train.log.

with also_log_to(run_dir / "train.log"):   # every log line of the block copied there
    ...
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOG_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


@contextmanager
def also_log_to(path: Path) -> Iterator[None]:
    """Copy every log line to `path` (a run's train.log) for the body of a `with`."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(LOG_FORMAT)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        try:
            handler.close()
        except OSError:  # the last lines could not be flushed (disk full): the run's error says why
            pass


def log_as_worker(name: str, path: Path | str | None = None, level: int = logging.INFO) -> None:
    """A worker process's logging (one spawned by a job of several processes): its lines marked
    `[name]`, to the console and, with `path`, appended to the job's log file beside the others'."""
    formatter = logging.Formatter(f"%(asctime)s %(levelname)s [{name}] %(message)s", datefmt="%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if path:
        handlers.append(logging.FileHandler(path, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=handlers, force=True)
