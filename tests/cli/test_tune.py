"""`tune.py`: from a researcher's own file to a tuned and trained run in one command, the recipe
chosen on train and valid alone (test is read once, by the final run), the search resumable."""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers import LABELS, make_text, write_task

import predict as predict_script
import prepare_data as prepare_data_script
import report as report_script
from baselines import tfidf as tfidf_script
from fec.classify.candidates import SearchSpace
from fec.classify.fusion_training import TrainConfig
from fec.classify.search import Search, open_study, run_search
from fec.cli import tune
from fec.cli.recipe_file import recipe_file_options
from fec.cli.train import RECIPE_FILE_OPTIONS, build_parser
from fec.runs.tune_folder import candidate_rows

SMALL = ["--trials", "6", "--max_seeds", "2", "--epochs", "8", "--device", "cpu"]


def models(tiny_models: dict) -> list[str]:
    return ["--model", *(f"{slot}={tiny_models[slot]}" for slot in ("llama", "bert", "roberta"))]


def search(root: Path, data: Path, task: str, *extra: str) -> Path:
    """tune.py on `task` with its store and Logs under `root`; the search folder it wrote."""
    out = root / "Logs"
    argv = ["--task", task, "--data_dir", str(data), "--dataset_dir", str(root / "dataset"), "--out", str(out), *SMALL, *extra]
    assert tune.main(argv) == 0
    return max(out.glob(f"tune_{task}_*"))


