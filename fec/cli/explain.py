"""`explain.py` (`fec explain`): explain a prediction: which words pushed the model towards a label (SHAP over the full pipeline).

    python explain.py --run Logs/ED_20261122-101500 --text "I was so scared walking home alone last night"
    python explain.py --run Logs/ED_20261122-101500 --text "..." --label anxious --max_evals 400

Writes `<run>/explanations/<text>.<label>.html` (SHAP's text plot) and `.png` (a bar chart of the
top words). Cost: about -max_evals texts through the three backbones per sentence (10-20 s on
2 CPU cores with the offline stand-ins at the default 200).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fec.cli.options import ArgumentParser, common_options, existing_dir, flag, non_negative_int, output_dir, positive_int
from fec.cli.script import run_script
from fec.core.data import check_texts
from fec.core.errors import RunError
from fec.inference.classifier import EmotionClassifier, read_run_spec
from fec.inference.explanations import explain_text


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="SHAP token attributions for a trained run's prediction. Every option also has its single-dash spelling.",
        parents=[common_options("cuda, cpu, or auto")],
    )
    parser.add_argument(*flag("run"), type=existing_dir, required=True, help="a run folder written by main.py or finetune.py")
    parser.add_argument(*flag("text"), required=True, action="append", help="the text to explain (repeatable)")
    parser.add_argument(*flag("label"), default=None, help="explain this label instead of the predicted one")
    parser.add_argument(*flag("max_evals"), type=positive_int, default=200, help="pipeline evaluations per text (SHAP budget)")
    parser.add_argument(*flag("batch_size"), type=positive_int, default=64, help="texts per backbone batch")
    parser.add_argument(*flag("out"), type=output_dir, default=None, help="output folder (default: RUN/explanations)")
    parser.add_argument(
        *flag("seed"), type=non_negative_int, default=None, help="which seed's checkpoint (default: the best on validation)"
    )
    return parser


def run(args: argparse.Namespace) -> None:
    check_texts(args.text, "-text")
    names = read_run_spec(args.run)["label_names"]
    if args.label is not None and args.label not in names:
        raise RunError(f"-label {args.label}: not a label of this run ({', '.join(names)})")
    out = Path(args.out) if args.out else args.run / "explanations"
    clf = EmotionClassifier.load(args.run, seed=args.seed, device=args.device)
    for text in args.text:
        result = explain_text(clf, text, out, label=args.label, max_evals=args.max_evals, batch_size=args.batch_size)
        top = sorted(zip(result.tokens, result.values, strict=False), key=lambda tv: -abs(tv[1]))[:5]
        print(f"{result.label} (p={result.prob:.3f}) <- " + ", ".join(f"{t.strip()} {v:+.3f}" for t, v in top))
        print(f"    {result.html}\n    {result.png}")


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, argv)
