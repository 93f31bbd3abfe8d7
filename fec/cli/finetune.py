"""`finetune.py` (`fec finetune`): fine-tune one encoder end to end, the baseline the fusion
classifier is compared with; the command line of `fec.api.finetune.finetune`.

    python finetune.py --task semeval_eng --model offline:all-minilm-l6-v2 --runs 3
    python finetune.py -dataset ED -model bert-large-cased -device cuda
"""

from __future__ import annotations

import argparse

from fec.api.finetune import FinetuneSettings, finetune
from fec.cli.options import trainer_parser
from fec.cli.script import run_script


def build_parser() -> argparse.ArgumentParser:
    return trainer_parser(
        "Fine-tune one encoder end to end (Hugging Face Trainer) on a task's CSVs: the baseline the fusion "
        "classifier is compared with. Every option also has its single-dash spelling.",
        FinetuneSettings,
        dtype={"aliases": ("-precision", "--precision")},
        multilabel={"action": "store_true"},
    )


def run(args: argparse.Namespace) -> None:
    finetune(settings=FinetuneSettings.from_options(vars(args)))


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, argv)
