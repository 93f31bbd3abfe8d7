"""The lexical source in the feature store: `dataset/{task}/tfidf/`, read by the fusion like an
extracted slot (`--sources ... tfidf`), its model beside its features.

    python baselines/tfidf.py --task ED --store

    from fec.classify.lexical_store import store_lexical_source
    store_lexical_source("data", "dataset", "ED", LexicalSettings())

The folder holds `{train,valid,test}.safetensors` with their manifests, as an extraction's
(slot `tfidf`, kind `lexical`: one vector of label probabilities per row; train's out of fold,
the others by the full model, `fec.classify.lexical`), and `lexical_model.safetensors`, the
model fitted on all of train, whose sha256 the manifests record as the source's model
fingerprint. Storing again with the same settings and data does nothing; other settings are
refused unless `overwrite`, as a re-extraction is. The model is written first and the manifests
last, each under a temporary name, so an interrupted run leaves no half-made source.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from fec.classify.cross_validation import check_folds
from fec.classify.lexical import LexicalSettings, LexicalSource, lexical_source
from fec.core.data import available_modes, load_splits
from fec.core.provenance import provenance
from fec.core.slots import LEXICAL_SLOT
from fec.features.config import already_extracted, refuse_replacing
from fec.features.store import feature_path, save_features

log = logging.getLogger(__name__)

MODEL_FILE = "lexical_model.safetensors"


def lexical_model_path(dataset_dir: Path | str, task: str) -> Path:
    return feature_path(dataset_dir, task, LEXICAL_SLOT, "train").with_name(MODEL_FILE)


def store_lexical_source(
    data_dir: Path | str, dataset_dir: Path | str, task: str, settings: LexicalSettings, overwrite: bool = False, workers: int = 1
) -> Path:
    """Make the task's lexical source (every split its data folder has) unless it is there with
    these settings, its folds fitted by `workers` processes; returns its folder."""
    splits = load_splits(data_dir, task, available_modes(data_dir, task))
    train = splits["train"]
    check_folds(settings.folds, len(train), zero=None)  # before anything is skipped, refused or fitted
    paths = {mode: feature_path(dataset_dir, task, LEXICAL_SLOT, mode) for mode in splits}
    wanted = {mode: {"slot": LEXICAL_SLOT, **settings.record(), "train_csv_sha256": train.csv_sha256} for mode in splits}
    wanted = {mode: wanted[mode] | {"csv_sha256": split.csv_sha256} for mode, split in splits.items()}
    folder = paths["train"].parent
    if all(already_extracted(paths[mode], wanted[mode]) for mode in splits):
        log.info("%s: the lexical source is there with these settings; skipped", folder)
        return folder
    if not overwrite:
        for mode in splits:
            refuse_replacing(paths[mode], wanted[mode])
    started = time.perf_counter()
    source = lexical_source(train.texts, train.labels, settings, train.num_labels, train.multilabel, workers)
    sha256 = source.model.save(lexical_model_path(dataset_dir, task))
    seconds = round(time.perf_counter() - started, 2)
    for mode, split in splits.items():
        probabilities = source.train if mode == "train" else source.model.predict_proba(split.texts)
        manifest = manifest_of(split, wanted[mode], source, sha256) | {"lexical": lexical_record(source, mode, seconds)}
        save_features(paths[mode], torch.from_numpy(probabilities), torch.from_numpy(split.labels), manifest)
    log.info("%s: lexical source stored (C=%g, %d features, %.0f s)", folder, source.C, source.model.vectorizer.size, seconds)
    return folder


def manifest_of(split, settings: dict, source: LexicalSource, sha256: str) -> dict:
    return {
        "format": "fec-features/1",
        "settings": settings,
        "task": split.task,
        "mode": split.mode,
        "slot": LEXICAL_SLOT,
        "slot_kind": "lexical",
        "store_dir": LEXICAL_SLOT,
        "model": "tfidf-logreg",
        "model_file": MODEL_FILE,
        "model_fingerprint": {"kind": "local", "weights_sha256": sha256, "files": 1},
        "hidden_size": split.num_labels,
        "pooling": "label probabilities",
        "layers": None,
        "max_len": None,
        "dtype": "float64",  # the regression's arithmetic; the features are stored as float32
        "csv": str(split.path),
        "csv_sha256": split.csv_sha256,
        "csv_rows": len(split),
        "multilabel": split.multilabel,
        "label_names": split.label_names,
        **provenance(),
    }


def lexical_record(source: LexicalSource, mode: str, seconds: float) -> dict:
    folds = int(source.assignment.max()) + 1
    scored_by = f"out of fold ({folds} folds)" if mode == "train" else "the model fitted on all of train"
    return {
        "scored_by": scored_by,
        "C": source.C,
        "C_scores": {str(C): round(score, 4) for C, score in source.scores.items()},
        "vocabulary": source.model.vectorizer.size,
        "seconds": seconds,
    }
