"""What one extraction is asked to do (`ExtractionConfig`), and the settings that decide its
features: a finished store file records them, and a later extraction compares against them to
skip the split (same settings) or refuse to replace it (other settings, without `overwrite`).
The dtype recorded is the one asked for; `auto` keeps bfloat16 or float32 where the folder was
extracted in it by name (`keeping_stored_dtype`).

    from fec.features.config import ExtractionConfig
    from fec.features.extract import run
    run(ExtractionConfig(slot="bert", task="ED", model="offline:all-minilm-l6-v2"))

`fec.extract` (`fec.api.extract`, behind `python bert_rep_extract.py ...`) builds the config from
its settings, with `compat`, `preset` and the variant settings already resolved.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from fec.core.compat_setting import BATCH_SIZE, extraction_quirks, store_dir_of
from fec.core.errors import SettingError, UsageError
from fec.features.backbones import SLOTS, parse_max_memory
from fec.features.forward_pass import Batching, PoolingPlan
from fec.features.pooling import recorded_name
from fec.features.spec import FeatureSpec
from fec.features.store import feature_path, manifest_path
from fec.features.store_slots import MANIFEST_MODES, check_slot_name, slot_kind_of

log = logging.getLogger(__name__)

CHUNK_ROWS = 4096
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
AUTO_DTYPES = ("bfloat16", "float32")  # what dtype auto takes on some machine, and so may keep


@dataclass(frozen=True)
class ExtractionConfig:
    """Everything an extraction of one slot needs (a published slot, or one of the user's with its
    `slot_kind`, always a variant). `modes` () = every split the task has;
    `feature_spec` None = the slot's published extraction; `llama_pooling`, `batch_order` and
    `batch_size` are the recipe choices after `--compat` (`fec.core.compat_setting.resolve_extraction`);
    `max_memory` is the `0=20GiB,cpu=64GiB` text, used with a `device_map` only."""

    slot: str
    task: str
    model: str
    modes: tuple[str, ...] = ()
    compat: str = "none"
    llama_pooling: str = "masked"
    batch_order: str = "length"
    batch_size: int = BATCH_SIZE
    max_len: int = 200
    max_tokens: int | None = None  # padded tokens per batch; None = the device's default (fec.features.forward_pass.Batching)
    feature_spec: FeatureSpec | None = None
    dtype: str = "auto"
    limit: int | None = None
    data_dir: Path | str = "data"
    dataset_dir: Path | str = "dataset"
    overwrite: bool = False
    wait: bool = False
    chunk_rows: int = CHUNK_ROWS
    resume: bool = True
    device: str = "auto"
    device_map: str | None = None
    max_memory: str | None = None
    load_in: str | None = None
    trust_remote_code: bool = False
    compile: bool = False  # torch.compile the model first (fec.features.compiled)
    threads: int | None = None  # CPU threads; None = chosen from the work and the free cores (fec.core.threads)
    slot_kind: str | None = None  # a published slot's own; a slot of the user's names it (decoder, encoder)

    def __post_init__(self) -> None:
        check_slot_name(self.slot)
        object.__setattr__(self, "slot_kind", slot_kind_of(self.slot, self.slot_kind))
        if self.feature_spec is None:
            object.__setattr__(self, "feature_spec", FeatureSpec(self.slot, slot_kind=self.slot_kind))
        if (self.feature_spec.slot, self.feature_spec.slot_kind) != (self.slot, self.slot_kind):
            raise SettingError("feature_spec", None, f"is for the {self.feature_spec.slot} slot, not {self.slot}")
        if self.chunk_rows < 1:
            raise SettingError("chunk_rows", self.chunk_rows, "must be at least 1")
        if self.max_memory and not self.device_map:
            raise SettingError("max_memory", self.max_memory, "applies with device_map only (it caps each device's share)")
        parse_max_memory(self.max_memory)  # a malformed cap is refused before anything is read

    @property
    def store_dir(self) -> str:
        """The store folder under dataset_dir/task: the slot's, the published LLaMA pooling's, or a variant's."""
        return self.feature_spec.store_dir(store_dir_of(self.slot, self.llama_pooling))

    @property
    def batching(self) -> Batching:
        return Batching(self.max_len, self.batch_size, self.max_tokens, self.batch_order)

    def pooling_plan(self, layers: int) -> PoolingPlan:
        return PoolingPlan(layers, self.llama_pooling, self.feature_spec)

    def settings(self, csv_sha256: str) -> dict:
        """The settings that determine the features; equal settings mean the stored file can be
        reused. Recipe choices appear only when they differ from the corrected recipe."""
        spec = self.feature_spec
        # A slot of the user's has no published pooling, and records its kind (a published slot's name gives it).
        own = {} if self.slot in SLOTS else {"slot_kind": self.slot_kind}
        return {
            "slot": self.slot,
            **own,
            "model": self.model,
            "pooling": recorded_name(SLOTS[self.slot].pooling) if self.slot in SLOTS else "variant",
            "layers": spec.published_layers,
            "max_len": self.max_len,
            "dtype": self.dtype,
            "limit": self.limit,
            "csv_sha256": csv_sha256,
            **extraction_quirks(self.llama_pooling, self.batch_order),
            **spec.settings(),
            # Quantised weights give different features; recorded only when used, so older stores stay valid.
            **({"load_in": self.load_in} if self.load_in else {}),
        }


