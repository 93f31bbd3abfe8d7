"""`report.py`: the seeds of runs that trained one recipe pool into one row, whatever run they came
from; different recipes stay apart; a run stopped part-way still counts with its finished seeds."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import shutil
import time
from pathlib import Path

import pytest
from conftest import fusion_run

import main as main_script
import report
from fec.api import train as train_api
from fec.api.report import trainer_defaults
from fec.core.errors import RunFileError
from fec.core.metrics import mean_std
from fec.runs.report import Run, load_run, run_order
from fec.runs.run_files import compat_setting

FAST = ["-epochs", "3", "-lr", "1e-3"]


def train(dataset_dir, out, *extra) -> int:
    return main_script.main(
        ["-dataset", "toy", "-device", "cpu", "-dataset_dir", str(dataset_dir), "-out", str(out), *FAST, *extra]
    )


def pooled_rows(capsys, *argv) -> list[dict]:
    capsys.readouterr()
    assert report.main([*map(str, argv), "-format", "csv"]) == 0
    return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))


def runs_by_args(logs) -> dict[tuple, dict]:
    """Each run folder's results.json, keyed by (seeds, norm) of the command that made it."""
    found = {}
    for folder in logs.iterdir():
        if folder.is_dir():
            args = json.loads((folder / "config.json").read_text())["args"]
            found[(tuple(args["seeds"]), args["norm"])] = json.loads((folder / "results.json").read_text())
    return found


def test_a_recipe_trained_in_two_runs_pools_into_one_row_and_other_recipes_stay_apart(toy_store, tmp_path, capsys):
    _, dataset_dir = toy_store
    logs = tmp_path / "Logs"
    assert train(dataset_dir, logs, "-seeds", "0") == 0
    assert train(dataset_dir, logs, "-seeds", "1", "2") == 0
    assert train(dataset_dir, logs, "-seeds", "0", "-norm", "none") == 0
    pooled, raw = pooled_rows(capsys, logs)
    assert pooled["command"] == "python main.py -dataset toy -epochs 3 -lr 0.001"
    assert raw["command"] == "python main.py -dataset toy -norm none -epochs 3 -lr 0.001"
    assert pooled["seeds"] == "0 1 2" and len(pooled["runs"].split()) == 2
    assert raw["seeds"] == "0" and raw["acc_std"] == ""  # one seed: no std
    runs = runs_by_args(logs)
    accs = [s["test"]["acc"] for key in [((0,), "zscore"), ((1, 2), "zscore")] for s in runs[key]["seeds"]]
    mean, std = mean_std(accs)
    assert float(pooled["acc_mean"]) == pytest.approx(mean, abs=1e-4)
    assert float(pooled["acc_std"]) == pytest.approx(std, abs=1e-4)
    assert float(raw["acc_mean"]) == pytest.approx(runs[((0,), "none")]["seeds"][0]["test"]["acc"], abs=1e-4)
    assert pooled["features"].startswith("llama: ") and pooled["split"] == "test"


def test_a_seed_trained_again_counts_once_with_the_later_run(toy_store, tmp_path, capsys):
    _, dataset_dir = toy_store
    logs = tmp_path / "Logs"
    assert train(dataset_dir, logs, "-seeds", "0") == 0
    time.sleep(1.1)  # `created` has one-second resolution: make "later" unambiguous
    assert train(dataset_dir, logs, "-seeds", "0") == 0
    earlier, later = sorted(
        logs.glob("*/results.json"), key=lambda p: json.loads((p.parent / "config.json").read_text())["created"]
    )
    # Mark the earlier run's result so the two are told apart (the same seed trains identically).
    results = json.loads(earlier.read_text())
    results["seeds"][0]["test"]["acc"] = 0.0
    earlier.write_text(json.dumps(results))
    (row,) = pooled_rows(capsys, logs)
    assert row["seeds"] == "0" and row["runs"] == later.parent.name
    assert float(row["acc_mean"]) == pytest.approx(json.loads(later.read_text())["seeds"][0]["test"]["acc"], abs=1e-4)


