"""Backbone slots and model loading: which model fills each slot, and how it is pooled.

| slot      | published default               | pooling (`fec.features.pooling`)    | features |
|-----------|---------------------------------|-------------------------------------|----------|
| `llama`   | meta-llama/Llama-2-7b-chat-hf   | `mean` of each of the last L layers | (L, H)   |
| `bert`    | bert-large-uncased              | `pooler`                            | (H,)     |
| `roberta` | roberta-large                   | `first` of the last layer           | (H,)     |

A model is named by a hub id, a local directory, or an offline stand-in (`offline:NAME`, see
`fec.features.standins`). Models load as the base model (`AutoModel`: no LM head), without
`trust_remote_code` unless asked for.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from fec.core.errors import ModelError, SettingError, StandinError
from fec.core.files import WEIGHT_SUFFIXES
from fec.features.pooling import hidden_state_choices
from fec.features.spec import FeatureSpec

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
LOAD_IN = ("8bit", "4bit")
# Model types whose position ids start after the padding index (RoBERTa's scheme).
OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "mpnet", "longformer"}


@dataclass(frozen=True)
class SlotSpec:
    """A published slot: its default model, its published extraction's pooling (a name of
    `fec.features.pooling.POOLINGS`) and what that extraction gives, in words."""

    name: str
    default_model: str
    pooling: str
    description: str


SLOTS = {  # keyed and ordered as fec.core.slots.SLOT_NAMES
    "llama": SlotSpec(
        "llama",
        "meta-llama/Llama-2-7b-chat-hf",
        "mean",
        "decoder LLM: masked mean over real tokens of each of the last L hidden layers -> (N, L, H)",
    ),
    "bert": SlotSpec(
        "bert",
        "bert-large-uncased",
        "pooler",
        "encoder: pooler_output (tanh(W h_CLS)) when the model has a pooler, else the first-token state -> (N, H)",
    ),
    "roberta": SlotSpec(
        "roberta",
        "roberta-large",
        "first",
        "encoder: first-token (<s>) state of the last layer -> (N, H)",
    ),
}


def resolve_model(spec: str) -> Path | str:
    """A local directory for `offline:NAME` and existing paths; hub ids are returned unchanged."""
    if spec.startswith("offline:"):
        from fec.features import standins

        try:
            return standins.resolve_standin(spec)
        except StandinError as err:
            raise ModelError(str(err)) from err
    path = Path(spec).expanduser()
    if path.is_dir():
        check_model_dir(path)
        return path.resolve()
    if path.exists() or spec.startswith((".", "/", "~")):
        raise ModelError(f"{spec}: no such model directory")
    return spec


def check_model_dir(path: Path) -> None:
    """A saved model names its architecture in config.json (`model_type`; without it transformers
    would guess from the folder's name) and holds weights whose safetensors headers read: checked
    before anything loads, so a broken model fails before any work, not after loading has begun."""
    config = path / "config.json"
    if not config.is_file():
        raise ModelError(f"{path}: not a model directory (no config.json)")
    try:
        fields = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{config}: not a readable JSON config ({err})") from err
    if not isinstance(fields, dict) or not fields.get("model_type"):
        raise ModelError(
            f"{config}: no model_type, so transformers cannot tell which architecture to build "
            "(save the model with save_pretrained)"
        )
    if not any(p.name.endswith(WEIGHT_SUFFIXES) for p in path.rglob("*") if p.is_file()):
        raise ModelError(f"{path}: no weights file ({', '.join('*' + suffix for suffix in WEIGHT_SUFFIXES)})")
    for weights in sorted(path.glob("*.safetensors")):  # a cut or foreign file fails here, not halfway through a load
        check_safetensors_header(weights)


def check_safetensors_header(path: Path) -> None:
    """A safetensors file whose header reads and whose tensors lie within the file (nothing loaded)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except SafetensorError as err:
        raise ModelError(f"{path}: not a safetensors file ({err})") from err
    except OSError as err:
        raise ModelError(f"{path}: cannot be read ({err.strerror or err})") from err


def model_fingerprint(resolved: Path | str) -> dict:
    """What identifies the weights: sha256 of the weight files (local) or the hub revision.

    predict-time checks compare this against the feature manifests, so it must be computed
    from the files themselves, not from a name.
    """
    if isinstance(resolved, Path):
        digest = hashlib.sha256()
        files = sorted(p for p in resolved.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
        for file in files:
            digest.update(file.relative_to(resolved).as_posix().encode())
            with open(file, "rb") as fh:
                while block := fh.read(1 << 22):
                    digest.update(block)
        return {"kind": "local", "weights_sha256": digest.hexdigest(), "files": len(files)}
    try:
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(resolved, local_files_only=True))
        return {"kind": "hub", "revision": snapshot.name}
    except Exception as err:  # the revision is provenance, not a reason to fail an extraction
        log.warning("could not determine the hub revision of %s (%s)", resolved, err)
        return {"kind": "hub", "revision": None}


def pick_device(requested: str | None) -> torch.device:
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SettingError("device", requested, "CUDA is not available on this machine; use cpu")
    return device


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """`auto` is bfloat16 on CUDA (fp16's range overflows on LLaMA's massive activations) and on a
    CPU with bf16 matrix units (several times float32's speed there, with the same features to the
    probes: docs/features.md), else float32."""
    if requested == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu" and cpu_has_bf16_matmul():
            return torch.bfloat16
        return torch.float32
    if requested not in DTYPES:
        raise SettingError("dtype", requested, f"choose auto or one of {', '.join(DTYPES)}")
    return DTYPES[requested]


BF16_CPU_FLAGS = re.compile(r"\b(amx_bf16|avx512_bf16)\b")


def cpu_has_bf16_matmul(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (x86 AMX or AVX512-BF16, from the
    kernel's CPU flags); elsewhere False, and `auto` stays float32."""
    try:
        return bool(BF16_CPU_FLAGS.search(cpuinfo.read_text(encoding="utf-8", errors="replace")))
    except OSError:
        return False


@dataclass
class Backbone:
    tokenizer: object
    model: torch.nn.Module
    spec: str
    resolved: str
    fingerprint: dict
    pad_token: str
    device: torch.device
    dtype: torch.dtype
    missing_weights: list[str]

    @property
    def has_trained_pooler(self) -> bool:
        """A pooler whose weights came from the checkpoint (transformers builds a random one otherwise)."""
        return getattr(self.model, "pooler", None) is not None and not any(k.startswith("pooler.") for k in self.missing_weights)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_hidden_states(self) -> int:
        """Entries in `hidden_states`: the embeddings plus one per layer."""
        return int(self.model.config.num_hidden_layers) + 1

    @property
    def max_tokens(self) -> int | None:
        """The longest input the model has position embeddings for (None: no fixed limit known).
        RoBERTa-style models number positions from padding_idx + 1, so two of their slots are unusable."""
        config = self.model.config
        limit = getattr(config, "max_position_embeddings", None)
        if not isinstance(limit, int):
            return None
        if config.model_type in OFFSET_POSITIONS:
            limit -= int(config.pad_token_id or 0) + 1
        return limit


def ensure_pad_token(tokenizer) -> str:
    """Give a tokenizer without a pad token one that exists in its vocabulary.

    LLaMA tokenizers ship without one; the published code set the string "[PAD]", which is not
    in LLaMA's vocabulary. Padding is masked out of every pooled feature here, so which real
    token pads does not change the features; unk (else eos, else bos) keeps it in-vocabulary.
    """
    if tokenizer.pad_token_id is None:
        for candidate in (tokenizer.unk_token, tokenizer.eos_token, tokenizer.bos_token):
            if candidate is not None:
                tokenizer.pad_token = candidate
                break
        else:
            raise ModelError("the tokenizer has no pad, unk, eos or bos token to pad with")
    return tokenizer.pad_token


def load_backbone(
    spec: str,
    device: torch.device,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
    *,
    device_map: str | None = None,
    load_in: str | None = None,
    max_memory: dict | None = None,
) -> Backbone:
    """Load `spec` as a base model (no LM head) with its tokenizer, on `device` in `dtype`.

    `device_map` places the layers with Accelerate's big-model inference (GPUs, then CPU RAM,
    then disk; `max_memory` caps each device) and `load_in` quantises the weights with
    bitsandbytes; such a model is never moved after loading, and `Backbone.device` is the device
    of its first module, where inputs go.
    """
    from transformers import AutoModel, AutoTokenizer

    resolved = resolve_model(spec)
    kwargs = placement_options(device, dtype, device_map, load_in, max_memory)
    log.info(
        "loading %s (%s) on %s as %s%s",
        spec,
        resolved,
        kwargs.get("device_map", device),
        str(dtype).removeprefix("torch."),
        f", {load_in} weights" if load_in else "",
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(resolved), trust_remote_code=trust_remote_code)
        model, info = AutoModel.from_pretrained(
            str(resolved), dtype=dtype, trust_remote_code=trust_remote_code, output_loading_info=True, **kwargs
        )
    except (OSError, ValueError, ImportError) as err:
        raise ModelError(f"{spec}: cannot load ({str(err).splitlines()[0]})") from err
    missing = sorted(info.get("missing_keys", []))
    randomly_initialised = [k for k in missing if not k.startswith("pooler.")]
    if randomly_initialised:
        log.warning(
            "%s: %d weights are not in the checkpoint and were initialised randomly: %s",
            spec,
            len(randomly_initialised),
            ", ".join(randomly_initialised[:5]),
        )
    model.eval()
    if "device_map" in kwargs:
        hf_map = getattr(model, "hf_device_map", None) or {"": str(device)}
        device = _as_device(next(iter(hf_map.values())))
        log.info("%s placed as %s", spec, placement(model) or {str(device): 1})
    else:
        model.to(device)
    pad = ensure_pad_token(tokenizer)
    return Backbone(tokenizer, model, spec, str(resolved), model_fingerprint(resolved), pad, device, dtype, missing)


def parse_max_memory(text: str | None) -> dict | None:
    """`0=20GiB,1=20GiB,cpu=64GiB` -> {0: "20GiB", 1: "20GiB", "cpu": "64GiB"} (with a device_map)."""
    if not text:
        return None
    out = {}
    for item in text.split(","):
        name, sep, size = item.partition("=")
        if not sep or not name.strip() or not size.strip():
            raise SettingError("max_memory", text, "write DEVICE=SIZE pairs separated by commas, e.g. 0=20GiB,cpu=64GiB")
        name = name.strip()
        out[int(name) if name.isdigit() else name] = size.strip()
    return out


def placement_options(
    device: torch.device, dtype: torch.dtype, device_map: str | None, load_in: str | None, max_memory: dict | None
) -> dict:
    """`from_pretrained` options for Accelerate placement and bitsandbytes weights (none without them)."""
    if device_map is None and load_in is None:
        return {}
    # Quantised weights cannot be moved after loading: without a map they go straight onto -device.
    kwargs: dict = {"device_map": device_map or {"": (device.index or 0) if device.type == "cuda" else str(device)}}
    if max_memory:
        kwargs["max_memory"] = max_memory
    if load_in:
        kwargs["quantization_config"] = quantization_config(load_in, dtype)
    return kwargs


def model_config(resolved, trust_remote_code: bool = False):
    """The model's transformers configuration alone (no weights): what can be checked before
    loading. A hub id that cannot be found (or reached) is a ModelError naming it."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(resolved), trust_remote_code=trust_remote_code)
    except OSError as err:
        reason = " ".join(str(err).split())[:200]
        raise ModelError(f"{resolved}: not a local model folder, and not a model the hub gives ({reason})") from err


def check_spec_fits(spec: FeatureSpec, config) -> None:
    """Refuse what the model's configuration (`model_config`) alone rules out for `spec`, before
    the weights load: layer indices it does not have, and the pooler on a model without one (a decoder)."""
    if spec.layers is not None and not spec.layers.every:
        spec.layers.resolve(int(config.num_hidden_layers) + 1)
    if "pooler" in spec.poolings and not has_pooler(config):
        choices = hidden_state_choices(spec.slot_kind)
        raise SettingError("pooling", "pooler", f"{config.model_type} models have no pooler (choose {choices})")


def has_pooler(config) -> bool:
    """Whether the base model transformers builds for `config` has a pooler layer (BERT, RoBERTa,
    MPNet do; decoders and DistilBERT do not): its class takes `add_pooling_layer`."""
    import inspect

    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        model_class = MODEL_MAPPING[type(config)]
    except KeyError:  # a model type transformers does not map (remote code): the weights will tell
        return True
    return "add_pooling_layer" in inspect.signature(model_class.__init__).parameters


def bitsandbytes_installed() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def check_load_in(load_in: str | None) -> None:
    """Refuse a quantisation the installation cannot do, before anything loads or is written."""
    if load_in is None:
        return
    if load_in not in LOAD_IN:
        raise SettingError("load_in", load_in, f"choose {' or '.join(LOAD_IN)}")
    if not bitsandbytes_installed():
        raise SettingError("load_in", load_in, "needs the bitsandbytes package, which is not installed: pip install bitsandbytes")


def quantization_config(load_in: str, dtype: torch.dtype):
    """A BitsAndBytesConfig for `load_in`, or a one-line SettingError when bitsandbytes is missing."""
    check_load_in(load_in)
    from transformers import BitsAndBytesConfig

    if load_in == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = dtype if dtype != torch.float32 else torch.bfloat16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)


def _as_device(where) -> torch.device:
    if isinstance(where, int):
        return torch.device("cuda", where)
    if where in ("disk", "meta"):
        return torch.device("cpu")
    return torch.device(where)


def placement(model) -> dict[str, int]:
    """Modules per device of a dispatched model (`hf_device_map`), e.g. {"cuda:0": 17, "cuda:1": 16}."""
    counts: dict[str, int] = {}
    for where in getattr(model, "hf_device_map", {}).values():
        name = f"cuda:{where}" if isinstance(where, int) else str(where)
        counts[name] = counts.get(name, 0) + 1
    return counts


SLOW_BF16_WARNING = (
    "--dtype bfloat16 on a CPU without bf16 matrix units (no amx_bf16 or avx512_bf16 flag in /proc/cpuinfo): "
    "bfloat16 matrix products run about 40-100x slower than float32 there (measured on one thread with AVX2 "
    "kernels), so extraction crawls; --dtype auto or float32 is faster"
)


def extraction_dtype(requested: str, compat: str, device: torch.device) -> torch.dtype:
    """The weights' dtype: `-dtype` when given; else, with `-compat reference`, float16 on CUDA as the
    published extractor ran (float32 elsewhere, where half precision is slow or missing); else `pick_dtype`'s
    auto (bfloat16 on CUDA and on CPUs with bf16 matrix units, else float32).

    Every extraction picks its dtype here, once: a bfloat16 asked for by name on a CPU without bf16
    matrix units is honoured, with a warning that float32 is much faster there."""
    if requested == "auto" and compat == "reference":
        return torch.float16 if device.type == "cuda" else torch.float32
    dtype = pick_dtype(requested, device)
    if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_has_bf16_matmul():
        log.warning(SLOW_BF16_WARNING)
    return dtype
