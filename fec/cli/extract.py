"""The extraction scripts' command line (`llama2_rep_extract.py`, `bert_rep_extract.py`,
`roberta_rep_extract.py`; `fec extract SLOT`).

    python llama2_rep_extract.py -device cuda -task ED -mode train     # the published command line
    python bert_rep_extract.py --task ED --mode all --preset offline   # the offline stand-in
    python llama2_rep_extract.py --task ED --compat reference          # the published recipe, quirks included
    python llama2_rep_extract.py --task ED --layers all --pooling mean last   # every layer, two poolings (fec.features.spec)
    python bert_rep_extract.py --task ED --slot e5 --model intfloat/e5-small-v2 --layers all --pooling mean   # a slot of yours
    accelerate launch --multi_gpu --num_processes 4 llama2_rep_extract.py --task ED --mode all

Each script extracts its own slot, or with `--slot NAME` a slot of yours of its kind; the options
are the settings of `fec.api.extract` (`fec.extract`), which does the work. A setting the library
refuses is reported under the option that gave it (`--max_len 300: ...`).
"""

from __future__ import annotations

import argparse

from fec.api.extract import ExtractSettings, extract
from fec.cli.options import ArgumentParser, add_log_level, add_settings, flag
from fec.cli.script import run_script
from fec.core.errors import SettingError
from fec.core.slots import KINDS, PUBLISHED_KINDS, SCRIPTS
from fec.features.backbones import SLOTS
from fec.features.distributed import close_distributed
from fec.features.pooling import POOLINGS

# Settings whose command-line form differs from a plain option: lists, switches, other spellings.
OPTION_FORMS = {
    "layers": {"nargs": "+", "type": None, "metavar": "LAYER"},  # checked as a whole: `12` counts, `12,` is an index
    "pooling": {"nargs": "+", "type": None, "choices": POOLINGS},
    "prompt": {"action": "append", "type": None, "metavar": "TEMPLATE"},
    "chat_template": {"action": "store_true"},
    "overwrite": {"action": "store_true", "aliases": ("--force", "-force")},
    "wait": {"action": "store_true"},
    "resume": {"action": "store_true"},
    "trust_remote_code": {"action": "store_true"},
    "compile": {"action": "store_true"},
}


def build_parser(slot: str) -> argparse.ArgumentParser:
    kind = PUBLISHED_KINDS[slot]
    parser = ArgumentParser(
        description=f"Extract {slot}-slot features: {SLOTS[slot].description}. Reads data/TASK/MODE.csv, writes "
        f"dataset/TASK/{slot}/MODE.safetensors and a JSON manifest beside it. Every option also has its "
        "single-dash spelling (-task, -mode, -device, ...).",
    )
    add_settings(parser, ExtractSettings, ["device"])
    add_log_level(parser)
    slot_form = {
        "default": None,
        "required": False,
        "metavar": "NAME",
        "help": f"extract into a slot of your own named NAME (a lowercase letter, then lowercase letters, digits or _), of "
        f"this script's kind ({kind}: {KINDS[kind].description}); needs --model; always a variant "
        "(dataset/TASK/NAME-POOLINGS-LAYERS/), which main.py reads through a pick: --sources ... NAME --features "
        "NAME:POOLING:LAYERS",
    }
    names = ["task", "mode", "model", "slot", "preset", "max_len", "batch_size", "max_tokens", "dtype", "compat"]
    names += ["batch_order", "layers", *(["llama_pooling"] if slot == "llama" else []), "pooling", "prompt"]
    names += ["chat_template", "store_dtype", "limit", "data_dir", "dataset_dir", "overwrite", "wait", "chunk_rows", "resume"]
    add_settings(parser, ExtractSettings, names, slot=slot_form, **OPTION_FORMS)
    parser.add_argument(
        *flag("no_resume"),
        dest="resume",
        action="store_false",
        help="discard chunks of an interrupted extraction and start the split over",
    )
    add_settings(
        parser,
        ExtractSettings,
        ["device_map", "max_memory", "load_in", "trust_remote_code", "threads", "compile"],
        **OPTION_FORMS,
    )
    return parser


def settings_of(args: argparse.Namespace, slot: str) -> ExtractSettings:
    """The parsed options of `slot`'s script as settings: its own slot, or --slot NAME of its kind
    (another published slot has its own script)."""
    target = args.slot or slot
    if target != slot and target in SCRIPTS:
        raise SettingError("slot", target, f"is a published slot; extract it with {SCRIPTS[target]}")
    return ExtractSettings.from_options(vars(args), slot=target, slot_kind=PUBLISHED_KINDS[slot])


def main(slot: str, argv: list[str] | None = None) -> int:
    return run_script(build_parser(slot), lambda args: extract(settings=settings_of(args, slot)), argv, cleanup=close_distributed)
