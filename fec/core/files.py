"""Writing files so that work already done is never destroyed, and checksums of files.

    from fec.core.files import atomic_write, atomic_write_text, sha256_file
    atomic_write_text(Path("Logs/run/config.json"), text)      # temp name, then rename
    atomic_write(path, lambda tmp: fig.savefig(tmp))             # any writer that takes a path

A write goes to a temporary name in the target's folder and is renamed over the target only once
it is complete, so a crash, a full disk or a failed check leaves the previous file as it was.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

CHUNK_BYTES = 1 << 20


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")  # a model folder's weight files


def sha256_file(path: str | os.PathLike, chunk: int = CHUNK_BYTES) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(tmp_path)` on a temporary sibling of `path`, then rename it over `path`.

    On any failure the temporary file is removed and whatever was at `path` is left as it was; a
    refused write (disk full) is re-raised naming `path`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes owner-only files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename is None:  # a failed write() names no file: name the one being written
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """`text` as UTF-8, byte for byte: no newline translation, so a line break inside a quoted CSV
    field reads back as it was written on every system."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline=""))


@contextmanager
def removed_if_left_empty(folders: list[Path]) -> Iterator[None]:
    """Folders (and their parents) that do not exist yet and are still empty when the block fails
    are removed, so a failed step leaves no empty store folder behind; anything written is kept."""
    new = sorted({p for folder in folders for p in (folder, *folder.parents) if not p.exists()}, key=lambda p: -len(p.parts))
    try:
        yield
    except BaseException:
        for folder in new:  # deepest first, so a parent is empty once its children are gone
            try:
                folder.rmdir()
            except OSError:  # not empty (finished chunks to resume from), or never made
                pass
        raise
