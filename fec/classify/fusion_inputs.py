"""Assemble the classifier's inputs from the feature store, refusing sets that do not belong together.

    from fec.classify.fusion_inputs import load_fusion_data
    data = load_fusion_data("dataset", "ED", sources=["llama", "bert", "roberta"])
    data.splits["train"].inputs[0].shape, data.label_names

Every source of every split must come from the same CSV (sha256), have the same rows and the
same labels, and have been extracted for the slot whose folder it sits in. When the CSV a split
was extracted from is still in `data_dir` and has changed since (its sha256 differs from the
manifest's), the features are stale and refused with the command that re-extracts them. The
decoder (`llama`) source, when used, always comes first in `inputs`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fec.core.data import split_path
from fec.core.errors import SettingError, UsageError
from fec.core.files import sha256_file
from fec.features.backbones import SLOTS
from fec.features.picks import FeaturePick, slot_mismatch
from fec.features.store import (
    StoredFeatures,
    StoreError,
    feature_path,
    load_features,
    manifest_path,
)

log = logging.getLogger(__name__)

SOURCES = tuple(SLOTS)  # one source per backbone slot, in input order: the decoder first
DECODER_SOURCE = SOURCES[0]
EXTRACT_SCRIPTS = {"llama": "llama2_rep_extract.py", "bert": "bert_rep_extract.py", "roberta": "roberta_rep_extract.py"}


@dataclass
class SplitInputs:
    inputs: list[torch.Tensor]
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class FusionData:
    task: str
    sources: list[str]
    splits: dict[str, SplitInputs]
    label_names: list[str]
    multilabel: bool
    manifests: dict[str, dict[str, dict]]  # mode -> source -> manifest
    picks: dict[str, dict] = field(default_factory=dict)  # source -> FeaturePick.record, for the sources picked

    @property
    def decoder_shape(self) -> tuple[int, int] | None:
        if DECODER_SOURCE not in self.sources:
            return None
        return tuple(self.splits["train"].inputs[0].shape[1:])

    @property
    def encoder_dims(self) -> list[int]:
        offset = 1 if DECODER_SOURCE in self.sources else 0
        return [int(x.shape[1]) for x in self.splits["train"].inputs[offset:]]

    def to(self, device: torch.device) -> FusionData:
        for split in self.splits.values():
            split.inputs = [x.to(device) for x in split.inputs]
            split.labels = split.labels.to(device)
        return self


def order_sources(sources: list[str]) -> list[str]:
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        raise SettingError("sources", " ".join(sources), f"choose from {', '.join(SOURCES)}")
    return [s for s in SOURCES if s in sources]


def _check_same_origin(mode: str, stored: dict[str, StoredFeatures], slot_dirs: dict[str, str]) -> None:
    (_, first), *rest = stored.items()
    for source, feats in stored.items():
        folder = slot_dirs[source]
        written_for = feats.manifest.get("store_dir", feats.manifest.get("slot"))
        if written_for != folder:
            raise StoreError(
                f"{manifest_path(feats.path)}: extracted for slot {written_for!r}, not {folder!r}; "
                f"re-extract it with {EXTRACT_SCRIPTS.get(folder.split('_')[0].split('-')[0], 'its slot extraction script')}"
            )
    for _, feats in rest:
        for key, what in (("csv_sha256", "source CSV"), ("rows", "row count"), ("label_names", "label names")):
            if feats.manifest.get(key) != first.manifest.get(key):
                raise StoreError(
                    f"{manifest_path(feats.path)}: {what} differs from {manifest_path(first.path)} "
                    f"({feats.manifest.get(key)!r:.40} vs {first.manifest.get(key)!r:.40}); "
                    f"re-extract {mode} so every source reads the same data"
                )
        if not torch.equal(feats.labels, first.labels):
            raise StoreError(f"{feats.path}: labels differ from {first.path}'s; re-extract {mode}")


def extract_command(manifest: dict, mode: str, dataset_dir: Path | str, data_dir: Path | str) -> str:
    """The command line that extracts `mode` again with the manifest's model and settings, into
    the same store from the same data folder, replacing the stale file (`--overwrite`)."""
    slot, settings = manifest.get("slot", "llama"), manifest.get("settings", {})
    words = ["python", EXTRACT_SCRIPTS.get(slot, f"{slot}_rep_extract.py"), "--task", str(manifest.get("task")), "--mode", mode]
    if manifest.get("model"):
        words += ["--model", str(manifest["model"])]
    if manifest.get("compat") == "reference":
        words += ["--compat", "reference"]
    elif slot == "llama" and manifest.get("llama_pooling") not in (None, "masked"):
        words += ["--llama_pooling", str(manifest["llama_pooling"])]
    for option in ("dtype", "limit", "max_len", "layers"):
        if settings.get(option) not in (None, "auto"):
            words += [f"--{option}", str(settings[option])]
    return " ".join(words + ["--data_dir", str(data_dir), "--dataset_dir", str(dataset_dir), "--overwrite"])


def _check_not_stale(
    data_dir: Path | str, dataset_dir: Path | str, task: str, mode: str, stored: dict[str, StoredFeatures]
) -> None:
    """Refuse features extracted from an earlier version of the split's CSV, when the CSV is here."""
    csv = split_path(data_dir, task, mode)
    if not csv.is_file():
        return
    now = sha256_file(csv)
    for feats in stored.values():
        then = feats.manifest.get("csv_sha256")
        if then != now:
            raise StoreError(
                f"{manifest_path(feats.path)}: extracted from another version of {csv} (sha256 {str(then)[:12]}, "
                f"the file now {now[:12]}); re-extract: {extract_command(feats.manifest, mode, dataset_dir, data_dir)}"
            )


