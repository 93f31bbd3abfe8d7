"""A recipe search's folder, `Logs/tune_{task}_{stamp}/`, written by `tune.py`:

search.json     what the search is (task, selection, sampler_seed, training, storage, study, store): written
                when the folder is made; --resume continues only a search of the same
config.json     the search's options, the store it searched, provenance
study.db        the Optuna study (SQLite): rerun with --resume FOLDER to continue it
probe.csv       the linear probe of every view (train and valid only), which the candidates come from
candidates.csv  every candidate: its options, its selection score per seed and mean, seconds, state
recipe.json     the chosen recipe as a `main.py --recipe` file, `_found_by` the search's top rows
predictions/    N.npy: candidate N's selection probabilities (valid, or out of fold on train), mean over its seeds
ensemble.json   the ensemble chosen greedily from them (`--ensemble_size`): members, weights, recipes, scores
index.html      the search table and a chart of the candidates, linked to the final run

from fec.runs.tune_folder import candidate_rows, write_tune_page
"""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path

import pandas as pd

from fec.core.errors import StudyError
from fec.core.files import atomic_write, atomic_write_text
from fec.runs.folder import write_json
from fec.runs.rendering import environment
from fec.runs.run_files import Fields, check, is_run_folder, read_run_json

log = logging.getLogger(__name__)

PAGE = "index.html"
TOP_ROWS = 5  # the search table's rows a recipe file's `_found_by` quotes
SEARCH_RECORD = "search.json"
STUDY_FILE = "study.db"  # the study's SQLite database, unless the search was given --storage
PREDICTIONS_DIR = "predictions"  # each finished candidate's selection probabilities, N.npy: the ensemble's library
ENSEMBLE_RECORD = "ensemble.json"  # the ensemble chosen from them: members, weights, scores
# What a search is: a resumed search must be the same in each of these (the store is compared on its own).
SEARCH = Fields(
    required={
        "task": str,
        "metric": str,
        "cv": int,
        "sampler_seed": int,
        "max_seeds": int,
        "training": dict,
        "storage": (str, None),
        "study": str,
        "store": dict[str, dict],
    }
)


def write_search_record(tune_dir: Path, record: dict) -> Path:
    """search.json: what the search in `tune_dir` is, written before its first step."""
    path = tune_dir / SEARCH_RECORD
    write_json(path, record)
    return path


def read_search_record(folder: Path) -> dict:
    """The search.json of a search folder; a folder that is not one (a main.py run folder, any other
    folder) or a damaged record is a `StudyError` or `RunFileError` naming it."""
    path = folder / SEARCH_RECORD
    if not path.is_file():
        if (folder / STUDY_FILE).is_file() and (folder / "probe.csv").is_file():
            raise StudyError(
                f"{folder}: a search folder of an earlier fec (no {SEARCH_RECORD}), whose settings cannot be checked; start a "
                "new search (its probes are reused)"
            )
        what = "a run folder" if is_run_folder(folder) else "not a search folder"
        raise StudyError(f"{folder}: {what} (no {SEARCH_RECORD}); --resume takes a folder tune.py made, tune_TASK_STAMP/")
    record = read_run_json(path, Fields())  # a JSON object, its fields checked below under their present names
    if "seed" in record and "sampler_seed" not in record:  # written before the setting was named for what it seeds
        record["sampler_seed"] = record.pop("seed")
    check(path, record, SEARCH, "")
    return record


def search_differences(recorded: dict, wanted: dict) -> list[str]:
    """`name: recorded -> wanted` for each setting of `wanted` the recorded search has otherwise
    (the store left out: `store_differences` says how it changed)."""
    return [
        f"{name} {recorded.get(name)!r} -> {value!r}"
        for name, value in wanted.items()
        if name != "store" and recorded.get(name) != value
    ]


def store_differences(recorded: dict[str, dict], store: dict[str, dict]) -> list[str]:
    """How the store changed since a search read it, folder by folder."""
    changes = [f"{folder} (new)" for folder in store if folder not in recorded]
    changes += [f"{folder} (gone)" for folder in recorded if folder not in store]
    changes += [f"{folder} (features changed)" for folder in store if folder in recorded and store[folder] != recorded[folder]]
    return changes


