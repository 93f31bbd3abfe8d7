"""Which features carry the emotion: a linear probe of every stored slot x pooling x layer of a task.

    python probe.py --task ED                      # every folder in dataset/ED/
    python probe.py --task semeval_eng --cv 5      # small valid split: C and thresholds by 5-fold CV on train

Every store folder of the task is a set of *views*: one (N, H) matrix per pooling and hidden
layer (a variant's (N, P, L, H) features give P x L views; a published folder gives its own
pooling, e.g. the LLaMA slot's mean of each of its last 5 layers). Each view gets a linear probe
(`fec.classify.linear_probe`) with C chosen on validation, or by K-fold cross-validation on train when the
validation split is small (`fec.classify.cross_validation.folds_for`, or `--cv K`); test is read once per view, at
the chosen C. The job (`fec.api.probe`, `probe.py`) writes the table and the layer curves.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fec.classify.cross_validation import check_folds, folds_for
from fec.classify.linear_probe import select_and_fit
from fec.classify.seed_result import scored_splits
from fec.core.errors import StoreError
from fec.core.metrics import selection_metric
from fec.features.pooling import registry_name
from fec.features.store import StoredFeatures, feature_path, load_features, read_manifest

log = logging.getLogger(__name__)

MODES = ("train", "valid", "test")
# What a result row says about its view (then the probe's C, selection, valid and test metrics).
VIEW_COLUMNS = ("folder", "slot", "model", "pooling", "layer", "num_hidden_states", "prompt", "chat_template")


@dataclass(frozen=True)
class View:
    """One (N, H) feature matrix of a store folder."""

    folder: str
    slot: str
    model: str
    pooling: str
    layer: int  # absolute hidden-state index (0 = embeddings); negative when the depth is unknown
    num_hidden_states: int | None
    prompt: str  # the prompts, joined by " | " ("" for none)
    chat_template: bool
    position: tuple  # where the view sits in the stored tensor's axes after the row axis

    @property
    def name(self) -> str:
        return f"{self.folder}:{self.pooling}:{self.layer}"


def folder_views(manifest: dict, folder: str) -> list[View]:
    """The views a store folder holds, from its manifest."""
    base = dict(folder=folder, slot=manifest["slot"], model=str(manifest.get("model")))
    if manifest.get("feature_axes") == ["row", "pooling", "layer", "hidden"]:
        prompt, chat = " | ".join(manifest.get("prompts") or []), bool(manifest.get("chat_template"))
        n = manifest["num_hidden_states"]
        return [
            View(**base, pooling=p, layer=layer, num_hidden_states=n, prompt=prompt, chat_template=chat, position=(i, j))
            for i, p in enumerate(manifest["poolings"])
            for j, layer in enumerate(manifest["layer_indices"])
        ]
    pooling = registry_name(manifest.get("pooling"))
    if manifest.get("llama_pooling") not in (None, "masked"):
        pooling = f"mean_{manifest['llama_pooling']}"
    published = dict(base, pooling=pooling, num_hidden_states=None, prompt="", chat_template=False)
    if len(manifest["feature_shape"]) == 2:  # the published LLaMA slot: last layer first
        return [View(**published, layer=-(k + 1), position=(k,)) for k in range(manifest["feature_shape"][0])]
    return [View(**published, layer=-1, position=())]


def load_folder(dataset_dir: Path | str, task: str, folder: str, modes: tuple[str, ...] = MODES) -> dict[str, StoredFeatures]:
    """The folder's splits among `modes` (memory-mapped), checked to come from one extraction of one data set."""
    splits = {}
    for mode in modes:
        path = feature_path(dataset_dir, task, folder, mode)
        if path.exists():
            splits[mode] = load_features(path, mmap=True)
    if "train" not in splits or ("valid" not in splits):
        raise StoreError(f"{Path(dataset_dir) / task / folder}: train and valid features are needed for a probe")
    settings = {mode: {k: v for k, v in s.manifest["settings"].items() if k != "csv_sha256"} for mode, s in splits.items()}
    if len({repr(v) for v in settings.values()}) > 1:
        where = Path(dataset_dir) / task / folder
        raise StoreError(f"{where}: splits were extracted with different settings; re-extract them with --mode all")
    return splits