def pick_folder(dataset_dir: Path | str, task: str, pick: FeaturePick) -> str:
    """The store folder a pick reads: its `@FOLDER`, else the one unprompted variant folder of
    the slot that holds the pooling and every layer asked for."""
    if pick.folder:
        manifest_file = Path(dataset_dir) / task / pick.folder / "train.json"
        try:
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            where = Path(dataset_dir) / task
            problem = f"{manifest_file} is missing or unreadable; name a folder of {where} that holds extracted features"
            raise SettingError("features", pick.text, problem) from None
        if not isinstance(manifest, dict):
            raise SettingError("features", pick.text, f"{manifest_file} is not a store manifest (a JSON object)")
        problem = slot_mismatch(pick.slot, manifest)
        if problem:
            raise SettingError("features", pick.text, f"{manifest_file.parent} {problem}")
        return pick.folder
    root, fits = Path(dataset_dir) / task, []
    for manifest_file in sorted(root.glob("*/train.json")):
        try:
            m = json.loads(manifest_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if m.get("slot") != pick.slot or m.get("feature_axes") is None or m.get("prompts") or m.get("chat_template"):
            continue
        if pick.pooling in m["poolings"]:
            try:
                wanted = pick.layers.resolve(m["num_hidden_states"])
            except UsageError:
                continue
            if set(wanted) <= set(m["layer_indices"]):
                fits.append(manifest_file.parent.name)
    if len(fits) != 1:
        found = f"several folders hold them ({', '.join(fits)})" if fits else f"no {pick.slot} variant in {root} has them"
        raise SettingError("features", pick.text, f"{found}; name one with @FOLDER, or extract with --pooling/--layers")
    return fits[0]


def picked(stored: StoredFeatures, pick: FeaturePick | None) -> torch.Tensor:
    """A source's input: the stored features, or a pick's pooling and layers of them (the
    decoder keeps one vector per layer; an encoder's layers are averaged into one vector)."""
    if pick is None:
        return stored.features
    chosen = pick.select(stored.features, stored.manifest)
    return chosen if pick.slot == DECODER_SOURCE else chosen.mean(dim=1)


def load_fusion_data(
    dataset_dir: Path | str,
    task: str,
    sources: list[str],
    *,
    modes: tuple[str, ...] = ("train", "valid", "test"),
    slot_dirs: dict[str, str] | None = None,
    data_dir: Path | str | None = None,
    picks: dict[str, FeaturePick] | None = None,
) -> FusionData:
    """Load `sources` for every split. train and valid are required; test is optional (a task
    whose test split is held back trains and reports validation only).

    `slot_dirs` maps a source to the store folder it is read from (default: its own name);
    the reference-compatibility mode uses it to reproduce the published loader defect.
    `picks` choose, per source, a pooling and layers from a variant folder (`FeaturePick`).
    `data_dir`, when given, is where the CSVs are checked for changes since extraction.
    """
    sources = order_sources(list(sources))
    picks = {s: p for s, p in (picks or {}).items() if s in sources}
    slot_dirs = {s: s for s in sources} | (slot_dirs or {}) | {s: pick_folder(dataset_dir, task, p) for s, p in picks.items()}
    splits, manifests, label_names, multilabel = {}, {}, None, False
    for mode in modes:
        paths = {s: feature_path(dataset_dir, task, slot_dirs[s], mode) for s in sources}
        if mode == "test" and not any(p.exists() for p in paths.values()):
            log.warning("no test features for %s: training and reporting on validation only", task)
            continue
        # Variants hold every layer: map them, and copy out only the layers picked.
        stored = {s: load_features(paths[s], mmap=s in picks) for s in sources}
        _check_same_origin(mode, stored, slot_dirs)
        if data_dir is not None:
            _check_not_stale(data_dir, dataset_dir, task, mode, stored)
        first = next(iter(stored.values()))
        if label_names is None:
            label_names, multilabel = first.manifest["label_names"], bool(first.manifest.get("multilabel"))
        elif first.manifest["label_names"] != label_names:
            raise StoreError(f"{manifest_path(first.path)}: label names differ from the train split's")
        inputs = [picked(stored[s], picks.get(s)) for s in sources]
        splits[mode] = SplitInputs(inputs, first.labels)
        manifests[mode] = {s: stored[s].manifest for s in sources}
    for index, source in enumerate(sources):
        # One model with one set of settings for every split, or the splits are not comparable.
        recipe = {
            mode: (tuple(splits[mode].inputs[index].shape[1:]),)
            + tuple(repr(manifests[mode][source].get(k)) for k in ("model_fingerprint", "pooling", "layers", "max_len"))
            for mode in splits
        }
        if len(set(recipe.values())) > 1:
            raise StoreError(
                f"{Path(dataset_dir) / task / slot_dirs[source]}: splits were extracted with different models or "
                f"settings ({', '.join(recipe)}); re-extract them together (-mode all)"
            )
    records = {s: p.record(manifests["train"][s]) for s, p in picks.items()}
    return FusionData(task, sources, splits, label_names, multilabel, manifests, records)
