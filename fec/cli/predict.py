"""`predict.py` (`fec predict`): classify new text with a trained run (a `main.py` or `finetune.py`
Logs folder): top-k labels with probabilities.

    python predict.py --run Logs/ED_20261122-101500 --text "I finally got the job!"
    python predict.py --run Logs/ED_20261122-101500 --text "so scared" "what a gift" --topk 5 --json
    python predict.py --run Logs/ED_20261122-101500 --input texts.csv --output predictions.csv
    echo "I miss my grandmother" | python predict.py --run Logs/ED_20261122-101500

The backbones are loaded once per call with the settings recorded in the run's feature
manifests, and refused when their weights differ from those the model was trained on.
Multi-label runs print every label whose probability reaches its decision threshold, or
"(no emotion)"; with --output, `label` joins them with `+` and `p_LABEL` columns hold the probabilities.
--output may not be the --input file nor lie inside a run folder (`fec.cli.outputs`), so neither is overwritten;
its columns are `fec.inference.prediction_table`'s.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from fec.cli.options import (
    ArgumentParser,
    common_options,
    existing_dir,
    existing_file,
    flag,
    non_negative_int,
    output_file,
    positive_int,
)
from fec.cli.script import run_script
from fec.core.data import check_texts, read_text_column
from fec.core.errors import RunError, UsageError
from fec.core.files import atomic_write
from fec.core.slots import SLOT_NAMES, slot_models
from fec.features.store_slots import slot_name_problem
from fec.inference.classifier import EmotionClassifier, read_run_spec
from fec.inference.prediction_table import prediction_table


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Predict emotion labels for new text with a trained run. Text comes from --text, --input, or "
        "standard input. Every option also has its single-dash spelling.",
        parents=[common_options("cuda, cpu, or auto")],
    )
    parser.add_argument(
        *flag("run"),
        type=existing_dir,
        required=True,
        help="a run folder written by main.py or finetune.py (Logs/TASK_STAMP, Logs/TASK_finetune_STAMP)",
    )
    parser.add_argument(
        *flag("text"),
        action="extend",
        nargs="+",
        default=None,
        help="texts to classify, in one quoted argument each (the option may be repeated)",
    )
    parser.add_argument(*flag("input"), type=existing_file, default=None, help="a UTF-8 CSV file with a `text` column")
    parser.add_argument(
        *flag("output"),
        type=output_file,
        default=None,
        help="write predictions as CSV here (with -input: the input's columns plus label, prob and top-k columns)",
    )
    parser.add_argument(
        *flag("topk"), type=positive_int, default=3, help="labels to show per text (at most the run's number of labels)"
    )
    parser.add_argument(*flag("json"), action="store_true", help="print JSON lines instead of a table")
    parser.add_argument(
        *flag("seed"), type=non_negative_int, default=None, help="which seed's checkpoint (default: the best on validation)"
    )
    parser.add_argument(
        *flag("ensemble"),
        action="store_true",
        help="average the probabilities of every seed of the run (an ensemble, not a single model; results.json reports "
        "its test metrics beside the seeds' mean±std)",
    )
    parser.add_argument(*flag("batch_size"), type=positive_int, default=64, help="texts per backbone batch")
    parser.add_argument(
        *flag("model"),
        action="append",
        default=None,
        metavar="SLOT=MODEL",
        help="load a slot's backbone from elsewhere, e.g. llama=/models/llama2 (must be the same weights)",
    )
    return parser


def read_texts(args: argparse.Namespace) -> tuple[list[str], pd.DataFrame | None]:
    """The texts to classify, each refused when empty (named by its -text number or CSV row)."""
    if args.input:
        return read_text_column(args.input)
    if args.text:
        check_texts(args.text, "-text")
        return args.text, None
    if sys.stdin.isatty():
        raise RunError("no text given: use -text, -input FILE, or pipe text on standard input")
    texts = [line.strip() for line in sys.stdin if line.strip()]
    if not texts:
        raise RunError("standard input holds no text (one text per line)")
    return texts, None


def check_combination(args: argparse.Namespace) -> None:
    """Options that would be silently ignored are refused (an -output onto the input or a run's
    files is refused with every command's outputs: `fec.cli.outputs`)."""
    if args.input and args.text:
        raise UsageError("-text and -input: give the texts one way (the -input file, or -text)")
    if args.ensemble and args.seed is not None:
        raise UsageError(f"-ensemble and -seed {args.seed}: the ensemble uses every seed; drop one of them")
    if args.json and args.output:
        raise UsageError("-json and -output: -output writes CSV; drop one of them")


def run(args: argparse.Namespace) -> None:
    check_combination(args)
    texts, frame = read_texts(args)
    models = slot_models(args.model, lambda slot: not slot_name_problem(slot), f"{', '.join(SLOT_NAMES)} or a slot of yours")
    labels = read_run_spec(args.run)["label_names"]
    if args.topk > len(labels):
        raise RunError(f"-topk {args.topk}: the run has {len(labels)} labels")
    clf = EmotionClassifier.load(args.run, seed=args.seed, device=args.device, models=models, ensemble=args.ensemble)
    probs = clf.predict_proba(texts, batch_size=args.batch_size)
    if args.output:
        table = prediction_table(clf, texts, probs, args.topk, frame)
        atomic_write(Path(args.output), lambda tmp: table.to_csv(tmp, index=False))
        print(f"wrote {len(table)} predictions to {args.output}", file=sys.stderr)
        return
    predictions = clf.rank(probs, topk=args.topk)
    if args.json:
        for text, top in zip(texts, predictions, strict=False):
            print(json.dumps({"text": text, "labels": [{"label": label, "prob": round(prob, 6)} for label, prob in top]}))
    else:
        for text, top in zip(texts, predictions, strict=False):
            shown = text if len(text) <= 70 else text[:67] + "..."
            labels = "   ".join(f"{label} {prob:.3f}" for label, prob in top)
            print(f"{shown}\n    " + (labels or "(no emotion above its threshold)"))


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, argv)
