"""Scale-out plumbing for extraction: data-parallel processes and backbones bigger than one device.

Data parallel: under `accelerate launch` or `torchrun` (WORLD_SIZE > 1) the extractor joins the
process group through `accelerate.PartialState` (NCCL on GPUs, gloo on CPU), and `Ranks` gives
it the few collectives it needs: "did every process succeed" and a broadcast from rank 0;
`close_distributed` tears the group down in order at the end. Alone (no launcher) nothing
distributed is imported or started.

    accelerate launch --multi_gpu --num_processes 4 llama2_rep_extract.py -task ED -mode all
    torchrun --nproc_per_node 4 llama2_rep_extract.py -task ED -mode all

Big models (`-device_map auto`, `-load_in 8bit|4bit`) are loaded by `fec.features.backbones.load_backbone`.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import torch

log = logging.getLogger(__name__)

# A process that finishes its chunks waits for the others (and for rank 0's merge) at most this long.
COLLECTIVE_TIMEOUT = timedelta(hours=3)
# At the end, how long a process waits for the others to reach teardown before leaving anyway.
TEARDOWN_TIMEOUT = timedelta(seconds=60)


class Ranks:
    """This process's place among the extraction processes (one process: rank 0 of 1)."""

    def __init__(self, state=None):
        self.state = state
        self.rank = state.process_index if state is not None else 0
        self.world = state.num_processes if state is not None else 1
        self.local_rank = state.local_process_index if state is not None else 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def prefix(self) -> str:
        return f"rank {self.rank}/{self.world}: " if self.distributed else ""

    def _device(self) -> torch.device:
        import torch.distributed as dist

        return self.state.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def all_ok(self, ok: bool) -> bool:
        """True when every process passes ok=True (a collective: every process must call it)."""
        if not self.distributed:
            return ok
        import torch.distributed as dist

        flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=self._device())
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def broadcast(self, obj):
        """Rank 0's `obj`, on every process."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self._device())
        return box[0]


def ranks_from_env(device_request: str | None) -> Ranks:
    """Join the process group when started by a launcher (WORLD_SIZE > 1), else a lone rank 0."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Ranks()
    from accelerate import PartialState

    cpu = device_request == "cpu" or (device_request in (None, "auto") and not torch.cuda.is_available())
    state = PartialState(cpu=cpu, timeout=COLLECTIVE_TIMEOUT)
    return Ranks(state)


def close_distributed() -> None:
    """Leave the process group a launcher started; a no-op when running alone.

    Teardown is ordered: every process first waits until all have arrived (so none closes its
    connections while a peer is still in a collective), then the group is destroyed and garbage
    collected at once. That frees the group's native worker threads and the tensors their work
    items hold now, while the interpreter is fully alive, instead of during interpreter shutdown,
    where freeing them can abort a process that has already finished its work (SIGABRT,
    "terminate called without an active exception").
    """
    import gc
    import sys

    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=TEARDOWN_TIMEOUT, wait_all_ranks=True)
        else:
            dist.barrier()
    except RuntimeError as err:  # a peer died: leave anyway, its error is reported by the launcher
        log.warning("not every process reached the end (%s); leaving the process group", str(err).splitlines()[0])
    dist.destroy_process_group()
    gc.collect()


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """Each process on a multi-GPU node takes its own GPU: `cuda` (no index) becomes cuda:LOCAL_RANK."""
    if ranks.distributed and device.type == "cuda" and device.index is None:
        return torch.device("cuda", ranks.local_rank % max(torch.cuda.device_count(), 1))
    return device
