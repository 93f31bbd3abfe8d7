"""Using a trained run: predict.py, the Python API, explanations, and the run's label report."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import fusion_run
from helpers import LABELS, save_tiny_llama

import explain as explain_script
import main as main_script
import predict as predict_script
from fec import EmotionClassifier
from fec.classify.fusion_inputs import load_fusion_data
from fec.classify.fusion_training import predict_logits
from fec.core.errors import RunFileError
from fec.core.paths import unique_slug
from fec.runs.output_rule import inputs_of, output_problem

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def toy_run(toy_store, tmp_path_factory) -> Path:
    _, dataset_dir = toy_store
    out = tmp_path_factory.mktemp("Logs")
    argv = [
        "-dataset",
        "toy",
        "-device",
        "cpu",
        "-dataset_dir",
        str(dataset_dir),
        "-out",
        str(out),
        "-epochs",
        "15",
        "-lr",
        "1e-3",
        "-seeds",
        "0",
        "1",
    ]
    assert main_script.main(argv) == 0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def test_every_run_folder_has_a_confusion_matrix_and_per_label_table(toy_run):
    assert (toy_run / "confusion.png").stat().st_size > 1000
    table = pd.read_csv(toy_run / "per_label.csv")
    assert table["label"].tolist() == LABELS
    assert set(table.columns) == {"label", "precision", "recall", "f1", "support"}
    assert table["support"].sum() == 30


def test_api_matches_the_evaluation_path_on_the_same_rows(toy_run, toy_store):
    data_dir, dataset_dir = toy_store
    clf = EmotionClassifier.load(toy_run, device="cpu")
    texts = pd.read_csv(data_dir / "toy" / "test.csv")["text"].tolist()
    probs = clf.predict_proba(texts)
    data = load_fusion_data(dataset_dir, "toy", ["llama", "bert", "roberta"])
    stored = torch.softmax(predict_logits(clf.model, data.splits["test"], 64), dim=1).numpy()
    np.testing.assert_allclose(probs, stored, atol=1e-4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    best = json.loads((toy_run / "results.json").read_text())["best_seed"]
    assert clf.seed == best


def test_the_seed_ensemble_is_the_mean_of_the_seeds_probabilities(toy_run, toy_store):
    data_dir, dataset_dir = toy_store
    texts = pd.read_csv(data_dir / "toy" / "test.csv")["text"].tolist()
    ensemble = EmotionClassifier.load(toy_run, device="cpu", ensemble=True)
    assert ensemble.seeds == [0, 1] and ensemble.seed is None
    singles = [EmotionClassifier.load(toy_run, seed=s, device="cpu").predict_proba(texts) for s in (0, 1)]
    np.testing.assert_allclose(ensemble.predict_proba(texts), np.mean(singles, axis=0), atol=1e-6)
    # The run's reported ensemble is the same rule applied to the stored test features.
    data = load_fusion_data(dataset_dir, "toy", ["llama", "bert", "roberta"])
    stored = np.mean([torch.softmax(predict_logits(h, data.splits["test"], 64), dim=1).numpy() for h in ensemble.heads], axis=0)
    reported = json.loads((toy_run / "results.json").read_text())["ensemble"]
    assert reported["seeds"] == [0, 1]
    accuracy = 100 * float((stored.argmax(axis=1) == data.splits["test"].labels.numpy()).mean())
    assert reported["test"]["acc"] == pytest.approx(accuracy)


def test_report_shows_the_runs_seed_ensemble_beside_the_mean(toy_run, capsys):
    from fec.cli.report import main as report_main

    assert report_main([str(toy_run)]) == 0
    header, _, row = capsys.readouterr().out.splitlines()[:3]
    cells = dict(zip(header.split(" | "), row.split(" | "), strict=True))
    reported = json.loads((toy_run / "results.json").read_text())["ensemble"]["test"]["acc"]
    assert cells["seed ensemble"] == f"acc {reported:.2f}"


def test_ensemble_with_a_seed_is_refused(toy_run, capsys):
    assert predict_script.main(["-run", str(toy_run), "-text", "so happy", "-ensemble", "-seed", "0", "-device", "cpu"]) == 2
    assert "-ensemble and -seed 0" in capsys.readouterr().err


def test_the_api_names_a_damaged_run_file_and_explanations_stay_in_their_folder(toy_run, tmp_path):
    from safetensors.torch import save_file

    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    save_file({"weight": torch.zeros(1)}, str(run / "checkpoints" / "seed1.safetensors"))
    with pytest.raises(RunFileError, match=r"seed1\.safetensors: does not fit the model in model\.json \(Error"):
        EmotionClassifier.load(run, seed=1, device="cpu")
    (run / "results.json").write_text('{"seeds": []}')
    with pytest.raises(RunFileError, match=r"results\.json: no `best_seed`"):
        EmotionClassifier.load(run, device="cpu")
    inputs = inputs_of(argparse.Namespace(run=run))
    assert output_problem(run / "explanations" / "today", inputs) is None  # the default folder, or under it
    assert output_problem(tmp_path / "elsewhere", inputs) is None
    other = output_problem(run / "checkpoints", inputs_of(argparse.Namespace(run=toy_run)))  # another run's folder
    assert other.startswith(f"is inside the run folder {run}")


def test_predict_prints_named_labels_with_probabilities(toy_run, capsys):
    assert predict_script.main(["-run", str(toy_run), "-device", "cpu", "-text", "so happy and glad", "-json", "-topk", "3"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    labels = json.loads(line)["labels"]
    assert [item["label"] for item in labels] and {item["label"] for item in labels} == set(LABELS)
    assert sum(item["prob"] for item in labels) == pytest.approx(1.0, abs=1e-4)
    assert labels[0]["prob"] >= labels[1]["prob"] >= labels[2]["prob"]


def test_predict_takes_several_texts_after_one_text_option_and_more_options(toy_run, capsys):
    argv = ["-run", str(toy_run), "-device", "cpu", "-json", "--text", "so happy and glad", "crying and lonely"]
    assert predict_script.main([*argv, "--text", "furious rage today"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["text"] for line in lines] == ["so happy and glad", "crying and lonely", "furious rage today"]


def test_predict_file_mode_keeps_the_input_columns(toy_run, tmp_path):
    src = tmp_path / "in.csv"
    pd.DataFrame({"id": [7, 8], "text": ["crying and lonely", "furious rage"]}).to_csv(src, index=False)
    out = tmp_path / "out.csv"
    assert predict_script.main(["-run", str(toy_run), "-device", "cpu", "-input", str(src), "-output", str(out)]) == 0
    result = pd.read_csv(out)
    assert result["id"].tolist() == [7, 8] and set(result["label"]) <= set(LABELS)
    assert ((result["prob"] > 0) & (result["prob"] <= 1)).all()


def test_predict_reads_standard_input(toy_run):
    done = subprocess.run(
        [sys.executable, str(REPO / "predict.py"), "-run", str(toy_run), "-device", "cpu"],
        input="so happy\nfurious and angry\n",
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n    ") == 2


def test_a_different_backbone_is_refused(toy_run, tmp_path, capsys):
    other = save_tiny_llama(tmp_path / "other_llama")
    with open(other / "config.json") as fh:
        config = json.load(fh)
    torch.manual_seed(123)
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(
        LlamaConfig(**{k: v for k, v in config.items() if k not in ("architectures", "transformers_version")})
    ).save_pretrained(other)
    assert predict_script.main(["-run", str(toy_run), "-device", "cpu", "-text", "hi", "-model", f"llama={other}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {other}: these weights differ from the llama backbone the model was trained on")


def test_explain_writes_html_and_png_for_the_predicted_and_a_chosen_label(toy_run, tmp_path, capsys):
    argv = ["-run", str(toy_run), "-device", "cpu", "-text", "so glad and happy today", "-max_evals", "20", "-out", str(tmp_path)]
    assert explain_script.main(argv) == 0
    assert explain_script.main([*argv, "-label", "sad"]) == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    stem = f"{unique_slug('so glad and happy today')}.{unique_slug('sad', width=30)}"
    assert stem.startswith("so-glad-and-happy-today-") and f"{stem}.html" in files and f"{stem}.png" in files
    assert len(files) == 4
    assert "<html>" in (tmp_path / f"{stem}.html").read_text()
    assert explain_script.main([*argv, "-label", "bored"]) == 2
    assert "not a label of this run (joyful, sad, angry)" in capsys.readouterr().err


def test_explain_escapes_the_text_and_keeps_label_file_names_inside_the_out_folder(toy_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    spec = json.loads((run / "model.json").read_text())
    spec["label_names"][0] = "../../../escaped"  # a run written before label names were checked
    (run / "model.json").write_text(json.dumps(spec))
    out = tmp_path / "explanations"
    text = "<img src=x onerror=alert(1)> so happy"
    argv = ["-run", str(run), "-device", "cpu", "-text", text, "-label", "../../../escaped", "-max_evals", "20", "-out", str(out)]
    assert explain_script.main(argv) == 0
    stem = f"{unique_slug(text)}.{unique_slug('../../../escaped', width=30)}"
    assert stem.startswith("img-src-x-onerror-alert-1-so-happy-") and ".escaped-" in stem
    assert sorted(p.name for p in out.iterdir()) == [f"{stem}.html", f"{stem}.png"]
    page = (out / f"{stem}.html").read_text()
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert not (tmp_path.parent / "escaped.html").exists()


def test_explain_writes_the_words_that_pushed_the_prediction(paged_logs, tmp_path, capsys):
    """explain.py on a trained run: SHAP's attributions, a page and a chart per text; the cue words
    the toy task is built on carry the most weight towards their label."""
    import explain as explain_script

    out = tmp_path / "explanations"
    text = "i was at home with the dog and so happy and delighted today"
    assert (
        explain_script.main(
            ["-run", str(fusion_run(paged_logs)), "-text", text, "-max_evals", "60", "-out", str(out), "-device", "cpu"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    (page,) = out.glob("*.html")
    (chart,) = out.glob("*.png")
    assert chart.read_bytes().startswith(b"\x89PNG") and text in page.read_text(encoding="utf-8")
    verdict = printed.splitlines()[0]  # `joyful (p=0.912) <- happy +0.301, delighted +0.240, ...`: top words first
    assert verdict.startswith("joyful (p=") and "joyful" in page.name, printed
    weights = dict(item.split() for item in verdict.split(" <- ")[1].split(", "))  # the top 5 words by |value|
    assert next(iter(weights)) in {"happy", "delighted"}, printed
    assert all(float(weights[cue]) > 0 for cue in ("happy", "delighted") if cue in weights), printed
