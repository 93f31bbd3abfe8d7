"""A wider search: several workers on one study, and the ensemble of what the search found, saved as
one run that predict.py and report.py treat as one model."""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fec
import predict as predict_script
import report as report_script
from fec.api.ensemble import ensemble_run
from fec.classify.candidates import HEAD_PRIOR, SearchSpace
from fec.classify.fusion_training import TrainConfig
from fec.classify.search import Search, open_study, run_search
from fec.runs.tune_folder import candidate_rows

SHORT = {"max_seeds": 2, "final_seeds": 2, "epochs": 8, "device": "cpu"}


def fixed_space() -> SearchSpace:
    """Four candidates the search trains as they come (enqueued), whichever worker takes them."""
    pick = "llama:mean:-1,@llama-mean+last-all"
    first = [
        {"source.llama": pick, "source.bert": bert} | HEAD_PRIOR | {"lr": lr}
        for bert in ("bert:mean:-1@bert-mean+first-all", "off")
        for lr in (1e-4, 2.5e-4)
    ]
    return SearchSpace(
        {"llama": [pick], "bert": ["off", "bert:mean:-1@bert-mean+first-all"]},
        {**{k: [v] for k, v in HEAD_PRIOR.items()}, "lr": [1e-4, 2.5e-4]},
        first,
    )


def searched(root: Path, name: str, workers: int, url: str | None = None) -> list[dict]:
    """The fixed candidates searched by `workers` processes, the study in `url` (default: a SQLite file under `root`)."""
    search = Search(
        root / "dataset", "toy", fixed_space(), TrainConfig(epochs=8, batch_size=64, cv=0), trials=4, max_seeds=1, workers=workers
    )
    url = url or f"sqlite:///{root / name}.db"
    return candidate_rows(run_search(search, open_study(name, url, seed=0, max_seeds=1), url))


def same_search(alone: list[dict], together: list[dict]) -> None:
    """Every trial recorded once, each candidate with the scores one worker gives it: the same best recipe."""
    assert sorted(row["number"] for row in together) == [0, 1, 2, 3]  # none lost, none twice
    assert all(row["state"] == "complete" for row in together)
    by_options = {json.dumps(row["options"], sort_keys=True): row["scores"] for row in alone}
    assert {json.dumps(row["options"], sort_keys=True): row["scores"] for row in together} == by_options
    assert alone[0]["options"] == together[0]["options"]  # candidate_rows puts the best first


def test_two_workers_record_every_trial_once_and_find_what_one_worker_finds(toy_search_store, tmp_path):
    root, _ = toy_search_store
    (tmp_path / "dataset").symlink_to(root / "dataset")
    same_search(searched(tmp_path, "alone", 1), searched(tmp_path, "together", 2))


