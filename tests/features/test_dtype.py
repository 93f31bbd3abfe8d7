"""`--dtype auto`: bfloat16 on CUDA and on CPUs with bf16 matrix units (AMX, AVX512-BF16), where it
runs several times faster than float32 with the same features; float32 elsewhere, and always
available by name.

    python bert_rep_extract.py --task ED --layers all --pooling mean first              # auto
    python bert_rep_extract.py --task ED --layers all --pooling mean first --dtype float32
"""

from __future__ import annotations

import torch
from helpers import extract_argv

from fec.cli.extract import main as extract_main
from fec.features import backbones
from fec.features.backbones import cpu_has_bf16_matmul, pick_dtype
from fec.features.store import feature_path, load_features

CPU = torch.device("cpu")


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


def test_bfloat16_features_of_an_encoder_point_where_its_float32_features_do(tiny_models, data_dir, tmp_path):
    variant = ["--layers", "all", "--pooling", "mean", "first"]
    stores = {}
    for dtype in ("float32", "bfloat16"):
        stores[dtype] = tmp_path / dtype
        argv = extract_argv(tiny_models["bert"], data_dir, stores[dtype], "train", *variant, "--dtype", dtype)
        assert extract_main("bert", argv) == 0
    full, half = (load_features(feature_path(stores[d], "toy", "bert-mean+first-all", "train")) for d in stores)
    assert half.manifest["dtype"] == "bfloat16" and full.manifest["dtype"] == "float32"
    cosine = torch.nn.functional.cosine_similarity(full.features.float(), half.features.float(), dim=-1)
    assert cosine.min() > 0.99
