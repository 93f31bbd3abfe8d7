"""`fec.train`: the fusion classifier trained from Python as `python main.py` trains it, its run
handed back as a `fec.Run`; its settings checked before anything is read or written, a recipe
file's values filling the settings the call leaves out."""

from __future__ import annotations

import inspect
import json

import pytest

import fec
from fec.classify.fusion_training import TrainConfig

FAST = {"epochs": 15, "early_stop": 5, "batch_size": 16, "lr": 3e-3, "device": "cpu"}


def test_train_returns_the_run_it_wrote_and_its_model_classifies_text(toy_store, tmp_path):
    data_dir, dataset_dir = toy_store
    run = fec.train("toy", data_dir=data_dir, dataset_dir=dataset_dir, out=tmp_path / "Logs", seeds=[0, 1], **FAST)

    assert run.path.parent == tmp_path / "Logs" and run.config["seeds"] == [0, 1]
    summary = json.loads((run.path / "results.json").read_text())["summary"]
    assert run.metrics["test"]["acc"] == summary["test"]["acc"]["mean"]
    assert run.metrics["valid"]["wf1"] == summary["valid"]["wf1"]["mean"]
    (ranked,) = run.classifier(device="cpu").predict(["we were so happy and glad to celebrate"], topk=1)
    assert ranked[0][0] in {"joyful", "sad", "angry"}


def test_a_bad_setting_is_refused_by_name_before_anything_runs(tmp_path):
    with pytest.raises(fec.SettingError) as refused:
        fec.TrainSettings(task="toy", batch_size=0)
    assert refused.value.setting == "batch_size" and str(refused.value) == "batch_size: must be a positive integer, got 0"
    with pytest.raises(fec.SettingError, match="batch_size"):
        fec.train("toy", batch_size=0, out=tmp_path / "Logs")
    assert not (tmp_path / "Logs").exists()


def test_a_keyword_wins_over_the_recipe_files_value(toy_store, tmp_path):
    data_dir, dataset_dir = toy_store
    recipe = tmp_path / "toy.json"
    recipe.write_text(json.dumps({"_about": "a note", "sources": ["llama", "roberta"], "lr": 0.01, "runs": 2}))

    run = fec.train("toy", recipe=recipe, lr=0.002, seeds=[3], data_dir=data_dir, dataset_dir=dataset_dir, out=tmp_path, epochs=3)

    args = run.config["args"]
    assert args["lr"] == 0.002 and args["sources"] == ["llama", "roberta"]  # the keyword wins, the file fills the rest
    assert run.config["seeds"] == [3] and args["runs"] is None  # seeds given replace the file's runs
    assert run.config["recipe_file"] == str(recipe)


def test_the_signature_lists_every_setting_with_its_default():
    parameters = inspect.signature(fec.train).parameters
    assert (
        parameters["batch_size"].default == TrainConfig().batch_size
        and parameters["batch_size"].kind is inspect.Parameter.KEYWORD_ONLY
    )
    assert "batch_size: training batch size" in fec.train.__doc__


def test_a_run_is_never_written_into_what_it_reads(toy_store):
    data_dir, dataset_dir = toy_store
    before = sorted(p.name for p in (data_dir / "toy").iterdir())
    with pytest.raises(fec.SettingError) as refused:
        fec.train("toy", data_dir=data_dir, dataset_dir=dataset_dir, out=data_dir / "toy" / "Logs")
    assert str(refused.value).startswith(f"out {data_dir / 'toy' / 'Logs'}: is inside the data folder of task toy")
    assert sorted(p.name for p in (data_dir / "toy").iterdir()) == before
