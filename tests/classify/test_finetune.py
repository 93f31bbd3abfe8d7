"""finetune.py end to end on a tiny BERT (single- and multi-label): Logs layout, runs.csv row, predict."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import LABELS, ML_LABELS, only_run, write_multilabel_task, write_task

import predict as predict_script
from fec import EmotionClassifier
from fec.classify.finetuning import FinetuneConfig, planned_warmup
from fec.cli.finetune import main
from fec.core.metrics import classification_metrics, multilabel_metrics

TINY = ["-device", "cpu", "-batch_size", "8", "-lr", "5e-3", "-max_len", "32"]


def run_finetune(model: Path, data_dir: Path, out: Path, task: str, *extra: str) -> int:
    return main(["-dataset", task, "-model", str(model), "-data_dir", str(data_dir), "-out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def single_run(tiny_models, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ft_single")
    data = write_task(root / "data", rows={"train": 60, "valid": 24, "test": 24})
    assert run_finetune(tiny_models["bert"], data, root / "Logs", "toy", "-epochs", "4", "-seeds", "0", "-dropout", "0") == 0
    return only_run(root / "Logs"), data


@pytest.fixture(scope="module")
def multi_run(tiny_models, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ft_multi")
    data = write_multilabel_task(root / "data", rows={"train": 60, "valid": 24})  # no test.csv, as semeval_eng
    assert run_finetune(tiny_models["bert"], data, root / "Logs", "ml", "-epochs", "2", "-seeds", "0", "1") == 0
    return only_run(root / "Logs"), data


def test_single_label_run_writes_the_logs_layout_and_a_runs_row(single_run, tiny_models):
    run_dir, _ = single_run
    assert run_dir.name.startswith("toy_finetune_")
    for name in (
        "config.json",
        "train.log",
        "results.json",
        "model.json",
        "per_label.csv",
        "confusion.png",
        "curves.png",
        "predictions.csv",
        "index.html",
        "README.md",
        "checkpoints/seed0/config.json",
        "checkpoints/seed0/model.safetensors",
        "checkpoints/seed0/tokenizer_config.json",
    ):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.glob(".trainer-*")), "the Trainer's own checkpoints are removed"
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["summary"]) == {"valid", "test"} and set(results["summary"]["test"]) == {"acc", "wf1", "macro_f1"}
    seed = results["seeds"][0]
    assert seed["epochs_run"] == 4 and 0 <= seed["best_epoch"] < 4 and len(seed["history"]) == 4
    assert seed["test"]["acc"] > 40, "three cue-word labels: chance is 33%"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["finetune_config"]["lr"] == 5e-3 and config["dropout_set"] == {
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    assert config["problem_type"] == "single_label_classification" and "git_sha" in config
    assert "valid loss" in (run_dir / "train.log").read_text()
    (row,) = csv.DictReader(open(run_dir.parent / "runs.csv"))
    assert row["method"] == "finetune" and f"model={tiny_models['bert']}" in row["settings"]
    assert "±" not in row["test_acc"] and row["test_acc"] and row["test_micro_f1"] == ""


def test_predict_on_a_finetune_run_reproduces_its_metrics(single_run, capsys):
    run_dir, data = single_run
    clf = EmotionClassifier.load(run_dir, device="cpu")
    assert not clf.multilabel and clf.label_names == LABELS
    test = pd.read_csv(data / "toy" / "test.csv")
    probs = clf.predict_proba(test["text"].tolist(), batch_size=7)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    saved = json.loads((run_dir / "results.json").read_text())["seeds"][0]["test"]
    again = classification_metrics(test["label"].to_numpy(), probs.argmax(axis=1))
    assert again["acc"] == pytest.approx(saved["acc"]) and again["macro_f1"] == pytest.approx(saved["macro_f1"])
    assert predict_script.main(["-run", str(run_dir), "-device", "cpu", "-text", "so happy and glad", "-json"]) == 0
    labels = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["labels"]
    assert len(labels) == 3 and {item["label"] for item in labels} == set(LABELS)
    assert predict_script.main(["-run", str(run_dir), "-device", "cpu", "-text", "x", "-model", "bert=/x"]) == 2
    assert "carries its own encoder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("file", "damage", "message"),
    [
        ("model.safetensors", lambda path: path.write_bytes(path.read_bytes()[:-100]),
         "{file}: not a safetensors file (Error while deserializing header: incomplete metadata, file not fully covered)"),
        ("model.safetensors", lambda path: path.unlink(), "{folder}: no weights file (model.safetensors) for seed 0"),
        ("tokenizer_config.json", lambda path: path.unlink(), "{folder}: no tokenizer_config.json"),
        ("config.json", lambda path: path.write_text("{}"), "{file}: no model_type"),
    ],
    ids=["weights-cut", "weights-missing", "tokenizer-missing", "config-without-model-type"],
)  # fmt: skip
def test_a_damaged_saved_model_is_refused_before_transformers_reads_it(
    single_run, tmp_path, model_loads, capsys, file, damage, message
):
    run_dir = tmp_path / "run"
    shutil.copytree(single_run[0], run_dir)
    folder = run_dir / "checkpoints" / "seed0"
    damage(folder / file)
    capsys.readouterr()
    assert predict_script.main(["-run", str(run_dir), "-device", "cpu", "-text", "so happy"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: " + message.format(file=folder / file, folder=folder)), err
    assert model_loads == []


def test_multilabel_run_uses_bce_thresholds_and_reports_validation(multi_run):
    run_dir, _ = multi_run
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["summary"]) == {"valid", "valid_at_0.5"}
    assert set(results["summary"]["valid"]) == {"macro_f1", "micro_f1", "subset_acc", "jaccard", "per_label_f1"}
    for seed in results["seeds"]:
        assert seed["test"] is None and len(seed["thresholds"]) == 3
        assert seed["valid"]["macro_f1"] >= seed["valid_at_05"]["macro_f1"] - 1e-9
    model = json.loads((run_dir / "model.json").read_text())
    assert model["kind"] == "finetune" and model["multilabel"] and set(model["thresholds"]) == {"0", "1"}
    saved = json.loads((run_dir / "checkpoints/seed0/config.json").read_text())
    assert saved["problem_type"] == "multi_label_classification" and list(saved["id2label"].values()) == ML_LABELS
    assert saved["hidden_dropout_prob"] == saved["attention_probs_dropout_prob"] == 0.2  # the recipe's default
    assert pd.read_csv(run_dir / "per_label.csv")["label"].tolist() == ML_LABELS
    (row,) = csv.DictReader(open(run_dir.parent / "runs.csv"))
    assert row["valid_macro_f1"] and row["valid_micro_f1"] and row["test_macro_f1"] == "" and row["best_epoch"].count("/") == 1


def test_cross_validation_picks_epochs_and_thresholds_out_of_fold(tiny_models, tmp_path):
    data = write_multilabel_task(tmp_path / "data", rows={"train": 48, "valid": 16})
    assert run_finetune(tiny_models["bert"], data, tmp_path / "Logs", "ml", "-epochs", "3", "-seeds", "0", "-cv", "2") == 0
    run_dir = only_run(tmp_path / "Logs")
    (seed,) = json.loads((run_dir / "results.json").read_text())["seeds"]
    cv = seed["cv"]
    assert cv["folds"] == 2 and len(cv["fold_best_epochs"]) == 2 and 1 <= cv["epochs_used"] <= 3
    assert cv["epochs_used"] == int(np.median(cv["fold_best_epochs"]))
    assert seed["epochs_run"] == cv["epochs_used"], "the final model trains all of train for the chosen epochs"
    assert set(cv["oof"]) >= {"macro_f1", "micro_f1"}
    model = json.loads((run_dir / "model.json").read_text())
    assert model["threshold_rule"] == "per-label, tuned out of fold" and model["thresholds"]["0"] == seed["thresholds"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["args"]["cv"] == 2 and config["selection"].startswith("2-fold cross-validation on train")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["seed0"], "folds leave no checkpoint"


def test_the_final_model_of_a_cross_validated_seed_keeps_the_folds_learning_rate_plan(tiny_models, tmp_path):
    """Folds that chose 10 of 40 planned steps stopped at 3/4 of the peak rate; so does the final model."""
    from transformers import AutoModelForSequenceClassification, TrainingArguments

    from fec.classify.finetuning import scheduled_trainer

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_models["bert"]), num_labels=3)
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, lr_scheduler_type="linear", warmup_steps=0,
                             report_to="none", use_cpu=True)  # fmt: skip
    trainer = scheduled_trainer(40)(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    for _ in range(10):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(1e-3 * 30 / 40)


def test_a_finetune_run_from_before_cross_validation_reports_the_command_that_repeats_it(single_run, tmp_path, capsys):
    import shutil

    from fec.cli import report as report_script

    old = tmp_path / "Logs" / single_run[0].name
    shutil.copytree(single_run[0], old)
    config = json.loads((old / "config.json").read_text())
    del config["args"]["cv"]  # as config.json was written before finetune.py had --cv
    (old / "config.json").write_text(json.dumps(config))
    assert report_script.main([str(tmp_path / "Logs"), "--format", "csv"]) == 0
    (row,) = csv.DictReader(capsys.readouterr().out.splitlines())
    assert row["command"].endswith("-cv 0"), "selected on valid, which a small valid split no longer does by default"


def test_multilabel_predict_applies_the_saved_thresholds(multi_run, tmp_path):
    run_dir, data = multi_run
    results = json.loads((run_dir / "results.json").read_text())
    clf = EmotionClassifier.load(run_dir, device="cpu")
    assert clf.multilabel and clf.seed == results["best_seed"]
    valid = pd.read_csv(data / "ml" / "valid.csv")
    probs = clf.predict_proba(valid["text"].tolist())
    again = multilabel_metrics(valid[ML_LABELS].to_numpy(), probs >= clf.thresholds)
    best = next(s for s in results["seeds"] if s["seed"] == clf.seed)
    assert again["macro_f1"] == pytest.approx(best["valid"]["macro_f1"], abs=1e-6)
    out = tmp_path / "pred.csv"
    assert (
        predict_script.main(
            ["-run", str(run_dir), "-device", "cpu", "-input", str(data / "ml" / "valid.csv"), "-output", str(out)]
        )
        == 0
    )
    written = pd.read_csv(out, keep_default_na=False)
    assert {f"p_{n}" for n in ML_LABELS} <= set(written.columns) and len(written) == len(valid)


def test_errors_are_one_line(tiny_models, tmp_path, capsys):
    data = write_task(tmp_path / "data", rows={"train": 10})
    assert run_finetune(tiny_models["bert"], data, tmp_path / "Logs", "toy") == 2
    assert "valid.csv: file not found" in capsys.readouterr().err
    write_task(tmp_path / "data", rows={"train": 10, "valid": 5})
    assert run_finetune(tmp_path / "nowhere", data, tmp_path / "Logs", "toy") == 2
    assert "no such model directory" in capsys.readouterr().err
    assert run_finetune(tiny_models["bert"], data, tmp_path / "Logs", "toy", "-threshold", "1.5") == 2
    assert not (tmp_path / "Logs").exists()


def test_warmup_is_capped_for_small_tasks_only():
    assert planned_warmup(FinetuneConfig(), 2768) == (259, 2595)  # semeval_eng train: 10% of 15 epochs
    assert planned_warmup(FinetuneConfig(), 17802) == (1000, 16695)  # ED train: the recipe's 1000


def test_the_run_config_sets_dropout_under_each_family_s_names_and_the_task_labels(tmp_path):
    from transformers import DistilBertConfig, RobertaConfig

    from fec.classify.finetuning import classifier_config

    DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64, attention_dropout=0).save_pretrained(tmp_path / "distil")
    RobertaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path / "roberta"
    )
    distil, distil_set = classifier_config(tmp_path / "distil", ["joy", "fear"], True, 0.2, pad_token_id=0)
    assert distil_set == {"dropout": 0.2, "attention_dropout": 0.2}  # an integer 0 is a setting too
    assert distil.problem_type == "multi_label_classification" and distil.id2label == {0: "joy", 1: "fear"}
    roberta, roberta_set = classifier_config(tmp_path / "roberta", ["a", "b", "c"], False, 0.3, pad_token_id=1)
    assert roberta_set == {"hidden_dropout_prob": 0.3, "attention_probs_dropout_prob": 0.3}
    assert roberta.num_labels == 3 and roberta.problem_type == "single_label_classification"
