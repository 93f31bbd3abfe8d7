"""The extraction scripts' command line (`llama2_rep_extract.py`, `bert_rep_extract.py`,
`roberta_rep_extract.py`; `fec extract SLOT`).

    python llama2_rep_extract.py -device cuda -task ED -mode train     # the published command line
    python bert_rep_extract.py --task ED --mode all --preset offline   # the offline stand-in
    python llama2_rep_extract.py --task ED --compat reference          # the published recipe, quirks included
    python llama2_rep_extract.py --task ED --layers all --pooling mean last   # every layer, two poolings (fec.features.spec)
    python bert_rep_extract.py --task ED --slot e5 --model intfloat/e5-small-v2 --layers all --pooling mean   # a slot of yours
    accelerate launch --multi_gpu --num_processes 4 llama2_rep_extract.py --task ED --mode all

Here the options become one `fec.features.config.ExtractionConfig` (`extraction_config`:
`--compat` and `--preset` resolved, the variant options checked into a FeatureSpec); the work
itself (chunks, locks, data parallel, manifests) is `fec.features.extract.run`. A setting the
library refuses is reported under the option that gave it (`--max_len 300: ...`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fec.cli.options import (
    COMPILE_HELP,
    THREADS_HELP,
    ArgumentParser,
    common_options,
    config_from,
    flag,
    positive_int,
    slot_name,
    task_name,
)
from fec.cli.script import run_script
from fec.core.compat_setting import BATCH_SIZE, REFERENCE_BATCH_SIZE, resolve_extraction
from fec.core.data import MODES
from fec.core.errors import SettingError, UsageError
from fec.core.slots import KINDS, PUBLISHED_KINDS, SCRIPTS
from fec.features.backbones import LOAD_IN, SLOTS
from fec.features.config import CHUNK_ROWS, DEVICE_MAPS, ExtractionConfig
from fec.features.distributed import close_distributed
from fec.features.extract import run
from fec.features.forward_pass import CPU_MAX_TOKENS, GPU_MAX_TOKENS
from fec.features.spec import (
    LAYERS_HELP,
    POOLING_HELP,
    POOLINGS,
    STORE_DTYPES,
    FeatureSpec,
    check_prompt,
    parse_layers,
)
from fec.features.standins import PRESETS


def build_parser(slot: str) -> argparse.ArgumentParser:
    spec = SLOTS[slot]
    parser = ArgumentParser(
        description=f"Extract {slot}-slot features: {spec.description}. Reads data/TASK/MODE.csv, writes "
        f"dataset/TASK/{slot}/MODE.safetensors and a JSON manifest beside it. Every option also has its "
        "single-dash spelling (-task, -mode, -device, ...).",
        parents=[common_options()],
    )
    parser.add_argument(
        *flag("task"),
        type=task_name,
        required=True,
        help="task folder under --data_dir (letters, digits, . _ -, e.g. ED, go_emotion)",
    )
    parser.add_argument(*flag("mode"), default="all", choices=[*MODES, "all"], help="split to extract; all = every split present")
    parser.add_argument(
        *flag("model"),
        default=None,
        help=f"hub id, local model directory, or offline:NAME stand-in (default: {spec.default_model}, or the -preset's model)",
    )
    kind = PUBLISHED_KINDS[slot]
    parser.add_argument(
        *flag("slot"),
        type=slot_name,
        default=None,
        metavar="NAME",
        help=f"extract into a slot of your own named NAME (a lowercase letter, then lowercase letters, digits or _), of this "
        f"script's kind ({kind}: {KINDS[kind].description}); needs --model; always a variant "
        "(dataset/TASK/NAME-POOLINGS-LAYERS/), which main.py reads through a pick: --sources ... NAME --features "
        "NAME:POOLING:LAYERS",
    )
    parser.add_argument(
        *flag("preset"),
        default=None,
        choices=sorted(PRESETS),
        help="a named set of models, one per slot: offline = the stand-ins shipped in PyPI packages (requirements-standins.txt)",
    )
    parser.add_argument(*flag("max_len"), type=positive_int, default=200, help="truncate texts to this many tokens")
    parser.add_argument(
        *flag("batch_size"),
        type=positive_int,
        default=None,
        help=f"at most this many texts per batch (default: {BATCH_SIZE}; -compat reference: {REFERENCE_BATCH_SIZE[slot]}, as "
        f"published)",
    )
    add_compat_options(parser, slot)
    add_store_options(parser)
    add_placement_options(parser)
    return parser


def add_compat_options(parser: argparse.ArgumentParser, slot: str) -> None:
    """Batching, dtype, the compat switch (the published code's behaviour) and what it turns on."""
    spec = SLOTS[slot]
    parser.add_argument(
        *flag("max_tokens"),
        type=positive_int,
        default=None,
        help=f"at most this many padded tokens per batch (default: {CPU_MAX_TOKENS} on a CPU, whose caches then hold a "
        f"batch's activations; {GPU_MAX_TOKENS} on a GPU)",
    )
    parser.add_argument(
        *flag("dtype"),
        default="auto",
        choices=["auto", "float32", "float16", "bfloat16"],
        help="model weights dtype; auto = bfloat16 on CUDA (float16 with -compat reference, as published) and on CPUs with "
        "bf16 matrix units (AMX, AVX512-BF16; not with -compat reference), else float32",
    )
    parser.add_argument(
        *flag("compat"),
        default="none",
        choices=["none", "reference"],
        help="reference = the published extraction, quirks included: "
        + (
            "every text padded to -max_len with the '[PAD]' string (the unknown id), mean over all positions, batches of 2 in "
            "file order"
            if slot == "llama"
            else "batches of 50 in file order, padded to the longest"
        ),
    )
    parser.add_argument(
        *flag("batch_order"),
        default=None,
        choices=["length", "file"],
        help="length = length-sorted batches under -max_tokens (default), file = consecutive rows (the published order)",
    )
    layers = KINDS[PUBLISHED_KINDS[slot]].variant_layers
    published_layers = f"{layers}, the last " + ("5, as published" if slot == "llama" else "layer")
    parser.add_argument(
        *flag("layers"), nargs="+", default=None, metavar="LAYER", help=f"{LAYERS_HELP} (default: {published_layers})"
    )
    if spec.pooling == "layer_mean":
        parser.add_argument(
            *flag("llama_pooling"),
            default=None,
            choices=["masked", "unmasked_padded"],
            help="masked = mean over real tokens (default); unmasked_padded = the published mean over all -max_len positions, "
            "padding included (stored in the llama_unmasked_padded/ folder)",
        )
    add_variant_options(parser, slot)


def add_variant_options(parser: argparse.ArgumentParser, slot: str) -> None:
    """Poolings and prompts beyond the published extraction (`fec.features.spec`)."""
    parser.add_argument(
        *flag("pooling"),
        nargs="+",
        choices=POOLINGS,
        default=None,
        help="poolings to store, all from one forward pass: "
        + "; ".join(f"{k} = {v}" for k, v in POOLING_HELP.items())
        + f" (a variant without --pooling stores {KINDS[PUBLISHED_KINDS[slot]].variant_pooling}; without any of --pooling, "
        "--layers indices/all, "
        "--prompt, --chat_template the extraction is the published one)",
    )
    parser.add_argument(
        *flag("prompt"),
        action="append",
        default=None,
        metavar="TEMPLATE",
        help='wrap each text in TEMPLATE, which holds {text} once, e.g. \'This sentence : "{text}" means in one word:"\' '
        "(PromptEOL); repeat for several prompts, whose features are averaged (MetaEOL); pair with --pooling last",
    )
    parser.add_argument(
        *flag("chat_template"), action="store_true", help="render each (prompted) text with the tokenizer's chat template"
    )
    parser.add_argument(
        *flag("store_dtype"),
        default=None,
        choices=STORE_DTYPES,
        help="dtype of stored variant features (default bfloat16: half precision keeps every layer on disk affordable, "
        "and bfloat16 never overflows); the published extractions are stored in float32",
    )


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """Where the data and the store are, and which rows to extract."""
    parser.add_argument(*flag("limit"), type=positive_int, default=None, help="only the first N rows of each split (quick runs)")
    parser.add_argument(*flag("data_dir"), default="data", help="folder holding TASK/MODE.csv")
    parser.add_argument(*flag("dataset_dir"), default="dataset", help="feature store root")
    parser.add_argument(
        *flag("overwrite", "--force", "-force"),
        dest="overwrite",
        action="store_true",
        help="extract again and replace a finished split, whatever settings it was extracted with (without it, a split "
        "with the same settings is skipped and one with other settings is refused)",
    )
    parser.add_argument(
        *flag("wait"),
        action="store_true",
        help="when another process is extracting the same split (its MODE.lock), wait for it instead of stopping",
    )


def add_placement_options(parser: argparse.ArgumentParser) -> None:
    """Chunks and resume, big-model placement and quantised weights."""
    parser.add_argument(
        *flag("chunk_rows"),
        type=positive_int,
        default=CHUNK_ROWS,
        help="rows per chunk written to dataset/TASK/SLOT/MODE.parts/ while extracting (the unit of resume and of work per "
        "process)",
    )
    parser.add_argument(
        *flag("resume"),
        dest="resume",
        action="store_true",
        default=True,
        help="reuse finished chunks of an interrupted extraction with the same settings after verifying their sha256 (default)",
    )
    parser.add_argument(
        *flag("no_resume"),
        dest="resume",
        action="store_false",
        help="discard chunks of an interrupted extraction and start the split over",
    )
    parser.add_argument(
        *flag("device_map"),
        default=None,
        choices=DEVICE_MAPS,
        help="split the model over several devices with Accelerate big-model inference (GPUs, then CPU RAM, then disk); "
        "inputs go to the first module's device",
    )
    parser.add_argument(
        *flag("max_memory"), default=None, help="with -device_map: memory per device, e.g. 0=20GiB,1=20GiB,cpu=64GiB"
    )
    parser.add_argument(
        *flag("load_in"),
        default=None,
        choices=LOAD_IN,
        help="load the weights quantised to 8 or 4 bits with bitsandbytes (pip install bitsandbytes); recorded in the manifest",
    )
    parser.add_argument(*flag("trust_remote_code"), action="store_true", help="allow model code from the hub (off by default)")
    parser.add_argument(*flag("threads"), type=positive_int, default=None, help=THREADS_HELP)
    parser.add_argument(*flag("compile"), action="store_true", help=COMPILE_HELP)


def chosen_model(args: argparse.Namespace, slot: str) -> str:
    """-model wins; else the -preset's model for this slot; else the published default. A slot of
    the user's has neither: it needs -model."""
    if args.model:
        return args.model
    if args.slot not in (None, slot):
        raise SettingError("slot", args.slot, "a slot of yours needs --model (defaults and presets fill the published slots)")
    if args.preset:
        return PRESETS[args.preset][slot]
    return SLOTS[slot].default_model


def feature_spec(args: argparse.Namespace, slot: str, llama_pooling: str, kind: str = "") -> FeatureSpec:
    """The FeatureSpec of the variant options (`llama_pooling` after --compat) for `slot` of `kind`,
    refusing the combinations that cannot be extracted in one pass."""
    poolings = tuple(args.pooling or ())
    choice = parse_layers(args.layers) if args.layers is not None else None
    prompts = tuple(check_prompt(p) for p in (args.prompt or ()))
    spec = FeatureSpec(slot, poolings, choice, prompts, args.chat_template, args.store_dtype or "bfloat16", kind)
    if args.store_dtype and not spec.is_variant:
        raise UsageError(
            f"--store_dtype {args.store_dtype}: applies to variants (--pooling, --layers, --prompt); the published "
            "extractions are stored in float32"
        )
    if spec.is_variant and llama_pooling != "masked":
        raise UsageError(
            "--llama_pooling unmasked_padded (or --compat reference) is the published extraction; it does not combine "
            "with --pooling, --prompt, --chat_template or layer indices"
        )
    if len(set(poolings)) != len(poolings):
        raise UsageError(f"--pooling {' '.join(poolings)}: names a pooling twice")
    if "pooler" in poolings and (len(poolings) > 1 or choice is not None or prompts or args.chat_template):
        raise UsageError(
            "--pooling pooler: the pooler output exists for the last layer of the plain text only; ask for it on its "
            "own, without --layers, --prompt or --chat_template (the BERT slot's published feature is the pooler)"
        )
    return spec


def extraction_config(args: argparse.Namespace, slot: str) -> ExtractionConfig:
    """The command line as one ExtractionConfig for the script's `slot` (or --slot, a slot of the
    user's of the script's kind): the model chosen (-model, -preset, default), the recipe choices
    left unset taken from --compat, the variant options as a FeatureSpec."""
    target, kind = args.slot or slot, PUBLISHED_KINDS[slot]
    if target != slot and target in SCRIPTS:
        raise SettingError("slot", target, f"is a published slot; extract it with {SCRIPTS[target]}")
    llama_pooling = getattr(args, "llama_pooling", None)  # only the llama slot's parser has --llama_pooling
    recipe = resolve_extraction(slot, args.compat, llama_pooling, args.batch_order, args.batch_size)
    if args.max_tokens is not None and recipe["batch_order"] == "file":
        raise UsageError(
            f"--max_tokens {args.max_tokens}: applies to length-sorted batches; the published file order "
            "(--batch_order file, --compat reference) takes --batch_size rows at a time"
        )
    return config_from(
        ExtractionConfig,
        args,
        slot=target,
        slot_kind=kind,
        model=chosen_model(args, slot),
        modes=() if args.mode == "all" else (args.mode,),
        feature_spec=feature_spec(args, target, recipe["llama_pooling"], kind),
        **recipe,
    )


def extract(args: argparse.Namespace, slot: str) -> list[Path]:
    """Extract what the command line asks for; a setting the library refuses is named by its option."""
    return run(extraction_config(args, slot))


def main(slot: str, argv: list[str] | None = None) -> int:
    return run_script(build_parser(slot), lambda args: extract(args, slot), argv, cleanup=close_distributed)
