"""How big a batch extraction should run on this machine, and where an extraction's time goes.

    python -m bench.extract_speed --batch_budget --threads 1          # the three stand-ins, 1024 ED train texts
    python -m bench.extract_speed --batch_budget --slots llama --budgets 64x16384 64x2048 --results out.json
    python -m bench.extract_speed --batch_budget --threads 1 --compile     # and the compiled model
    python -m bench.extract_speed --batch_budget --slots llama --budgets 256x2048 --threads_effect

Per slot, one process and one model (the offline stand-in, or a tiny random one with `--tiny`) in
`--dtype`, the same texts through `fec.features.forward_pass.extract_features` under each batching
`ROWSxTOKENS` of `--budgets` (at most ROWS texts and TOKENS padded tokens per length-sorted
batch), timed in interleaved rounds (`--repeats`, median kept) so a busy machine slows each alike.
For each: texts/s, its ratio to the first budget, padded over real tokens, and GFLOP/s on real
tokens (2 x non-embedding parameters x real tokens / time) against the matmul peak of the same
dtype measured in the same run.

Then one run under the extractor's CPU default (`fec.features.forward_pass.CPU_MAX_TOKENS`) is
profiled (`torch.profiler`, self time per operator) and split into matrix products (`mm`, `addmm`,
`bmm`), attention (`scaled_dot_product_*`; a model that writes its attention as plain products, as
MPNet does, counts it with the matrix products), the other operators (norms, activations, rotary
embeddings, residual adds, pooling, copies), the tokenisation (the same texts tokenised alone,
before the profiled run) and what lies outside any operator (Python, the model's glue), with
the GFLOP/s the matrix products reach on the padded tokens they run. The ceiling column is the
share of the peak the extraction would reach if everything but the matrix products took no time:
what faster kernels for the rest could buy.

With `--threads_effect`, the CPU default with torch's thread count (one per core) and with the
count extraction takes (`fec.core.threads`, told of the busy core), idle and beside one busy core.

With `--compile`, the CPU default once more through the compiled model (`-compile`,
`fec.features.compiled`): the seconds its first call takes (compiling, on 256 texts) and the
median of `--repeats` runs after it.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from bench.layer_cost import matmul_peak_gflops, non_embedding_parameters
from bench.train_speed import compare_threads
from fec.core.compat_setting import BATCH_SIZE
from fec.features.backbones import load_backbone
from fec.features.compiled import compile_model
from fec.features.forward_pass import CPU_MAX_TOKENS, Batching, encode_texts, extract_features, forward_flops

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm")
DEFAULT_BUDGETS = ("64x16384", "64x2048", "256x2048", "256x4096")


def parse_budget(text: str) -> tuple[int, int]:
    """`64x2048` -> (64 texts, 2048 padded tokens) per batch."""
    rows, _, tokens = text.partition("x")
    if not (rows.isdigit() and tokens.isdigit() and int(rows) > 0 and int(tokens) > 0):
        raise ValueError(f"{text!r}: expected ROWSxTOKENS, e.g. 64x2048")
    return int(rows), int(tokens)


def time_budgets(backbone, slot: str, texts: list[str], budgets: list[str], repeats: int) -> tuple[dict, dict]:
    """Median seconds per budget over `repeats` interleaved rounds, and each budget's batch figures."""
    batchings = {name: Batching(batch_size=parse_budget(name)[0], max_tokens=parse_budget(name)[1]) for name in budgets}
    extract_features(backbone, texts[:8], slot)  # warm-up: the first calls allocate and pick kernels
    seconds: dict[str, list[float]] = {name: [] for name in budgets}
    figures = {}
    for _ in range(repeats):
        for name, batching in batchings.items():
            started = time.perf_counter()
            _, figures[name] = extract_features(backbone, texts, slot, batching=batching)
            seconds[name].append(time.perf_counter() - started)
    return seconds, figures