def test_runs_are_ordered_by_when_they_claimed_their_folder_not_by_created():
    # `created` is written after the data loads: the second run started in second 01 (folder -2)
    # can carry created 02, the same as a run started in second 02, and still ran first.
    def run(folder: str, created_at_second: int) -> Run:
        created = dt.datetime(2026, 11, 22, 10, 0, created_at_second).astimezone().isoformat()
        return Run(Path(folder), "toy", created, "cmd", "", "recipe", {})

    first = run("toy_20261122-100001", 1)
    second = run("toy_20261122-100001-2", 2)
    third = run("toy_20261122-100002", 2)
    renamed = run("my-baseline", 3)  # no stamp in its name: `created` places it
    assert sorted([renamed, third, second, first], key=run_order) == [first, second, third, renamed]


def stop_at_seed_1(monkeypatch, error: BaseException | type[BaseException]) -> None:
    """main.py trains seed 0 as usual, then `error` is raised where seed 1 would train."""
    real_train_seed = train_api.train_seed

    def train_seed(data, cfg, seed, device):
        if seed == 1:
            raise error
        return real_train_seed(data, cfg, seed, device)

    monkeypatch.setattr(train_api, "train_seed", train_seed)


def test_a_run_stopped_after_its_first_seed_keeps_that_seed(toy_store, tmp_path, capsys, monkeypatch):
    _, dataset_dir = toy_store
    logs = tmp_path / "Logs"
    stop_at_seed_1(monkeypatch, KeyboardInterrupt)  # as Ctrl-C or a killed job would stop it
    with pytest.raises(KeyboardInterrupt):
        train(dataset_dir, logs, "-seeds", "0", "1")
    (run_dir,) = [p for p in logs.iterdir() if p.is_dir()]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["finished"] is False and [s["seed"] for s in results["seeds"]] == [0] and results["best_seed"] == 0
    assert json.loads((run_dir / "failed.json").read_text())["error"] == "interrupted"
    (row,) = pooled_rows(capsys, logs)
    assert row["seeds"] == "0" and row["runs"] == f"{run_dir.name} (interrupted)"
    assert not (logs / "runs.csv").exists(), "runs.csv lists finished runs only"


def test_a_run_that_failed_is_marked_so_in_its_folder_and_in_the_report(toy_store, tmp_path, capsys, monkeypatch):
    _, dataset_dir = toy_store
    logs = tmp_path / "Logs"
    stop_at_seed_1(monkeypatch, RuntimeError("out of memory"))
    with pytest.raises(RuntimeError):
        train(dataset_dir, logs, "-seeds", "0", "1")
    with pytest.raises(RuntimeError):
        train(dataset_dir, logs, "-seeds", "1")
    first, second = sorted(p for p in logs.iterdir() if p.is_dir())
    assert json.loads((first / "failed.json").read_text())["error"] == "RuntimeError: out of memory"
    capsys.readouterr()
    assert report.main([str(logs), "-format", "csv"]) == 0
    printed = capsys.readouterr()
    (row,) = csv.DictReader(io.StringIO(printed.out))
    assert row["seeds"] == "0" and row["runs"] == f"{first.name} (failed)"
    assert f"{second}: skipped, the run failed before a seed finished (RuntimeError: out of memory)" in printed.err


def test_the_markdown_table_names_the_metrics_and_a_finished_run_says_so(toy_store, tmp_path, capsys):
    _, dataset_dir = toy_store
    logs = tmp_path / "Logs"
    assert train(dataset_dir, logs, "-seeds", "0", "1") == 0
    (run_dir,) = [p for p in logs.iterdir() if p.is_dir()]
    assert json.loads((run_dir / "results.json").read_text())["finished"] is True
    capsys.readouterr()
    assert report.main([str(run_dir)]) == 0
    header, rule, row = capsys.readouterr().out.splitlines()
    assert header.split(" | ")[5:8] == ["acc", "wF1", "macro-F1"]
    assert "| 0 1 | test |" in row and "±" in row