def own_jsonl(path: Path, rows: int = 150) -> Path:
    rng = random.Random(1)
    lines = [json.dumps({"text": make_text(rng, LABELS[i % 3]), "label": LABELS[i % 3]}) for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_jsonl_file_becomes_a_tuned_run_that_predicts(tmp_path, tiny_models, capsys):
    data = tmp_path / "data"
    jsonl = own_jsonl(tmp_path / "mine.jsonl")
    assert prepare_data_script.main(["--from", str(jsonl), "--task", "mine", "--data-dir", str(data)]) == 0
    folder = search(tmp_path, data, "mine", "--extract", *models(tiny_models), "--final_seeds", "2")

    rows = list(csv.DictReader(open(folder / "candidates.csv")))
    assert len(rows) == 6 and {row["state"] for row in rows} <= {"complete", "pruned"}
    assert all(len(row["scores"].split()) == int(row["seeds"]) for row in rows)
    recipe = json.loads((folder / "recipe.json").read_text())
    assert recipe["_found_by"][0].startswith("tune.py: 6 candidates compared by acc on valid (test not read)")
    recipe_file_options(build_parser(), folder / "recipe.json", RECIPE_FILE_OPTIONS)  # main.py reads it as it is
    config = json.loads((folder / "config.json").read_text())
    assert config["search_space"]["sources"]["tfidf"] == ["off", "published"]  # the lexical source, stored by --extract
    final = Path(config["final_run"])
    results = json.loads((final / "results.json").read_text())
    assert [seed["seed"] for seed in results["seeds"]] == [0, 1] and results["summary"]["test"]["acc"]["mean"] > 50
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert "Recipe search: mine" in page and "Chosen recipe" in page and "data:image/png;base64," in page
    capsys.readouterr()
    assert predict_script.main(["--run", str(final), "--text", "i was so happy and glad today", "--device", "cpu"]) == 0
    assert "joyful" in capsys.readouterr().out
    assert report_script.main([str(tmp_path / "Logs"), "--task", "mine", "--format", "csv"]) == 0
    (row,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert row["runs"] == final.name and "-features" in row["command"]  # the tuned run is a row of the report


@pytest.fixture(scope="module")
def toy_search_store(tmp_path_factory, tiny_models) -> tuple[Path, Path]:
    """(root, data) with the default search space extracted for `toy` by a first short search."""
    root = tmp_path_factory.mktemp("tuned")
    data = write_task(root / "data")
    search(root, data, "toy", "--extract", *models(tiny_models), "--trials", "1", "--max_seeds", "1", "--no_final")
    return root, data


def permuted_test_labels(data: Path, copy: Path) -> Path:
    """A copy of the data whose test labels are shuffled: what a search that reads test would notice."""
    shutil.copytree(data, copy)
    frame = pd.read_csv(copy / "toy" / "test.csv")
    frame["label"] = frame["label"].sample(frac=1.0, random_state=3).to_numpy()
    assert (frame["label"] != pd.read_csv(data / "toy" / "test.csv")["label"]).any()
    frame.to_csv(copy / "toy" / "test.csv", index=False)
    return copy


def test_the_search_never_reads_test(toy_search_store, tiny_models, tmp_path):
    root, data = toy_search_store
    shuffled_root = tmp_path / "shuffled"
    shuffled = permuted_test_labels(data, shuffled_root / "data")
    search(shuffled_root, shuffled, "toy", "--extract", *models(tiny_models), "--trials", "1", "--max_seeds", "1", "--no_final")
    folders = [search(base, base_data, "toy", "--no_final") for base, base_data in ((root, data), (shuffled_root, shuffled))]

    tables = [pd.read_csv(folder / "candidates.csv").drop(columns="seconds") for folder in folders]
    pd.testing.assert_frame_equal(*tables)  # the same candidates, the same selection scores seed by seed
    recipes = [json.loads((folder / "recipe.json").read_text()) for folder in folders]
    assert recipes[0] == recipes[1]


def test_an_interrupted_search_resumes_in_its_folder(toy_search_store):
    root, data = toy_search_store
    folder = search(root, data, "toy", "--trials", "2", "--no_final")
    probes = (folder / "probe.csv").read_bytes()
    argv = [
        "--task",
        "toy",
        "--data_dir",
        str(data),
        "--dataset_dir",
        str(root / "dataset"),
        "--out",
        str(root / "Logs"),
        "--resume",
        str(folder),
        "--trials",
        "2",
        "--max_seeds",
        "2",
        "--epochs",
        "8",
        "--no_final",
        "--device",
        "cpu",
    ]
    assert tune.main(argv) == 0
    assert len(pd.read_csv(folder / "candidates.csv")) == 4  # two more candidates in the same study
    assert (folder / "probe.csv").read_bytes() == probes  # the probes are not run again


def test_a_candidate_proposed_again_is_not_trained_again(toy_search_store):
    """With one option per choice every trial is the same candidate: only the first trains."""
    root, _ = toy_search_store
    space = SearchSpace({"llama": ["llama:mean:-1,@llama-mean+last-all"]}, {"raw_inputs": ["all"], "sigma": [0.001]})
    config = Search(root / "dataset", "toy", space, TrainConfig(epochs=3, batch_size=64, cv=0), trials=3, max_seeds=2)
    study = run_search(config, open_study("repeat", "sqlite:///" + str(root / "repeat.db"), seed=0, max_seeds=2))
    rows = candidate_rows(study)
    assert [row["state"] for row in rows] == ["complete", "same as #0", "same as #0"]
    assert len({tuple(row["scores"]) for row in rows}) == 1 and rows[1]["seconds"] == 0.0


def test_a_later_search_probes_only_the_folders_whose_features_changed(toy_search_store, tmp_path):
    root, data = toy_search_store
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    first = max((copy / "Logs").glob("tune_toy_*"))
    store = ["--task", "toy", "--store", "--data_dir", str(data), "--dataset_dir", str(copy / "dataset")]
    assert tfidf_script.main([*store, "--C", "2", "--overwrite"]) == 0  # the lexical source made again, otherwise
    folder = search(copy, data, "toy", "--trials", "1", "--max_seeds", "1", "--no_final")
    (folder / "probe.json").unlink()  # a finished search's config.json says what it probed, too
    again = search(copy, data, "toy", "--trials", "1", "--max_seeds", "1", "--no_final")
    assert f"reused from {folder}" in (again / "tune.log").read_text()

    assert f"reused from {first}" in (folder / "tune.log").read_text()
    before, after = (pd.read_csv(f / "probe.csv").set_index(["folder", "pooling", "layer"]) for f in (first, folder))
    unchanged = after.index.get_level_values("folder") != "tfidf"
    pd.testing.assert_frame_equal(after[unchanged], before.loc[after[unchanged].index])  # reused as they were
    assert (after.index.get_level_values("folder") == "tfidf").sum() == 1  # probed again: its features changed
