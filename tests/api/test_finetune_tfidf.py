"""The two baselines as library calls: `fec.tfidf` and `fec.finetune` train a run folder and return
it as a `fec.Run`; `fec.api.tfidf.lexical_source` stores the fusion's lexical source. A bad setting
is refused on construction, naming it, before anything is read or written."""

from __future__ import annotations

import inspect

import pytest
from helpers import LABELS, write_task

import fec
from fec.api.finetune import FinetuneSettings
from fec.api.tfidf import TfidfSettings, lexical_source
from fec.core.errors import SettingError


def test_tfidf_returns_the_run_with_its_metrics_and_records_its_settings(data_dir, tmp_path):
    run = fec.tfidf("toy", data_dir=data_dir, out=tmp_path / "Logs", seeds=[0, 1], C_grid=[1, 4])

    assert isinstance(run, fec.Run) and run.path.name.startswith("toy_tfidf_")
    assert run.metrics["test"]["acc"] > 70, "three well-separated labels: chance is 33%"
    assert [seed["seed"] for seed in run.results["seeds"]] == [0, 1]
    # config.json holds the settings as given, so the run can be read back without the code that made it
    settings = TfidfSettings(task="toy", data_dir=data_dir, out=tmp_path / "Logs", seeds=[0, 1], C_grid=[1, 4])
    assert run.config["args"] == settings.record() and run.config["C_grid"] == [1.0, 4.0]


def test_the_lexical_source_is_stored_beside_the_features_and_its_folder_returned(data_dir, tmp_path):
    folder = lexical_source("toy", data_dir=data_dir, dataset_dir=tmp_path / "dataset", C=2)

    assert folder == tmp_path / "dataset" / "toy" / "tfidf"
    assert all((folder / f"{split}.json").is_file() for split in ("train", "valid", "test"))
    assert (folder / "lexical_model.safetensors").is_file()


def test_finetune_returns_a_run_whose_model_classifies_text(tiny_models, tmp_path):
    data = write_task(tmp_path / "data", rows={"train": 60, "valid": 24, "test": 24})

    run = fec.finetune(
        "toy", model=str(tiny_models["bert"]), data_dir=data, out=tmp_path / "Logs", device="cpu", epochs=2, batch_size=8, lr=5e-3
    )

    assert isinstance(run, fec.Run) and run.path.name.startswith("toy_finetune_")
    assert set(run.metrics) == {"valid", "test"} and 0 <= run.metrics["test"]["acc"] <= 100
    assert run.config["finetune_config"]["epochs"] == 2 and (run.path / "checkpoints" / "seed0").is_dir()
    ((label, probability), *_) = run.classifier(device="cpu").predict(["so happy and glad"])[0]
    assert label in LABELS and 0 <= probability <= 1


def test_a_bad_setting_is_refused_naming_it_before_anything_is_written(data_dir, tmp_path):
    with pytest.raises(SettingError, match="^epochs: must be a positive integer, got 0$") as refused:
        FinetuneSettings(task="toy", epochs=0)
    assert refused.value.setting == "epochs"

    with pytest.raises(SettingError, match="^char_ngrams 5 2: MIN must not exceed MAX$"):
        fec.tfidf("toy", data_dir=data_dir, out=tmp_path / "Logs", char_ngrams=(5, 2))
    assert not (tmp_path / "Logs").exists()


def test_every_setting_is_a_keyword_with_its_default_in_the_signature():
    finetune_parameters = inspect.signature(fec.finetune).parameters
    assert finetune_parameters["epochs"].default == 15 and finetune_parameters["model"].default == "bert-large-cased"
    assert inspect.signature(fec.tfidf).parameters["analyzer"].default == "word+char"
    assert "epochs: maximum number of epochs" in fec.finetune.__doc__
