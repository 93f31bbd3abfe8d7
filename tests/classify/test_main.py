"""`main.py` end to end on features extracted from tiny models: it learns, logs, and refuses bad sets."""

from __future__ import annotations

import csv
import json
import math
import shutil

import pytest
import torch
from helpers import extract_all, extract_argv, only_run, write_task
from safetensors.torch import load_file

import main as main_script
from fec.classify.fusion_training import at_chance, prior_entropy

FAST = ["-epochs", "25", "-lr", "1e-3", "-early-stop", "5"]


def run_main(dataset_dir, out, *extra):
    return main_script.main(
        ["-dataset", "toy", "-device", "cpu", "-dataset_dir", str(dataset_dir), "-out", str(out), *FAST, *extra]
    )


def test_two_seeds_learn_and_write_every_log_file(toy_store, tmp_path, capsys):
    _, dataset_dir = toy_store
    assert run_main(dataset_dir, tmp_path / "Logs", "-seeds", "0", "1") == 0
    run_dir = only_run(tmp_path / "Logs")
    assert run_dir.name.startswith("toy_")
    for name in (
        "config.json",
        "train.log",
        "results.json",
        "model.json",
        "curves.png",
        "checkpoints/seed0.safetensors",
        "checkpoints/seed1.safetensors",
    ):
        assert (run_dir / name).is_file(), name
    results = json.loads((run_dir / "results.json").read_text())
    assert [s["seed"] for s in results["seeds"]] == [0, 1]
    assert all(0 <= s["pn_saturated"] <= 100 for s in results["seeds"])  # the pooled-value diagnostic, per seed
    test = results["summary"]["test"]
    assert test["acc"]["mean"] > 70, "three well-separated labels: chance is 33%"
    assert test["acc"]["std"] is not None and set(test) == {"acc", "wf1", "macro_f1"}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["args"]["seeds"] == [0, 1] and "git_sha" in config and config["feature_manifests"]["train"]["llama"]
    assert (
        "epoch" in (run_dir / "train.log").read_text() and "of the pooled values on valid" in (run_dir / "train.log").read_text()
    )
    state = load_file(str(run_dir / "checkpoints/seed0.safetensors"))
    assert "input_mean_0" in state and "mlp.0.weight" in state
    rows = list(csv.DictReader(open(tmp_path / "Logs" / "runs.csv")))
    assert (
        len(rows) == 1
        and rows[0]["method"] == "fusion"
        and "sources=llama+bert+roberta" in rows[0]["settings"]
        and "±" in rows[0]["test_acc"]
    )
    assert "Acc: " in capsys.readouterr().err


def test_same_seed_twice_gives_identical_metrics(toy_store, tmp_path):
    _, dataset_dir = toy_store
    for out in ("a", "b"):
        assert run_main(dataset_dir, tmp_path / out, "-seeds", "3", "-epochs", "4") == 0
    first, second = (json.loads((only_run(tmp_path / o) / "results.json").read_text())["seeds"][0] for o in ("a", "b"))
    assert first["test"] == second["test"] and first["history"][-1]["valid"] == second["history"][-1]["valid"]


@pytest.mark.parametrize("sources", [["llama"], ["bert"], ["bert", "roberta"], ["roberta", "llama"]])
def test_source_ablations_run_and_are_recorded(toy_store, tmp_path, sources):
    _, dataset_dir = toy_store
    assert run_main(dataset_dir, tmp_path / "Logs", "-sources", *sources) == 0
    model = json.loads((only_run(tmp_path / "Logs") / "model.json").read_text())
    assert model["sources"] == [s for s in ("llama", "bert", "roberta") if s in sources]
    results = json.loads((only_run(tmp_path / "Logs") / "results.json").read_text())
    assert results["summary"]["test"]["acc"]["mean"] > 50


def test_features_from_a_different_csv_are_refused(toy_store, tmp_path, tiny_models, capsys):
    _, dataset_dir = toy_store
    mixed = tmp_path / "dataset"
    shutil.copytree(dataset_dir, mixed)
    other = write_task(tmp_path / "other", seed=7)  # same task name and sizes, different rows
    from fec.cli.extract import main as extract

    argv = extract_argv(tiny_models["bert"], other, mixed, "valid")
    assert extract("bert", argv) == 2  # features of another CSV would replace finished ones
    assert "already extracted with other settings (csv_sha256 " in capsys.readouterr().err
    assert extract("bert", [*argv, "--overwrite"]) == 0
    assert run_main(mixed, tmp_path / "Logs") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "valid.json: source CSV differs from" in err and "re-extract valid" in err


