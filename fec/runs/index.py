"""The page across runs, `Logs/index.html`: every recipe of every task as `report.py` pools it (seeds
of the same recipe on the same features in one row), in one sortable, filterable table whose rows
link to their run pages, and per task a chart of its recipes side by side with their spread over
seeds. Self-contained (inline CSS, script and images), so it opens from the file system.

    python report.py --html               # Logs/index.html (and the page of any run that lacks one)
    python report.py --html --task ED     # Logs/index_ED.html: that task's runs only
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

from fec.core.errors import ReportError, RunFileError
from fec.core.files import atomic_write_text
from fec.runs.page import PAGE, write_run_page, write_run_pages_safely
from fec.runs.rendering import environment
from fec.runs.report import Row, find_runs, pool
from fec.runs.report_format import METRIC_NAMES, at_chance_cell, cv_cell, ensemble_cell
from fec.runs.summary import METHODS

INDEX = "index.html"


def row_view(number: int, row: Row, logs_dir: Path) -> dict:
    """One table row of the index; each run's `page` is its path from `logs_dir`, which the
    template writes as a URL (`url` filter: run folders may be renamed to anything)."""
    return {
        "number": number,
        "task": row.task,
        "method": METHODS.get(row.script, row.script),
        "compat": row.compat or "–",
        "command": row.command,
        "features": row.features,
        "seeds": row.seeds,
        "split": row.split,
        "stats": row.stats,
        "cv": cv_cell(row),
        "ensemble": ensemble_cell(row),
        "at_chance": at_chance_cell(row),
        "created": row.created[:16].replace("T", " "),
        "runs": [{"name": f.name, "page": Path(os.path.relpath(f / PAGE, logs_dir)).as_posix()} for f in row.folders],
    }


def option_groups(command: str, task: str) -> list[str]:
    """A row's command as its options, `-name value...` each, after `-dataset TASK`."""
    groups: list[str] = []
    for word in command.split(f"-dataset {task}", 1)[-1].split():
        if word.startswith("-") and not word[1:2].isdigit() and not word.startswith("-."):  # -1, -.5: values
            groups.append(word)
        elif groups:
            groups[-1] += " " + word
    return groups


def chart_labels(views: list[dict]) -> list[str]:
    """`#6 fusion -sigma 0.001 -features ...`: each row's number, method and the options that set it
    apart from the task's other rows of the same method, cut to fit the chart."""
    groups = [option_groups(v["command"], v["task"]) for v in views]
    labels = []
    for view, own in zip(views, groups, strict=True):
        peers = [g for v, g in zip(views, groups, strict=True) if v["method"] == view["method"]]
        shared = set.intersection(*map(set, peers)) if len(peers) > 1 else set()
        label = f"#{view['number']} {view['method'].split()[0]} " + " ".join(g for g in own if g not in shared)
        labels.append(label.strip() if len(label) <= 80 else label[:79] + "…")
    return labels


def recipe_chart(task: str, views: list[dict]) -> str | None:
    """A PNG (as a data URI) of the task's recipes: the headline metric's mean over seeds, the bar
    ending at it and the whisker one sample std either side; None for a task with one recipe."""
    if len(views) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = "acc" if "acc" in views[0]["stats"] else "macro_f1"
    shown = [v for v in views if (v["stats"].get(metric) or {}).get("mean") is not None]
    means = [v["stats"][metric]["mean"] for v in shown]
    stds = [v["stats"][metric].get("std") or 0.0 for v in shown]
    names = chart_labels(shown)
    fig, ax = plt.subplots(figsize=(11, 0.42 * len(shown) + 1.2))
    ax.barh(range(len(shown)), means, xerr=stds, color="#1f6feb", ecolor="#1f2328", capsize=3)
    # Commands and task names are shown as written: `$` in them is not matplotlib's mathtext.
    ax.set_yticks(range(len(shown)), names, fontsize=8, parse_math=False)
    ax.invert_yaxis()
    ax.set_xlabel(f"{shown[0]['split']} {METRIC_NAMES[metric]} (%), mean ± std over seeds")
    ax.set_title(f"{task}: recipes side by side", parse_math=False)
    for y, (mean, std, n) in enumerate(zip(means, stds, [len(v["seeds"]) for v in shown], strict=True)):
        ax.text(mean + std + 0.8, y, f"{mean:.2f} ({n} seed{'s' if n != 1 else ''})", va="center", fontsize=7)  # past the whisker
    ax.set_xlim(0, max(m + s for m, s in zip(means, stds, strict=True)) * 1.2 + 1)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render_index(rows: list[Row], logs_dir: Path) -> str:
    """The index page's HTML: the rows numbered, each task's chart embedded."""
    views = [row_view(i, row, logs_dir) for i, row in enumerate(rows, start=1)]
    tasks = sorted({v["task"] for v in views})
    metrics = [m for m in METRIC_NAMES if any(m in row.stats for row in rows)]
    charts = {task: recipe_chart(task, [v for v in views if v["task"] == task]) for task in tasks}
    template = environment().get_template("index.html.j2")
    return template.render(
        title=f"fec runs · {logs_dir.resolve().name}",
        rows=views,
        tasks=tasks,
        metrics=metrics,
        metric_names=METRIC_NAMES,
        charts={task: chart for task, chart in charts.items() if chart},
    )


def write_index(rows: list[Row], logs_dir: Path, task: str | None = None) -> Path:
    """`logs_dir/index.html`; one task's runs go to `index_{task}.html`, so the index of every run stays."""
    path = logs_dir / (f"index_{task}.html" if task else INDEX)
    atomic_write_text(path, render_index(rows, logs_dir))
    return path


def write_html(paths: list[Path], defaults: dict[str, dict] | None, task: str | None = None) -> list[Path]:
    """`report.py --html`: a run folder gets its page and model card written again; a folder of
    runs (Logs/) gets its index.html, and the page of each of its runs that has none yet.
    `defaults` (script -> option defaults) stand in for runs from before runs recorded their own."""
    written = []
    for path in paths:
        if (path / "config.json").exists():
            try:
                written.append(write_run_page(path, defaults))
            except RunFileError:  # already one line naming the file
                raise
            except (OSError, KeyError, ValueError) as err:  # a run folder edited or written by hand
                raise ReportError(f"{path}: its page cannot be written ({type(err).__name__}: {err})") from err
            continue
        runs = find_runs([path], defaults, task)
        for run in runs:
            if not (run.folder / PAGE).exists():
                write_run_pages_safely(run.folder, defaults)
        written.append(write_index(pool(runs), path, task))
    return written