@pytest.fixture
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server on a Unix socket in a folder of its own under /tmp (short: a
    socket's path is limited; run as the `postgres` user when the tests run as root, since the
    server refuses root), its URL; skipped where Debian's postgresql or psycopg is missing."""
    pytest.importorskip("psycopg")
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if not binaries:
        pytest.skip("no PostgreSQL server (apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="fec-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres")
    tool = functools.partial(os.path.join, binaries[-1])
    run = functools.partial(subprocess.run, check=True, capture_output=True, timeout=60)
    data = str(folder / "data")
    try:
        run([*as_user, tool("initdb"), "-D", data, "-U", "postgres", "--auth", "trust"])
        options = f"-k {folder} -c listen_addresses=''"
        run([*as_user, tool("pg_ctl"), "-D", data, "-o", options, "-w", "-l", str(folder / "log"), "start"])
        try:
            run([*as_user, tool("createdb"), "-h", str(folder), "-U", "postgres", "fec"])
            yield f"postgresql://postgres@/fec?host={folder}"
        finally:
            run([*as_user, tool("pg_ctl"), "-D", data, "-m", "immediate", "stop"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.database
def test_two_workers_share_a_study_on_a_postgresql_server(toy_search_store, tmp_path, postgres):
    """The way a search outgrows one machine: its study on a database server every worker reaches."""
    root, _ = toy_search_store
    (tmp_path / "dataset").symlink_to(root / "dataset")
    same_search(searched(tmp_path, "alone", 1), searched(tmp_path, "shared", 2, postgres))


@pytest.fixture(scope="module")
def ensembled(toy_search_store, tmp_path_factory) -> fec.TuneResult:
    """A search of the toy store by two workers, its ensemble trained and saved."""
    root, data = toy_search_store
    out = tmp_path_factory.mktemp("ensembled") / "Logs"
    return fec.tune("toy", data_dir=data, dataset_dir=root / "dataset", out=out, trials=6, workers=2, ensemble_size=5, **SHORT)


def test_the_search_folder_holds_the_ensemble_members_and_weights(ensembled):
    record = json.loads((ensembled.path / "ensemble.json").read_text())
    assert sum(member["weight"] for member in record["members"]) == pytest.approx(1.0)
    assert record["score"] >= record["best_single"]["score"]  # never worse than its best member, on the selection rows
    assert all("sources" in member["recipe"] for member in record["members"])
    log = (ensembled.path / "tune.log").read_text()
    assert "[worker 1]" in log  # the second worker's lines are in the search's log


@pytest.fixture(scope="module")
def two_runs_ensembled(toy_store, tmp_path_factory) -> tuple[fec.Run, list[fec.Run]]:
    """Two runs of other recipes on the toy store, and their ensemble saved as one run beside them."""
    data, dataset = toy_store
    out = tmp_path_factory.mktemp("ensemble_run") / "Logs"
    places = {"data_dir": data, "dataset_dir": dataset, "out": out, "device": "cpu", "epochs": 8, "batch_size": 16}
    members = [
        fec.train("toy", runs=2, lr=1e-3, **places),
        fec.train("toy", sources=["llama", "bert"], runs=2, lr=2.5e-4, raw_inputs="all", **places),
    ]
    return ensemble_run("toy", {members[0]: 3, members[1]: 1}, data_dir=data, out=out), members


def test_the_ensemble_is_one_run_that_predicts_and_reports(two_runs_ensembled, capsys):
    ensemble, members = two_runs_ensembled
    model = json.loads((ensemble.path / "model.json").read_text())
    assert model["kind"] == "ensemble"
    assert [(m["run"], m["weight"]) for m in model["members"]] == [(members[0].path.name, 0.75), (members[1].path.name, 0.25)]
    # Scored once, from the members' probabilities: the weighted mean of theirs, on test too.
    stored = [np.load(run.path / "probabilities.npz") for run in (ensemble, *members)]
    assert np.allclose(stored[0]["test"], 0.75 * stored[1]["test"] + 0.25 * stored[2]["test"], atol=1e-6)
    assert ensemble.results["seeds"][0]["test"]["acc"] == ensemble.metrics["test"]["acc"]

    texts = ["so sad and lonely", "furious rage", "i was so happy and glad today"]
    together = ensemble.classifier(device="cpu").predict_proba(texts)
    alone = [run.classifier(device="cpu", ensemble=True).predict_proba(texts) for run in members]
    assert np.allclose(together, 0.75 * alone[0] + 0.25 * alone[1], atol=1e-6)  # one model: the members' weighted mean
    capsys.readouterr()
    assert predict_script.main(["--run", str(ensemble.path), "--text", texts[-1], "--device", "cpu"]) == 0
    assert "joyful" in capsys.readouterr().out
    assert report_script.main([str(ensemble.path.parent), "--task", "toy", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {ensemble.path.name, members[0].path.name} <= {row["runs"] for row in rows}  # side by side
    card = (ensemble.path / "README.md").read_text(encoding="utf-8")  # its model card (and page) name the members
    assert "Method: ensemble of fusion runs chosen by tune.py" in card and "weight 0.75" in card and "weight 0.25" in card
    assert "weight 0.75" in (ensemble.path / "index.html").read_text(encoding="utf-8")


def test_an_ensemble_whose_member_is_gone_is_refused_by_name(two_runs_ensembled, tmp_path):
    ensemble, members = two_runs_ensembled
    moved = tmp_path / ensemble.path.name
    shutil.copytree(ensemble.path, moved)  # without the member runs beside it
    with pytest.raises(fec.FecError, match=f"its member run .*{members[0].path.name} is missing"):
        fec.Run(moved).classifier(device="cpu")


def test_ensemble_size_0_keeps_the_chosen_recipe_alone(toy_search_store, tmp_path):
    root, data = toy_search_store
    found = fec.tune(
        "toy", data_dir=data, dataset_dir=root / "dataset", out=tmp_path / "Logs", trials=3, ensemble_size=0, **SHORT
    )
    assert found.ensemble is None and not (found.path / "ensemble.json").exists()
    assert len(pd.read_csv(found.path / "candidates.csv")) == 3


def test_the_search_logs_the_chosen_recipe_and_the_ensemble_side_by_side_with_their_cost(two_runs_ensembled, caplog):
    from fec.api.tune import log_side_by_side

    ensemble, members = two_runs_ensembled
    with caplog.at_level("INFO", logger="fec.api.tune"):
        log_side_by_side(members[0], ensemble)
    line = caplog.messages[-1]
    averaged = members[0].results["ensemble"]["test"]["acc"]
    assert f"the chosen recipe {members[0].metrics['test']['acc']:.2f} (mean of 2 seeds, one head each" in line
    assert f"its 2 seeds averaged {averaged:.2f} with 2 heads" in line
    assert f"the candidates' ensemble of 2 runs {ensemble.metrics['test']['acc']:.2f} (4 heads over 5 sources)" in line


def test_candidates_are_shared_as_evenly_as_they_go_by_no_more_workers_than_candidates():
    from fec.classify.search import trial_shares

    assert trial_shares(5, 2) == [3, 2] and trial_shares(3, 5) == [1, 1, 1] and trial_shares(None, 2) == [None, None]


def test_an_error_a_worker_process_raises_reaches_the_parent_whole():
    """A pool of workers sends its errors back pickled: a FecError keeps its one-line message and fields."""
    import pickle

    from fec.core.errors import RunFileError, SettingError

    setting = pickle.loads(pickle.dumps(SettingError("out", "Logs/x", "is a file")))
    assert (str(setting), setting.setting) == ("out Logs/x: is a file", "out")
    run_file = pickle.loads(pickle.dumps(RunFileError("Logs/run/model.json", "not found")))
    assert (str(run_file), run_file.problem) == ("Logs/run/model.json: not found", "not found")


def test_an_ensemble_of_no_runs_or_a_weightless_member_is_refused(two_runs_ensembled):
    _, members = two_runs_ensembled
    with pytest.raises(fec.FecError, match="at least one member run"):
        ensemble_run("toy", {})
    with pytest.raises(fec.FecError, match="weight must be above 0, got 0"):
        ensemble_run("toy", {members[0]: 1, members[1]: 0}, out=members[0].path.parent)
