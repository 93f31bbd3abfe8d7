"""Shared fixtures: tiny saved models, a fresh toy task, and the toy task extracted once per session
(the helpers they use are in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import extract_all, save_tiny_bert, save_tiny_llama, save_tiny_roberta, write_task


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Slot -> directory of a tiny saved model (plus `bert_nopooler`)."""
    root = tmp_path_factory.mktemp("models")
    return {
        "llama": save_tiny_llama(root / "llama"),
        "bert": save_tiny_bert(root / "bert"),
        "roberta": save_tiny_roberta(root / "roberta"),
        "bert_nopooler": save_tiny_bert(root / "bert_nopooler", pooler=False),
    }


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """A fresh `data/` with the learnable three-label task `toy`."""
    return write_task(tmp_path / "data")


@pytest.fixture(scope="session")
def toy_store(tmp_path_factory, tiny_models) -> tuple[Path, Path]:
    """(data_dir, dataset_dir) with all three slots extracted for every split of `toy`. Read-only."""
    root = tmp_path_factory.mktemp("store")
    data = write_task(root / "data")
    extract_all(data, root / "dataset", tiny_models)
    return data, root / "dataset"
