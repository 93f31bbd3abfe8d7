"""`-compat reference`: each published quirk on its own switch, differing from the corrected
path exactly where it should."""

from __future__ import annotations

import csv
import io
import json
import shutil

import torch
from helpers import extract_argv
from safetensors.torch import load_file

import main as main_script
import report
from fec.cli.extract import main
from fec.features.backbones import extraction_dtype, load_backbone
from fec.features.forward_pass import Batching, PoolingPlan, extract_features, plan_batches, reference_pad_id
from fec.features.store import feature_path, load_features

CPU = torch.device("cpu")
FAST = ["-epochs", "3", "-lr", "1e-3"]


def test_reference_pad_string_maps_to_the_unknown_id_when_not_in_the_vocabulary(tiny_models):
    llama = load_backbone(str(tiny_models["llama"]), CPU, torch.float32).tokenizer
    assert "[PAD]" not in llama.get_vocab()
    assert reference_pad_id(llama) == llama.unk_token_id
    bert = load_backbone(str(tiny_models["bert"]), CPU, torch.float32).tokenizer
    assert reference_pad_id(bert) == bert.get_vocab()["[PAD]"]


def test_unmasked_padded_mean_equals_hand_computation_including_pad_positions(tiny_models):
    backbone = load_backbone(str(tiny_models["llama"]), CPU, torch.float32)
    text, max_len = "i was so happy today", 12
    ids = backbone.tokenizer(text)["input_ids"]
    padded = torch.tensor([ids + [backbone.tokenizer.unk_token_id] * (max_len - len(ids))])
    mask = torch.tensor([[1] * len(ids) + [0] * (max_len - len(ids))])
    with torch.no_grad():
        hidden = backbone.model(input_ids=padded, attention_mask=mask, output_hidden_states=True).hidden_states
    expected = torch.stack([hidden[-k][0].mean(dim=0) for k in range(1, 6)])
    published_plan, batching = PoolingPlan(llama_pooling="unmasked_padded"), Batching(max_len=max_len)
    published, _ = extract_features(backbone, [text], "llama", plan=published_plan, batching=batching)
    corrected, _ = extract_features(backbone, [text], "llama", batching=batching)
    torch.testing.assert_close(published[0], expected, atol=1e-5, rtol=1e-5)
    real_only = torch.stack([hidden[-k][0, : len(ids)].mean(dim=0) for k in range(1, 6)])
    torch.testing.assert_close(corrected[0], real_only, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(published[0], corrected[0], atol=1e-3)


def test_reference_extraction_runs_half_precision_on_cuda_as_published_and_float32_on_cpu():
    cuda = torch.device("cuda")  # only the device's type is read: no GPU needed
    assert extraction_dtype("auto", "reference", cuda) == torch.float16
    assert extraction_dtype("auto", "reference", CPU) == torch.float32
    assert extraction_dtype("auto", "none", CPU) == torch.float32
    assert extraction_dtype("bfloat16", "reference", cuda) == torch.bfloat16  # an explicit -dtype wins


def test_file_order_batches_are_consecutive_rows_of_fixed_size():
    lengths = torch.randint(1, 200, (123,)).numpy()
    batches = plan_batches(lengths, batch_size=50, max_tokens=10, order="file")
    assert [b.tolist() for b in batches] == [list(range(0, 50)), list(range(50, 100)), list(range(100, 123))]


def test_encoder_features_do_not_change_with_the_published_batching(data_dir, tmp_path, tiny_models):
    """Padding is masked in the encoders, so the published batches of 50 give the same features."""
    for compat, out in (("none", "a"), ("reference", "b")):
        argv = extract_argv(tiny_models["bert"], data_dir, tmp_path / out, "train", "-compat", compat)
        assert main("bert", argv) == 0
    corrected = load_features(feature_path(tmp_path / "a", "toy", "bert", "train"))
    published = load_features(feature_path(tmp_path / "b", "toy", "bert", "train"))
    torch.testing.assert_close(published.features, corrected.features, atol=1e-5, rtol=1e-5)
    assert published.manifest["batch_order"] == "file" and published.manifest["batch_size"] == 50
    assert published.manifest["compat"] == "reference" and corrected.manifest["compat"] == "none"


def test_reference_llama_extraction_is_stored_beside_the_corrected_one(toy_store, tmp_path, tiny_models):
    data_dir, dataset_dir = toy_store
    store = tmp_path / "dataset"
    shutil.copytree(dataset_dir, store)
    before = feature_path(store, "toy", "llama", "train").read_bytes()
    argv = extract_argv(tiny_models["llama"], data_dir, store, "all", "-compat", "reference", "-max_len", "40")
    assert main("llama", argv) == 0
    assert feature_path(store, "toy", "llama", "train").read_bytes() == before
    published = load_features(feature_path(store, "toy", "llama_unmasked_padded", "train"))
    m = published.manifest
    assert (m["llama_pooling"], m["pad_token"], m["batch_size"], m["batch_order"]) == ("unmasked_padded", "[PAD]", 2, "file")
    assert m["extraction"]["padded_tokens"] == 40 * m["rows"]


def test_main_reference_recipe_reads_the_published_inputs_and_logs_its_recipe(toy_store, tmp_path, tiny_models, capsys):
    data_dir, dataset_dir = toy_store
    store = tmp_path / "dataset"
    shutil.copytree(dataset_dir, store)
    argv = extract_argv(tiny_models["llama"], data_dir, store, "all", "-compat", "reference", "-max_len", "40")
    assert main("llama", argv) == 0
    logs = tmp_path / "Logs"
    common = ["-dataset", "toy", "-device", "cpu", "-dataset_dir", str(store), "-out", str(logs), *FAST]
    assert main_script.main([*common, "-compat", "reference"]) == 0
    assert main_script.main(common) == 0
    assert main_script.main([*common, "-bert_source", "roberta"]) == 0
    assert (
        main_script.main(
            [*common, "-llama_pooling", "unmasked_padded", "-bert_source", "roberta", "-norm", "none", "-seeds", "1"]
        )
        == 0
    )
    rows = list(csv.DictReader(open(logs / "runs.csv")))
    assert [r["compat"] for r in rows] == ["reference", "corrected", "custom:bert_source=roberta", "reference"]
    capsys.readouterr()
    assert report.main([str(logs), "-format", "csv"]) == 0
    pooled = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    # The switch and its four explicit options are one recipe: their seeds pool into one row.
    assert [(r["command"], r["seeds"]) for r in pooled] == [
        ("python main.py -dataset toy -compat reference -epochs 3 -lr 0.001", "0 1"),
        ("python main.py -dataset toy -epochs 3 -lr 0.001", "0"),
        ("python main.py -dataset toy -bert_source roberta -epochs 3 -lr 0.001", "0"),
    ]
    reference_dir = logs / rows[0]["run_dir"].split("/")[-1]
    model = json.loads((reference_dir / "model.json").read_text())
    roberta_width = load_features(feature_path(store, "toy", "roberta", "train")).features.shape[1]
    assert model["model"]["encoder_dims"] == [roberta_width, roberta_width]  # RoBERTa in BERT's place
    assert model["store_dirs"] == {"llama": "llama_unmasked_padded", "bert": "roberta", "roberta": "roberta"}
    state = load_file(str(reference_dir / "checkpoints" / "seed0.safetensors"))
    assert torch.equal(state["input_mean_0"], torch.zeros_like(state["input_mean_0"]))  # raw inputs (-norm none)
    assert model["norm"] == "none" and model["model"]["pn"] == "sigmoid"