def test_unreadable_runs_are_skipped_by_name_and_a_missing_folder_is_one_line(toy_store, tmp_path, capsys):
    _, dataset_dir = toy_store
    logs = tmp_path / "Logs"
    assert train(dataset_dir, logs, "-seeds", "0") == 0
    assert train(dataset_dir, logs, "-seeds", "1") == 0
    broken = sorted(logs.glob("*/results.json"))[0]
    broken.write_text("{not json")
    capsys.readouterr()
    assert report.main([str(logs), "-format", "csv"]) == 0
    out, err = capsys.readouterr()
    (row,) = csv.DictReader(io.StringIO(out))
    assert len(row["seeds"].split()) == 1
    assert f"{broken}: skipped (not JSON" in err
    assert report.main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0]
    assert report.main([str(logs), "-task", "ED"]) == 2
    assert "no finished run of task ED" in capsys.readouterr().err


def test_one_damaged_run_folder_under_logs_is_skipped_by_name_and_the_other_runs_are_reported(paged_logs, tmp_path, capsys):
    logs = tmp_path / "Logs"
    shutil.copytree(paged_logs, logs)
    fusion = fusion_run(logs)
    damaged_results, damaged_model = logs / "toy_damaged_results", logs / "toy_damaged_model"
    for copy in (damaged_results, damaged_model):
        shutil.copytree(fusion, copy)
    (damaged_results / "results.json").write_text('{"seeds": 3}')
    (damaged_model / "model.json").write_text("[]")
    (damaged_model / "index.html").unlink()  # so `--html` writes its page, and reads model.json
    capsys.readouterr()

    assert report.main([str(logs), "-format", "csv"]) == 0
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    assert sorted(row["command"].split()[1] for row in rows) == ["baselines/tfidf.py", "main.py"]
    assert damaged_results.name not in out
    assert f"{damaged_results / 'results.json'}: skipped (`seeds` is an integer, expected a list)" in err

    assert report.main(["-html", str(logs)]) == 0
    out, err = capsys.readouterr()
    assert out.split() == [str(logs / "index.html")]
    index = (logs / "index.html").read_text(encoding="utf-8")
    assert "baselines/tfidf.py" in index and "main.py" in index and damaged_results.name not in index
    assert f"{damaged_results / 'results.json'}: skipped" in err
    assert f"{damaged_model / 'model.json'}: not a JSON object: it holds a list" in err  # its page, not the index
    assert not (damaged_model / "index.html").exists()

    assert report.main([str(damaged_results)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {damaged_results / 'results.json'}: `seeds` is an integer, expected a list"
    )


def test_seeds_that_never_left_chance_are_counted_per_row(toy_store, tmp_path, capsys):
    _, dataset_dir = toy_store
    logs = tmp_path / "Logs"
    assert train(dataset_dir, logs, "-seeds", "0", "1", "-lr", "1e-12", "-norm", "none") == 0  # nothing is learned
    assert train(dataset_dir, logs, "-seeds", "0") == 0
    rows = {"-norm none" in row["command"]: row for row in pooled_rows(capsys, logs)}
    frozen, learned = rows[True], rows[False]
    assert frozen["at_chance"] == "2/2" and learned["at_chance"] == "0/1"
    # A run from before the flag existed: its seeds count as unknown, not as trained.
    (frozen_results,) = [p for p in logs.glob("*/results.json") if json.loads(p.read_text())["seeds"][0]["at_chance"]]
    results = json.loads(frozen_results.read_text())
    del results["seeds"][1]["at_chance"]
    frozen_results.write_text(json.dumps(results))
    (frozen,) = [row for row in pooled_rows(capsys, logs) if "-norm none" in row["command"]]
    assert frozen["at_chance"] == "1/1 (1 unknown)"


def test_runs_whose_config_predates_the_option_renames_pool_with_new_ones(toy_store, tmp_path, capsys):
    _, dataset_dir = toy_store
    logs = tmp_path / "Logs"
    assert train(dataset_dir, logs, "-seeds", "0") == 0
    assert train(dataset_dir, logs, "-seeds", "1") == 0
    old = sorted(p for p in logs.iterdir() if p.is_dir())[0]
    config = json.loads((old / "config.json").read_text())
    config["args"]["dataset"] = config["args"].pop("task")  # spelled -dataset and "mode" before
    config["mode"] = config.pop("compat")  # and before "compat", its setting was the "recipe" or "mode"
    del config["recipe_file"], config["option_defaults"]  # nor were the option defaults recorded: report.py passes today's
    (old / "config.json").write_text(json.dumps(config))
    (row,) = pooled_rows(capsys, logs)
    assert row["seeds"] == "0 1" and row["command"] == "python main.py -dataset toy -epochs 3 -lr 0.001"


@pytest.mark.parametrize(
    ("config", "setting"),
    [
        ({"compat": "reference", "recipe_file": None}, ("reference", None)),
        ({"compat": "corrected", "recipe_file": "recipes/ED.json"}, ("corrected", "recipes/ED.json")),
        ({"recipe": "custom:norm=none"}, ("custom:norm=none", None)),  # written before `compat`
        ({"recipe": "recipe:ED", "args": {"recipe": "recipes/ED.json"}}, ("corrected", "recipes/ED.json")),
        ({"mode": "reference"}, ("reference", None)),  # before `recipe`
        ({"args": {}}, ("", None)),  # fine-tuning and TF-IDF runs have none
    ],
)
def test_the_compat_setting_and_recipe_file_are_read_from_either_form_of_config_json(config, setting):
    assert compat_setting(config) == setting


def test_a_run_reads_its_own_option_defaults_and_one_from_before_them_takes_the_callers(toy_store, tmp_path):
    _, dataset_dir = toy_store
    logs = tmp_path / "Logs"
    assert train(dataset_dir, logs, "-seeds", "0") == 0
    (run_dir,) = [p for p in logs.iterdir() if p.is_dir()]
    assert load_run(run_dir).command == "python main.py -dataset toy -epochs 3 -lr 0.001"  # no CLI needed
    config = json.loads((run_dir / "config.json").read_text())
    del config["option_defaults"]
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunFileError, match="no `option_defaults`") as caught:
        load_run(run_dir)
    assert caught.value.path == run_dir / "config.json" and "\n" not in str(caught.value)
    assert load_run(run_dir, trainer_defaults()).command == "python main.py -dataset toy -epochs 3 -lr 0.001"


def test_a_tfidf_run_from_before_character_ngrams_is_reported_as_words_only(tmp_path, capsys):
    from helpers import write_task

    from fec.cli.tfidf import main as tfidf_main

    data_dir, logs = write_task(tmp_path / "data"), tmp_path / "Logs"
    assert tfidf_main(["-dataset", "toy", "-data_dir", str(data_dir), "-out", str(logs), "-C", "2"]) == 0
    assert tfidf_main(["-dataset", "toy", "-data_dir", str(data_dir), "-out", str(logs), "-C", "2", "-analyzer", "word"]) == 0
    old = sorted(p for p in logs.iterdir() if p.is_dir())[1]
    config = json.loads((old / "config.json").read_text())
    for option in ("analyzer", "char_ngrams"):  # what a config written before the option looked like
        del config["args"][option]
    (old / "config.json").write_text(json.dumps(config))
    rows = pooled_rows(capsys, logs)
    assert len(rows) == 2 and any("-analyzer word" in row["command"] for row in rows)
