"""Assemble the classifier's inputs from the feature store, refusing sets that do not belong together.

    from fec.classify.fusion_inputs import load_fusion_data
    data = load_fusion_data("dataset", "ED", sources=["llama", "bert", "roberta"])
    data.splits["train"].inputs[0].shape, data.label_names
    load_fusion_data("dataset", "ED", ["llama", "bert", "roberta", "e5"], picks={"e5": parse_pick("e5:mean:-1")})

A source is a published slot (read from its own folder, or through a pick) or a slot of the
user's (read through a pick only); its kind (`fec.core.slots`) comes from its manifests. Every
source of every split must come from the same CSV (sha256), have the same rows and the same
labels, and have been extracted for the slot whose folder it sits in. When the CSV a split was
extracted from is still in `data_dir` and has changed since (its sha256 differs from the
manifest's), the features are stale and refused with the command that re-extracts them. The
sources come in the fusion's input order (`fec.core.slots.source_order`): every decoder, then
every encoder; the published three as llama, bert, roberta.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fec.classify.lexical import model_file_problem
from fec.core.data import split_path
from fec.core.errors import SettingError, StoreError, UsageError
from fec.core.files import sha256_file
from fec.core.slots import (
    FOLDER_KINDS,
    KINDS,
    LEXICAL_SLOT,
    SCRIPTS,
    SLOT_NAMES,
    extraction_hint,
    extraction_script,
    slot_kind,
    source_order,
)
from fec.features.picks import FeaturePick, slot_mismatch
from fec.features.store import StoredFeatures, feature_path, load_features, manifest_path
from fec.features.store_slots import an, check_slot_name, slot_kinds, store_manifests

log = logging.getLogger(__name__)

SOURCES = SLOT_NAMES  # the published sources, in input order: the decoder first


@dataclass
class SplitInputs:
    inputs: list[torch.Tensor]
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, rows: torch.Tensor) -> SplitInputs:
        """These rows of the split (a cross-validation fold's)."""
        return SplitInputs([x[rows] for x in self.inputs], self.labels[rows])


@dataclass
class FusionData:
    task: str
    sources: list[str]
    splits: dict[str, SplitInputs]
    label_names: list[str]
    multilabel: bool
    manifests: dict[str, dict[str, dict]]  # mode -> source -> manifest
    picks: dict[str, dict] = field(default_factory=dict)  # source -> FeaturePick.record, for the sources picked
    kinds: dict[str, str] = field(default_factory=dict)  # source -> its kind (default: a published slot's own)
    model_files: dict[str, Path] = field(default_factory=dict)  # source -> the fitted model a run keeps (lexical)

    def kind(self, source: str) -> str:
        return self.kinds.get(source) or FOLDER_KINDS[source]

    @property
    def decoder_shapes(self) -> list[tuple[int, int]]:
        """(layers, width) of every decoder source, in input order (they come first)."""
        inputs = zip(self.sources, self.splits["train"].inputs, strict=True)
        return [tuple(x.shape[1:]) for source, x in inputs if KINDS[self.kind(source)].layered]

    @property
    def encoder_dims(self) -> list[int]:
        """The width of every one-vector source (encoders, then the lexical source), in input order
        (after the decoders)."""
        inputs = zip(self.sources, self.splits["train"].inputs, strict=True)
        return [int(x.shape[1]) for source, x in inputs if not KINDS[self.kind(source)].layered]

    def to(self, device: torch.device) -> FusionData:
        for split in self.splits.values():
            split.inputs = [x.to(device) for x in split.inputs]
            split.labels = split.labels.to(device)
        return self


def source_kinds(sources: list[str], folders: dict[str, str], manifests: dict[str, dict]) -> dict[str, str]:
    """Each source's kind: a published slot's own, else the kind its picked folder records."""
    kinds = {s: FOLDER_KINDS.get(s) or slot_kind(manifests[folders[s]]) for s in sources}
    for source, kind in kinds.items():
        if kind not in KINDS:
            raise StoreError(f"{folders[source]}/train.json: slot_kind {kind!r} is not one of {', '.join(KINDS)}")
    return kinds


def check_sources(dataset_dir: Path | str, task: str, sources: list[str], picks: dict[str, FeaturePick]) -> None:
    """Refuse no source, a bad name, and a slot of the user's without a pick (it has no published folder)."""
    if not sources:
        raise SettingError("sources", None, f"name at least one source (the published: {', '.join(SLOT_NAMES)})")
    for source in sources:
        check_slot_name(source, "sources")
    lexical = Path(dataset_dir) / task / LEXICAL_SLOT / "train.json"
    if LEXICAL_SLOT in sources and LEXICAL_SLOT not in picks and not lexical.is_file():
        elsewhere = f" --dataset_dir {dataset_dir}" if str(dataset_dir) != "dataset" else ""
        store = f"python {SCRIPTS[LEXICAL_SLOT]} --task {task}{elsewhere}"
        raise SettingError("sources", LEXICAL_SLOT, f"{lexical.parent} holds no lexical source yet; store it with {store}")
    for source in sources:
        if source not in FOLDER_KINDS and source not in picks:
            held = slot_kinds(store_manifests(dataset_dir, task))
            found = (
                f" ({Path(dataset_dir) / task} holds it as {an(held[source])} slot)"
                if source in held
                else f"; {absent_slot(dataset_dir, task, source)}"
            )
            problem = f"not a published slot ({', '.join(SLOT_NAMES)}), so it is read through a pick: --features {source}:"
            raise SettingError("sources", source, f"{problem}POOLING:LAYERS{found}")


def absent_slot(dataset_dir: Path | str, task: str, slot: str, pooling: str = "mean") -> str:
    """What to say of a slot the task's store holds no features of: where, and the command that
    extracts them (the one message for a source named and a pick made)."""
    command = extraction_hint(slot, FOLDER_KINDS.get(slot), task, pooling=pooling, dataset_dir=dataset_dir)
    how = f"--slot {slot}: {command}" if slot not in FOLDER_KINDS else command
    return f"{Path(dataset_dir) / task} holds no {slot} features yet (extract them with {how})"


def _check_same_origin(mode: str, stored: dict[str, StoredFeatures], slot_dirs: dict[str, str]) -> None:
    (_, first), *rest = stored.items()
    for source, feats in stored.items():
        folder = slot_dirs[source]
        written_for = feats.manifest.get("store_dir", feats.manifest.get("slot"))
        if written_for != folder:
            base = folder.split("-")[0]
            slot = "llama" if base == "llama_unmasked_padded" else base if base in FOLDER_KINDS else source
            raise StoreError(
                f"{manifest_path(feats.path)}: extracted for slot {written_for!r}, not {folder!r}; "
                f"re-extract it with {extraction_script(slot, FOLDER_KINDS.get(slot) or slot_kind(feats.manifest))}"
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
    script = extraction_script(slot, slot_kind(manifest) or "encoder")
    if slot_kind(manifest) == "lexical":  # one command makes every split: train's model scores the others
        return f"python {script} --task {manifest.get('task')} --data_dir {data_dir} --dataset_dir {dataset_dir} --overwrite"
    words = ["python", *script.split(), "--task", str(manifest.get("task")), "--mode", mode]
    if manifest.get("model"):
        words += ["--model", str(manifest["model"])]
    if manifest.get("compat") == "reference":
        words += ["--compat", "reference"]
    elif slot == "llama" and manifest.get("llama_pooling") not in (None, "masked"):
        words += ["--llama_pooling", str(manifest["llama_pooling"])]
    for option in ("dtype", "limit", "max_len", "layers"):
        if settings.get(option) not in (None, "auto"):
            words += [f"--{option}", str(settings[option])]
    words += variant_words(settings)
    return " ".join(words + ["--data_dir", str(data_dir), "--dataset_dir", str(dataset_dir), "--overwrite"])


def variant_words(settings: dict) -> list[str]:
    """The variant options of an extraction's settings (none for a published extraction)."""
    if not settings.get("poolings"):
        return []
    words = ["--pooling", *settings["poolings"]]
    if settings["poolings"] != ["pooler"]:
        words += ["--layers", str(settings["layer_choice"])]
    for prompt in settings.get("prompts") or []:
        words += ["--prompt", shlex.quote(prompt)]
    if settings.get("chat_template"):
        words.append("--chat_template")
    if settings.get("store_dtype") not in (None, "bfloat16"):
        words += ["--store_dtype", str(settings["store_dtype"])]
    return words


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


def pick_folder(dataset_dir: Path | str, task: str, pick: FeaturePick, manifests: dict[str, dict], kind: str | None) -> str:
    """The store folder a pick reads (`manifests`: `fec.features.store_slots.store_manifests`): its
    `@FOLDER`, else the one unprompted variant folder of the slot that holds the pooling and every
    layer asked for. A folder of another slot, or of another kind than the slot's, is refused."""
    root = Path(dataset_dir) / task
    held = [m for m in manifests.values() if m.get("slot") == pick.slot]
    if not held:
        raise SettingError("features", pick.text, absent_slot(dataset_dir, task, pick.slot, pick.pooling))
    if pick.folder:
        manifest = manifests.get(pick.folder)
        if manifest is None or manifest.get("mode") != "train":
            missing = f"{root / pick.folder / 'train.json'} is missing or unreadable"
            raise SettingError("features", pick.text, f"{missing}; name a folder of {root} that holds extracted features")
        problem = slot_mismatch(pick.slot, manifest, kind)
        if problem:
            raise SettingError("features", pick.text, f"{root / pick.folder} {problem}")
        return pick.folder
    fits = []
    for folder, m in manifests.items():
        if m.get("mode") != "train" or m.get("slot") != pick.slot or m.get("feature_axes") is None:
            continue
        if m.get("prompts") or m.get("chat_template") or pick.pooling not in m["poolings"]:
            continue
        try:
            wanted = pick.layers.resolve(m["num_hidden_states"])
        except UsageError:
            continue
        if set(wanted) <= set(m["layer_indices"]):
            fits.append(folder)
    if len(fits) > 1:
        raise SettingError("features", pick.text, f"several folders hold them ({', '.join(fits)}); name one with @FOLDER")
    if not fits:
        models = {str(m["model"]) for m in held if m.get("model")}
        command = extraction_hint(
            pick.slot, kind, task, pooling=pick.pooling, model=models.pop() if len(models) == 1 else None, dataset_dir=dataset_dir
        )
        raise SettingError(
            "features", pick.text, f"no {pick.slot} variant in {root} has them; name one with @FOLDER, or extract them: {command}"
        )
    return fits[0]


def picked(stored: StoredFeatures, pick: FeaturePick | None) -> torch.Tensor:
    """A source's input: the stored features, or a pick's pooling and layers of them (a decoder
    keeps one vector per layer; an encoder's layers are averaged into one vector)."""
    if pick is None:
        return stored.features
    chosen = pick.select(stored.features, stored.manifest)
    return chosen if KINDS[slot_kind(stored.manifest)].layered else chosen.mean(dim=1)


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
    sources, picks = list(sources), {s: p for s, p in (picks or {}).items() if s in sources}
    check_sources(dataset_dir, task, sources, picks)
    store = store_manifests(dataset_dir, task) if picks else {}
    held = slot_kinds(store)
    folders = {s: pick_folder(dataset_dir, task, p, store, FOLDER_KINDS.get(s) or held.get(s)) for s, p in picks.items()}
    kinds = source_kinds(sources, folders, store)
    sources = source_order(kinds)
    slot_dirs = {s: s for s in sources} | (slot_dirs or {}) | folders
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
    lexical = [s for s in sources if kinds[s] == "lexical"]
    files = {s: lexical_model_file(dataset_dir, task, slot_dirs[s], manifests["train"][s], data_dir) for s in lexical}
    return FusionData(task, sources, splits, label_names, multilabel, manifests, records, kinds, files)


def lexical_model_file(dataset_dir: Path | str, task: str, folder: str, manifest: dict, data_dir: Path | str | None) -> Path:
    """The lexical source's fitted model beside its features, checked against the sha256 its
    manifests record (a run keeps a copy, and predict.py rebuilds the source from it)."""
    path = Path(dataset_dir) / task / folder / str(manifest.get("model_file"))
    problem = model_file_problem(path, manifest)
    if problem:
        again = extract_command(manifest, "train", dataset_dir, data_dir or "data")
        raise StoreError(f"{path} {problem}; store the lexical source again: {again}")
    return path