def time_split(backbone, slot: str, texts: list[str]) -> dict:
    """Seconds of one extraction under the CPU default: the operators' self time by kind, the
    tokenisation (timed alone), and the rest of the wall time (Python, the model's glue)."""
    started = time.perf_counter()
    encode_texts(backbone.tokenizer, texts, Batching().max_len)
    tokenisation = time.perf_counter() - started
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        _, info = extract_features(backbone, texts, slot, batching=Batching(max_tokens=CPU_MAX_TOKENS))
        wall = time.perf_counter() - started
    split = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    for event in prof.key_averages():
        operator_class = "matmul" if event.key in MATMUL_OPS else "attention" if "scaled_dot_product" in event.key else "other"
        split[operator_class] += event.self_cpu_time_total / 1e6
    split["tokenisation"] = tokenisation
    split["outside"] = max(wall - sum(split.values()), 0.0)
    return {"seconds": split, "padded_tokens": info["padded_tokens"], "tokens": info["tokens"]}


def measure_slot(
    slot: str,
    model_path: str,
    texts: list[str],
    dtype: torch.dtype,
    budgets: list[str],
    repeats: int,
    extras: tuple[bool, bool] = (False, False),
) -> dict:
    """One slot's budgets and time split; `extras` = (the thread counts' effect, the compiled model)."""
    threads_too, compile_too = extras
    backbone = load_backbone(model_path, torch.device("cpu"), dtype)
    seconds, figures = time_budgets(backbone, slot, texts, budgets, repeats)
    flops_per_token = 2 * non_embedding_parameters(backbone.model)
    rows = {}
    for name in budgets:
        median = statistics.median(seconds[name])
        rows[name] = {
            "seconds": median,
            "all_seconds": seconds[name],
            "texts_per_s": len(texts) / median,
            "gflops": flops_per_token * figures[name]["tokens"] / median / 1e9,
            "padded_over_real": figures[name]["padded_tokens"] / figures[name]["tokens"],
            "batches": figures[name]["batches"],
        }
    first = rows[budgets[0]]["texts_per_s"]
    for row in rows.values():
        row["speed_vs_first"] = row["texts_per_s"] / first
    split = time_split(backbone, slot, texts)
    split["matmul_gflops"] = flops_per_token * split["padded_tokens"] / max(split["seconds"]["matmul"], 1e-9) / 1e9
    report = {"slot": slot, "model": model_path, "flops_per_token": flops_per_token, "budgets": rows, "time_split": split}
    if threads_too:
        report["threads_effect"] = time_threads(backbone, slot, texts, repeats)
    if compile_too:
        report["compiled"] = time_compiled(backbone, slot, texts, repeats, flops_per_token)
    return report


def time_threads(backbone, slot: str, texts: list[str], repeats: int) -> list[dict]:
    """The CPU default under `compare_threads`: torch's thread count (one per core) and the one
    extraction takes (`fec.core.threads`), idle and beside one busy core; median of `repeats`."""

    def median_seconds() -> dict:
        return {"seconds": statistics.median(repeated_runs(backbone, slot, texts, repeats)[0])}

    return compare_threads(forward_flops(backbone.model, CPU_MAX_TOKENS), median_seconds, "seconds")


def time_compiled(backbone, slot: str, texts: list[str], repeats: int, flops_per_token: float) -> dict:
    """The CPU default through the compiled model (fec.features.compiled): the seconds to compile
    (the first call, which compiles, on the first 256 texts) and the median of `repeats` runs."""
    compile_model(backbone.model)
    started = time.perf_counter()
    extract_features(backbone, texts[:256], slot)
    compile_seconds = time.perf_counter() - started
    seconds, tokens = repeated_runs(backbone, slot, texts, repeats)
    median = statistics.median(seconds)
    return {
        "compile_seconds": compile_seconds,
        "seconds": median,
        "all_seconds": seconds,
        "texts_per_s": len(texts) / median,
        "gflops": flops_per_token * tokens / median / 1e9,
    }


def repeated_runs(backbone, slot: str, texts: list[str], repeats: int) -> tuple[list[float], int]:
    """The seconds of `repeats` extractions of `texts` at the device's default batching, and their real tokens."""
    seconds, tokens = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        _, info = extract_features(backbone, texts, slot)
        seconds.append(time.perf_counter() - started)
        tokens = info["tokens"]
    return seconds, tokens


