"""Linear probes: the fit on separable fixtures, C chosen on valid or by cross-validation, and
`probe.py` over a real store of tiny-model features."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import extract_argv, only_run

from fec.classify.linear_probe import C_GRID, select_and_fit
from fec.cli.extract import main as extract_main
from fec.cli.probe import main as probe_main


def blobs(rows: int, classes: int, dims: int = 16, seed: int = 0, spread: float = 0.3):
    """Gaussian clusters around well separated centres: a linear probe should get them all right."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dims)) * 4
    labels = rng.integers(0, classes, rows)
    x = centres[labels] + rng.normal(size=(rows, dims)) * spread
    return torch.tensor(x, dtype=torch.float32), torch.tensor(labels)


def test_probe_separates_separable_classes_and_reads_test_at_the_chosen_c():
    x, y = blobs(300, 4)
    probe = select_and_fit((x[:200], y[:200]), (x[200:250], y[200:250]), multilabel=False)
    assert probe.selected_on == "valid" and probe.selection["acc"] == 100
    assert probe.evaluate(x[250:], y[250:].numpy())["acc"] == 100
    # The grid is walked from the strongest penalty and left once two values in a row do not improve.
    tried = list(probe.curve)
    assert tried == list(C_GRID[: len(tried)]) and 3 <= len(tried) <= len(C_GRID)


def test_noise_features_probe_at_chance_not_above():
    x, _ = blobs(600, 3)
    y = torch.tensor(np.random.default_rng(1).integers(0, 3, 600))  # labels unrelated to the features
    probe = select_and_fit((x[:400], y[:400]), (x[400:500], y[400:500]), multilabel=False)
    assert probe.evaluate(x[500:], y[500:].numpy())["acc"] < 50


def test_multilabel_probe_by_cross_validation_tunes_thresholds_out_of_fold():
    x, single = blobs(400, 3, seed=2)
    y = torch.nn.functional.one_hot(single, 3)
    y[:, 2] = (single == 1).long() | (single == 2).long()  # label 2 co-occurs with label 1
    probe = select_and_fit((x[:300], y[:300]), None, multilabel=True, cv=4)
    assert probe.selected_on == "cv4" and probe.thresholds.shape == (3,)
    assert probe.selection["macro_f1"] > 95
    assert probe.evaluate(x[300:], y[300:].numpy())["macro_f1"] > 95


def test_probe_command_writes_table_csv_and_layer_curves(data_dir, tmp_path, tiny_models, capsys):
    store = tmp_path / "ds"
    argv = extract_argv(tiny_models["llama"], data_dir, store, "all", "--layers", "all", "--pooling", "mean", "last")
    assert extract_main("llama", argv) == 0
    assert extract_main("bert", extract_argv(tiny_models["bert"], data_dir, store, "all")) == 0
    out = tmp_path / "Logs"
    argv = ["--task", "toy", "--dataset_dir", str(store), "--out", str(out), "--cv", "0", "--device", "cpu", "--combine"]
    assert probe_main(argv) == 0
    run = only_run(out)
    assert run.name.startswith("probe_toy_")
    table = pd.read_csv(run / "probe.csv")
    # 2 poolings x 7 hidden states of the llama variant, the BERT slot's pooler, and the two together.
    assert len(table) == 2 * 7 + 1 + 1
    combined = table[table["folder"] == "combined"].iloc[0]
    assert combined["model"].count(" + ") == 1 and "llama-mean+last-all:" in combined["model"]
    table = table[table["folder"] != "combined"]
    assert set(table["folder"]) == {"llama-mean+last-all", "bert"}
    assert table["valid_acc"].max() > 60  # the toy task's cue words are linearly separable from some layer
    assert (run / "layer_curves.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert printed.startswith("| folder | pooling | best layer") and printed == (run / "probe.md").read_text()
    config = json.loads((run / "config.json").read_text())
    assert config["setup"]["cv"] == 0 and config["setup"]["selection_metric"] == "acc"


def test_probe_of_unknown_folder_is_one_line_error(data_dir, tmp_path, tiny_models, capsys):
    store = tmp_path / "ds"
    assert extract_main("bert", extract_argv(tiny_models["bert"], data_dir, store, "all")) == 0
    capsys.readouterr()
    assert probe_main(["--task", "toy", "--dataset_dir", str(store), "--folders", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--folders nope: not in" in err[0]


@pytest.mark.parametrize("argv, message", [(["--task", "toy", "--cv", "-1"], "--cv"), (["--task", "missing"], "no features")])
def test_probe_bad_options(tmp_path, capsys, argv, message):
    assert probe_main([*argv, "--dataset_dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_probes_shared_by_two_workers_are_the_probes_of_one(toy_search_store):
    """`workers` splits the views between processes of one thread each: every view's row is the
    one a single process gives (its C, its scores to within float rounding of another thread count)."""
    from fec.classify.probing import probe_rows, store_folders

    root, _ = toy_search_store
    folders = store_folders(root / "dataset", "toy")
    alone, _ = probe_rows(root / "dataset", "toy", folders, modes=("train", "valid"))
    shared, _ = probe_rows(root / "dataset", "toy", folders, modes=("train", "valid"), workers=2)
    assert len(shared) == len(alone) > 2
    for one, other in zip(alone, shared, strict=True):
        assert {k: v for k, v in one.items() if not isinstance(v, float)} == {
            k: v for k, v in other.items() if not isinstance(v, float)
        }
        assert {k: v for k, v in one.items() if isinstance(v, float)} == pytest.approx(
            {k: v for k, v in other.items() if isinstance(v, float)}, abs=1e-4
        )
