"""Any number of fusion sources: a slot of your own is extracted under a new name by the script of
its kind, listed from the store's manifests, read by main.py through a pick, and fused beside the
published three (decoders' layer vectors first, then every encoder vector).

    python bert_rep_extract.py --task toy --slot e5 --model E5 --layers all --pooling mean
    python llama2_rep_extract.py --task toy --slot qwen --model QWEN --layers all --pooling last
    python main.py --task toy --sources llama bert roberta e5 qwen --features e5:mean:-1 qwen:last:-1,-2
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import TINY_HIDDEN, only_run
from safetensors.torch import load_file

import main as main_script
from fec.classify.fusion import DownstreamModel, FusionOptions
from fec.features.store import feature_path, load_features
from fec.features.store_slots import store_slots

TRAIN = ["-device", "cpu", "-epochs", "25", "-lr", "1e-3", "-early-stop", "5", "-seeds", "0"]
FIVE = ["--sources", "llama", "bert", "roberta", "e5", "qwen", "--features", "e5:mean:-1", "qwen:last:-1,-2"]


def train(store, out, *extra, data_dir=None) -> int:
    where = ["--dataset_dir", str(store), "--out", str(out)] + (["--data_dir", str(data_dir)] if data_dir else [])
    return main_script.main(["--task", "toy", *where, *TRAIN, *extra])


def test_a_slot_of_yours_is_a_variant_folder_recording_its_slot_and_kind(more_sources_store):
    _, store = more_sources_store
    e5 = load_features(feature_path(store, "toy", "e5-mean-all", "train"))
    qwen = load_features(feature_path(store, "toy", "qwen-last-all", "train"))
    assert (e5.manifest["slot"], e5.manifest["slot_kind"], e5.manifest["settings"]["slot_kind"]) == ("e5", "encoder", "encoder")
    assert (qwen.manifest["slot"], qwen.manifest["slot_kind"]) == ("qwen", "decoder")
    assert e5.features.shape[1:] == (1, 3, TINY_HIDDEN["e5"])  # (N, P, L, H): one pooling, every hidden state
    assert qwen.features.shape[1:] == (1, 4, TINY_HIDDEN["qwen"])
    # Which slots a store holds, of which kind, in the fusion's order: decoders, then encoders.
    assert store_slots(store, "toy") == {
        "llama": "decoder",
        "qwen": "decoder",
        "bert": "encoder",
        "roberta": "encoder",
        "e5": "encoder",
    }


def test_main_fuses_five_sources_each_read_in_its_kind(more_sources_store, tmp_path):
    _, store = more_sources_store
    assert train(store, tmp_path / "Logs", *FIVE) == 0
    run = only_run(tmp_path / "Logs")
    spec = json.loads((run / "model.json").read_text())
    assert spec["sources"] == ["llama", "qwen", "bert", "roberta", "e5"]  # the input order
    # Two decoders (the published 5 layers, qwen's two picked layers), three encoder vectors.
    assert spec["model"]["decoder_shape"] == [[5, TINY_HIDDEN["llama"]], [2, TINY_HIDDEN["qwen"]]]
    assert spec["model"]["encoder_dims"] == [TINY_HIDDEN["bert"], TINY_HIDDEN["roberta"], TINY_HIDDEN["e5"]]
    assert spec["store_dirs"] == {
        "llama": "llama",
        "qwen": "qwen-last-all",
        "bert": "bert",
        "roberta": "roberta",
        "e5": "e5-mean-all",
    }
    assert spec["feature_picks"]["qwen"]["layer_indices"] == [3, 2] and spec["feature_picks"]["e5"]["layer_indices"] == [2]
    state = load_file(str(run / "checkpoints" / "seed0.safetensors"))
    assert {f"compress_layers.{i}.0.weight" for i in range(7)} <= set(state)  # one Linear per decoder layer, 5 + 2
    assert state["compress_layers.6.0.weight"].shape == (TINY_HIDDEN["bert"], TINY_HIDDEN["qwen"])
    assert "input_mean_4" in state and "input_mean_5" not in state  # one standardisation per source
    results = json.loads((run / "results.json").read_text())
    assert results["summary"]["test"]["acc"]["mean"] > 50, "three well-separated labels: chance is 33%"
    assert "sources=llama+qwen+bert+roberta+e5" in (tmp_path / "Logs" / "runs.csv").read_text()


@pytest.mark.parametrize(
    "extra, sources",
    [
        (["--sources", "e5", "--features", "e5:mean:-1,-2"], ["e5"]),  # one encoder of yours alone
        (["--sources", "qwen", "--features", "qwen:last:-1"], ["qwen"]),  # one decoder of yours alone
        (["--sources", "bert", "e5", "--features", "e5:mean:-1", "--raw_inputs", "all"], ["bert", "e5"]),
    ],
)
def test_sources_of_yours_train_alone_or_beside_published_ones(more_sources_store, tmp_path, extra, sources):
    _, store = more_sources_store
    assert train(store, tmp_path / "Logs", *extra) == 0
    spec = json.loads((only_run(tmp_path / "Logs") / "model.json").read_text())
    assert spec["sources"] == sources


def test_stale_features_of_a_slot_of_yours_name_the_command_that_extracts_them_again(more_sources_store, tmp_path, capsys):
    data, store = more_sources_store
    edited = tmp_path / "data"
    shutil.copytree(data, edited)
    with open(edited / "toy" / "train.csv", "a", encoding="utf-8") as fh:
        fh.write("one more happy row,one more happy row,0\n")
    assert train(store, tmp_path / "Logs", "--sources", "e5", "--features", "e5:mean:-1", data_dir=edited) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "e5-mean-all/train.json: extracted from another version of" in err
    assert "python bert_rep_extract.py --slot e5 --task toy --mode train --model " in err
    assert "--pooling mean --layers all" in err and err.endswith("--overwrite")


def test_with_one_decoder_the_model_is_the_published_one_and_more_decoders_append_their_layers():
    torch.manual_seed(0)
    published = DownstreamModel(num_classes=3, decoder_shape=(5, 32), encoder_dims=[24, 20])
    torch.manual_seed(0)
    listed = DownstreamModel(num_classes=3, decoder_shape=[(5, 32)], encoder_dims=[24, 20])
    assert listed.config == published.config and listed.config["decoder_shape"] == [5, 32]  # model.json as before
    assert list(listed.state_dict()) == list(published.state_dict())  # same keys in the same order ...
    assert all(torch.equal(a, b) for a, b in zip(listed.state_dict().values(), published.state_dict().values(), strict=True))
    torch.manual_seed(0)
    two = DownstreamModel(num_classes=3, decoder_shape=[(5, 32), (2, 12)], encoder_dims=[24, 20, 16])
    # ... and a second decoder's layers follow the first's, so the published parameters come first, unchanged.
    assert torch.equal(two.state_dict()["compress_layers.0.0.weight"], published.state_dict()["compress_layers.0.0.weight"])
    assert len(two.compress_layers) == 7 and two.head_in == 10 * 10 + 32 + 12  # Gram of 7 + 3 vectors, two decoder means
    assert two.describe().count("decoder: ") == 2
    with_all = DownstreamModel(3, [(5, 32), (2, 12)], [24, 20, 16], FusionOptions(raw_inputs="all"))
    assert with_all.head_in == 100 + 32 + 12 + 24 + 20 + 16
    rebuilt = DownstreamModel.from_config(json.loads(json.dumps(two.config)))  # as model.json holds it
    rebuilt.load_state_dict(two.state_dict())
    inputs = [torch.randn(4, 5, 32), torch.randn(4, 2, 12), torch.randn(4, 24), torch.randn(4, 20), torch.randn(4, 16)]
    two.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(*inputs), two(*inputs))
