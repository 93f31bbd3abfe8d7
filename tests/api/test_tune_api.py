"""`fec.tune`: the recipe search from Python as `python tune.py` runs it, what it found handed back
as a `fec.TuneResult` (the search folder, the chosen recipe and its file, the candidates' table,
the final run); its settings checked before anything is read or written."""

from __future__ import annotations

import inspect
import json
import shutil

import pandas as pd
import pytest

import fec

SHORT = {"trials": 2, "max_seeds": 1, "final_seeds": 1, "epochs": 8, "device": "cpu"}


@pytest.fixture(scope="module")
def found(toy_search_store, tmp_path_factory) -> fec.TuneResult:
    """A short search of the toy store, its chosen recipe trained with one seed."""
    root, data = toy_search_store
    out = tmp_path_factory.mktemp("tune_api") / "Logs"
    return fec.tune("toy", data_dir=data, dataset_dir=root / "dataset", out=out, **SHORT)


def test_tune_returns_the_search_folder_and_the_candidates_table_it_wrote(found):
    assert found.path.name.startswith("tune_toy_") and (found.path / "index.html").is_file()
    table = pd.read_csv(found.path / "candidates.csv")
    pd.testing.assert_frame_equal(found.candidates, table)  # best first, as the file holds them
    assert len(found.candidates) == 2 and found.candidates["state"].iloc[0] == "complete"


def test_the_recipe_is_the_recipe_files_settings(found):
    written = json.loads(found.recipe_file.read_text())
    assert {name: value for name, value in written.items() if not name.startswith("_")} == found.recipe
    assert found.recipe["epochs"] == 8 and found.recipe_file == found.path / "recipe.json"


def test_the_final_run_is_the_chosen_recipe_trained_on_test(found):
    summary = json.loads((found.run.path / "results.json").read_text())["summary"]
    assert found.run.metrics["test"]["acc"] == summary["test"]["acc"]["mean"]
    assert found.run.config["recipe_file"] == str(found.recipe_file) and found.run.config["seeds"] == [0]


def test_a_search_recorded_before_sampler_seed_was_named_resumes(found, toy_search_store, tmp_path):
    """search.json of earlier searches says `seed` for the sampler's seed: --resume still reads it."""
    folder = tmp_path / found.path.name
    shutil.copytree(found.path, folder)
    record = json.loads((folder / "search.json").read_text())
    record = {("seed" if name == "sampler_seed" else name): value for name, value in record.items()}
    (folder / "search.json").write_text(json.dumps(record))
    root, data = toy_search_store
    again = fec.tune("toy", data_dir=data, dataset_dir=root / "dataset", out=tmp_path, resume=folder, no_final=True, **SHORT)
    assert again.path == folder and len(again.candidates) == 4 and again.run is None  # two more candidates, its study


def test_extract_adds_slots_of_yours_as_more_sources(toy_search_store, tiny_models, tmp_path):
    """`model` names one more encoder and one more decoder beside the published three: extract gives
    each its kind's search space (a decoder's prompted view too), and the search probes them and
    offers them as sources; the published slots, already extracted, are skipped."""
    root, data = toy_search_store
    shutil.copytree(root / "dataset", tmp_path / "dataset")
    models = {slot: tiny_models[slot] for slot in ("llama", "bert", "roberta", "e5", "qwen")}
    found = fec.tune(
        "toy", extract=True, model=models, slot_kind={"e5": "encoder", "qwen": "decoder"}, data_dir=data,
        dataset_dir=tmp_path / "dataset", out=tmp_path / "Logs", trials=1, max_seeds=1, epochs=8, no_final=True, device="cpu",
    )  # fmt: skip

    before, after = ({path.name for path in (place / "dataset" / "toy").iterdir()} for place in (root, tmp_path))
    added = after - before
    assert {"e5-mean+first-all", "qwen-mean+last-all"} < added and len(added) == 3  # and qwen's PromptEOL view
    manifest = json.loads((tmp_path / "dataset" / "toy" / "qwen-mean+last-all" / "train.json").read_text())
    assert manifest["slot_kind"] == "decoder" and manifest["model"] == str(tiny_models["qwen"])
    probed = pd.read_csv(found.path / "probe.csv")
    assert {"e5", "qwen"} < set(probed["slot"]) and probed["prompt"].notna().groupby(probed["slot"]).any()["qwen"]
    sources = json.loads((found.path / "config.json").read_text())["search_space"]["sources"]
    assert len(sources["e5"]) > 1 and len(sources["qwen"]) > 1  # "off" and the views the probes point to


def test_a_bad_setting_is_refused_by_name_before_anything_runs(tmp_path):
    out = tmp_path / "Logs"
    with pytest.raises(fec.SettingError) as refused:
        fec.tune("toy", max_seeds=0, out=out)
    assert refused.value.setting == "max_seeds" and str(refused.value) == "max_seeds: must be a positive integer, got 0"
    with pytest.raises(fec.SettingError, match="^model gpu=x: gpu is a slot of yours: name its kind, e.g. --slot_kind gpu="):
        fec.tune("toy", extract=True, model={"gpu": "x"}, out=out)
    with pytest.raises(fec.SettingError, match="^preset: applies to the extractions of --extract; add --extract$"):
        fec.tune(task="toy", preset="offline", out=out)
    assert not out.exists()


def test_the_signature_lists_every_setting_with_its_default():
    parameters = inspect.signature(fec.tune).parameters
    assert parameters["final_seeds"].default == 5 and parameters["sampler_seed"].kind is inspect.Parameter.KEYWORD_ONLY
    assert "sampler_seed: seed of the sampler" in fec.tune.__doc__
