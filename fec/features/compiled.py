"""Extraction through a compiled model (`-compile`): torch.compile (Inductor) fuses the operators
between the matrix products (norms, activations, rotary embeddings, residual adds) into a few
generated kernels.

    python llama2_rep_extract.py --task go_emotion --preset offline --compile

Why it is a choice and not the default: on this project's 2-core CPU the SmolLM2 stand-in runs
1.25x faster on one core once compiled, the two encoders no faster, and compiling the decoder takes 87 s first
(bench/RESULTS.md 1d), so it pays off from about 45,000 texts of ED's length (a machine with more
cores compiles faster). Features equal the eager model's up to float rounding. On a CPU, Inductor
needs a C++ compiler; without one `-compile` is refused before the model loads.
"""

from __future__ import annotations

import logging

import torch

from fec.core.errors import SettingError

log = logging.getLogger(__name__)


def check_compile(device: torch.device, device_map: str | None, load_in: str | None) -> None:
    """Refuse `-compile` where it cannot serve: with weights spread by a device map or quantised
    (Accelerate's offload hooks and bitsandbytes layers are not what Inductor compiles), and on a CPU
    that has no C++ compiler for Inductor's kernels."""
    for option, value in (("device_map", device_map), ("load_in", load_in)):
        if value:
            raise SettingError("compile", None, f"does not combine with --{option} (a plain model on one device only)")
    if device.type != "cpu":
        return
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as err:  # Inductor raises its own error types, which vary across versions
        raise SettingError("compile", None, f"needs a C++ compiler on a CPU (g++ or $CXX): {err}".splitlines()[0]) from err


def compile_model(model: torch.nn.Module) -> None:
    """Compile `model`'s forward in place, with dynamic shapes: one graph serves every batch of two
    or more texts of two or more tokens; a batch of one text (or of one-token texts) compiles once more."""
    log.info("compiling %s with torch.compile (the first batches wait for it)", type(model).__name__)
    model.forward = torch.compile(model.forward, dynamic=True)
