"""Shared fixtures: tiny saved models, a fresh toy task, and the toy task extracted once per session
(the helpers they use are in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import (
    TINY_HIDDEN,
    extract_all,
    extract_more_sources,
    save_tiny_bert,
    save_tiny_llama,
    save_tiny_roberta,
    write_hostile_logs,
    write_task,
)


@pytest.fixture(scope="session", autouse=True)
def float32_on_every_cpu():
    """`--dtype auto` takes bfloat16 on CPUs with bf16 matrix units; the tests pin the float32 path
    so that they compute the same numbers on every machine (auto itself: tests/features/test_dtype.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("fec.features.backbones.cpu_has_bf16_matmul", lambda *args: False)
        yield


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Slot -> directory of a tiny saved model (plus `bert_nopooler`, and `e5` and `qwen`, a second
    encoder and a second decoder of other sizes for slots of the user's)."""
    root = tmp_path_factory.mktemp("models")
    return {
        "llama": save_tiny_llama(root / "llama"),
        "bert": save_tiny_bert(root / "bert"),
        "roberta": save_tiny_roberta(root / "roberta"),
        "bert_nopooler": save_tiny_bert(root / "bert_nopooler", pooler=False),
        "e5": save_tiny_bert(root / "e5", hidden=TINY_HIDDEN["e5"]),
        "qwen": save_tiny_llama(root / "qwen", hidden=TINY_HIDDEN["qwen"], layers=3),
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


@pytest.fixture(scope="session")
def more_sources_store(tmp_path_factory, tiny_models) -> tuple[Path, Path]:
    """(data_dir, dataset_dir) with the three published slots and two slots of the user's, `e5` (an
    encoder) and `qwen` (a decoder), extracted for every split of `toy` (`helpers.extract_more_sources`). Read-only."""
    root = tmp_path_factory.mktemp("more_sources")
    data = write_task(root / "data")
    extract_all(data, root / "dataset", tiny_models)
    extract_more_sources(data, root / "dataset", tiny_models)
    return data, root / "dataset"


@pytest.fixture(scope="session")
def toy_search_store(tmp_path_factory, tiny_models) -> tuple[Path, Path]:
    """(root, data): `toy` with the default search space extracted into root/dataset by a first
    short search, `fec.tune(..., extract=True)`, whose folder is in root/Logs (the searches of the
    tests that use it go there too; tests that change the store work on a copy)."""
    import fec

    root = tmp_path_factory.mktemp("tuned")
    data = write_task(root / "data")
    models = {slot: tiny_models[slot] for slot in ("llama", "bert", "roberta")}
    places = {"data_dir": data, "dataset_dir": root / "dataset", "out": root / "Logs"}
    fec.tune("toy", extract=True, model=models, **places, trials=1, max_seeds=1, epochs=8, no_final=True, device="cpu")
    return root, data


@pytest.fixture(scope="session")
def paged_logs(toy_store, tmp_path_factory) -> Path:
    """A Logs folder with a two-seed fusion run and a TF-IDF run of `toy`, their pages written by the
    trainers' finish step, and `Logs/index.html` by `report.py --html`. Read-only."""
    from fec.cli import report as report_script
    from fec.cli import tfidf as tfidf_script
    from fec.cli import train as main_script

    data_dir, dataset_dir = toy_store
    out = tmp_path_factory.mktemp("Logs")
    fast = ["-epochs", "15", "-early-stop", "5", "-batch_size", "16", "-lr", "3e-3"]
    common = ["-dataset", "toy", "-data_dir", str(data_dir), "-out", str(out)]
    assert main_script.main([*common, "-device", "cpu", "-dataset_dir", str(dataset_dir), "-seeds", "0", "1", *fast]) == 0
    assert tfidf_script.main([*common, "-seeds", "0"]) == 0
    assert report_script.main(["--html", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def hostile_logs(tmp_path_factory) -> Path:
    """A Logs folder of runs with hostile folder and label names (`helpers.write_hostile_logs`). Read-only."""
    return write_hostile_logs(tmp_path_factory.mktemp("hostile"))


def fusion_run(logs: Path) -> Path:
    """The main.py run folder in a `paged_logs` folder."""
    (run_dir,) = [p for p in logs.iterdir() if p.is_dir() and "tfidf" not in p.name]
    return run_dir


@pytest.fixture
def model_loads(monkeypatch) -> list[str]:
    """Every transformers model load, recorded (the loads still happen): a refusal that must come
    before any model loads asserts this stays empty."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    loads: list[str] = []
    for cls in (AutoModel, AutoModelForSequenceClassification):
        real = cls.from_pretrained.__func__

        def recording(klass, name, *args, _real=real, **kwargs):
            loads.append(str(name))
            return _real(klass, name, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(recording))
    return loads
