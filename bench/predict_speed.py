"""Prediction speed: what a user of a trained run waits on, per run.

    python -m bench.predict_speed --runs Logs/ED_20261205-220000 Logs/semeval_eng_20261205-221500
    python -m bench.predict_speed --runs Logs/ED_... --n 1000 --repeats 100 --results bench/predict_cpu.json

Per run, in a fresh Python process (so every import and model load counts, as for `predict.py`):
* cold start: seconds from the process's start to its first prediction (one text), split into
  imports + `EmotionClassifier.load` and the first `predict_proba`;
* warm latency of one text: `--repeats` calls of `predict_proba([text])` on the loaded classifier,
  each a different text, p50 and p95 in milliseconds;
* throughput: `--n` texts in one `predict_proba` call (batches of `--batch_size`), texts per second.

Texts: the run's task's valid split (`data/{task}/valid.csv`), cycled to `--n`. Threads: torch's
default for the machine unless `--threads`.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()  # before the heavy imports: the cold start counts them

from fec.cli.options import ArgumentParser, common_options, existing_dir, output_file, positive_int  # noqa: E402
from fec.cli.script import run_script  # noqa: E402
from fec.core.files import atomic_write_text  # noqa: E402
from fec.core.provenance import provenance  # noqa: E402

log = logging.getLogger("bench.predict_speed")
REPO = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> dict:
    """The measurements of one run, in this (fresh) process."""
    import pandas as pd
    import torch

    from fec import EmotionClassifier
    from fec.inference.classifier import read_run_spec

    run, n, repeats = args.worker, args.n, args.repeats
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = read_run_spec(run)
    texts = pd.read_csv(Path(args.data_dir) / spec["task"] / "valid.csv")["text"].astype(str).tolist()
    clf = EmotionClassifier.load(run, device=args.device)
    loaded = time.perf_counter() - STARTED
    clf.predict_proba(texts[:1])
    first = time.perf_counter() - STARTED
    latencies = []
    for i in range(1, repeats + 1):
        started = time.perf_counter()
        clf.predict_proba([texts[i % len(texts)]])
        latencies.append((time.perf_counter() - started) * 1000)
    batch = [texts[i % len(texts)] for i in range(n)]
    started = time.perf_counter()
    clf.predict_proba(batch, batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=20)
    return {
        "run": Path(run).name,
        "device": str(clf.device),
        "sources": spec["sources"],
        "threads": torch.get_num_threads(),
        "load_s": round(loaded, 2),
        "cold_start_s": round(first, 2),
        "warm_p50_ms": round(statistics.median(latencies), 1),
        "warm_p95_ms": round(quantiles[18], 1),
        "texts": n,
        "throughput_texts_per_s": round(n / seconds, 1),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Prediction speed of trained runs: cold start, warm latency, throughput.", parents=[common_options()]
    )
    parser.add_argument("--runs", nargs="+", type=existing_dir, required=True, help="run folders (main.py or tune.py)")
    parser.add_argument("--data_dir", type=existing_dir, default="data", help="folder holding TASK/valid.csv")
    parser.add_argument("--n", type=positive_int, default=1000, help="texts of the throughput measurement")
    parser.add_argument("--repeats", type=positive_int, default=100, help="one-text calls of the warm latency")
    parser.add_argument("--batch_size", type=positive_int, default=64, help="predict_proba's batch size")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--results", type=output_file, default=None, help="also write the rows here as JSON")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def run(args: argparse.Namespace) -> list[dict]:
    if args.worker:
        print(json.dumps(worker(args)))
        return []
    rows = []
    for folder in args.runs:
        folder, data = Path(folder).resolve(), Path(args.data_dir).resolve()
        cmd = [sys.executable, "-m", "bench.predict_speed", "--runs", str(folder), "--worker", str(folder)]
        cmd += ["--data_dir", str(data), "--device", args.device, "--log_level", "WARNING"]
        cmd += ["--n", str(args.n), "--repeats", str(args.repeats), "--batch_size", str(args.batch_size)]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("| run | sources | threads | load s | cold start s | warm p50 ms | warm p95 ms | texts/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [r["run"], " + ".join(r["sources"]), r["threads"], r["load_s"], r["cold_start_s"]]
        cells += [r["warm_p50_ms"], r["warm_p95_ms"], r["throughput_texts_per_s"]]
        print("| " + " | ".join(map(str, cells)) + " |")
    if args.results:
        atomic_write_text(Path(args.results), json.dumps({"rows": rows, **provenance()}, indent=2) + "\n")
    return rows


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
