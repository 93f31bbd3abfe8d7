"""`tune.py`: from a researcher's own file to a tuned and trained run in one command, the recipe
chosen on train and valid alone (test is read once, by the final run), the search resumable."""

from __future__ import annotations

import csv
import io
import json
import random
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers import LABELS, make_text

import predict as predict_script
import prepare_data as prepare_data_script
import report as report_script
from baselines import tfidf as tfidf_script
from fec.api.train import recipe_values
from fec.classify.candidates import SearchSpace
from fec.classify.fusion_training import TrainConfig
from fec.classify.search import Search, open_study, run_search
from fec.cli import tune
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
    recipe_values(folder / "recipe.json")  # main.py reads it as it is
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
    rows = {row["runs"]: row for row in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert "-features" in rows[final.name]["command"]  # the tuned run is a row of the report
    ensemble = config["ensemble_run"]
    assert ensemble is None or Path(ensemble).name in rows  # and the ensemble of candidates beside it, when it has several


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
    ensembles = [json.loads((folder / "ensemble.json").read_text()) for folder in folders]
    assert ensembles[0] == ensembles[1]  # the same members with the same weights


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


# A search folder says what it is (search.json), and --resume continues only that search.


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tune_in(root: Path, data: Path, *extra: str) -> list[str]:
    """tune.py's argv for the toy task stored under `root` (the SMALL settings), plus `extra`."""
    return ["--task", "toy", "--data_dir", str(data), "--dataset_dir", str(root / "dataset"), "--out", str(root / "Logs"),
            *SMALL, "--trials", "1", "--no_final", *extra]  # fmt: skip


def refused(argv: list[str], capsys) -> str:
    """tune.py with `argv`: exit 2 and one error line, which is returned."""
    capsys.readouterr()
    assert tune.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ")
    return last


@pytest.fixture
def copied_store(toy_search_store, tmp_path) -> tuple[Path, Path]:
    """A copy of the toy search store and its data, for tests that change them."""
    root, data = toy_search_store
    shutil.copytree(root, tmp_path / "root")
    shutil.copytree(data, tmp_path / "data")
    return tmp_path / "root", tmp_path / "data"


def test_a_search_folder_records_what_it_is(copied_store):
    root, data = copied_store
    saved = root / "recipes" / "new" / "toy.json"  # --save makes the folder
    assert tune.main(tune_in(root, data, "--save", str(saved))) == 0
    folder = max((root / "Logs").glob("tune_toy_*"))
    assert saved.read_bytes() == (folder / "recipe.json").read_bytes()
    assert "budget 1 candidates" in (folder / "tune.log").read_text()  # --trials alone: no time limit
    record = json.loads((folder / "search.json").read_text())
    assert record["task"] == "toy" and record["metric"] == "acc" and record["cv"] == 0
    assert record["sampler_seed"] == 0 and record["max_seeds"] == 2 and record["training"]["epochs"] == 8
    assert record["storage"] is None and record["study"] == folder.name  # its own study.db, a study of its own name
    assert "tfidf" in record["store"] and set(record["store"]["tfidf"]) == {"train", "valid"}


@pytest.mark.parametrize(
    "change, message",
    [
        (["--max_seeds", "3"], "searched with other settings (max_seeds 2 -> 3)"),
        (["--epochs", "9"], "searched with other settings (training {'epochs': 8, 'early_stop': 10, 'batch_size': 64} -> "),
        (["--seed", "4"], "searched with other settings (sampler_seed 0 -> 4)"),  # --seed: the sampler's
        (["--cv", "3"], "searched with other settings (cv 0 -> 3)"),
        (["--storage", "sqlite:///{root}/elsewhere.db"], "its study is in its folder's study.db, not sqlite:///"),
    ],
    ids=["max_seeds", "epochs", "seed", "cv", "storage"],
)
def test_resume_refuses_the_same_folder_with_other_settings(copied_store, capsys, change, message):
    root, data = copied_store
    assert tune.main(tune_in(root, data)) == 0
    folder = max((root / "Logs").glob("tune_toy_*"))
    before = snapshot(root)
    changed = [arg.format(root=root) for arg in change]  # the last of an option's values counts
    last = refused(tune_in(root, data, "--resume", str(folder), *changed), capsys)
    assert f"--resume {folder}: " in last and message in last, last
    assert snapshot(root) == before


def test_resume_refuses_what_is_not_a_search_of_this_task(copied_store, capsys, tmp_path):
    root, data = copied_store
    shutil.copytree(data / "toy", data / "other")
    shutil.copytree(root / "dataset" / "toy", root / "dataset" / "other")
    other = tune_in(root, data)
    other[other.index("toy")] = "other"
    assert tune.main(other) == 0
    searches = {task: max((root / "Logs").glob(f"tune_{task}_*")) for task in ("toy", "other")}
    run = root / "Logs" / "a_run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "results.json").write_text('{"seeds": []}')
    damaged, gone, emptied, renamed = (root / "Logs" / name for name in ("damaged", "gone", "emptied", "renamed"))
    for copy in (damaged, gone, emptied, renamed):
        shutil.copytree(searches["toy"], copy)
    (damaged / "study.db").write_bytes(b"not a database, only text" * 100)
    (gone / "study.db").unlink()
    (emptied / "study.db").write_bytes(b"")
    record = json.loads((renamed / "search.json").read_text())
    (renamed / "search.json").write_text(json.dumps(record | {"study": "another"}))
    cases = {
        searches["other"]: f"--resume {searches['other']}: a search of task 'other', not 'toy'",
        run: f"{run}: a run folder (no search.json); --resume takes a folder tune.py made, tune_TASK_STAMP/",
        data: f"{data}: not a search folder (no search.json)",
        damaged: f"{damaged / 'study.db'}: not a readable study database (file is not a database)",
        gone: f"{gone / 'study.db'}: not found; the study {record['study']!r} of the search is gone (start a new search)",
        emptied: f"{emptied / 'study.db'}: holds no study {record['study']!r}, the search's; it was emptied or replaced",
        renamed: f"{renamed / 'study.db'}: holds no study 'another', the search's; it was emptied or replaced",
    }
    before = snapshot(root)
    for folder, message in cases.items():
        assert message in refused(tune_in(root, data, "--resume", str(folder)), capsys)
    assert snapshot(root) == before


def test_resume_refuses_a_store_that_changed_since_the_search(copied_store, capsys):
    root, data = copied_store
    assert tune.main(tune_in(root, data)) == 0
    folder = max((root / "Logs").glob("tune_toy_*"))
    store = ["--task", "toy", "--store", "--data_dir", str(data), "--dataset_dir", str(root / "dataset")]
    assert tfidf_script.main([*store, "--C", "2", "--overwrite"]) == 0  # the lexical source made again, otherwise
    before = snapshot(folder)
    last = refused(tune_in(root, data, "--resume", str(folder)), capsys)
    assert f"--resume {folder}: the store changed since that search (tfidf (features changed)); start a new search" in last
    assert snapshot(folder) == before


def test_a_study_in_another_database_is_resumed_there_without_naming_it_again(copied_store):
    root, data = copied_store
    elsewhere = f"sqlite:///{root / 'studies.db'}"
    assert tune.main(tune_in(root, data, "--storage", elsewhere)) == 0
    folder = max((root / "Logs").glob("tune_toy_*"))
    assert json.loads((folder / "search.json").read_text())["storage"] == elsewhere and not (folder / "study.db").exists()
    assert tune.main(tune_in(root, data, "--resume", str(folder))) == 0  # the recorded storage
    assert len(pd.read_csv(folder / "candidates.csv")) == 2  # one more candidate in the same study


def test_an_interrupted_candidate_is_trained_again_on_resume(copied_store, monkeypatch, capsys):
    """Ctrl-C during a candidate's second seed: the search stops with its table written, the
    candidate marked interrupted; --resume trains it again first."""
    root, data = copied_store
    import fec.classify.search as search_module

    real, calls = search_module.train_seed, []

    def stopped_at_the_second_seed(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(search_module, "train_seed", stopped_at_the_second_seed)
    assert tune.main(tune_in(root, data, "--trials", "3")) == 130
    folder = max((root / "Logs").glob("tune_toy_*"))
    said = capsys.readouterr().err.strip().splitlines()[-1]
    (first,) = pd.read_csv(folder / "candidates.csv").to_dict("records")
    assert first["state"] == "interrupted" and first["seeds"] == 1

    monkeypatch.setattr(search_module, "train_seed", real)
    command = shlex.split(said.split("is trained again) with: ")[1])  # the command it says, as it says it
    assert command[:2] == ["python", "tune.py"] and command[-2:] == ["--resume", str(folder)]
    assert tune.main([*command[2:], "--trials", "4", "--no_final", "--device", "cpu"]) == 0  # its settings from search.json
    rows = pd.read_csv(folder / "candidates.csv").set_index("number")
    retry = int(rows.loc[0, "state"].removeprefix("interrupted, retried as #"))
    assert rows.loc[retry, "state"] in ("complete", "pruned") and "interrupted" not in set(rows.drop(index=0)["state"])
    options = [c for c in rows.columns if c not in ("state", "mean", "seeds", "scores", "seconds")]
    assert rows.loc[0, options].astype(str).tolist() == rows.loc[retry, options].astype(str).tolist()  # the same candidate


def test_a_killed_search_resumes_with_its_candidate_retried_and_none_left_running(copied_store):
    """kill -9 while a candidate trains: it stays `running` in the study; --resume finds its process
    gone, marks it interrupted, trains it again, and the finished table shows no `running` row."""
    import sqlite3
    import subprocess
    import sys
    import time
    from contextlib import closing

    root, data = copied_store
    argv = tune_in(root, data, "--trials", "4", "--epochs", "200", "--early_stop", "200")
    script = "import sys; from fec.cli import tune; sys.exit(tune.main(sys.argv[1:]))"
    earlier = set((root / "Logs").glob("tune_toy_*"))  # searches of the store's earlier tests
    log = root / "killed.log"
    process = subprocess.Popen([sys.executable, "-c", script, *argv], stderr=log.open("w"))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-3000:]  # still searching
            databases = [
                f / "study.db" for f in (root / "Logs").glob("tune_toy_*") if f not in earlier and (f / "study.db").exists()
            ]
            if databases:
                with closing(sqlite3.connect(databases[0])) as db:
                    try:
                        running = db.execute(
                            "SELECT COUNT(*) FROM trials JOIN trial_user_attributes USING (trial_id) "
                            "WHERE state = 'RUNNING' AND key = 'worker'"
                        ).fetchone()[0]
                    except sqlite3.OperationalError:  # the file is made before Optuna has written its tables
                        running = 0
                if running:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("no candidate started within 2 minutes")
    finally:
        process.kill()
        process.wait()
    folder = databases[0].parent
    assert tune.main([*argv, "--resume", str(folder)]) == 0
    states = pd.read_csv(folder / "candidates.csv").set_index("number")["state"]
    assert states[0].startswith("interrupted, retried as #") and "running" not in set(states)
    assert "complete" in set(states) or "pruned" in set(states)


def test_a_candidate_killed_before_all_its_options_were_drawn_shows_empty_cells(tmp_path):
    """kill -9 can land between a trial's creation and its last option: the page shows what it has."""
    from fec.runs.tune_folder import write_tune_page

    complete = {
        "number": 1,
        "state": "complete",
        "mean": 90.0,
        "scores": [90.0],
        "seconds": 3.0,
        "options": {"lr": 1e-3, "dropout": 0.1},
    }
    killed = {
        "number": 0,
        "state": "interrupted, retried as #2",
        "mean": None,
        "scores": [],
        "seconds": None,
        "options": {"lr": 1e-4},
    }
    view = {"task": "toy", "metric": "acc", "cv": 0, "command": "python tune.py --task toy", "chosen": complete,
            "chosen_recipe": "{}", "final_run": None}  # fmt: skip
    page = write_tune_page(tmp_path, [complete, killed], view).read_text(encoding="utf-8")
    assert "interrupted, retried as #2" in page and "0.0001" in page
