"""Where the project writes: file names derived from data, and the check that a path stays
under the folder it belongs to.

    from fec.core.paths import inside, slug
    inside("Logs", "ED_20261122-101500")          # Logs/ED_20261122-101500
    inside("dataset", "../elsewhere")             # UsageError: outside dataset
    slug("I was <so> scared!")                    # 'i-was-so-scared'

Every file name made from data (a label, a text) goes through `slug` (`unique_slug` where two
names could slug alike), and every path built from
a user's folder plus names (`-dataset_dir`, `-out`, a task) through `inside`, so nothing is
written outside the store, the run folders and the paths the user named.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path

from fec.core.errors import UsageError


def slug(text: str, width: int = 40) -> str:
    """A file-name-safe stem of `text`: lower-case ASCII letters and digits joined by `-`."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:width].strip("-") or "text"


def unique_slug(text: str, width: int = 40) -> str:
    """`slug(text)` plus 8 hex digits of the text's sha256, so texts (or labels) that slug alike,
    non-ASCII ones included, never share a file name."""
    return f"{slug(text, width)}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def inside(root: Path | str, *parts: str) -> Path:
    """`root / parts...`, refused (UsageError) when the names would lead outside `root`. Checked on
    the names alone, so a store folder that is a symbolic link to another disk stays usable."""
    root = Path(root)
    relative = os.path.normpath(os.path.join(*parts)) if parts else "."
    if os.path.isabs(relative) or relative == ".." or relative.startswith(".." + os.sep):
        raise UsageError(f"{root.joinpath(*parts)}: outside {root}; names inside it must be plain names")
    return root.joinpath(*parts)


def plain_name_problem(name: str) -> str | None:
    """Why `name` cannot be one folder or file name inside the project's folders, or None."""
    if not name.strip():
        return "is empty"
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        return "contains a control character"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if name in (".", ".."):
        return "is not a folder name"
    return None
