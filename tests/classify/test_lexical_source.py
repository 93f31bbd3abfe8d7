"""The lexical source: the word+character TF-IDF model's label probabilities, fused as one more
input. Train's rows are scored out of fold (never by a model fitted on them), valid and test by
the model fitted on all of train; the model travels with every run that fuses it, and predict.py
rebuilds the source from text.

    python baselines/tfidf.py --task toy --store
    python main.py --task toy --sources llama bert roberta tfidf
    python predict.py --run Logs/toy_... --text "so happy today"
"""

from __future__ import annotations

import csv
import io
import random
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import LABELS, only_run, write_multilabel_task

import main as main_script
import report as report_script
from baselines import tfidf as tfidf_script
from fec import EmotionClassifier
from fec.classify import lexical
from fec.classify.fusion_inputs import load_fusion_data
from fec.classify.lexical import LexicalModel, LexicalSettings, fold_assignment, lexical_source, out_of_fold_per_C
from fec.core.data import load_splits
from fec.features.store import feature_path, load_features

TRAIN = ["-device", "cpu", "-epochs", "25", "-lr", "1e-3", "-early-stop", "5", "-seeds", "0"]
SMALL = LexicalSettings(min_df=1, C_grid=(4.0,), folds=3)


def memorisable(rows: int = 90, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Texts whose only signal is a word no other row has, with a random label: a model that saw a
    row knows its label, and one that did not can only guess."""
    rng = random.Random(seed)
    labels = np.array([rng.randrange(3) for _ in range(rows)])
    return [f"row{i}marker and some shared words" for i in range(rows)], labels


def test_each_fold_is_scored_by_a_model_fitted_on_the_other_folds_only(monkeypatch):
    texts, labels = memorisable()
    assignment = fold_assignment(labels, False, 5, seed=0)
    vectorized, regressed = [], []
    fit_vectorizer, fit_softmax = lexical.fit_vectorizer, lexical.fit_softmax

    def recording_vectorizer(fold_texts, settings):
        vectorized.append(set(fold_texts))
        return fit_vectorizer(fold_texts, settings)

    def recording_softmax(x, fold_labels, C, settings):
        regressed.append((x.shape[0], C))
        return fit_softmax(x, fold_labels, C, settings)

    monkeypatch.setattr(lexical, "fit_vectorizer", recording_vectorizer)
    monkeypatch.setattr(lexical, "fit_softmax", recording_softmax)
    out_of_fold_per_C(texts, labels, assignment, replace(SMALL, C_grid=(1.0, 4.0)), 3, False)
    assert len(vectorized) == 5  # one vectorizer per fold, shared by both C values
    assert [C for _, C in regressed] == [1.0, 4.0] * 5
    for fold, seen in enumerate(vectorized):
        scored = {t for t, f in zip(texts, assignment, strict=True) if f == fold}
        assert scored and not scored & seen and scored | seen == set(texts)
        assert [rows for rows, _ in regressed[2 * fold : 2 * fold + 2]] == [len(seen)] * 2


def test_out_of_fold_probabilities_cannot_recall_a_row_the_full_model_memorised():
    texts, labels = memorisable()
    source = lexical_source(texts, labels, LexicalSettings(min_df=1, C_grid=(16.0,), folds=5), 3, False)
    own = source.model.predict_proba(texts)[np.arange(len(texts)), labels]  # the full model saw every row
    held_out = source.train[np.arange(len(texts)), labels]
    assert own.mean() > 0.8
    assert held_out.mean() < 0.45  # about the label's share: the row's own word is unknown out of fold
    np.testing.assert_allclose(source.train.sum(axis=1), 1.0, rtol=1e-5)


@pytest.fixture
def lexical_store(toy_store, tmp_path):
    data, store = toy_store
    dataset = tmp_path / "dataset"
    shutil.copytree(store, dataset)
    assert tfidf_script.main(["--task", "toy", "--store", "--data_dir", str(data), "--dataset_dir", str(dataset)]) == 0
    return data, dataset


def test_the_stored_source_is_train_out_of_fold_and_the_full_models_probabilities_elsewhere(lexical_store):
    data, dataset = lexical_store
    folder = dataset / "toy" / "tfidf"
    model = LexicalModel.load(folder / "lexical_model.safetensors")
    splits = load_splits(data, "toy", ["train", "valid", "test"])
    for mode in ("valid", "test"):
        stored = load_features(feature_path(dataset, "toy", "tfidf", mode))
        assert stored.manifest["slot_kind"] == "lexical"
        assert stored.manifest["lexical"]["scored_by"] == "the model fitted on all of train"
        np.testing.assert_array_equal(stored.features.numpy(), model.predict_proba(splits[mode].texts))
    train = load_features(feature_path(dataset, "toy", "tfidf", "train"))
    assert train.manifest["lexical"]["scored_by"] == "out of fold (5 folds)"
    assert train.features.shape == (90, len(LABELS))
    assert not np.array_equal(train.features.numpy(), model.predict_proba(splits["train"].texts))


def test_storing_again_skips_and_other_settings_are_refused_unless_overwritten(lexical_store, capsys):
    data, dataset = lexical_store
    argv = ["--task", "toy", "--store", "--data_dir", str(data), "--dataset_dir", str(dataset)]
    train = feature_path(dataset, "toy", "tfidf", "train")
    before = train.stat().st_mtime_ns
    assert tfidf_script.main(argv) == 0
    assert train.stat().st_mtime_ns == before
    assert tfidf_script.main([*argv, "--C", "2"]) == 2
    err = capsys.readouterr().err
    assert "train.safetensors: already extracted with other settings (C_grid [1.0, 4.0, 16.0] -> [2.0])" in err
    assert train.stat().st_mtime_ns == before
    assert tfidf_script.main([*argv, "--C", "2", "--overwrite"]) == 0
    assert load_features(train).manifest["lexical"]["C"] == 2.0


def test_a_run_fuses_the_lexical_source_and_predict_rebuilds_it_from_text(lexical_store, tmp_path):
    data, dataset = lexical_store
    out = tmp_path / "Logs"
    argv = ["--task", "toy", "--data_dir", str(data), "--dataset_dir", str(dataset), "--out", str(out), *TRAIN]
    assert main_script.main([*argv, "--sources", "llama", "bert", "roberta", "tfidf"]) == 0
    run = only_run(out)
    shutil.rmtree(dataset / "toy" / "tfidf")  # the run keeps the lexical model it needs
    assert (run / "lexical_model.safetensors").is_file()
    clf = EmotionClassifier.load(run, device="cpu")
    assert clf.order[-1] == "tfidf"  # after the decoder and the encoders
    texts = pd.read_csv(data / "toy" / "test.csv")["text"].tolist()
    stored = load_fusion_data(dataset, "toy", ["llama", "bert", "roberta"])
    lexical = LexicalModel.load(run / "lexical_model.safetensors").predict_proba(texts)
    inputs = [*stored.splits["test"].inputs, torch.from_numpy(lexical)]
    expected = torch.softmax(clf.model(*inputs), dim=1).detach().numpy()
    np.testing.assert_allclose(clf.predict_proba(texts), expected, atol=2e-3)


def test_report_names_the_lexical_source_of_a_run(lexical_store, tmp_path, capsys):
    data, dataset = lexical_store
    out = tmp_path / "Logs"
    argv = ["--task", "toy", "--data_dir", str(data), "--dataset_dir", str(dataset), "--out", str(out), *TRAIN]
    assert main_script.main([*argv, "--sources", "llama", "tfidf"]) == 0
    capsys.readouterr()
    assert report_script.main([str(out), "--format", "csv"]) == 0
    (row,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert "-sources llama tfidf" in row["command"] and "tfidf: tfidf-logreg" in row["features"]


def test_the_lexical_source_of_a_multilabel_task_scores_each_label_with_its_own_sigmoid(tmp_path):
    data = write_multilabel_task(tmp_path / "data")
    argv = ["--task", "ml", "--store", "--data_dir", str(data), "--dataset_dir", str(tmp_path / "dataset"), "--cv", "3"]
    assert tfidf_script.main(argv) == 0
    valid = load_features(feature_path(tmp_path / "dataset", "ml", "tfidf", "valid"))
    assert valid.manifest["multilabel"] and valid.features.shape == (40, 3)
    assert not np.allclose(valid.features.sum(dim=1).numpy(), 1.0)  # independent labels, not a softmax


def test_fusing_a_lexical_source_that_was_never_stored_is_refused_with_the_command(toy_store, tmp_path, capsys):
    data, store = toy_store
    argv = ["--task", "toy", "--data_dir", str(data), "--dataset_dir", str(store), "--out", str(tmp_path / "Logs"), *TRAIN]
    assert main_script.main([*argv, "--sources", "llama", "tfidf"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: ")
        and "holds no lexical source yet; store it with python baselines/tfidf.py --store --task toy" in err
    )
    assert not (tmp_path / "Logs").exists()
