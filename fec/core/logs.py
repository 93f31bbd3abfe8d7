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
