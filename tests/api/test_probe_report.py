"""`fec.probe` and `fec.report` from Python: the same jobs as `probe.py` and `report.py`, returning
tables (pandas DataFrames) instead of printing them, and refusing a bad setting by its name."""

from __future__ import annotations

import csv
import io
import json
import re

import pandas as pd
import pytest

import fec
from fec.api.probe import recorded_fold_seed
from fec.cli import report as report_command


def test_a_probe_gives_a_row_per_view_and_marks_the_best_layer_of_each_folder(toy_store, tmp_path):
    _, dataset_dir = toy_store
    table = fec.probe("toy", dataset_dir=dataset_dir, out=tmp_path / "Logs", device="cpu", cv=0)

    # One row per view: each stored folder x pooling x layer once, as probe.csv holds them.
    folder = table.attrs["folder"]
    assert folder.parent == tmp_path / "Logs" and folder.name.startswith("probe_toy_")
    assert set(table["folder"]) == {"llama", "bert", "roberta"}
    assert not table.duplicated(["folder", "pooling", "layer"]).any()
    assert table.drop(columns="best").shape == pd.read_csv(folder / "probe.csv").shape

    # `best` marks the best layer of each folder x pooling: the rows probe.md lists, best first.
    assert table.attrs["selection_metric"] == "acc" and table.attrs["cv"] == 0
    best = table[table["best"]]
    assert len(best) == table.groupby(["folder", "pooling"]).ngroups
    assert table.loc[table["selection_acc"].idxmax(), "best"]  # the best view overall is one of them
    markdown = (folder / "probe.md").read_text(encoding="utf-8").splitlines()
    assert len(markdown) == 2 + len(best)

    config = json.loads((folder / "config.json").read_text())
    assert config["args"]["fold_seed"] == 0 and recorded_fold_seed(config) == 0


def test_the_folds_seed_is_read_from_records_of_either_name():
    assert recorded_fold_seed({"args": {"fold_seed": 3}}) == 3  # a probe's config.json
    assert recorded_fold_seed({"args": {"seed": 3}}) == 3  # a probe's from before the name, or a search's
    assert recorded_fold_seed({"seed": 3}) == 3  # a search's probe.json


def test_help_lists_every_setting_with_its_meaning():
    assert "fold_seed: seed of the cross-validation folds" in fec.probe.__doc__
    assert "runs: run folders, or folders of run folders" in fec.report.__doc__


def test_a_report_gives_the_rows_report_py_prints(paged_logs, capsys):
    table = fec.report("toy", runs=paged_logs)

    assert report_command.main([str(paged_logs), "--task", "toy", "--format", "csv"]) == 0
    printed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert table["command"].tolist() == [row["command"] for row in printed]
    assert [" ".join(map(str, seeds)) for seeds in table["seeds"]] == [row["seeds"] for row in printed]
    assert [f"{mean:.4f}" for mean in table["acc_mean"]] == [row["acc_mean"] for row in printed]
    assert [" ".join(runs) for runs in table["runs"]] == [row["runs"] for row in printed]
    fusion = table[table["command"].str.startswith("python main.py")].iloc[0]
    assert fusion["seeds"] == [0, 1] and all(folder.parent == paged_logs for folder in fusion["folders"])


@pytest.mark.parametrize(
    "job, task, options, message",
    [
        (fec.probe, "toy", {"cv": -1}, "cv: must be an integer >= 0, got -1"),
        (fec.probe, "../elsewhere", {}, "task: '../elsewhere' is not a task name"),
        (fec.report, "toy", {"runs": []}, "runs: name run folders or folders of them, got []"),
    ],
)
def test_a_bad_setting_is_refused_by_its_name_before_any_work(job, task, options, message):
    with pytest.raises(fec.SettingError, match=re.escape(message)) as refused:
        job(task, **options)
    assert refused.value.setting == message.partition(":")[0]
