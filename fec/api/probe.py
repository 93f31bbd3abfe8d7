"""Linear probes of every stored feature of a task: which slot, pooling and layer carry the emotion.

    import fec
    table = fec.probe("ED")                                    # every folder in dataset/ED/
    table = fec.probe("ED", folders=["llama-mean+last-all"], cv=5, combine=True)
    table[table.best]                                          # the best layer of each folder x pooling
    table.attrs["folder"]                                      # Logs/probe_ED_20261207-153000

One row per view (folder x pooling x layer): what the view is (`fec.classify.probing.VIEW_COLUMNS`),
the chosen C, the selection metrics (`selection_acc`, ... on valid or out of fold), valid and test
metrics, and `best`: whether it is the best layer of its folder x pooling (the rows of probe.md).
Writes Logs/probe_{task}_{stamp}/: probe.csv (the rows, without `best`), probe.md (the best rows,
best first), layer_curves.png, and config.json (the settings, what the probe did, the features'
sha256, provenance). `table.attrs` holds the folder and what the probe did: `cv` (folds, 0 = C
chosen on valid), `selection_metric`, `multilabel`, `valid_rows`. The probes themselves are
`fec.classify.probing` and `fec.classify.linear_probe`; the command is `fec probe` (probe.py).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fec.classify.probing import best_rows, probe_rows, store_fingerprint, store_folders
from fec.core.errors import SettingError
from fec.core.files import atomic_write_text
from fec.core.metrics import MULTILABEL_HEADLINE, SINGLE_LABEL_KEYS
from fec.core.provenance import provenance
from fec.core.settings import (
    Settings,
    documented,
    given_path,
    given_record,
    non_negative_int,
    output_dir,
    setting,
    task_name,
    text,
)
from fec.core.settings import device as usable_device
from fec.features.backbones import pick_device
from fec.runs.escape import markdown_cell
from fec.runs.folder import make_run_dir, write_json
from fec.runs.output_rule import check_outputs
from fec.runs.plots import plot_layer_curves

log = logging.getLogger(__name__)
TABLE_METRICS = {False: SINGLE_LABEL_KEYS, True: MULTILABEL_HEADLINE}  # by whether the task is multi-label


@dataclass(kw_only=True)
class ProbeSettings(Settings):
    """What `fec.probe` probes and where it writes (`fec probe -h` lists the same settings as options)."""

    task: str = setting(check=task_name, help="task folder under --dataset_dir")
    device: str = setting("auto", check=usable_device, help="cuda, cuda:N, cpu, or auto (cuda when available)")
    dataset_dir: Path = setting(Path("dataset"), check=given_path, help="feature store root")
    folders: list[str] | None = setting(None, check=text, many=True, help="store folders to probe (default: every one)")
    cv: int | None = setting(
        None,
        check=non_negative_int,
        help="choose C by K-fold cross-validation on train (0 = on valid; default: 5 when valid has under 1000 rows and "
        "under a tenth of train's)",
    )
    combine: bool = setting(
        False,
        help="also probe the concatenation of the best view of every folder (the linear ceiling of the features together)",
    )
    fold_seed: int = setting(0, check=non_negative_int, help="seed of the cross-validation folds")
    out: Path = setting(Path("Logs"), check=output_dir, help="where the probe folder is created")


def recorded_fold_seed(record: dict) -> int | None:
    """The folds' seed a probe's or search's record holds: a probe's config.json `args.fold_seed`
    (`args.seed` in probes from before the setting was named for what it seeds), a search's
    `args.sampler_seed` (`args.seed` in searches from before), or its probe.json's `seed`."""
    args = record.get("args", {})
    return args.get("fold_seed", args.get("sampler_seed", args.get("seed", record.get("seed"))))


@documented(ProbeSettings)
def probe(task: str | None = None, *, settings: ProbeSettings | None = None, **options) -> pd.DataFrame:
    """Probe every view of a task's stored features with a linear classifier; one row per view.

    fec.probe("ED", cv=5)   # -> DataFrame; .attrs["folder"] is the probe folder written
    """
    settings = given_record(ProbeSettings, settings, task=task, **options) or ProbeSettings(task=task, **options)
    check_outputs(settings)
    known = store_folders(settings.dataset_dir, settings.task)
    folders = settings.folders or known
    unknown = [f for f in folders if f not in set(known)]
    if unknown:
        have = ", ".join(sorted(known))
        raise SettingError("folders", " ".join(unknown), f"not in {settings.dataset_dir}/{settings.task} (have: {have})")
    started = time.perf_counter()
    rows, setup = probe_rows(
        settings.dataset_dir,
        settings.task,
        folders,
        cv=settings.cv,
        seed=settings.fold_seed,
        device=str(pick_device(settings.device)),
        combine=settings.combine,
    )
    run_dir = make_run_dir(settings.out, f"probe_{settings.task}")
    seconds = round(time.perf_counter() - started, 1)
    store = store_fingerprint(settings.dataset_dir, settings.task, folders)
    config = {"argv": sys.argv, "args": settings.record(), "setup": setup, "store": store, "seconds": seconds, **provenance()}
    write_json(run_dir / "config.json", config)
    pd.DataFrame(rows).to_csv(run_dir / "probe.csv", index=False, float_format="%.4f")
    atomic_write_text(run_dir / "probe.md", markdown_table(rows, setup))
    plot_layer_curves(rows, run_dir / "layer_curves.png", setup["selection_metric"], "cv" if setup["cv"] else "valid")
    log.info("%d views probed in %.0fs; wrote %s", len(rows), time.perf_counter() - started, run_dir)
    best = {id(row) for row in best_rows(rows, f"selection_{setup['selection_metric']}")}
    table = pd.DataFrame(rows).assign(best=[id(row) in best for row in rows])
    table.attrs = {"folder": run_dir, **setup}
    return table


def markdown_table(rows: list[dict], setup: dict) -> str:
    """probe.md: the best layer of every folder x pooling, best first."""
    key, metrics = setup["selection_metric"], TABLE_METRICS[setup["multilabel"]]
    chosen = "cv" if setup["cv"] else "valid"
    # Without a test split (held back), valid is shown: a check beside the cross-validated choice.
    shown = "test" if any("test_" + metrics[0] in row for row in rows) else "valid"
    head = ["folder", "pooling", "best layer", "C", f"{chosen} {key}", *(f"{shown} {m}" for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in best_rows(rows, f"selection_{key}"):
        layer = f"{row['layer']} of {row['num_hidden_states'] - 1}" if row["num_hidden_states"] else str(row["layer"])
        if row["folder"] == "combined":
            layer = row["model"]  # the views it concatenates
        tests = [f"{row[f'{shown}_{m}']:.2f}" if f"{shown}_{m}" in row else "" for m in metrics]
        # Folder and model names come from the store: written inert.
        cells = [
            markdown_cell(row["folder"]),
            row["pooling"],
            markdown_cell(layer),
            f"{row['c']:g}",
            f"{row[f'selection_{key}']:.2f}",
            *tests,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
