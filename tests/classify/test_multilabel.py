"""Multi-label tasks (one 0/1 column per label, SemEval 2025 Task 11 style): CSV errors, BCE
training through main.py, thresholds tuned on validation, a test split added later, predict."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import ML_LABELS, extract_all, newest_run, write_multilabel_task

import main as main_script
import predict as predict_script
from fec.core.data import load_split, load_splits
from fec.core.errors import DataError
from fec.core.metrics import THRESHOLD_GRID, multilabel_metrics, tune_thresholds
from fec.runs.table import RUNS_COLUMNS, append_run_row

FAST = ["-epochs", "20", "-lr", "3e-3", "-early-stop", "6", "-batch_size", "20"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- CSV contract


def test_a_bad_cell_is_named_even_when_the_layout_is_detected(tmp_path):
    path = write(tmp_path / "m" / "train.csv", "id,text,anger,joy\na,grr,1,0\nb,yay,1,yes\n")
    with pytest.raises(DataError) as err:
        load_split(tmp_path, "m", "train")
    assert str(err.value) == (
        f"{path}: no 'label' column, and not the multi-label layout either: row 2: column 'joy' must be 0 or 1, got 'yes'"
    )


def test_later_splits_are_read_with_the_first_splits_label_columns(tmp_path):
    write(tmp_path / "m" / "train.csv", "id,text,anger,joy\na,grr,1,0\nb,yay,0,1\n")
    valid = write(tmp_path / "m" / "valid.csv", "id,text,anger\na,grr,1\n")
    with pytest.raises(DataError) as err:
        load_splits(tmp_path, "m", ["train", "valid"])
    assert str(err.value) == f"{valid}: missing label column(s) joy (expected anger, joy)"
    write(valid, "id,text,anger,joy,fear\na,grr,1,0,1\n")
    with pytest.raises(DataError, match=r"valid.csv: label column\(s\) fear not in the other splits"):
        load_splits(tmp_path, "m", ["train", "valid"])
    write(valid, "id,text,anger,joy\na,grr,1,0\nb,hm,0,2\n")
    with pytest.raises(DataError, match=r"valid.csv: row 2: column 'joy' must be 0 or 1, got '2'"):
        load_splits(tmp_path, "m", ["train", "valid"])


def test_forced_multilabel_names_a_bad_cell_and_all_zero_rows_are_neutral(tmp_path):
    write(tmp_path / "m" / "train.csv", "text,anger,joy\ngrr,1,0\nmeh,0,0\n")
    splits = load_splits(tmp_path, "m", ["train"], multilabel=True)
    assert splits["train"].labels.tolist() == [[1, 0], [0, 0]]
    write(tmp_path / "m" / "train.csv", "text,anger,joy\ngrr,1,0\nmeh,0, \n")
    with pytest.raises(DataError, match=r"row 2: column 'joy' must be 0 or 1, got ''"):
        load_splits(tmp_path, "m", ["train"], multilabel=True)


# ---------------------------------------------------------------- metrics and thresholds


def test_multilabel_metrics_by_hand():
    gold = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    pred = np.array([[1, 0], [1, 0], [0, 0], [1, 1]])
    m = multilabel_metrics(gold, pred, ["a", "b"])
    # a: tp 2 fp 1 fn 0 -> F1 0.8; b: tp 1 fp 0 fn 1 -> F1 2/3; micro: tp 3 fp 1 fn 1 -> 0.75
    assert m["per_label_f1"] == pytest.approx({"a": 80.0, "b": 200 / 3})
    assert m["macro_f1"] == pytest.approx((80 + 200 / 3) / 2) and m["micro_f1"] == pytest.approx(75.0)
    assert m["subset_acc"] == pytest.approx(50.0)
    # Jaccard per row: 1, 1/2, 1 (neutral predicted neutral), 1/2
    assert m["jaccard"] == pytest.approx(75.0)


def test_tuned_thresholds_never_lose_to_half_on_the_rows_they_are_tuned_on():
    rng = np.random.default_rng(0)
    for _ in range(20):
        gold = rng.random((60, 4)) < rng.uniform(0.05, 0.6, size=4)
        probs = np.clip(gold * rng.uniform(0.0, 0.5) + rng.random((60, 4)) * 0.7, 0, 1)
        tuned = tune_thresholds(gold, probs)
        assert set(tuned) <= set(THRESHOLD_GRID)
        at_half = multilabel_metrics(gold, probs >= 0.5, list("abcd"))
        at_tuned = multilabel_metrics(gold, probs >= tuned, list("abcd"))
        for name in "abcd":
            assert at_tuned["per_label_f1"][name] >= at_half["per_label_f1"][name] - 1e-9
        assert at_tuned["macro_f1"] >= at_half["macro_f1"] - 1e-9
    # A label never seen on these rows keeps 0.5 (every threshold ties at F1 0).
    assert tune_thresholds(np.zeros((5, 1)), np.full((5, 1), 0.9))[0] == 0.5


# ---------------------------------------------------------------- main.py end to end


@pytest.fixture(scope="module")
def ml_store(tmp_path_factory, tiny_models) -> tuple[Path, Path]:
    """train and valid only, as semeval_eng ships: (data_dir, dataset_dir)."""
    root = tmp_path_factory.mktemp("ml")
    data = write_multilabel_task(root / "data")
    extract_all(data, root / "dataset", tiny_models, task="ml")
    return data, root / "dataset"


def run_main(dataset_dir, out, *extra):
    return main_script.main(
        ["-dataset", "ml", "-device", "cpu", "-dataset_dir", str(dataset_dir), "-out", str(out), *FAST, *extra]
    )


@pytest.fixture(scope="module")
def ml_run(ml_store, tmp_path_factory) -> Path:
    _, dataset_dir = ml_store
    out = tmp_path_factory.mktemp("Logs")
    assert run_main(dataset_dir, out, "-seeds", "0", "1") == 0
    return newest_run(out)


def test_bce_training_learns_a_separable_multilabel_task(ml_run):
    results = json.loads((ml_run / "results.json").read_text())
    valid = results["summary"]["valid"]
    assert "test" not in results["summary"] and results["seeds"][0]["test"] is None
    assert set(valid) == {"macro_f1", "micro_f1", "subset_acc", "jaccard", "per_label_f1"}
    assert set(valid["per_label_f1"]) == set(ML_LABELS)
    # Chance (each label on 40% of rows, predicted at random) gives F1 about 40.
    assert valid["macro_f1"]["mean"] > 75 and valid["micro_f1"]["mean"] > 75
    seed = results["seeds"][0]
    assert len(seed["thresholds"]) == 3 and "wf1" not in seed["history"][0]["valid"]
    model = json.loads((ml_run / "model.json").read_text())
    assert model["multilabel"] and set(model["thresholds"]) == {"0", "1"}
    table = pd.read_csv(ml_run / "per_label.csv")
    assert table["label"].tolist() == ML_LABELS and {"threshold", "f1", "support"} <= set(table.columns)
    assert not (ml_run / "confusion.png").exists() and (ml_run / "curves.png").is_file()
    (row,) = csv.DictReader(open(ml_run.parent / "runs.csv"))
    assert row["valid_macro_f1"].startswith(f"{valid['macro_f1']['mean']:.2f}") and row["valid_micro_f1"]
    assert row["valid_wf1"] == "" and row["test_macro_f1"] == ""


def test_tuned_thresholds_keep_or_improve_validation_macro_f1(ml_run):
    results = json.loads((ml_run / "results.json").read_text())
    for seed in results["seeds"]:
        assert seed["valid"]["macro_f1"] >= seed["valid_at_05"]["macro_f1"] - 1e-9
        for name in ML_LABELS:
            assert seed["valid"]["per_label_f1"][name] >= seed["valid_at_05"]["per_label_f1"][name] - 1e-9
    assert "valid_at_0.5" in results["summary"]


def test_a_global_threshold_is_used_as_given(ml_store, tmp_path):
    _, dataset_dir = ml_store
    assert run_main(dataset_dir, tmp_path, "-threshold", "0.5", "-epochs", "5") == 0
    results = json.loads((newest_run(tmp_path) / "results.json").read_text())
    seed = results["seeds"][0]
    assert seed["thresholds"] == [0.5] * 3 and seed["valid"] == seed["valid_at_05"]
    assert run_main(dataset_dir, tmp_path, "-threshold", "1.5") == 2


def test_a_test_csv_added_later_is_extracted_and_evaluated_without_changes(ml_store, tmp_path, tiny_models):
    data_dir, dataset_dir = ml_store
    import shutil

    data, store = tmp_path / "data", tmp_path / "dataset"
    shutil.copytree(data_dir, data)
    shutil.copytree(dataset_dir, store)
    write_multilabel_task(tmp_path / "later", rows={"test": 40}, seed=5)
    shutil.copy(tmp_path / "later" / "ml" / "test.csv", data / "ml" / "test.csv")
    extract_all(data, store, tiny_models, task="ml")  # -mode all: train/valid are skipped, test is new
    assert sorted(p.name for p in (store / "ml" / "bert").glob("*.safetensors")) == [
        "test.safetensors",
        "train.safetensors",
        "valid.safetensors",
    ]
    assert run_main(store, tmp_path / "Logs", "-epochs", "10") == 0
    results = json.loads((newest_run(tmp_path / "Logs") / "results.json").read_text())
    assert results["summary"]["test"]["macro_f1"]["mean"] > 50
    (row,) = csv.DictReader(open(tmp_path / "Logs" / "runs.csv"))
    assert row["test_macro_f1"] and row["test_micro_f1"] and row["test_acc"] == ""


def test_predict_returns_the_labels_above_their_thresholds(ml_run, capsys):
    from fec import EmotionClassifier

    clf = EmotionClassifier.load(ml_run, device="cpu")
    assert clf.multilabel and len(clf.thresholds) == 3
    texts = ["furious rage and i hate it but i am smiling glad", "home with the dog", "crying tears lonely"]
    probs = clf.predict_proba(texts)
    assert probs.shape == (3, 3) and not np.allclose(probs.sum(axis=1), 1.0)  # sigmoid, not softmax
    predictions = clf.predict(texts)
    for row, labels in zip(probs, predictions, strict=False):
        expected = {ML_LABELS[j] for j in range(3) if row[j] >= clf.thresholds[j]}
        assert {name for name, _ in labels} == expected
        assert [p for _, p in labels] == sorted((p for _, p in labels), reverse=True)
    assert {name for name, _ in predictions[0]} >= {"anger", "joy"} and {n for n, _ in predictions[2]} == {"sadness"}
    assert predict_script.main(["-run", str(ml_run), "-device", "cpu", "-text", texts[2], "-json"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [item["label"] for item in line["labels"]] == ["sadness"]


def test_runs_table_written_before_the_new_columns_is_upgraded_in_place(tmp_path):
    old = [
        "finished",
        "task",
        "sources",
        "mode",
        "norm",
        "pn",
        "sigma",
        "lr",
        "batch_size",
        "seeds",
        "best_epoch",
        "valid_wf1",
        "test_acc",
        "test_wf1",
        "test_macro_f1",
        "run_dir",
    ]
    table = tmp_path / "runs.csv"
    table.write_text(",".join(old) + "\n" + ",".join(f"v{i}" for i in range(len(old))) + "\n")
    append_run_row(tmp_path, {"task": "new", "test_micro_f1": "1.00"})
    rows = list(csv.DictReader(open(table)))
    assert list(rows[0]) == RUNS_COLUMNS + [c for c in old if c not in RUNS_COLUMNS]  # old columns kept, after
    assert {k: rows[0][k] for k in old} == {k: f"v{i}" for i, k in enumerate(old)} and rows[0]["test_micro_f1"] == ""
    assert rows[1]["task"] == "new" and rows[1]["test_micro_f1"] == "1.00"


def test_cross_validation_picks_epochs_and_thresholds_out_of_fold(ml_store, tmp_path):
    out = tmp_path / "Logs"
    assert run_main(ml_store[1], out, "-cv", "3", "-epochs", "6", "-seeds", "0") == 0
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    seed = json.loads((run / "results.json").read_text())["seeds"][0]
    cv = seed["cv"]
    assert cv["folds"] == 3 and len(cv["fold_best_epochs"]) == 3
    assert cv["epochs_used"] == int(np.median(cv["fold_best_epochs"])) and seed["epochs_run"] == cv["epochs_used"]
    assert cv["oof"]["macro_f1"] > 60  # the cue words make the labels learnable out of fold too
    summary = json.loads((run / "results.json").read_text())["summary"]
    assert set(summary) >= {"cv", "valid"}  # the cross-validated figure beside valid, kept as a check
    spec = json.loads((run / "model.json").read_text())
    assert spec["thresholds"]["0"] == seed["thresholds"]  # tuned out of fold, saved for predict.py


def test_a_small_valid_split_turns_cross_validation_on_by_itself():
    from fec.api.train import TrainSettings
    from fec.classify.cross_validation import folds_for

    assert TrainSettings(task="semeval_eng").cv is None  # decided from the data, not fixed
    assert folds_for(None, 116, 2768) == 5  # semeval_eng: 116 valid rows beside 2,768 train
    assert folds_for(None, 2761, 17802) == 0  # ED: valid is large enough to select on
    assert folds_for(None, 30, 90) == 0  # a small task whose train is small too
    assert folds_for(0, 116, 2768) == 0 and folds_for(3, 2761, 17802) == 3  # as asked
