"""`python baselines/tfidf.py` end to end on the fixture task: it learns, logs, and refuses what it cannot do."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import only_run, write_task

from fec.cli.tfidf import main


@pytest.fixture(scope="module")
def tfidf_run(tmp_path_factory) -> tuple[Path, Path]:
    """(Logs folder, run folder) of a two-seed TF-IDF run on the toy task."""
    root = tmp_path_factory.mktemp("tfidf")
    data_dir = write_task(root / "data")
    out = root / "Logs"
    assert main(["-dataset", "toy", "-data_dir", str(data_dir), "-out", str(out), "-seeds", "0", "1"]) == 0
    return out, only_run(out)


def test_learns_the_toy_task_and_writes_the_run_folder_every_trainer_writes(tfidf_run):
    _, run_dir = tfidf_run
    assert run_dir.name.startswith("toy_tfidf_")
    for name in ("config.json", "results.json", "train.log", "per_label.csv", "confusion.png", "predictions.csv", "index.html",
                 "README.md"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    results = json.loads((run_dir / "results.json").read_text())
    assert results["finished"] is True and [s["seed"] for s in results["seeds"]] == [0, 1]
    test = results["summary"]["test"]
    assert test["acc"]["mean"] > 70, "three well-separated labels: chance is 33%"
    assert set(test) == {"acc", "wf1", "macro_f1"} and test["acc"]["std"] is not None
    config = json.loads((run_dir / "config.json").read_text())
    assert config["args"]["seeds"] == [0, 1] and "git_sha" in config and config["rows"]["test"] == 30
    # Words and character n-grams inside word boundaries, as a union.
    assert config["vectorizer"]["analyzer"] == "word+char" and config["vectorizer"]["char_ngram_range"] == [2, 5]


def test_c_is_chosen_on_valid_and_later_seeds_reuse_the_fits(tfidf_run):
    first, second = json.loads((tfidf_run[1] / "results.json").read_text())["seeds"]
    grid = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    assert [g["C"] for g in first["grid"]] == grid and first["C"] in grid
    assert all(g["converged"] for g in first["grid"])
    # lbfgs ignores the seed: seed 1 reuses seed 0's fits
    assert all(g["reused_from_seed"] == 0 for g in second["grid"]) and second["test"] == first["test"]


def test_the_run_gets_a_runs_csv_row_like_every_method(tfidf_run):
    out, run_dir = tfidf_run
    (row,) = csv.DictReader(open(out / "runs.csv"))
    assert row["method"] == "tfidf" and row["seeds"] == "0 1" and row["settings"].startswith("C=")
    assert "±" in row["test_acc"] and row["run_dir"] == str(run_dir)


def test_without_test_split_reports_validation_only(data_dir, tmp_path):
    (data_dir / "toy" / "test.csv").unlink()
    out = tmp_path / "Logs"
    assert main(["-dataset", "toy", "-data_dir", str(data_dir), "-out", str(out), "-C", "2"]) == 0
    results = json.loads((only_run(out) / "results.json").read_text())
    assert set(results["summary"]) == {"valid"} and results["seeds"][0]["test"] is None
    assert results["seeds"][0]["C"] == 2.0 and len(results["seeds"][0]["grid"]) == 1
    assert results["summary"]["valid"]["acc"]["mean"] > 70 and results["summary"]["valid"]["acc"]["std"] is None
    (row,) = csv.DictReader(open(out / "runs.csv"))
    assert row["test_acc"] == "" and row["valid_wf1"] != ""


def test_a_multilabel_task_chooses_c_and_thresholds_by_cross_validation(tmp_path):
    from test_multilabel import write_multilabel_task

    data_dir = write_multilabel_task(tmp_path / "data")
    out = tmp_path / "Logs"
    assert main(["-dataset", "ml", "-data_dir", str(data_dir), "-out", str(out), "-cv", "3", "-C_grid", "1", "8"]) == 0
    results = json.loads((only_run(out) / "results.json").read_text())
    seed = results["seeds"][0]
    assert [g["C"] for g in seed["grid"]] == [1.0, 8.0] and seed["cv"]["folds"] == 3 and len(seed["thresholds"]) == 3
    assert results["summary"]["cv"]["macro_f1"]["mean"] > 60 and "micro_f1" in results["summary"]["valid"]
    (row,) = csv.DictReader(open(out / "runs.csv"))
    assert "selection=cv3" in row["settings"] and row["valid_macro_f1"] != ""


def test_missing_task_is_a_one_line_error(tmp_path, capsys):
    assert main(["-dataset", "nope", "-data_dir", str(tmp_path), "-out", str(tmp_path / "Logs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "train.csv: file not found" in err


def test_character_ngrams_add_features_beside_the_words(tmp_path):
    from fec.classify.tfidf import vectorize
    from fec.core.data import load_splits

    splits = load_splits(write_task(tmp_path / "data"), "toy", ["train", "valid"])
    words, word_vocabulary = vectorize(splits, 2, 2, None, analyzer="word")
    both, vocabulary = vectorize(splits, 2, 2, None, analyzer="word+char")
    assert vocabulary > word_vocabulary and both["train"].shape[1] == vocabulary
    # The word block is the same; each block is L2-normalised on its own, so a row's norm is sqrt(2).
    assert (both["train"][:, :word_vocabulary] != words["train"]).nnz == 0
    assert abs(both["valid"][0].multiply(both["valid"][0]).sum() - 2.0) < 1e-9


def test_a_label_train_never_shows_gets_probability_zero_not_a_shifted_column(tmp_path):
    """sklearn has no column for a class absent from train; predictions.csv still has one per label."""
    data_dir = write_task(tmp_path / "data")
    train_csv = data_dir / "toy" / "train.csv"
    train = pd.read_csv(train_csv)
    train[train["label"] != 2].to_csv(train_csv, index=False)  # no "angry" row in train
    out = tmp_path / "Logs"
    assert main(["-dataset", "toy", "-data_dir", str(data_dir), "-out", str(out), "-seeds", "0"]) == 0
    predictions = pd.read_csv(only_run(out) / "predictions.csv")
    assert list(predictions.filter(like="p:").columns) == ["p:joyful", "p:sad", "p:angry"]
    assert (predictions["p:angry"] == 0).all() and (predictions["predicted"] != "angry").all()
    assert predictions.loc[predictions["gold"] == "sad", "predicted"].eq("sad").mean() > 0.8
