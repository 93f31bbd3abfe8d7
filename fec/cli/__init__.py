"""The `fec` command: one subcommand per script, with the same options.

    fec extract llama --task ED --mode all     # = python llama2_rep_extract.py --task ED --mode all
    fec train --task ED --runs 5               # = python main.py --task ED --runs 5
    fec tune | fec probe | fec finetune | fec tfidf | fec predict | fec explain | fec report | fec data
    fec SUBCOMMAND -h                          # its options

Each subcommand module is imported only when used, so `fec data` never loads torch.
"""

from __future__ import annotations

import importlib
import sys

from fec.core.slots import SLOT_NAMES as SLOTS

# subcommand -> (module, what it does; the script it stands for)
SUBCOMMANDS = {
    "extract": (
        "fec.cli.extract",
        "extract a slot's features: fec extract {llama,bert,roberta} ... (llama2_rep_extract.py, ...)",
    ),
    "train": ("fec.cli.train", "train the fusion classifier (main.py)"),
    "finetune": ("fec.cli.finetune", "fine-tune one encoder, the baseline (finetune.py)"),
    "probe": ("fec.cli.probe", "linear probes of every stored slot x pooling x layer (probe.py)"),
    "tune": ("fec.cli.tune", "search the best fusion recipe, then train it (tune.py)"),
    "tfidf": ("fec.cli.tfidf", "TF-IDF + logistic regression, the text-only baseline (baselines/tfidf.py)"),
    "predict": ("fec.cli.predict", "classify new text with a trained run (predict.py)"),
    "explain": ("fec.cli.explain", "SHAP word attributions of a prediction (explain.py)"),
    "report": ("fec.cli.report", "pool runs into results tables (report.py)"),
    "data": ("fec.cli.prepare_data", "bring the data into data/ (prepare_data.py)"),
}


def command_module(name: str):
    """The module of subcommand `name`: the one place that imports a command module, so commands
    never import each other (the library below them is what they share)."""
    return importlib.import_module(SUBCOMMANDS[name][0])


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, (_, what) in SUBCOMMANDS.items()]
    return "usage: fec SUBCOMMAND [options]   (fec SUBCOMMAND -h for its options)\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"error: unknown subcommand {name!r}; choose one of {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module = command_module(name)
    if name == "extract":
        if rest and rest[0] in ("-h", "--help"):
            print(f"usage: fec extract {{{','.join(SLOTS)}}} [options]   (fec extract llama -h for the options)")
            return 0
        if not rest or rest[0] not in SLOTS:
            print(
                f"error: fec extract needs a slot first: {', '.join(SLOTS)} (e.g. fec extract llama --task ED; a slot of "
                "your own is a kind's script with --slot, e.g. fec extract bert --slot e5 --model MODEL)",
                file=sys.stderr,
            )
            return 2
        return module.main(rest[0], rest[1:])
    return module.main(rest)
