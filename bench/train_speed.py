"""Training speed: the published training loop against the project's, same model, same features.

    python -m bench.train_speed                                 # 4000 train rows, published dims, 2 epochs
    python -m bench.train_speed --dims standin --results bench/train_cpu.json
    python -m bench.train_speed --device cuda --n 17802         # ED's train size on a GPU
    python -m bench.train_speed --dims standin --threads_effect # also: threads idle and beside a busy core

Both loops train `fec.classify.fusion.DownstreamModel` (the published architecture; `--dims published`:
LLaMA (5, 4096), BERT 1024, RoBERTa 1024; `--dims standin`: (5, 576), 384, 768) on the same
synthetic features: `--n` train rows, `--n`/4 valid and test rows, `--classes` labels.

* published: the published `main.py` + `model_op_multi.py`, re-implemented faithfully here. A
  `Dataset` returning one row at a time and a `DataLoader` with workers (`--workers`, default 2;
  the published code used 4; `pin_memory` on CUDA), batch 10, shuffled; the LLaMA features stored
  in float16 (the published extractor ran LLaMA in float16) and the encoder features in float32,
  each converted with `.float()` per batch; every train batch calls sklearn's accuracy and F1
  (micro, macro, weighted); valid AND test are evaluated every epoch (batch 10, loss `.item()` per
  batch, accuracy and the three F1s on the whole split). Adam, lr 1e-4, cross-entropy.
  The published loader read the BERT features from the RoBERTa folder; with the published dims
  that changes no cost, so both sources are read as given here.
* ours: `fec.classify.fusion_training.train_seed(data, TrainConfig(epochs=E, early_stop=99))` on float32 features
  already on the device (as `main.py` calls it): shuffled index batches, no DataLoader, metrics
  once per epoch, test evaluated once at the end, input standardisation statistics computed first.

Reported per loop: seconds per epoch (published: mean epoch time, train + valid + test; ours:
the whole `train_seed` call divided by the epochs, so its set-up and final evaluation count
against it) and the ratio published / ours.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn as nn
from sklearn.metrics import accuracy_score, f1_score
from torch.utils.data import DataLoader, Dataset

from fec.classify.fusion import DownstreamModel
from fec.classify.fusion_inputs import SOURCES, FusionData, SplitInputs
from fec.classify.fusion_training import TrainConfig, build_model, step_flops, train_seed
from fec.cli.options import ArgumentParser, device, non_negative_int, output_file, positive_int
from fec.cli.script import run_script
from fec.core.files import atomic_write_text
from fec.core.provenance import provenance
from fec.core.threads import choose_threads, usable_cores
from fec.features.backbones import pick_device

log = logging.getLogger("bench.train_speed")

DIMS = {
    "published": ((5, 4096), (1024, 1024)),
    "standin": ((5, 576), (384, 768)),
}
PUBLISHED_BATCH = 10
PUBLISHED_LR = 1e-4


def synthetic_split(n: int, dims: str, classes: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Random features of the slot shapes, stored as the published extractors saved them:
    LLaMA (N, L, H) float16, encoders (N, H) float32; labels (N,) int64."""
    (layers, hidden), encoders = DIMS[dims]
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(n, layers, hidden, generator=generator).to(torch.float16)]
    inputs += [torch.randn(n, width, generator=generator) for width in encoders]
    return inputs, torch.randint(0, classes, (n,), generator=generator)


