"""Scale-out plumbing for extraction: data-parallel processes and backbones bigger than one device.

Data parallel: under `accelerate launch` or `torchrun` (WORLD_SIZE > 1) the extractor joins the
process group through `accelerate.PartialState` (NCCL on GPUs, gloo on CPU), and `Ranks` gives
it the few collectives it needs: "did every process succeed" and a broadcast from rank 0;
`close_distributed` tears the group down in order at the end. Alone (no launcher) nothing
distributed is imported or started.

    accelerate launch --multi_gpu --num_processes 4 llama2_rep_extract.py -task ED -mode all
    torchrun --nproc_per_node 4 llama2_rep_extract.py -task ED -mode all

Big models: `-device_map auto` loads the backbone with Accelerate's big-model inference
(`from_pretrained(device_map="auto")`: layers spread over the GPUs, then CPU RAM, then disk), and
`-load_in 8bit|4bit` quantises it with bitsandbytes. Inputs go to the device of the first module.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from datetime import timedelta

import torch

from fec.backbones import (
    Backbone,
    ModelError,
    ensure_pad_token,
    load_backbone,
    model_fingerprint,
    resolve_model,
)

log = logging.getLogger(__name__)

LOAD_IN = ("8bit", "4bit")
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


def parse_max_memory(text: str | None) -> dict | None:
    """`0=20GiB,1=20GiB,cpu=64GiB` -> {0: "20GiB", 1: "20GiB", "cpu": "64GiB"} (for -device_map auto)."""
    if not text:
        return None
    out = {}
    for item in text.split(","):
        name, sep, size = item.partition("=")
        if not sep or not name.strip() or not size.strip():
            raise ModelError(f"-max_memory {text}: write DEVICE=SIZE pairs separated by commas, e.g. 0=20GiB,cpu=64GiB")
        name = name.strip()
        out[int(name) if name.isdigit() else name] = size.strip()
    return out


def bitsandbytes_installed() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def quantization_config(load_in: str, dtype: torch.dtype):
    """A BitsAndBytesConfig for -load_in, or a one-line ModelError when bitsandbytes is missing."""
    if load_in not in LOAD_IN:
        raise ModelError(f"-load_in {load_in}: choose {' or '.join(LOAD_IN)}")
    if not bitsandbytes_installed():
        raise ModelError(f"-load_in {load_in} needs the bitsandbytes package, which is not installed: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    if load_in == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = dtype if dtype != torch.float32 else torch.bfloat16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)


def _as_device(where) -> torch.device:
    if isinstance(where, int):
        return torch.device("cuda", where)
    if where in ("disk", "meta"):
        return torch.device("cpu")
    return torch.device(where)


def placement(model) -> dict[str, int]:
    """Modules per device of a dispatched model (`hf_device_map`), e.g. {"cuda:0": 17, "cuda:1": 16}."""
    counts: dict[str, int] = {}
    for where in getattr(model, "hf_device_map", {}).values():
        name = f"cuda:{where}" if isinstance(where, int) else str(where)
        counts[name] = counts.get(name, 0) + 1
    return counts


def load_placed_backbone(
    spec: str, device: torch.device, dtype: torch.dtype, trust_remote_code: bool = False, *,
    device_map: str | None = None, load_in: str | None = None, max_memory: dict | None = None,
) -> Backbone:
    """`fec.backbones.load_backbone`, plus Accelerate big-model placement and bitsandbytes loading.

    Without `device_map` and `load_in` this is exactly `load_backbone`. With them, the model is
    loaded by `from_pretrained(device_map=..., quantization_config=...)` (never moved afterwards)
    and `Backbone.device` is the device of its first module, where inputs go.
    """
    if device_map is None and load_in is None:
        return load_backbone(spec, device, dtype, trust_remote_code)
    from transformers import AutoModel, AutoTokenizer

    if device_map is None:
        # Quantised weights cannot be moved after loading: load them straight onto -device.
        device_map = {"": (device.index or 0) if device.type == "cuda" else str(device)}
    kwargs: dict = {"device_map": device_map}
    if max_memory:
        kwargs["max_memory"] = max_memory
    if load_in:
        kwargs["quantization_config"] = quantization_config(load_in, dtype)
    resolved = resolve_model(spec)
    log.info("loading %s (%s) with device_map=%s%s as %s", spec, resolved, device_map,
             f", {load_in} weights" if load_in else "", str(dtype).removeprefix("torch."))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(resolved), trust_remote_code=trust_remote_code)
        model, info = AutoModel.from_pretrained(
            str(resolved), dtype=dtype, trust_remote_code=trust_remote_code, output_loading_info=True, **kwargs
        )
    except (OSError, ImportError) as err:
        raise ModelError(f"{spec}: cannot load ({str(err).splitlines()[0]})") from err
    missing = sorted(info.get("missing_keys", []))
    randomly_initialised = [k for k in missing if not k.startswith("pooler.")]
    if randomly_initialised:
        log.warning("%s: %d weights are not in the checkpoint and were initialised randomly: %s", spec, len(randomly_initialised), ", ".join(randomly_initialised[:5]))
    model.eval()
    hf_map = getattr(model, "hf_device_map", None) or {"": str(device)}
    first = _as_device(next(iter(hf_map.values())))
    log.info("%s placed as %s", spec, placement(model) or {str(first): 1})
    pad = ensure_pad_token(tokenizer)
    return Backbone(tokenizer, model, spec, str(resolved), model_fingerprint(resolved), pad, first, dtype, missing)