def test_features_in_the_wrong_slot_folder_are_refused(toy_store, tmp_path, capsys):
    _, dataset_dir = toy_store
    mixed = tmp_path / "dataset"
    shutil.copytree(dataset_dir, mixed)
    shutil.rmtree(mixed / "toy" / "bert")
    shutil.copytree(mixed / "toy" / "roberta", mixed / "toy" / "bert")
    assert run_main(mixed, tmp_path / "Logs") == 2
    assert "extracted for slot 'roberta', not 'bert'" in capsys.readouterr().err


def test_missing_features_name_the_file_and_the_script(tmp_path, capsys):
    assert run_main(tmp_path / "empty", tmp_path / "Logs") == 2
    err = capsys.readouterr().err
    assert "llama/train.safetensors: features not found (extract them first" in err
    assert not (tmp_path / "Logs").exists()  # no empty run folder for a run that never started


def test_a_task_without_test_split_reports_validation(tmp_path, tiny_models):
    data = write_task(tmp_path / "data", rows={"train": 60, "valid": 30})
    extract_all(data, tmp_path / "dataset", tiny_models)
    assert run_main(tmp_path / "dataset", tmp_path / "Logs") == 0
    results = json.loads((only_run(tmp_path / "Logs") / "results.json").read_text())
    assert "test" not in results["summary"] and results["seeds"][0]["test"] is None
    assert results["summary"]["valid"]["acc"]["mean"] > 50


def test_raw_inputs_all_is_recorded_and_reloads_for_prediction(toy_store, tmp_path):
    from fec import EmotionClassifier

    data_dir, dataset_dir = toy_store
    assert run_main(dataset_dir, tmp_path / "Logs", "-raw_inputs", "all") == 0
    run_dir = only_run(tmp_path / "Logs")
    assert json.loads((run_dir / "model.json").read_text())["model"]["raw_inputs"] == "all"
    (row,) = csv.DictReader(open(tmp_path / "Logs" / "runs.csv"))
    assert "raw_inputs=all" in row["settings"] and row["compat"] == "corrected"
    clf = EmotionClassifier.load(run_dir, device="cpu")
    assert clf.model.config["raw_inputs"] == "all"
    assert clf.predict_proba(["a small test sentence"]).shape == (1, len(clf.label_names))


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from fec.runs.folder import make_run_dir

    workers = 8
    barrier = threading.Barrier(workers)

    def claim(_):
        barrier.wait()  # all at once: the same timestamp, racing for the same folder name
        return make_run_dir(tmp_path, "ED")

    with ThreadPoolExecutor(workers) as pool:
        folders = list(pool.map(claim, range(workers)))
    assert len(set(folders)) == workers and all(folder.is_dir() for folder in folders)


def test_a_seed_that_never_leaves_chance_is_called_out_with_the_fix_for_raw_inputs(toy_store, tmp_path, capsys):
    _, dataset_dir = toy_store
    # lr 1e-12: nothing is learned; a huge sigma saturates the power normalisation as well (99% of values).
    assert run_main(dataset_dir, tmp_path / "frozen", "-lr", "1e-12", "-epochs", "2", "-norm", "none", "-SIGMA", "10000") == 0
    err = capsys.readouterr().err
    assert "seed 0 never left chance" in err and "-norm zscore" in err
    assert "saturated" in err and "try a smaller -SIGMA" not in err, "at chance, the saturation fixes are not the fix"
    assert run_main(dataset_dir, tmp_path / "learns", "-seeds", "0") == 0
    assert "never left chance" not in capsys.readouterr().err


def test_the_chance_floor_is_the_entropy_of_the_label_frequencies():
    balanced, skewed = torch.tensor([0, 1, 2, 3] * 5), torch.tensor([0] * 18 + [1, 2])
    assert prior_entropy(balanced) == pytest.approx(math.log(4))
    assert prior_entropy(skewed) < 0.5 * math.log(3)
    assert at_chance(math.log(4), prior_entropy(balanced)) and not at_chance(0.5 * math.log(4), prior_entropy(balanced))
