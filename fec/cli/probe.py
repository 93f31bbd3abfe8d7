"""`probe.py` (`fec probe`): linear probes of every stored feature of a task, the table and the layer curves.

    python probe.py --task ED                                  # every folder in dataset/ED/
    python probe.py --task ED --folders llama-mean+last-all    # some folders only
    python probe.py --task semeval_eng --cv 5                  # choose C by 5-fold CV on train
    python probe.py --task ED --combine                        # + one probe of the best view of each folder together

Writes Logs/probe_{task}_{stamp}/: probe.csv (one row per folder x pooling x layer: chosen C, the
selection metric, valid and test metrics), probe.md (the best layer of each folder x pooling, best
first), layer_curves.png, and config.json (the command, settings, provenance). The probes
themselves are `fec.classify.probing` and `fec.classify.linear_probe`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import pandas as pd

from fec.classify.probing import best_rows, probe_rows, store_fingerprint, store_folders
from fec.cli.options import ArgumentParser, Distinct, common_options, flag, non_negative_int, output_dir, task_name
from fec.cli.script import run_script
from fec.core.errors import UsageError
from fec.core.files import atomic_write_text
from fec.core.metrics import MULTILABEL_HEADLINE, SINGLE_LABEL_KEYS
from fec.core.provenance import provenance
from fec.features.backbones import pick_device
from fec.runs.escape import markdown_cell
from fec.runs.folder import make_run_dir, write_json
from fec.runs.plots import plot_layer_curves

log = logging.getLogger(__name__)
TABLE_METRICS = {False: SINGLE_LABEL_KEYS, True: MULTILABEL_HEADLINE}  # by whether the task is multi-label


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Linear probes of every stored slot x pooling x layer of a task. Every option also has its "
        "single-dash spelling.",
        parents=[common_options()],
    )
    parser.add_argument(*flag("task"), type=task_name, required=True, help="task folder under --dataset_dir")
    parser.add_argument(*flag("dataset_dir"), default="dataset", help="feature store root")
    parser.add_argument(
        *flag("folders"), nargs="+", action=Distinct, default=None, help="store folders to probe (default: every one)"
    )
    parser.add_argument(
        *flag("cv"),
        type=non_negative_int,
        default=None,
        help="choose C by K-fold cross-validation on train (0 = on valid; default: 5 when valid has under 1000 rows and "
        "under a tenth of train's)",
    )
    parser.add_argument(
        *flag("combine"),
        action="store_true",
        help="also probe the concatenation of the best view of every folder (the linear ceiling of the features together)",
    )
    parser.add_argument(*flag("seed"), type=non_negative_int, default=0, help="seed of the cross-validation folds")
    parser.add_argument(*flag("out"), type=output_dir, default="Logs", help="where the probe folder is created")
    return parser


def markdown_table(rows: list[dict], setup: dict) -> str:
    """The best layer of every folder x pooling, best first."""
    key, metrics = setup["selection_metric"], TABLE_METRICS[setup["multilabel"]]
    chosen = "cv" if setup["cv"] else "valid"
    # Without a test split (held back), valid is shown: a check beside the cross-validated choice.
    shown = "test" if any("test_" + metrics[0] in row for row in rows) else "valid"
    head = ["folder", "pooling", "best layer", "C", f"{chosen} {key}", *(f"{shown} {m}" for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in best_rows(rows, f"selection_{key}"):
        layer = f"{row['layer']} of {row['num_hidden_states'] - 1}" if row["num_hidden_states"] else str(row["layer"])
        if row["folder"] == "combined":
            layer = row["model"]  # the views it concatenates
        tests = [f"{row[f'{shown}_{m}']:.2f}" if f"{shown}_{m}" in row else "" for m in metrics]
        # Folder and model names come from the store: written inert.
        cells = [
            markdown_cell(row["folder"]),
            row["pooling"],
            markdown_cell(layer),
            f"{row['c']:g}",
            f"{row[f'selection_{key}']:.2f}",
            *tests,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    known = store_folders(args.dataset_dir, args.task)
    folders = args.folders or known
    unknown = [f for f in folders if f not in set(known)]
    if unknown:
        have = ", ".join(sorted(known))
        raise UsageError(f"--folders {' '.join(unknown)}: not in {args.dataset_dir}/{args.task} (have: {have})")
    started = time.perf_counter()
    rows, setup = probe_rows(
        args.dataset_dir,
        args.task,
        folders,
        cv=args.cv,
        seed=args.seed,
        device=str(pick_device(args.device)),
        combine=args.combine,
    )
    run_dir = make_run_dir(args.out, f"probe_{args.task}")
    seconds = round(time.perf_counter() - started, 1)
    store = store_fingerprint(args.dataset_dir, args.task, folders)
    config = {"argv": sys.argv, "args": vars(args), "setup": setup, "store": store, "seconds": seconds, **provenance()}
    write_json(run_dir / "config.json", config)
    pd.DataFrame(rows).to_csv(run_dir / "probe.csv", index=False, float_format="%.4f")
    table = markdown_table(rows, setup)
    atomic_write_text(run_dir / "probe.md", table)
    plot_layer_curves(rows, run_dir / "layer_curves.png", setup["selection_metric"], "cv" if setup["cv"] else "valid")
    print(table, end="")
    log.info("%d views probed in %.0fs; wrote %s", len(rows), time.perf_counter() - started, run_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, argv)