def synthetic_data(n: int, dims: str, classes: int, seed: int) -> dict[str, tuple[list[torch.Tensor], torch.Tensor]]:
    sizes = {"train": n, "valid": max(n // 4, 1), "test": max(n // 4, 1)}
    return {mode: synthetic_split(rows, dims, classes, seed + i) for i, (mode, rows) in enumerate(sizes.items())}


# ---------------------------------------------------------------------------- the published loop


class PublishedDataset(Dataset):
    """One row at a time, as the published `MyDataset`: (llama, bert, roberta, label)."""

    def __init__(self, inputs: list[torch.Tensor], labels: torch.Tensor):
        self.llama, self.bert, self.roberta = inputs
        self.labels = labels

    def __getitem__(self, index):
        return self.llama[index], self.bert[index], self.roberta[index], self.labels[index]

    def __len__(self):
        return int(self.labels.shape[0])


def published_train_epoch(loader, device, model, loss_fn, optimizer) -> tuple[float, float, float]:
    """The published training epoch: sklearn metrics on every batch of 10, averaged over batches."""
    losses, accs, weighted = [], [], []
    for llama, bert, roberta, y in loader:
        llama, bert, roberta, y = llama.to(device), bert.to(device), roberta.to(device), y.to(device)
        model.train()
        pred = model(llama.float(), bert.float(), roberta.float())
        loss = loss_fn(pred, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pred_y = torch.max(pred, 1).indices
        accs.append(accuracy_score(y.cpu(), pred_y.cpu()))
        f1_score(y.cpu(), pred_y.cpu(), average="micro")
        f1_score(y.cpu(), pred_y.cpu(), average="macro")
        weighted.append(f1_score(y.cpu(), pred_y.cpu(), average="weighted"))
        losses.append(loss.cpu().item())
    return float(np.mean(losses)), float(np.mean(accs)), float(np.mean(weighted))


def published_eval_epoch(loader, device, model, loss_fn) -> tuple[float, float, float]:
    """The published valid/test pass: batches of 10, loss synced per batch, metrics on the split."""
    total_loss, preds, ys, batches = 0.0, [], [], 0
    for llama, bert, roberta, y in loader:
        llama, bert, roberta, y = llama.to(device), bert.to(device), roberta.to(device), y.to(device)
        model.eval()
        with torch.no_grad():
            pred = model(llama.float(), bert.float(), roberta.float())
            total_loss += loss_fn(pred, y).to("cpu").item()
        preds.append(torch.max(pred, 1).indices.cpu())
        ys.append(y.cpu())
        batches += 1
    y_all, pred_all = torch.cat(ys), torch.cat(preds)
    acc = accuracy_score(y_all, pred_all)
    f1_score(y_all, pred_all, average="micro")
    f1_score(y_all, pred_all, average="macro")
    return total_loss / batches, float(acc), float(f1_score(y_all, pred_all, average="weighted"))


def run_published(data: dict, dims: str, classes: int, epochs: int, device: torch.device, workers: int) -> dict:
    (layers, hidden), encoders = DIMS[dims]
    pin = device.type == "cuda"
    loaders = {
        mode: DataLoader(
            PublishedDataset(*data[mode]),
            batch_size=PUBLISHED_BATCH,
            shuffle=mode == "train",
            num_workers=workers,
            pin_memory=pin,
        )
        for mode in ("train", "valid", "test")
    }
    torch.manual_seed(0)
    model = DownstreamModel(classes, (layers, hidden), encoders).to(device)
    loss_fn = nn.CrossEntropyLoss().to(device)
    optimizer = torch.optim.Adam(model.parameters(), PUBLISHED_LR)
    epoch_seconds = []
    for epoch in range(epochs):
        started = time.perf_counter()
        train = published_train_epoch(loaders["train"], device, model, loss_fn, optimizer)
        valid = published_eval_epoch(loaders["valid"], device, model, loss_fn)
        published_eval_epoch(loaders["test"], device, model, loss_fn)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_seconds.append(time.perf_counter() - started)
        log.info("published epoch %d: train loss %.4f, valid loss %.4f, %.2fs", epoch, train[0], valid[0], epoch_seconds[-1])
    total = sum(epoch_seconds)
    return {"epoch_seconds": epoch_seconds, "total_seconds": total, "seconds_per_epoch": total / epochs}


# ---------------------------------------------------------------------------- the project's loop


def run_ours(data: dict, classes: int, epochs: int, device: torch.device) -> dict:
    splits = {mode: SplitInputs([x.float() for x in inputs], labels) for mode, (inputs, labels) in data.items()}
    fusion = FusionData("synthetic", list(SOURCES), splits, [f"c{i}" for i in range(classes)], False, {})
    fusion.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    result = train_seed(fusion, TrainConfig(epochs=epochs, early_stop=99), seed=0, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total = time.perf_counter() - started
    return {
        "epoch_seconds": [row["seconds"] for row in result.history],
        "total_seconds": total,
        "seconds_per_epoch": total / epochs,
        "epochs_run": result.epochs_run,
    }


@contextmanager
def busy_cores(count: int):
    """`count` other processes spinning on a core each while the block runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def compare_threads(work_flops: float, measure: Callable[[], dict], seconds: str) -> list[dict]:
    """`measure()` with torch's default thread count (one per core) and with the count
    `fec.core.threads` chooses for `work_flops` per step, on an idle machine and beside one busy
    core (a spinning process); each row gets its slowdown against idle, read from its `seconds`
    field. The policy is told the busy core here: in use it reads the load average, which takes
    about a minute to see a new job. Torch's thread count is restored afterwards."""
    cores, rows, before = usable_cores(), [], torch.get_num_threads()
    for busy in (0, 1):
        with busy_cores(busy):
            for name, count in (("torch default", cores), ("fec.core.threads", choose_threads(work_flops, cores, busy))):
                torch.set_num_threads(count)
                rows.append({"busy_cores": busy, "threads_by": name, "threads": count, **measure()})
    torch.set_num_threads(before)
    for row in rows:
        idle = next(r for r in rows if r["threads_by"] == row["threads_by"] and not r["busy_cores"])
        row["slowdown_beside_busy"] = row[seconds] / idle[seconds]
    return rows


def threads_effect(data: dict, classes: int, epochs: int, batch_size: int = 64) -> list[dict]:
    """`run_ours` on the CPU under `compare_threads`: torch's thread count and the policy's, idle and
    beside one busy core."""
    splits = {mode: SplitInputs([x.float() for x in inputs], labels) for mode, (inputs, labels) in data.items()}
    fusion = FusionData("synthetic", list(SOURCES), splits, [f"c{i}" for i in range(classes)], False, {})
    work = step_flops(build_model(fusion, TrainConfig()), batch_size)
    return compare_threads(work, lambda: run_ours(data, classes, epochs, torch.device("cpu")), "seconds_per_epoch")


def print_threads_effect(rows: list[dict], cores: int) -> None:
    print(f"\nThreads: ours on the CPU ({cores} cores), idle and beside one busy core")
    print("| load | threads by | threads | s/epoch | slowdown against idle |\n|---|---|---|---|---|")
    for r in rows:
        load = "one busy core" if r["busy_cores"] else "idle"
        cells = [load, r["threads_by"], r["threads"], f"{r['seconds_per_epoch']:.2f}", f"{r['slowdown_beside_busy']:.2f}x"]
        print("| " + " | ".join(map(str, cells)) + " |")


# ---------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=positive_int, default=4000, help="train rows (valid and test get n/4 each)")
    parser.add_argument("--epochs", type=positive_int, default=2, help="epochs for each loop")
    parser.add_argument("--device", type=device, default="auto", help="cuda, cpu, or auto")
    parser.add_argument(
        "--dims",
        default="published",
        choices=sorted(DIMS),
        help="published: (5,4096),(1024,),(1024,); standin: (5,576),(384,),(768,)",
    )
    parser.add_argument("--classes", type=positive_int, default=32, help="labels (ED has 32)")
    parser.add_argument(
        "--workers", type=non_negative_int, default=2, help="DataLoader workers of the published loop (published: 4)"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the synthetic features")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--results", type=output_file, default=None, metavar="OUT", help="also write the results to this JSON file"
    )
    parser.add_argument(
        "--threads_effect",
        action="store_true",
        help="also time ours with torch's default threads and with fec.core.threads' choice, idle and beside one busy core",
    )
    parser.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, argv)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    data = synthetic_data(args.n, args.dims, args.classes, args.seed)
    log.info("published loop: %d epochs on %d train rows", args.epochs, args.n)
    published = run_published(data, args.dims, args.classes, args.epochs, device, args.workers)
    log.info("project loop: %d epochs on %d train rows", args.epochs, args.n)
    ours = run_ours(data, args.classes, args.epochs, device)
    (layers, hidden), encoders = DIMS[args.dims]
    report = {
        "mode": "train",
        "n": {mode: int(labels.shape[0]) for mode, (_, labels) in data.items()},
        "dims": args.dims,
        "shapes": {"llama": [layers, hidden], "bert": [encoders[0]], "roberta": [encoders[1]]},
        "classes": args.classes,
        "epochs": args.epochs,
        "workers": args.workers,
        "device": str(device),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            **({"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}),
        },
        "published": published,
        "ours": ours,
        "ratio": published["seconds_per_epoch"] / max(ours["seconds_per_epoch"], 1e-9),
        **provenance(),
    }
    if args.threads_effect:
        report["threads_effect"] = threads_effect(data, args.classes, args.epochs)
    print_report(report)
    if args.threads_effect:
        print_threads_effect(report["threads_effect"], usable_cores())
    if args.results:
        atomic_write_text(args.results, json.dumps(report, indent=1) + "\n")
    return 0


def print_report(r: dict) -> None:
    n, s = r["n"], r["shapes"]
    gpu = r["machine"].get("gpu")
    print(
        f"Training speed: synthetic features, train {n['train']} / valid {n['valid']} / test {n['test']} rows, "
        f"dims {r['dims']} (llama {tuple(s['llama'])}, bert ({s['bert'][0]},), roberta ({s['roberta'][0]},)), "
        f"{r['classes']} classes, {r['epochs']} epochs, device {r['device']}{f' ({gpu})' if gpu else ''}, "
        f"{r['machine']['torch_threads']} torch threads"
    )
    rows = [
        [
            f"published (DataLoader, {r['workers']} workers, batch 10, sklearn per batch, test every epoch)",
            f"{r['published']['seconds_per_epoch']:.2f}",
            f"{r['published']['total_seconds']:.2f}",
        ],
        [
            "ours (fec.classify.fusion_training.train_seed, set-up and final test included)",
            f"{r['ours']['seconds_per_epoch']:.2f}",
            f"{r['ours']['total_seconds']:.2f}",
        ],
    ]
    headers = ["loop", "s/epoch", "total s"]
    widths = [max(len(x) for x in column) for column in zip(headers, *rows, strict=False)]
    for cells in (headers, ["-" * w for w in widths], *rows):
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip())
    print(f"ratio (published s/epoch / ours s/epoch): {r['ratio']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
