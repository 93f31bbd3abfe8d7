"""Where the project writes: file names derived from data, and the check that a path stays
under the folder it belongs to.

    from fec.paths import inside, slug
    inside("Logs", "ED_20261122-101500")          # Logs/ED_20261122-101500
    inside("dataset", "../elsewhere")             # UsageError: outside dataset
    slug("I was <so> scared!")                    # 'i-was-so-scared'

Every file name made from data (a label, a text) goes through `slug`, and every path built from
a user's folder plus names (`-dataset_dir`, `-out`, a task) through `inside`, so nothing is
written outside the store, the run folders and the paths the user named.
"""

from __future__ import annotations

import re
from pathlib import Path

from fec.options import UsageError


def slug(text: str, width: int = 40) -> str:
    """A file-name-safe stem of `text`: lower-case ASCII letters and digits joined by `-`."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:width].strip("-") or "text"


def inside(root: Path | str, *parts: str) -> Path:
    """`root / parts...`, refused (UsageError) when it would resolve outside `root`."""
    root = Path(root)
    path = root.joinpath(*parts)
    resolved_root = root.resolve()
    if not path.resolve().is_relative_to(resolved_root):
        raise UsageError(f"{path}: outside {root}; names inside it must be plain names")
    return path
