"""How many CPU threads a job takes: as many as its work can use and the cores left free, or as asked.

    from fec.core.threads import use_threads
    use_threads(None, work_flops=2 * params * batch_size * 3, what="training")   # chosen, and logged
    use_threads(4, work_flops=0, what="training")                                # --threads 4

Why not torch's default (one thread per core): a thread that lands on a core another job is
using stalls all the others at every barrier (measured: the semeval fusion at 15 s per epoch with
2 threads beside one busy core, 1.0 s with 1 thread; the stand-in head 3.7x slower beside a busy
core with 2 threads, 1.4x with 1: bench/train_speed.py --threads_effect), and a tiny step is not
worth splitting at all. So the count is the work per step over `FLOPS_PER_THREAD`, at most the
cores not already busy (the 1-minute load average, which takes about a minute to see a new job),
at least one. On CUDA the count only affects data handling: training leaves it alone, and
extraction sets it only when asked (`-threads`).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

FLOPS_PER_THREAD = 2.5e8  # work per step below which one more thread does not pay for itself (bench/train_speed.py)


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def busy_cores() -> int:
    """Cores other jobs keep busy now: the 1-minute load average, rounded (0 where unknown)."""
    try:
        return round(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0


def choose_threads(work_flops: float, cores: int, busy: int) -> int:
    """The thread count for `work_flops` per step on `cores` cores of which `busy` are taken."""
    wanted = max(1, int(work_flops // FLOPS_PER_THREAD))
    return max(1, min(wanted, cores - busy, cores))


def use_threads(requested: int | None, work_flops: float, what: str, share: int = 1) -> int:
    """Set torch's CPU thread count for `what` (as `requested`, else chosen) and log why. `share`
    processes of one job on this machine (a data-parallel extraction) split the cores between them."""
    import torch

    if requested:
        count, why = requested, "as asked"
    else:
        cores, busy = usable_cores(), busy_cores()
        count = max(1, choose_threads(work_flops, cores, busy) // max(share, 1))
        why = f"{work_flops / 1e9:.2f} GFLOP per step; {max(cores - busy, 0)} of {cores} cores free"
        if share > 1:
            why += f", shared by {share} processes"
    torch.set_num_threads(count)
    log.info("%s: %d CPU thread(s) (%s; --threads sets it)", what, count, why)
    return count
