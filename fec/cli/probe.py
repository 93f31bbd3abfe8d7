"""`probe.py` (`fec probe`): linear probes of every stored feature of a task, the table and the layer curves.

    python probe.py --task ED                                  # every folder in dataset/ED/
    python probe.py --task ED --folders llama-mean+last-all    # some folders only
    python probe.py --task semeval_eng --cv 5                  # choose C by 5-fold CV on train
    python probe.py --task ED --combine                        # + one probe of the best view of each folder together

Writes Logs/probe_{task}_{stamp}/ (probe.csv, probe.md, layer_curves.png, config.json) and prints
probe.md; the job is `fec.api.probe` (`fec.probe`), its settings the options here.
"""

from __future__ import annotations

import argparse

from fec.api.probe import ProbeSettings, probe
from fec.cli.options import ArgumentParser, add_log_level, add_settings
from fec.cli.script import run_script


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Linear probes of every stored slot x pooling x layer of a task. Every option also has its "
        "single-dash spelling."
    )
    add_settings(parser, ProbeSettings, ["device"])
    add_log_level(parser)
    add_settings(
        parser,
        ProbeSettings,
        ["task", "dataset_dir", "folders", "cv", "combine", "fold_seed", "out"],
        combine={"action": "store_true"},
        fold_seed={"aliases": ("--seed", "-seed")},
    )
    return parser


def run(args: argparse.Namespace) -> None:
    table = probe(settings=ProbeSettings.from_options(vars(args)))
    print((table.attrs["folder"] / "probe.md").read_text(encoding="utf-8"), end="")


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, argv)