def stored_settings(path: Path) -> dict | None:
    """The settings a finished store file was extracted with; None when there is none (no file, or
    a file without its manifest: a write cut off before the manifest, redone)."""
    mpath = manifest_path(path)
    if not (path.is_file() and mpath.is_file()):
        return None
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    settings = manifest.get("settings") if isinstance(manifest, dict) else None
    return settings if isinstance(settings, dict) else None


def already_extracted(path: Path, settings: dict) -> bool:
    return stored_settings(path) == settings


def shown(value) -> str:
    """A setting as a message shows it: checksums cut to 12 hex digits."""
    text = repr(value)
    return text[:13] + "...'" if isinstance(value, str) and len(value) == 64 else text


def refuse_replacing(path: Path, settings: dict) -> None:
    """Finished features extracted with other settings are hours of work: refuse to replace them,
    naming what differs and the ways out."""
    stored = stored_settings(path)
    if stored is None or stored == settings:
        return
    differ = [key for key in sorted(set(stored) | set(settings)) if stored.get(key) != settings.get(key)]
    changed = [f"{key} {shown(stored.get(key))} -> {shown(settings.get(key))}" for key in differ]
    raise UsageError(
        f"{path}: already extracted with other settings ({'; '.join(changed)}); keep it and write elsewhere with "
        "--dataset_dir (or a variant: --pooling/--layers/--prompt), or replace it with --overwrite"
    )


def keeping_stored_dtype(config: ExtractionConfig) -> ExtractionConfig:
    """`dtype` auto leaves the weights' dtype to the extractor, so where a split of the store folder
    was extracted with bfloat16 or float32 by name (`--dtype bfloat16`) and otherwise the same settings,
    auto takes that dtype: the finished splits are reused rather than refused, and the splits extracted
    beside them agree with them. With `overwrite`, or with a dtype by name, the config is unchanged."""
    if config.dtype != "auto" or config.overwrite:
        return config
    wanted = {**config.settings(""), "csv_sha256": None}  # any version of the data: that check comes later
    for mode in MANIFEST_MODES:
        path = feature_path(config.dataset_dir, config.task, config.store_dir, mode)
        stored = stored_settings(path)
        if stored and stored.get("dtype") in AUTO_DTYPES and {**stored, "dtype": "auto", "csv_sha256": None} == wanted:
            log.info(
                "%s: extracted with --dtype %s, which --dtype auto keeps for every split of this folder "
                "(--overwrite to extract them in auto's dtype)",
                path,
                stored["dtype"],
            )
            return replace(config, dtype=stored["dtype"])
    return config