def measure(
    models: dict[str, str],
    texts: list[str],
    dtype: torch.dtype,
    budgets: list[str],
    repeats: int,
    peak_size: int,
    extras: tuple[bool, bool] = (False, False),
) -> dict:
    """Every slot's budgets and time split (and with `extras`, the thread counts' effect and the
    compiled model's speed), and this machine's matmul peak in `dtype`."""
    for name in budgets:
        parse_budget(name)
    threads = torch.get_num_threads()  # before --threads_effect changes it
    slots = [measure_slot(slot, path, texts, dtype, budgets, repeats, extras) for slot, path in models.items()]
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "texts": len(texts),
        "threads": threads,
        "cpu_default": f"{BATCH_SIZE}x{CPU_MAX_TOKENS}",
        "matmul_peak_gflops": matmul_peak_gflops(dtype, peak_size),
        "slots": slots,
    }


def format_report(r: dict) -> str:
    peak = r["matmul_peak_gflops"]
    lines = [
        f"{r['texts']} texts in {r['dtype']} on {r['threads']} thread(s); {r['dtype']} matmul peak here {peak:.0f} GFLOP/s",
        "",
        "| slot | batch (texts x tokens) | texts/s | vs first | padded / real tokens | GFLOP/s (real tokens) | % of peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in r["slots"]:
        for name, row in s["budgets"].items():
            share = 100 * row["gflops"] / peak
            lines.append(f"| {s['slot']} | {name} | {row['texts_per_s']:.1f} | {row['speed_vs_first']:.2f}x | "
                         f"{row['padded_over_real']:.2f} | {row['gflops']:.0f} | {share:.0f}% |")  # fmt: skip
    lines += [
        "",
        f"Where the time goes at the CPU default ({r['cpu_default']}), profiled:",
        "",
        "| slot | matrix products | attention | other operators | tokenisation | outside operators | "
        "matrix products' GFLOP/s (% of peak) | ceiling |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in r["slots"]:
        split = s["time_split"]
        total = sum(split["seconds"].values())
        share = {part: 100 * sec / total for part, sec in split["seconds"].items()}
        # All time in the matrix products, at the rate they reach, on the real tokens only.
        ceiling = 100 * split["matmul_gflops"] / peak * split["tokens"] / split["padded_tokens"]
        shares = " | ".join(f"{share[part]:.1f}%" for part in ("matmul", "attention", "other", "tokenisation", "outside"))
        rate = f"{split['matmul_gflops']:.0f} ({100 * split['matmul_gflops'] / peak:.0f}%)"
        lines.append(f"| {s['slot']} | {shares} | {rate} | {ceiling:.0f}% |")
    effects = [s for s in r["slots"] if "threads_effect" in s]
    if effects:
        lines += ["", "Threads at the CPU default, idle and beside one busy core:", "",
                  "| slot | load | threads by | threads | s | slowdown against idle |", "|---|---|---|---|---|---|"]  # fmt: skip
        for s in effects:
            for t in s["threads_effect"]:
                load = "one busy core" if t["busy_cores"] else "idle"
                lines.append(f"| {s['slot']} | {load} | {t['threads_by']} | {t['threads']} | {t['seconds']:.2f} | "
                             f"{t['slowdown_beside_busy']:.2f}x |")  # fmt: skip
    compiled = [s for s in r["slots"] if "compiled" in s]
    if compiled:
        lines += [
            "",
            f"The compiled model (-compile, fec.features.compiled) at the CPU default ({r['cpu_default']}):",
            "",
            "| slot | compile s | texts/s | vs eager | % of peak |",
            "|---|---|---|---|---|",
        ]
        for s in compiled:
            c, eager = s["compiled"], s["budgets"].get(r["cpu_default"])
            gain = f"{c['texts_per_s'] / eager['texts_per_s']:.2f}x" if eager else "n/a"
            lines.append(f"| {s['slot']} | {c['compile_seconds']:.0f} | {c['texts_per_s']:.1f} | {gain} | "
                         f"{100 * c['gflops'] / peak:.0f}% |")  # fmt: skip
    return "\n".join(lines) + "\n"
