"""What keeping every hidden layer costs, and how close extraction runs to the machine's limit.

    python -m bench.extract_speed --all_layers                      # SmolLM2 stand-in, 256 ED train texts
    python -m bench.extract_speed --all_layers --dtype float32 --n 512 --results bench/layers_cpu.json

One process, one model (the LLaMA slot's: the SmolLM2 stand-in, or a tiny random one with
`--tiny`), the same texts, three extractions through `fec.features.forward_pass.extract_features`, timed in
interleaved rounds (`--repeats`, median kept) so a busy machine slows each alike:

* `last5`: the published choice, the masked mean of each of the last 5 hidden states (N, 5, H);
* `all_mean`: the masked mean of every hidden state (N, L+1, H);
* `all_mean_last`: every hidden state, masked mean and last real token (N, 2, L+1, H).

For each: texts/s, its ratio to `last5`, and the achieved GFLOP/s on real tokens (2 x the
non-embedding parameters x the real, unpadded tokens / time; attention's quadratic term left
out), against this machine's bfloat16 and float32 matmul peak measured in the same run
(`--peak_size` square `torch.matmul`, on the threads torch uses here).
"""

from __future__ import annotations

import statistics
import time

import torch

from fec.features.backbones import load_backbone
from fec.features.forward_pass import PoolingPlan, extract_features
from fec.features.spec import FeatureSpec, LayerChoice

VARIANTS = {
    "last5": None,
    "all_mean": FeatureSpec("llama", ("mean",), LayerChoice(every=True)),
    "all_mean_last": FeatureSpec("llama", ("mean", "last"), LayerChoice(every=True)),
}


def matmul_peak_gflops(dtype: torch.dtype, size: int, seconds: float = 2.0) -> float:
    """Sustained GFLOP/s of a square matmul on the CPU in `dtype` (about `seconds` of work)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.matmul(a, b)
        done += 1
    return 2 * size**3 * done / (time.perf_counter() - started) / 1e9


def non_embedding_parameters(model) -> int:
    embeddings = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


def measure(model_path: str, texts: list[str], dtype: torch.dtype, repeats: int, peak_size: int) -> dict:
    """Every variant's median time over `repeats` interleaved rounds, and the matmul peaks."""
    backbone = load_backbone(model_path, torch.device("cpu"), dtype)
    for spec in VARIANTS.values():  # warm-up: the first calls allocate and pick kernels
        extract_features(backbone, texts[:8], "llama", plan=PoolingPlan(spec=spec))
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    tokens = 0
    for _ in range(repeats):
        for name, spec in VARIANTS.items():
            started = time.perf_counter()
            _, info = extract_features(backbone, texts, "llama", plan=PoolingPlan(spec=spec))
            times[name].append(time.perf_counter() - started)
            tokens = info["tokens"]
    flops_per_token = 2 * non_embedding_parameters(backbone.model)
    peaks = {str(d).removeprefix("torch."): matmul_peak_gflops(d, peak_size) for d in (torch.bfloat16, torch.float32)}
    rows = {}
    for name, seconds in times.items():
        median = statistics.median(seconds)
        rows[name] = {
            "seconds": median,
            "texts_per_s": len(texts) / median,
            "gflops": flops_per_token * tokens / median / 1e9,
            "all_seconds": seconds,
        }
    base = rows["last5"]["texts_per_s"]
    for row in rows.values():
        row["speed_vs_last5"] = row["texts_per_s"] / base
    return {
        "model": model_path,
        "dtype": str(dtype).removeprefix("torch."),
        "texts": len(texts),
        "real_tokens": tokens,
        "threads": torch.get_num_threads(),
        "hidden_states": backbone.num_hidden_states,
        "flops_per_token": flops_per_token,
        "matmul_peak_gflops": peaks,
        "variants": rows,
    }


def format_report(r: dict) -> str:
    peak = r["matmul_peak_gflops"][r["dtype"]]
    lines = [
        f"{r['model']} in {r['dtype']} on {r['threads']} thread(s): {r['texts']} texts, {r['real_tokens']} real tokens, "
        f"{r['hidden_states']} hidden states",
        "matmul peak here: " + ", ".join(f"{d} {g:.1f} GFLOP/s" for d, g in r["matmul_peak_gflops"].items()),
        "",
        "| extraction | texts/s | vs last5 | GFLOP/s (real tokens) | % of the " + r["dtype"] + " matmul peak |",
        "|---|---|---|---|---|",
    ]
    for name, row in r["variants"].items():
        lines.append(f"| {name} | {row['texts_per_s']:.1f} | {row['speed_vs_last5']:.3f} | {row['gflops']:.1f} | "
                     f"{100 * row['gflops'] / peak:.0f}% |")  # fmt: skip
    return "\n".join(lines) + "\n"
