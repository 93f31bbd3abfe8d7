"""predict.py rebuilds every source from text, slots of the user's too: each backbone from its
manifest, each pick's pooling and layers, and the same probabilities the stored features give.

    python main.py --task toy --sources llama bert roberta e5 qwen --features e5:mean:-1 qwen:last:-1,-2
    python predict.py --run Logs/toy_... --text "so happy today"
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import only_run

import main as main_script
import predict as predict_script
from baselines import tfidf as tfidf_script
from fec import EmotionClassifier
from fec.classify.fusion_inputs import load_fusion_data
from fec.classify.fusion_training import predict_logits
from fec.features.picks import parse_pick

PICKS = ["e5:mean:-1", "qwen:last:-1,-2"]
SOURCES = ["llama", "bert", "roberta", "e5", "qwen"]


@pytest.fixture(scope="module")
def five_source_run(more_sources_store, tmp_path_factory) -> Path:
    _, store = more_sources_store
    out = tmp_path_factory.mktemp("Logs")
    argv = ["--task", "toy", "--device", "cpu", "--dataset_dir", str(store), "--out", str(out), "-epochs", "10", "-lr", "1e-3"]
    assert main_script.main([*argv, "--seeds", "0", "--sources", *SOURCES, "--features", *PICKS]) == 0
    return only_run(out)


def test_every_source_is_rebuilt_from_text_with_the_probabilities_of_the_stored_features(more_sources_store, five_source_run):
    data, store = more_sources_store
    clf = EmotionClassifier.load(five_source_run, device="cpu")
    assert clf.order == ["llama", "qwen-last-all:qwen:last:-1,-2", "bert", "roberta", "e5-mean-all:e5:mean:-1"]  # folder[:pick]
    texts = pd.read_csv(data / "toy" / "test.csv")["text"].tolist()
    stored = load_fusion_data(store, "toy", SOURCES, picks={p.slot: p for p in map(parse_pick, PICKS)})
    for index, key in enumerate(clf.order):  # each computed from text as it was stored (layers, pooling, bf16 rounding)
        torch.testing.assert_close(clf.sources[key].compute(texts, 64), stored.splits["test"].inputs[index], rtol=8e-3, atol=1e-3)
    expected = torch.softmax(predict_logits(clf.model, stored.splits["test"], 64), dim=1).numpy()
    np.testing.assert_allclose(clf.predict_proba(texts), expected, atol=2e-3)


def test_predict_py_classifies_with_a_slot_of_yours_and_loads_its_backbone_from_elsewhere(
    five_source_run, tiny_models, tmp_path, capsys
):
    argv = ["-run", str(five_source_run), "-device", "cpu", "-text", "so happy and glad today", "-json"]
    assert predict_script.main([*argv, "-model", f"e5={tiny_models['e5']}"]) == 0  # the same weights, from elsewhere
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert json.loads(line)["labels"][0]["label"] == "joyful"
    other = ["-model", f"e5={tiny_models['bert']}"]  # other weights than e5's features were extracted with
    assert predict_script.main([*argv, *other]) == 2
    assert "these weights differ from the e5 backbone the model was trained on" in capsys.readouterr().err


@pytest.fixture(scope="module")
def lexical_run(toy_store, tmp_path_factory) -> Path:
    """A run of the three backbones and the lexical source (last in the model's order)."""
    data, store = toy_store
    root = tmp_path_factory.mktemp("lexical")
    shutil.copytree(store, root / "dataset")
    where = ["--task", "toy", "--data_dir", str(data), "--dataset_dir", str(root / "dataset")]
    assert tfidf_script.main([*where, "--store", "--C", "4"]) == 0
    argv = [*where, "--out", str(root / "Logs"), "--device", "cpu", "--epochs", "2", "--seeds", "0"]
    assert main_script.main([*argv, "--sources", "llama", "bert", "roberta", "tfidf"]) == 0
    return only_run(root / "Logs")


def edit_model_json(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        spec = json.loads((run / "model.json").read_text())
        change(spec)
        (run / "model.json").write_text(json.dumps(spec))

    return damage


def appended_byte(run: Path) -> None:
    with open(run / "lexical_model.safetensors", "ab") as fh:
        fh.write(b"\0")


def nothing(run: Path) -> None:
    pass


@pytest.mark.parametrize(
    ("damage", "extra", "message"),
    [
        (appended_byte, [], "{run}/lexical_model.safetensors differs from the model the lexical features were made with; "
                            "train the run again"),
        (lambda run: (run / "lexical_model.safetensors").unlink(), [], "{run}/lexical_model.safetensors is missing; train the "
                                                                       "run again"),
        (edit_model_json(lambda spec: spec["feature_manifests"]["tfidf"].update(model_file="../lexical_model.safetensors")), [],
         "{run}/../lexical_model.safetensors: outside {run}; names inside it must be plain names"),
        (edit_model_json(lambda spec: spec.update(multilabel=True)), [],
         "{run}/model.json: no decision thresholds for seed 0 (did the run finish?)"),
        (edit_model_json(lambda spec: spec["feature_manifests"]["roberta"].update(dtype="bfloat15")), [],
         "{run}/model.json: the roberta backbone's dtype bfloat15: choose auto or one of"),
        (nothing, ["--model", "tfidf=elsewhere"], "--model tfidf=elsewhere: the run's tfidf source is lexical, its model kept "
                                                  "in the run folder: there is no backbone to load (slots with one: llama, "
                                                  "bert, roberta)"),
    ],
    ids=["lexical-model-altered", "lexical-model-missing", "lexical-model-outside", "thresholds-missing", "dtype-unknown",
         "model-for-the-lexical-slot"],
)  # fmt: skip
def test_every_file_of_a_run_is_checked_before_its_first_backbone_loads(
    lexical_run, tmp_path, model_loads, capsys, damage, extra, message
):
    run = tmp_path / "run"
    shutil.copytree(lexical_run, run)
    damage(run)
    capsys.readouterr()
    assert predict_script.main(["--run", str(run), "--device", "cpu", "--text", "so happy today", *extra]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: " + message.format(run=run)), err
    assert model_loads == []
