"""Classify new text with a trained run: the same backbones, the same pooling, the same fusion.

    from fec import EmotionClassifier
    clf = EmotionClassifier.load("Logs/ED_20261122-101500")
    clf.predict(["I finally got the job!"], topk=3)
    # [[('excited', 0.41), ('proud', 0.22), ('joyful', 0.12)]]

The run's `model.json` names every feature source with the manifest it was trained on (a slot
of the user's too, with its pick: `--sources llama bert roberta e5 --features e5:mean:-1`); each
backbone is loaded once, with the settings recorded there, and refused when its weights differ
from those the features were extracted with (weights sha256 or hub revision). Every file of a run
is checked first (`CheckedRun`: model.json, results.json, checkpoints, thresholds, the lexical
model, each backbone's weights, each `models` override's slot), then the backbones load.

Multi-label runs (`"multilabel": true` in model.json) score each label with a sigmoid and
`predict` returns every label at or above its decision threshold (saved per seed with the run),
most likely first; an empty list means no emotion ("neutral"). Runs of `finetune.py`
(`"kind": "finetune"` in model.json) load as a `FinetunedClassifier` with the same methods.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fec.classify.fusion import DownstreamModel
from fec.classify.lexical import LexicalModel, model_file_problem
from fec.classify.outputs import to_probabilities
from fec.core.errors import ModelError, RunError, RunFileError, SettingError
from fec.core.files import WEIGHT_SUFFIXES
from fec.core.paths import inside
from fec.core.slots import KINDS, slot_kind
from fec.features.backbones import (
    Backbone,
    check_model_dir,
    load_backbone,
    model_fingerprint,
    pick_device,
    pick_dtype,
    resolve_model,
)
from fec.features.forward_pass import Batching, PoolingPlan, extract_features
from fec.features.picks import slot_mismatch, spec_of_pick
from fec.runs.run_files import read_checkpoint, read_model_spec, read_results

log = logging.getLogger(__name__)


@dataclass
class FeatureSource:
    """One store folder the model reads: the backbone and the recipe its features were made with."""

    store_dir: str
    manifest: dict
    backbone: Backbone | None = None
    pick: dict | None = None  # a pooling and layers of a variant folder (FeaturePick.record)
    lexical: LexicalModel | None = None  # the lexical source's fitted model, kept with the run

    def compute(self, texts: list[str], batch_size: int) -> torch.Tensor:
        m = self.manifest
        if self.lexical is not None:
            return torch.from_numpy(self.lexical.predict_proba(texts))
        if self.pick is not None:
            kind = slot_kind(m)
            spec = spec_of_pick(m["slot"], self.pick, kind)
            batching = Batching(max_len=m["max_len"], batch_size=batch_size)
            features, _ = extract_features(
                self.backbone, texts, m["slot"], plan=PoolingPlan(spec=spec), batching=batching, desc=f"{m['slot']} features"
            )
            # Rounded to the store's dtype as the training features were; a decoder's one vector per layer.
            chosen = features[:, 0].to(getattr(torch, m["feature_dtype"])).float()
            return chosen if KINDS[kind].layered else chosen.mean(dim=1)
        features, _ = extract_features(
            self.backbone,
            texts,
            m["slot"],
            plan=PoolingPlan(layers=m.get("layers") or 1, llama_pooling=m.get("llama_pooling") or "masked"),
            batching=Batching(max_len=m["max_len"], batch_size=batch_size),
            desc=f"{m['slot']} features",
        )
        return features


FINGERPRINT_KEYS = {"local": "weights_sha256", "hub": "revision"}


def fingerprints_match(expected: dict, actual: dict) -> bool:
    """Whether two model fingerprints name the same weights; a fingerprint without its key
    (the weights' sha256, or the hub revision) matches nothing, since it proves nothing."""
    key = FINGERPRINT_KEYS.get(expected.get("kind"))
    return (
        key is not None
        and expected.get("kind") == actual.get("kind")
        and expected.get(key) is not None
        and expected.get(key) == actual.get(key)
    )


def check_fingerprint(manifest: dict, where: Path) -> None:
    """Refuse a run whose recorded fingerprint for a backbone cannot verify any weights."""
    recorded = manifest.get("model_fingerprint") or {}
    key = FINGERPRINT_KEYS.get(recorded.get("kind"))
    if key is None or not recorded.get(key):
        raise RunError(
            f"{where}: the {manifest.get('slot', '?')} backbone's model_fingerprint has no "
            f"{key or 'kind'}, so the weights cannot be checked; re-extract the features and retrain"
        )


def checked_backbone(source: FeatureSource, device: torch.device, model: str | None, where: Path) -> tuple[str, torch.dtype]:
    """The model a source's backbone loads from and its dtype, once its weights are checked against
    the fingerprint its features were extracted with (nothing loaded yet)."""
    m = source.manifest
    spec = model or m["model"]
    resolved = resolve_model(spec)
    fingerprint = model_fingerprint(resolved)
    if not fingerprints_match(m["model_fingerprint"], fingerprint):
        # A missing folder written like `org/name` is read as a hub id: say so, or the message misleads.
        read_as = " (no such folder, so it was read as a hub id)" if isinstance(resolved, str) and "/" in resolved else ""
        raise ModelError(
            f"{spec}{read_as}: these weights differ from the {m['slot']} backbone the model was trained on "
            f"({m['model']}, {m['model_fingerprint']}); use the same model or retrain"
        )
    # The dtype the features were extracted in (bfloat16 runs on CPU too); float16 only on CUDA.
    try:
        dtype = pick_dtype(m["dtype"], device) if device.type == "cuda" or m["dtype"] != "float16" else torch.float32
    except SettingError as err:
        raise RunError(f"{where}: the {m['slot']} backbone's dtype{err.detail}") from err
    return spec, dtype


def load_lexical_model(run_dir: Path, name: str, manifest: dict) -> LexicalModel:
    """The lexical source's model the run keeps, refused unless it is the one the features were made with."""
    file = manifest.get("model_file")
    if not isinstance(file, str) or not file:
        raise RunFileError(run_dir / "model.json", f"`feature_manifests.{name}.model_file` is missing (the lexical model's file)")
    path = inside(run_dir, file)
    problem = model_file_problem(path, manifest)
    if problem:
        raise RunError(f"{path} {problem}; train the run again")
    return LexicalModel.load(path)


def check_models(models: dict[str, str], manifests: list[dict]) -> None:
    """Each `models` override names a slot of the run whose source has a backbone; any other is
    refused rather than ignored."""
    backbones = list(dict.fromkeys(m["slot"] for m in manifests if slot_kind(m) != "lexical"))
    lexical = {m["slot"] for m in manifests if slot_kind(m) == "lexical"}
    for slot, model in models.items():
        if slot in lexical:
            problem = (
                f"the run's {slot} source is lexical, its model kept in the run folder: there is no backbone to load "
                f"(slots with one: {', '.join(backbones)})"
            )
        elif slot not in backbones:
            problem = f"the run has no {slot} slot (its slots: {', '.join(backbones)})"
        else:
            continue
        raise SettingError("model", f"{slot}={model}", problem)


class LabelRanking:
    """What single- and multi-label classifiers share: turning probabilities into named labels."""

    label_names: list[str]
    multilabel: bool = False
    thresholds: np.ndarray | None = None

    def rank(self, probs: np.ndarray, topk: int = 3) -> list[list[tuple[str, float]]]:
        """Single-label: the `topk` labels by probability. Multi-label: every label whose probability
        reaches its threshold, most likely first (`topk` does not cut them)."""
        if self.multilabel:
            chosen = probs >= self.thresholds
            return [
                [(self.label_names[j], float(row[j])) for j in np.argsort(-row) if keep[j]]
                for row, keep in zip(probs, chosen, strict=False)
            ]
        k = min(topk, len(self.label_names))
        top = np.argsort(-probs, axis=1)[:, :k]
        return [[(self.label_names[j], float(row[j])) for j in idx] for row, idx in zip(probs, top, strict=False)]

    def predict(self, texts: list[str], topk: int = 3, batch_size: int = 64) -> list[list[tuple[str, float]]]:
        """The `topk` labels of each text with their probabilities, most likely first; for
        multi-label runs, the labels above their thresholds (possibly none)."""
        return self.rank(self.predict_proba(texts, batch_size), topk)


def run_thresholds(spec: dict, seed: int, path: Path) -> np.ndarray | None:
    """The decision thresholds saved for `seed` in a multi-label run's model.json."""
    if not spec.get("multilabel"):
        return None
    saved = (spec.get("thresholds") or {}).get(str(seed))
    if saved is None:
        raise RunError(f"{path}: no decision thresholds for seed {seed} (did the run finish?)")
    return np.asarray(saved, dtype=np.float32)


@dataclass
class CheckedRun:
    """A fusion run with every file checked and read, before any transformers model loads: model.json,
    results.json, each chosen seed's checkpoint (its head built), the decision thresholds, the
    lexical model (its sha256), and each backbone's weights against its fingerprint, with the
    `models` overrides naming slots of the run. What is left to load is `backbones`."""

    seeds: list[int]
    heads: list[DownstreamModel]
    thresholds: np.ndarray | None
    sources: dict[str, FeatureSource]  # by store folder[:pick], in the run's order of first use
    order: list[str]  # the key of each model input
    backbones: dict[str, tuple[str, torch.dtype]]  # source key -> (model, dtype) to load it with

    @classmethod
    def of(
        cls, run_dir: Path, spec: dict, seed: int | None, ensemble: bool, models: dict[str, str], device: torch.device
    ) -> CheckedRun:
        where = run_dir / "model.json"
        manifests = spec["feature_manifests"]
        check_models(models, [manifests[name] for name in spec["sources"]])
        if ensemble and seed is not None:
            raise SettingError("ensemble", None, f"with seed {seed}: the ensemble uses every seed of the run")
        seeds = chosen_seeds(run_dir, seed, ensemble)
        heads = [load_head(run_dir, spec, number) for number in seeds]
        if len(seeds) > 1 and spec.get("multilabel"):
            if not spec.get("ensemble_thresholds"):
                raise RunError(f"{where}: no ensemble thresholds (the run did not finish its seeds)")
            thresholds = np.asarray(spec["ensemble_thresholds"], dtype=np.float32)
        else:
            thresholds = run_thresholds(spec, seeds[0], where)
        store_dirs = spec.get("store_dirs") or {s: s for s in spec["sources"]}
        picks = spec.get("feature_picks") or {}
        for name in spec["sources"]:
            check_fingerprint(manifests[name], where)
            problem = slot_mismatch(name, manifests[name]) if name in picks else None
            if problem:
                raise RunError(f"{where}: the {name} source {problem}")
        # One feature source per store folder and pick (the published loader defect reads one folder twice).
        order = [store_dirs[name] + (f":{picks[name]['pick']}" if name in picks else "") for name in spec["sources"]]
        sources: dict[str, FeatureSource] = {}
        backbones: dict[str, tuple[str, torch.dtype]] = {}
        for name, key in zip(spec["sources"], order, strict=True):
            if key not in sources:
                source = sources[key] = FeatureSource(store_dirs[name], manifests[name], pick=picks.get(name))
                if slot_kind(source.manifest) == "lexical":
                    source.lexical = load_lexical_model(run_dir, name, source.manifest)
                else:
                    backbones[key] = checked_backbone(source, device, models.get(source.manifest["slot"]), where)
        return cls(seeds, heads, thresholds, sources, order, backbones)


class EmotionClassifier(LabelRanking):
    """A trained fusion classifier with its backbones, ready for raw text: one seed's model, or
    with `ensemble=True` every seed's, their probabilities averaged."""

    def __init__(
        self,
        heads: list[DownstreamModel],
        sources: dict[str, FeatureSource],
        order: list[str],
        label_names: list[str],
        run_dir: Path,
        seeds: list[int],
        device: torch.device,
        thresholds: np.ndarray | None = None,
    ):
        self.heads = [head.to(device).eval() for head in heads]
        self.model, self.sources, self.order = self.heads[0], sources, order
        self.label_names, self.run_dir, self.seeds, self.device = label_names, run_dir, seeds, device
        self.seed = seeds[0] if len(seeds) == 1 else None
        self.multilabel, self.thresholds = thresholds is not None, thresholds

    @classmethod
    def load(
        cls,
        run_dir: Path | str,
        seed: int | None = None,
        device: str = "auto",
        models: dict[str, str] | None = None,
        ensemble: bool = False,
    ) -> EmotionClassifier:
        """Load a `main.py` run. `seed` picks a checkpoint (default: the best seed on validation);
        `ensemble` averages the probabilities of every seed of the run (multi-label thresholds
        tuned for the ensemble on valid); `models` overrides where a slot's backbone is loaded
        from (it must be the same weights). A `finetune.py` run loads as a `FinetunedClassifier`,
        a candidate ensemble (`tune.py --ensemble_size`) as an `EnsembleClassifier`."""
        run_dir = Path(run_dir)
        spec = read_run_spec(run_dir)
        if spec.get("kind") == "finetune":
            if models or ensemble:
                raise RunError(f"{run_dir}: a fine-tuned run carries its own encoder; -model and -ensemble apply to fusion runs")
            return FinetunedClassifier.load(run_dir, spec, seed, device)
        if spec.get("kind") == "ensemble":
            if seed is not None or ensemble:
                raise RunError(f"{run_dir}: an ensemble of runs uses every seed of its members; -seed and -ensemble do not apply")
            return EnsembleClassifier.load(run_dir, spec, device, models or {})
        torch_device = pick_device(device)
        run = CheckedRun.of(run_dir, spec, seed, ensemble, models or {}, torch_device)
        return cls.of_checked(run, run_dir, spec, torch_device, {})

    @classmethod
    def of_checked(
        cls, run: CheckedRun, run_dir: Path, spec: dict, device: torch.device, loaded: dict[tuple[str, torch.dtype], Backbone]
    ) -> EmotionClassifier:
        """The classifier of a checked run, its backbones loaded now (those in `loaded`, by model and
        dtype, shared: the members of an ensemble read the same backbones)."""
        for key, (model, dtype) in run.backbones.items():
            if (model, dtype) not in loaded:
                loaded[model, dtype] = load_backbone(model, device, dtype)
            run.sources[key].backbone = loaded[model, dtype]
        return cls(run.heads, run.sources, run.order, spec["label_names"], run_dir, run.seeds, device, run.thresholds)

    @torch.inference_mode()
    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities (N, C), columns in `label_names` order (softmax; per-label sigmoid
        for multi-label runs)."""
        if not texts:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        computed = {folder: src.compute(list(texts), batch_size) for folder, src in self.sources.items()}
        inputs = [computed[folder].to(self.device) for folder in self.order]
        probs = []
        for head in self.heads:
            logits = torch.cat([head(*(x[i : i + 4096] for x in inputs)) for i in range(0, len(texts), 4096)])
            probs.append(to_probabilities(logits.float(), self.multilabel).cpu().numpy())
        return np.mean(probs, axis=0)


class EnsembleClassifier(LabelRanking):
    """An ensemble of fusion runs (`tune.py --ensemble_size`, `fec.api.ensemble`): the weighted mean
    of its members' probabilities, each member with every seed of its run; multi-label thresholds
    are the ensemble's own, from its model.json."""

    def __init__(self, members: list[EmotionClassifier], weights: list[float], spec: dict, run_dir: Path, thresholds):
        self.members, self.weights, self.run_dir = members, weights, run_dir
        self.label_names, self.multilabel, self.thresholds = spec["label_names"], bool(spec.get("multilabel")), thresholds
        self.seed = None

    @classmethod
    def load(cls, run_dir: Path, spec: dict, device: str = "auto", models: dict[str, str] | None = None) -> EnsembleClassifier:
        """Every member checked first (its files, its backbones' weights), then the backbones load, once each."""
        torch_device = pick_device(device)
        members = spec.get("members") or []
        if not members:
            raise RunFileError(run_dir / "model.json", "an ensemble with no `members`")
        thresholds = run_thresholds(spec, 0, run_dir / "model.json")
        checked = []
        for member in members:
            folder = run_dir.parent / str(member["run"])
            if not folder.is_dir():
                raise RunError(f"{run_dir}: its member run {folder} is missing (an ensemble's members live beside it)")
            member_spec = read_run_spec(folder)
            every_seed = len(read_results(folder)["seeds"]) > 1  # a member predicts with all its seeds, averaged
            run = CheckedRun.of(folder, member_spec, None, every_seed, models or {}, torch_device)
            checked.append((run, folder, member_spec))
        loaded: dict = {}
        classifiers = [EmotionClassifier.of_checked(run, folder, s, torch_device, loaded) for run, folder, s in checked]
        return cls(classifiers, [float(member["weight"]) for member in members], spec, run_dir, thresholds)

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """The weighted mean of the members' probabilities (N, C)."""
        return sum(
            weight * member.predict_proba(texts, batch_size) for member, weight in zip(self.members, self.weights, strict=True)
        )


class FinetunedClassifier(LabelRanking):
    """A `finetune.py` run: one fine-tuned encoder with its classification head and tokenizer,
    saved per seed under `checkpoints/seedN/` with `save_pretrained`."""

    def __init__(
        self,
        model,
        tokenizer,
        label_names: list[str],
        max_len: int,
        run_dir: Path,
        seed: int,
        device: torch.device,
        thresholds: np.ndarray | None = None,
    ):
        self.model, self.tokenizer, self.max_len = model.to(device).eval(), tokenizer, max_len
        self.label_names, self.run_dir, self.seed, self.device = label_names, run_dir, seed, device
        self.multilabel, self.thresholds = thresholds is not None, thresholds

    @classmethod
    def load(cls, run_dir: Path, spec: dict, seed: int | None = None, device: str = "auto") -> FinetunedClassifier:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        torch_device = pick_device(device)
        if seed is None:
            (seed,) = chosen_seeds(run_dir, None, ensemble=False)
        folder = run_dir / "checkpoints" / f"seed{seed}"
        check_saved_model(folder, seed)
        thresholds = run_thresholds(spec, seed, run_dir / "model.json")
        tokenizer = AutoTokenizer.from_pretrained(str(folder))  # every file checked: now the model loads
        model = AutoModelForSequenceClassification.from_pretrained(str(folder))
        return cls(model, tokenizer, spec["label_names"], int(spec["max_len"]), run_dir, seed, torch_device, thresholds)

    @torch.inference_mode()
    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Probabilities (N, C) in `label_names` order: softmax, or per-label sigmoid for multi-label runs."""
        if not texts:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        chunks = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                list(texts[start : start + batch_size]),
                truncation=True,
                max_length=self.max_len,
                padding=True,
                return_tensors="pt",
            ).to(self.device)
            logits = self.model(**batch).logits.float()
            chunks.append(to_probabilities(logits, self.multilabel))
        return torch.cat(chunks).cpu().numpy()


def check_saved_model(folder: Path, seed: int) -> None:
    """A fine-tuned seed's folder as `save_pretrained` writes it, checked before transformers reads it:
    config.json naming its architecture, the tokenizer's config, and weights whose safetensors
    headers read."""
    if not (folder / "config.json").is_file():
        raise RunError(f"{folder}: no saved model for seed {seed}")
    if not any(p.is_file() and p.name.endswith(WEIGHT_SUFFIXES) for p in folder.iterdir()):
        raise RunError(f"{folder}: no weights file (model.safetensors) for seed {seed}")
    check_model_dir(folder)  # its config and the safetensors headers of its weights
    if not (folder / "tokenizer_config.json").is_file():
        raise RunError(f"{folder}: no tokenizer_config.json (the tokenizer saved with the model)")


def chosen_seeds(run_dir: Path, seed: int | None, ensemble: bool) -> list[int]:
    """The seeds a prediction uses, decided from results.json before any model loads: `seed`, the
    best seed on validation, or every seed for an ensemble (refused for a run of one seed, whose
    "ensemble" would be that seed's model under another name)."""
    results = read_results(run_dir)
    trained = [entry["seed"] for entry in results["seeds"]]
    if ensemble:
        if len(trained) < 2:
            has = f"one seed ({trained[0]})" if trained else "no finished seed"
            raise SettingError("ensemble", None, f"{run_dir} has {has}; an ensemble needs a run with several seeds")
        return trained
    if seed is not None:
        return [seed]
    if "best_seed" not in results:
        raise RunFileError(run_dir / "results.json", "no `best_seed` (an integer expected); did a seed finish?")
    return [results["best_seed"]]


def load_head(run_dir: Path, spec: dict, seed: int) -> DownstreamModel:
    """One seed's fusion model: built from model.json's `model`, its weights from the seed's checkpoint."""
    checkpoint = run_dir / "checkpoints" / f"seed{seed}.safetensors"
    if not checkpoint.is_file():
        raise RunError(f"{checkpoint}: no checkpoint for seed {seed}")
    state = read_checkpoint(checkpoint)
    try:
        head = DownstreamModel.from_config(spec["model"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise RunFileError(run_dir / "model.json", f"`model` does not build a fusion model ({err})") from err
    try:
        head.load_state_dict(state)
    except RuntimeError as err:  # torch lists every mismatched tensor: the first line says what
        raise RunFileError(checkpoint, f"does not fit the model in model.json ({str(err).splitlines()[0]})") from err
    return head


def read_run_spec(run_dir: Path | str) -> dict:
    """A run's model.json (label names, sources, recipe), checked: cheap, read before any backbone loads."""
    return read_model_spec(Path(run_dir))
