"""docs/options.md, generated from the parsers themselves so the reference never drifts from the code.

    python -m fec.cli.option_docs > docs/options.md

Every command's options with all their spellings, defaults, choices and help; a test checks
that docs/options.md is what this prints.
"""

from __future__ import annotations

import argparse

from fec.cli import command_module

# (script, fec subcommand, arguments to its build_parser)
COMMANDS = [
    ("llama2_rep_extract.py", "extract", ("llama",)),
    ("bert_rep_extract.py", "extract", ("bert",)),
    ("roberta_rep_extract.py", "extract", ("roberta",)),
    ("main.py", "train", ()),
    ("finetune.py", "finetune", ()),
    ("probe.py", "probe", ()),
    ("tune.py", "tune", ()),
    ("baselines/tfidf.py", "tfidf", ()),
    ("predict.py", "predict", ()),
    ("explain.py", "explain", ()),
    ("report.py", "report", ()),
    ("prepare_data.py", "data", ()),
]


def cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def default_cell(action: argparse.Action) -> str:
    if action.required:
        return "(required)"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)) or action.default is None:
        return ""
    value = " ".join(map(str, action.default)) if isinstance(action.default, list) else action.default
    return f"`{value}`"


def option_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        names = ", ".join(f"`{name}`" for name in action.option_strings) or f"`{action.dest}` (positional)"
        meaning = cell(action.help or "")
        if action.choices:
            meaning += f" (one of: {', '.join(map(str, action.choices))})"
        rows.append(f"| {names} | {default_cell(action)} | {meaning} |")
    return rows


def render() -> str:
    lines = [
        "# Options of every command",
        "",
        "Generated from the parsers by `python -m fec.cli.option_docs > docs/options.md`; `-h` on any script prints",
        "the same. The first spelling is the documented one; the single-dash forms keep the published command",
        "lines working (`python main.py -dataset ED`, `python llama2_rep_extract.py -device cuda -task ED -mode train`).",
    ]
    for script, subcommand, parser_args in COMMANDS:
        parser = command_module(subcommand).build_parser(*parser_args)
        shown = " ".join(("fec", subcommand, *parser_args))
        lines += ["", f"## `{script}` (`{shown}`)", "", cell(parser.description or ""), "", *option_table(parser)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