def candidate_rows(study) -> list[dict]:
    """Every trial of the study as a row: number, state, options, scores per seed, their mean,
    seconds; best first (finished candidates before pruned ones, then by mean)."""
    rows = []
    retries = {t.user_attrs["retry_of"]: t.number for t in study.trials if "retry_of" in t.user_attrs}
    for trial in study.trials:
        if trial.state.name == "WAITING":  # queued first candidates the budget never reached
            continue
        scores = trial.user_attrs.get("scores", [])
        mean = sum(scores) / len(scores) if scores else None
        state = {"COMPLETE": "complete", "PRUNED": "pruned"}.get(trial.state.name, trial.state.name.lower())
        if "same_as" in trial.user_attrs:  # proposed again by the sampler: not trained twice
            state = f"same as #{trial.user_attrs['same_as']}"
        if trial.number in retries:  # stopped or killed mid-way, and queued again by a resumed search
            state = f"interrupted, retried as #{retries[trial.number]}"
        elif "interrupted" in trial.user_attrs:  # stopped by Ctrl-C; a resumed search trains it again
            state = "interrupted"
        rows.append(
            {
                "number": trial.number,
                "state": state,
                "mean": mean,
                "scores": scores,
                "seconds": trial.user_attrs.get("seconds"),
                "options": dict(trial.params),
            }
        )
    return sorted(rows, key=lambda r: (r["state"] != "complete", -(r["mean"] if r["mean"] is not None else -1e9), r["number"]))


def write_candidates(tune_dir: Path, rows: list[dict]) -> Path:
    """candidates.csv: one row per candidate, its options as columns."""
    # Options as written (an lr of 2.5e-4 stays that, not a rounded float); scores to 4 decimals.
    frame = pd.DataFrame(
        [
            {
                "number": r["number"],
                "state": r["state"],
                "mean": "" if r["mean"] is None else f"{r['mean']:.4f}",
                "seeds": len(r["scores"]),
                "scores": " ".join(f"{s:.4f}" for s in r["scores"]),
                "seconds": r["seconds"],
                **{name: str(value) for name, value in r["options"].items()},
            }
            for r in rows
        ]
    )
    path = tune_dir / "candidates.csv"
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
    return path


def found_by(rows: list[dict], metric: str, where: str) -> list[str]:
    """The recipe file's `_found_by`: how the search chose, and its top rows."""
    top = [r for r in rows if r["state"] == "complete"][:TOP_ROWS]
    lines = [f"tune.py: {len(rows)} candidates compared by {metric} on {where} (test not read); top {len(top)}:"]
    for r in top:
        options = " ".join(f"{k}={v}" for k, v in r["options"].items())
        lines.append(f"#{r['number']} {metric} {r['mean']:.4f} over {len(r['scores'])} seeds: {options}")
    return lines


def write_recipe(tune_dir: Path, options: dict, notes: dict) -> Path:
    """recipe.json: the chosen candidate's options for `main.py --recipe`, with the notes first."""
    path = tune_dir / "recipe.json"
    atomic_write_text(path, json.dumps(notes | options, indent=2) + "\n")
    return path


def candidates_chart(rows: list[dict], metric: str) -> str | None:
    """A PNG (data URI) of each candidate's mean selection score in trial order, pruned ones
    marked: how the search converged. None without a scored candidate."""
    scored = [r for r in rows if r["mean"] is not None]
    if not scored:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6))
    for state, marker, colour in (("complete", "o", "#1f6feb"), ("pruned", "x", "#9a6700")):
        shown = [r for r in scored if r["state"] == state]
        ax.scatter([r["number"] for r in shown], [r["mean"] for r in shown], marker=marker, color=colour, label=state)
    ax.set(xlabel="candidate (trial order)", ylabel=f"{metric} (mean over its seeds)", title="Candidates of the search")
    ax.legend(loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_tune_page(tune_dir: Path, rows: list[dict], view: dict) -> Path:
    """index.html of the search: the chosen recipe, the chart and the table of candidates.
    `view` holds the task, metric, cv, command, chosen row, its recipe text and the final run."""
    names = sorted({name for r in rows for name in r["options"]})
    complete = sum(r["state"] == "complete" for r in rows)
    html = (
        environment()
        .get_template("tune.html.j2")
        .render(
            title=f"fec tune · {view['task']}",
            rows=rows,
            option_names=names,
            complete=complete,
            pruned=sum(r["state"] == "pruned" for r in rows),
            chart=candidates_chart(rows, view["metric"]),
            **view,
        )
    )
    path = tune_dir / PAGE
    atomic_write_text(path, html)
    return path