def store_folders(dataset_dir: Path | str, task: str) -> list[str]:
    """Every folder of the task's store with finished train and valid features; none is a
    `StoreError` that gives the commands that make them."""
    root = Path(dataset_dir) / task
    folders = (
        sorted(p.name for p in root.iterdir() if (p / "train.json").is_file() and (p / "valid.json").is_file())
        if root.is_dir()
        else []
    )
    if not folders:
        raise StoreError(
            f"{root}: no features for task {task!r}; extract the search space with `python tune.py --task {task} --extract "
            f"--preset offline` (or --model SLOT=MODEL), or run the extractors (`python llama2_rep_extract.py --task {task} "
            "--mode all`, bert_rep_extract.py, roberta_rep_extract.py)"
        )
    return folders


def store_fingerprint(dataset_dir: Path | str, task: str, folders: list[str]) -> dict[str, dict[str, str]]:
    """Which features a probe read: each folder's train and valid sha256, from their manifests. A
    later probe of the same fingerprint (same folders, same features) gives the same rows."""
    return {
        folder: {
            mode: read_manifest(feature_path(dataset_dir, task, folder, mode)).get("features_sha256")
            for mode in ("train", "valid")
        }
        for folder in folders
    }


def matrix(stored: StoredFeatures, view: View) -> torch.Tensor:
    return stored.features[(slice(None), *view.position)].float()


def probe_rows(
    dataset_dir: Path | str,
    task: str,
    folders: list[str],
    *,
    cv: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    combine: bool = False,
    modes: tuple[str, ...] = MODES,
    workers: int = 1,
) -> tuple[list[dict], dict]:
    """One result row per view of `folders`, and what the probe did (cv folds, selection metric).
    `combine` adds a row for one probe of the concatenated best view of every folder; `modes`
    without test keeps test unread (a search that must not see it); `workers` processes of one
    thread each probe the views between them (each view's probe is the same whoever runs it)."""
    rows, setup = [], {}
    loaded = {folder: load_folder(dataset_dir, task, folder, modes) for folder in folders}
    first = next(iter(loaded.values()))
    multilabel = bool(first["train"].manifest.get("multilabel"))
    valid_rows = first["valid"].features.shape[0]
    folds = folds_for(cv, valid_rows, first["train"].features.shape[0])
    check_folds(folds, first["train"].features.shape[0], zero="choose C on valid")
    if folds:
        log.info("choosing C by %d-fold cross-validation on train (valid has %d rows; kept as a check)", folds, valid_rows)
    setup = {"cv": folds, "selection_metric": selection_metric(multilabel), "multilabel": multilabel, "valid_rows": valid_rows}
    views = loaded_views(loaded)
    if workers > 1 and len(views) > 1:
        rows = probed_by_workers(dataset_dir, task, folders, modes, len(views), (multilabel, folds, seed, device), workers)
    else:
        progress = tqdm(views, desc=f"probe {task}", unit="view")
        rows = [probe_view(loaded, folder, view, multilabel, folds, seed, device) for folder, view in progress]
    if combine:
        rows.append(combined_row(loaded, views, rows, setup, seed, device))
    return rows, setup


def loaded_views(loaded: dict[str, dict[str, StoredFeatures]]) -> list[tuple[str, View]]:
    """Every (folder, view) of the loaded folders, in one order: a worker's view indices count in it."""
    return [(folder, v) for folder, splits in loaded.items() for v in folder_views(splits["train"].manifest, folder)]


