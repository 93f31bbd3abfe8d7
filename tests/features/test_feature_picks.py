"""The fusion reads any stored variant: a pooling and layers per slot (`--features`), a prompted
folder, a recipe file; predict.py rebuilds the same features from text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import extract_argv, only_run

import main as main_script
from fec import EmotionClassifier
from fec.classify.fusion_inputs import load_fusion_data
from fec.classify.fusion_training import predict_logits
from fec.cli.extract import main as extract_main
from fec.features.picks import parse_pick

PROMPT = 'this sentence : "{text}" means in one word:"'
TRAIN = ["-device", "cpu", "-epochs", "3", "-lr", "1e-3", "-seeds", "0"]


@pytest.fixture(scope="module")
def variant_store(tmp_path_factory, tiny_models) -> tuple[Path, Path]:
    """(data_dir, dataset_dir): every layer of the llama and roberta slots with two poolings, a
    prompted llama folder and the published bert folder."""
    from helpers import write_task

    root = tmp_path_factory.mktemp("variants")
    data, store = write_task(root / "data"), root / "dataset"
    every = ["--layers", "all", "--pooling", "mean", "last"]
    assert extract_main("llama", extract_argv(tiny_models["llama"], data, store, "all", *every)) == 0
    prompted = ["--pooling", "last", "--prompt", PROMPT]
    assert extract_main("llama", extract_argv(tiny_models["llama"], data, store, "all", *prompted)) == 0
    encoder = ["--layers", "all", "--pooling", "mean"]
    assert extract_main("roberta", extract_argv(tiny_models["roberta"], data, store, "all", *encoder)) == 0
    assert extract_main("bert", extract_argv(tiny_models["bert"], data, store, "all")) == 0
    return data, store


def prompted_folder(store: Path) -> str:
    (folder,) = [p.name for p in (store / "toy").iterdir() if "-p" in p.name]
    return folder


def train(store: Path, out: Path, *extra: str) -> Path:
    assert main_script.main(["--task", "toy", "--dataset_dir", str(store), "--out", str(out), *TRAIN, *extra]) == 0
    return only_run(out)


def test_picks_choose_pooling_and_layers_and_predict_rebuilds_them(variant_store, tmp_path):
    data, store = variant_store
    run = train(store, tmp_path / "Logs", "--features", "llama:last:-1,-3", "roberta:mean:-1,-2")
    spec = json.loads((run / "model.json").read_text())
    assert spec["model"]["decoder_shape"] == [2, 32]  # two llama layers, each its own vector of the fusion
    assert spec["feature_picks"]["llama"]["layer_indices"] == [6, 4]
    assert spec["store_dirs"] == {"llama": "llama-mean+last-all", "bert": "bert", "roberta": "roberta-mean-all"}
    clf = EmotionClassifier.load(run, device="cpu")
    texts = pd.read_csv(data / "toy" / "test.csv")["text"].tolist()
    picks = {"llama": parse_pick("llama:last:-1,-3"), "roberta": parse_pick("roberta:mean:-1,-2")}
    stored = load_fusion_data(store, "toy", ["llama", "bert", "roberta"], picks=picks)
    # Each source computed from text is the stored pick (same layers, pooling, bf16 rounding).
    for index, key in enumerate(clf.order):
        computed = clf.sources[key].compute(texts, 64)
        torch.testing.assert_close(computed, stored.splits["test"].inputs[index], rtol=8e-3, atol=1e-3)
    expected = torch.softmax(predict_logits(clf.model, stored.splits["test"], 64), dim=1).numpy()
    np.testing.assert_allclose(clf.predict_proba(texts), expected, atol=2e-3)


def test_a_prompted_folder_is_picked_by_name_and_its_prompt_reaches_predict(variant_store, tmp_path):
    data, store = variant_store
    folder = prompted_folder(store)
    run = train(store, tmp_path / "Logs", "--sources", "llama", "--features", f"llama:last:-1@{folder}")
    assert json.loads((run / "model.json").read_text())["feature_picks"]["llama"]["prompts"] == [PROMPT]
    clf = EmotionClassifier.load(run, device="cpu")
    texts = pd.read_csv(data / "toy" / "valid.csv")["text"].tolist()
    stored = load_fusion_data(store, "toy", ["llama"], picks={"llama": parse_pick(f"llama:last:-1@{folder}")})
    expected = torch.softmax(predict_logits(clf.model, stored.splits["valid"], 64), dim=1).numpy()
    np.testing.assert_allclose(clf.predict_proba(texts), expected, atol=2e-3)


def test_a_recipe_file_sets_options_and_the_command_line_wins(variant_store, tmp_path):
    _, store = variant_store
    recipe = tmp_path / "toy-best.json"
    values = {"_about": "found on valid", "features": ["llama:mean:-2"], "sources": ["llama"], "lr": 0.01, "runs": 3}
    recipe.write_text(json.dumps(values))
    run = train(store, tmp_path / "Logs", "--recipe", str(recipe), "--lr", "0.002")  # and -seeds 0
    config = json.loads((run / "config.json").read_text())
    assert config["recipe_file"] == str(recipe) and config["compat"] == "corrected" and config["args"]["lr"] == 0.002
    assert config["seeds"] == [0] and config["args"]["runs"] is None  # the command line's seeds replace the file's runs
    assert json.loads((run / "model.json").read_text())["feature_picks"]["llama"]["layer_indices"] == [5]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--features", "llama:mean:-1", "llama:last:-1"], "one pick per slot"),
        (["--features", "llama:max:-1"], "write SLOT:POOLING:LAYERS"),
        (["--features", "roberta:last:-1"], "no roberta variant"),
        (["--features", "llama:mean:40,"], "no llama variant"),
        (["--sources", "bert", "--features", "bert:mean:-1@bert"], "published extraction"),
        (["--features", "llama:mean:-1", "--compat", "reference"], "published folders only"),
    ],
)
def test_bad_picks_are_one_line_errors(variant_store, tmp_path, capsys, extra, message):
    _, store = variant_store
    assert main_script.main(["--task", "toy", "--dataset_dir", str(store), "--out", str(tmp_path), *TRAIN, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"nope": 1}', "'nope' is not an option"),
        ('{"lr": "fast"}', "lr"),
        ('{"pn": "cube"}', "not one of"),
        ("[1]", "JSON object"),
    ],
)
def test_bad_recipe_files_are_one_line_errors(variant_store, tmp_path, capsys, content, message):
    _, store = variant_store
    recipe = tmp_path / "bad.json"
    recipe.write_text(content)
    assert main_script.main(["--task", "toy", "--dataset_dir", str(store), "--recipe", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(recipe) in err[0]


@pytest.mark.parametrize("recipe", sorted((Path(__file__).parents[2] / "recipes").glob("*.json")), ids=lambda p: p.name)
def test_every_shipped_recipe_is_read_as_the_command_line_would_be(recipe):
    from fec.api.train import recipe_values

    written = json.loads(recipe.read_text())["features"]
    assert recipe_values(recipe)["features"] == written  # each pick parsed and written back, as main.py --features would


def test_a_pick_of_one_layer_index_is_written_so_that_it_reads_back_as_that_index():
    for text in ("llama:last:29,@llama-last-all", "roberta:mean:12,", "llama:mean:-1", "llama:mean:5", "bert:first:3,4"):
        assert parse_pick(text).text == text
        assert parse_pick(parse_pick(text).text) == parse_pick(text)
    assert parse_pick("llama:last:29,").layers != parse_pick("llama:last:29").layers  # an index, not the last 29
