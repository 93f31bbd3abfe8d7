"""Run folders under `Logs/`: claimed by one `mkdir`, every log line copied to `train.log`, marked
`failed.json` when the run stops on an error; checkpoints and JSON records written by temp name
then rename. What a run folder holds:

    Logs/ED_20261122-101500/
        config.json          the options as resolved (and the parsers' defaults), git SHA, package versions, manifests
        train.log            everything the run printed
        results.json         per seed: best epoch, valid/test metrics, time; summary mean/std
                             (rewritten after every seed: `finished` is false until the last; fec.runs.results)
        model.json           what rebuilds the model (constructor config, sources, labels)
        failed.json          only when the run stopped on an error: what it was and when
        checkpoints/seedN.safetensors   the selected state of each seed
        curves.png, confusion.png, per_label.csv, predictions.csv   the best seed's figures (fec.runs.results)
        index.html, README.md   the run's page and model card (fec.runs.page, fec.runs.card)
    Logs/runs.csv            one row per run (fec.runs.table)
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors.torch import save_file

from fec.core.errors import RunFileError, SettingError
from fec.core.files import atomic_write, atomic_write_text
from fec.core.logs import also_log_to
from fec.core.paths import inside
from fec.runs.run_files import FAILED, read_run_json

log = logging.getLogger(__name__)


RUN_STAMP_FORMAT = "%Y%m%d-%H%M%S"
RUN_FOLDER_STAMP = re.compile(r"_(\d{8}-\d{6})(?:-(\d+))?$")
FAILED_MARKER = "failed.json"


def make_run_dir(out: Path | str, task: str) -> Path:
    """A new folder `{task}_{YYYYmmdd-HHMMSS}` under `out` (`-2`, `-3`, ... appended when taken).
    Claimed by `mkdir` itself, so runs started in the same second by separate processes never share one."""
    stamp = dt.datetime.now().strftime(RUN_STAMP_FORMAT)
    base = inside(out, f"{task}_{stamp}")
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SettingError("out", out, f"cannot create the folder ({err.strerror or err})") from err
    n = 1
    while True:
        run_dir = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            n += 1
        except OSError as err:
            raise SettingError("out", out, f"cannot create a run folder in it ({err.strerror or err})") from err


@contextmanager
def run_folder(out: Path | str, task: str) -> Iterator[Path]:
    """A new run folder (`make_run_dir`) for the body of a `with`, every log line copied to its
    train.log; if the body fails, the folder
    gets `failed.json` (the error, its traceback, when), so `report.py` names it as failed
    instead of taking it for a run in progress. Seeds it finished stay usable."""
    run_dir = make_run_dir(out, task)
    try:
        with also_log_to(run_dir / "train.log"):
            yield run_dir
    except BaseException as err:
        mark_failed(run_dir, err)
        raise


def mark_failed(run_dir: Path, err: BaseException) -> None:
    reason = "interrupted" if isinstance(err, KeyboardInterrupt) else f"{type(err).__name__}: {err}"
    payload = {
        "failed": dt.datetime.now().isoformat(timespec="seconds"),
        "error": reason,
        "traceback": traceback.format_exception(err)[-6:],
    }
    try:
        write_json(run_dir / FAILED_MARKER, payload)
    except OSError as write_err:  # a full disk may refuse even this; the error itself is still reported
        log.warning("%s: cannot mark the run as failed (%s)", run_dir, write_err.strerror or write_err)


def failure(run_dir: Path) -> str | None:
    """The error a run stopped on (from its `failed.json`), or None for a run that did not fail."""
    path = run_dir / FAILED_MARKER
    if not path.is_file():
        return None
    try:
        return read_run_json(path, FAILED).get("error", "unknown error")
    except RunFileError as err:  # the marker still says the run failed; its finished seeds stay usable
        return f"unknown error ({FAILED_MARKER}: {err.problem})"


def run_dir_started(name: str) -> tuple[dt.datetime, int] | None:
    """When `make_run_dir` claimed the folder `name`: its local-time stamp and same-second number
    (1, 2, ...), in the order the claims were made; None for a name it did not make."""
    match = RUN_FOLDER_STAMP.search(name)
    if not match:
        return None
    return dt.datetime.strptime(match[1], RUN_STAMP_FORMAT).astimezone(), int(match[2] or 1)


def write_json(path: Path, payload) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def save_checkpoint(run_dir: Path, seed: int, state_dict: dict) -> Path:
    path = run_dir / "checkpoints" / f"seed{seed}.safetensors"
    tensors = {k: v.contiguous() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"seed": str(seed)}))
    return path