def probe_view(loaded: dict, folder: str, view: View, multilabel: bool, folds: int, seed: int, device: str) -> dict:
    """The result row of one view of a loaded folder."""
    splits = loaded[folder]
    x = {mode: matrix(s, view) for mode, s in splits.items()}
    row = {k: getattr(view, k) for k in VIEW_COLUMNS}
    return row | probe_row(x, splits, multilabel, folds, seed, device)


def probed_by_workers(
    dataset_dir: Path | str, task: str, folders: list[str], modes: tuple[str, ...], count: int, setup: tuple, workers: int
) -> list[dict]:
    """The rows of all `count` views, in order, probed by `workers` processes (each takes every
    `workers`-th view: the layers of one folder differ little in cost)."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads or locks inherited
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        shares = [
            pool.submit(probe_share, dataset_dir, task, folders, modes, range(first, count, workers), setup)
            for first in range(workers)
        ]
        rows: list[dict | None] = [None] * count
        for future in tqdm(as_completed(shares), total=workers, desc=f"probe {task} ({workers} workers)", unit="share"):
            for index, row in future.result():
                rows[index] = row
    return rows


def probe_share(
    dataset_dir: Path | str, task: str, folders: list[str], modes: tuple[str, ...], indices: range, setup: tuple
) -> list[tuple[int, dict]]:
    """One worker's views (by index among all views of `folders`), on one thread."""
    torch.set_num_threads(1)
    loaded = {folder: load_folder(dataset_dir, task, folder, modes) for folder in folders}
    views = loaded_views(loaded)
    return [(index, probe_view(loaded, *views[index], *setup)) for index in indices]


def probe_row(
    x: dict[str, torch.Tensor], splits: dict[str, StoredFeatures], multilabel: bool, folds: int, seed: int, device: str
) -> dict:
    """One probe of the matrices `x` (per split): its C, selection metrics, valid and test metrics."""
    y = {mode: s.labels for mode, s in splits.items()}
    train, valid = (x["train"], y["train"]), (x["valid"], y["valid"])
    probe = select_and_fit(train, valid, multilabel, cv=folds, seed=seed, device=device)
    row = {"c": probe.c, "selected_on": probe.selected_on} | {f"selection_{k}": v for k, v in probe.selection.items()}
    for mode in scored_splits(x):
        row |= {f"{mode}_{k}": v for k, v in probe.evaluate(x[mode], y[mode].numpy()).items()}
    return row


def combined_row(loaded: dict, views: list[tuple[str, View]], rows: list[dict], setup: dict, seed: int, device: str) -> dict:
    """A probe of the best view of each folder (by the selection metric), concatenated: the linear
    ceiling of the stored features together."""
    best: dict[str, tuple[float, View]] = {}
    for (folder, view), row in zip(views, rows, strict=True):
        value = row[f"selection_{setup['selection_metric']}"]
        if folder not in best or value > best[folder][0]:
            best[folder] = (value, view)
    chosen = [(folder, view) for folder, (_, view) in best.items()]
    splits = next(iter(loaded.values()))
    x = {mode: torch.cat([matrix(loaded[f][mode], v) for f, v in chosen], dim=1) for mode in splits}
    names = " + ".join(f"{view.folder}:{view.pooling}:{view.layer}" for _, view in chosen)
    view = {
        "folder": "combined",
        "slot": "all",
        "model": names,
        "pooling": "best view of each folder",
        "layer": -1,
        "num_hidden_states": None,
        "prompt": "",
        "chat_template": False,
    }
    return view | probe_row(x, splits, setup["multilabel"], setup["cv"], seed, device)


def best_rows(rows: list[dict], key: str) -> list[dict]:
    """The best layer (by the selection metric) of every folder x pooling, best first."""
    best: dict[tuple, dict] = {}
    for row in rows:
        group = (row["folder"], row["pooling"])
        if group not in best or row[key] > best[group][key]:
            best[group] = row
    return sorted(best.values(), key=lambda r: -r[key])
