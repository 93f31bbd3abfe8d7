"""Keep freed host memory in the process during CPU training, so gradient buffers are not re-faulted every step.

    from fec.classify.allocator import keep_freed_memory
    keep_freed_memory()   # once, before a CPU training loop; True when the setting took

Each backward pass allocates fresh gradient tensors (16-17 MB each for the published model's
compression and first MLP layers) and the previous ones are freed when the optimiser is done with
them. glibc serves blocks of that size with mmap and gives them back to the kernel on free, so every
step touches about 100 MB of new pages: about 24,000 minor page faults per step at the published
dims, measured on this project's 2-core CPU as a quarter of the step's time. Raising glibc's
mmap and trim thresholds keeps such blocks in the heap for reuse. The cost: the process keeps its
peak heap until it exits (training processes do anyway). Linux with glibc only; a no-op elsewhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Larger than any single tensor of the published model (25.5M parameters, the biggest 17 MB),
# so no gradient or optimiser buffer goes to mmap; glibc accepts up to 32 MB here on 64-bit.
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 1 << 30

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap/trim thresholds once per process; True when they are set."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug(
        "glibc mmap threshold %d MB, trim threshold %d MB: %s",
        MMAP_THRESHOLD >> 20,
        TRIM_THRESHOLD >> 20,
        "set" if _done else "refused",
    )
    return _done
