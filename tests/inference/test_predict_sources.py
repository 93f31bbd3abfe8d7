"""predict.py rebuilds every source from text, slots of the user's too: each backbone from its
manifest, each pick's pooling and layers, and the same probabilities the stored features give.

    python main.py --task toy --sources llama bert roberta e5 qwen --features e5:mean:-1 qwen:last:-1,-2
    python predict.py --run Logs/toy_... --text "so happy today"
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import only_run

import main as main_script
import predict as predict_script
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
