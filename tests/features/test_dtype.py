"""`--dtype auto`: bfloat16 on CUDA and on CPUs with bf16 matrix units (AMX, AVX512-BF16), where it
runs several times faster than float32 with the same features; float32 elsewhere, and always
available by name. bfloat16 by name on a CPU without those units is honoured with a warning:
its matrix products run tens of times slower than float32's there.

    python bert_rep_extract.py --task ED --layers all --pooling mean first              # auto
    python bert_rep_extract.py --task ED --layers all --pooling mean first --dtype float32
"""

from __future__ import annotations

import functools
import json
import logging

import pytest
import torch
from helpers import extract_argv

from fec.cli.extract import main as extract_main
from fec.features import backbones
from fec.features.backbones import SLOW_BF16_WARNING, cpu_has_bf16_matmul, extraction_dtype, pick_dtype
from fec.features.store import feature_path, load_features, manifest_path

CPU = torch.device("cpu")
# /proc/cpuinfo flags of three kinds of x86 CPU: AVX2 only, AVX-512 with its bf16 part (AMD Zen 4),
# AMX (Intel Sapphire Rapids and later).
AVX2_ONLY = "fpu sse2 ssse3 sse4_1 sse4_2 fma avx f16c avx2 bmi2"
AVX512_BF16 = AVX2_ONLY + " avx512f avx512bw avx512vl avx512_bf16 avx512_vnni"
AMX = AVX512_BF16 + " amx_bf16 amx_tile amx_int8"


def fake_cpu(monkeypatch, tmp_path, flags: str) -> None:
    """Make this a CPU with `flags`: a cpuinfo file read by the real flag check (the session's
    fixture pins cpu_has_bf16_matmul to False; this replaces it for one test)."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: {flags}\n")
    monkeypatch.setattr(backbones, "cpu_has_bf16_matmul", functools.partial(cpu_has_bf16_matmul, cpuinfo))


def test_bf16_matrix_units_are_read_from_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert cpu_has_bf16_matmul(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n")  # AVX-512 without its bf16 part
    assert not cpu_has_bf16_matmul(cpuinfo)
    assert not cpu_has_bf16_matmul(tmp_path / "missing")


def test_auto_is_bfloat16_on_a_cpu_with_bf16_matrix_units_and_float32_without(monkeypatch):
    monkeypatch.setattr(backbones, "cpu_has_bf16_matmul", lambda *args: True)
    assert pick_dtype("auto", CPU) == torch.bfloat16
    assert pick_dtype("float32", CPU) == torch.float32  # still there by name
    monkeypatch.setattr(backbones, "cpu_has_bf16_matmul", lambda *args: False)
    assert pick_dtype("auto", CPU) == torch.float32


@pytest.mark.parametrize(
    ("flags", "auto"),
    [(AVX2_ONLY, torch.float32), (AVX512_BF16, torch.bfloat16), (AMX, torch.bfloat16)],
    ids=["avx2-only", "avx512_bf16", "amx"],
)
def test_extraction_takes_bfloat16_by_itself_only_on_a_cpu_with_bf16_matrix_units(monkeypatch, tmp_path, flags, auto):
    fake_cpu(monkeypatch, tmp_path, flags)
    assert extraction_dtype("auto", "none", CPU) == auto
    assert extraction_dtype("float32", "none", CPU) == torch.float32
    assert extraction_dtype("bfloat16", "none", CPU) == torch.bfloat16  # by name, whatever the CPU
    # -compat reference keeps the published extractor's float32 on any CPU (float16 on CUDA).
    assert extraction_dtype("auto", "reference", CPU) == torch.float32


def slow_bf16_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and r.getMessage() == SLOW_BF16_WARNING]


def test_bfloat16_by_name_on_a_cpu_without_bf16_matrix_units_is_honoured_with_a_warning(monkeypatch, tmp_path, caplog):
    fake_cpu(monkeypatch, tmp_path, AVX2_ONLY)
    with caplog.at_level(logging.INFO, logger="fec.features.backbones"):
        assert extraction_dtype("bfloat16", "none", CPU) == torch.bfloat16
        assert extraction_dtype("bfloat16", "reference", CPU) == torch.bfloat16
    assert len(slow_bf16_warnings(caplog)) == 2
    assert "without bf16 matrix units" in caplog.text and "--dtype auto or float32 is faster" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fec.features.backbones"):
        extraction_dtype("auto", "none", CPU)  # float32 here
        extraction_dtype("float32", "none", CPU)
        extraction_dtype("bfloat16", "none", torch.device("cuda"))  # a GPU has its own bf16 arithmetic
    assert not slow_bf16_warnings(caplog)


@pytest.mark.parametrize("flags", [AVX512_BF16, AMX], ids=["avx512_bf16", "amx"])
def test_bfloat16_by_name_on_a_cpu_with_bf16_matrix_units_gives_no_warning(monkeypatch, tmp_path, caplog, flags):
    fake_cpu(monkeypatch, tmp_path, flags)
    with caplog.at_level(logging.INFO, logger="fec.features.backbones"):
        assert extraction_dtype("bfloat16", "none", CPU) == torch.bfloat16
        assert extraction_dtype("auto", "none", CPU) == torch.bfloat16
    assert not slow_bf16_warnings(caplog)


def test_bfloat16_features_of_an_encoder_point_where_its_float32_features_do(tiny_models, data_dir, tmp_path, capsys):
    variant = ["--layers", "all", "--pooling", "mean", "first"]
    stores = {}
    for dtype in ("float32", "bfloat16"):
        stores[dtype] = tmp_path / dtype
        argv = extract_argv(tiny_models["bert"], data_dir, stores[dtype], "train", *variant, "--dtype", dtype)
        assert extract_main("bert", argv) == 0
        # The session's CPU has no bf16 matrix units (conftest): the command warns once, for bfloat16.
        assert capsys.readouterr().err.count(SLOW_BF16_WARNING) == (dtype == "bfloat16")
    full, half = (load_features(feature_path(stores[d], "toy", "bert-mean+first-all", "train")) for d in stores)
    assert half.manifest["dtype"] == "bfloat16" and full.manifest["dtype"] == "float32"
    cosine = torch.nn.functional.cosine_similarity(full.features.float(), half.features.float(), dim=-1)
    assert cosine.min() > 0.99


def settings_of(store, mode: str) -> dict:
    path = feature_path(store, "toy", "bert", mode)
    return json.loads(manifest_path(path).read_text(encoding="utf-8"))["settings"]


def test_auto_keeps_the_dtype_a_store_was_extracted_in_by_name(tiny_models, data_dir, tmp_path, capsys):
    """A store extracted with `--dtype bfloat16` is reused by `--dtype auto` on any CPU, not refused,
    and the splits it lacks are extracted in the same dtype so that the folder's splits agree; another
    dtype by name is refused."""
    store = tmp_path / "dataset"
    argv = extract_argv(tiny_models["bert"], data_dir, store, "train", "--dtype", "bfloat16")
    assert extract_main("bert", argv) == 0
    train = feature_path(store, "toy", "bert", "train")
    written = train.stat().st_mtime_ns
    assert extract_main("bert", extract_argv(tiny_models["bert"], data_dir, store, "all", "--dtype", "auto")) == 0
    assert train.stat().st_mtime_ns == written  # reused
    assert {settings_of(store, mode)["dtype"] for mode in ("train", "valid", "test")} == {"bfloat16"}
    assert load_features(feature_path(store, "toy", "bert", "test")).manifest["dtype"] == "bfloat16"
    assert "which --dtype auto keeps for every split of this folder" in capsys.readouterr().err
    assert extract_main("bert", extract_argv(tiny_models["bert"], data_dir, store, "train")) == 2  # float32 by name
    assert "already extracted with other settings (dtype 'bfloat16' -> 'float32')" in capsys.readouterr().err
