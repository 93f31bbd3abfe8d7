"""`fec.prepare_data` and `fec.extract` from Python: the same jobs as `prepare_data.py` and the extraction
scripts, taking tables held in memory as well as files, returning the folders they wrote, and
refusing a bad setting by its name before any work."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from helpers import extract_argv

import fec
from fec.cli import extract as extract_command
from fec.cli import prepare_data as prepare_command
from fec.features.store import feature_path, load_features

EMOTIONS = ["joy", "anger", "fear"]


def emotions_frame(rows: int = 30) -> pd.DataFrame:
    """A user's table: a text column and a label column, named as the user named them."""
    return pd.DataFrame(
        {"sentence": [f"sentence number {i}" for i in range(rows)], "emotion": [EMOTIONS[i % 3] for i in range(rows)]}
    )


def read_back(folder) -> pd.DataFrame:
    """Every row of a prepared task folder, splits together, labels by name."""
    names = dict(line.rsplit(" ", 1)[::-1] for line in (folder / "label2idx.txt").read_text().splitlines())
    splits = [pd.read_csv(folder / f"{mode}.csv") for mode in ("train", "valid", "test")]
    rows = pd.concat(splits, ignore_index=True)
    return pd.DataFrame({"sentence": rows["text"], "emotion": [names[str(label)] for label in rows["label"]]})


def test_a_dataframe_becomes_a_task_folder_whose_splits_hold_its_rows(tmp_path):
    frame = emotions_frame()
    folder = fec.prepare_data(frame, task="mine", text_column="sentence", label_column="emotion", data_dir=tmp_path / "data")

    assert folder == tmp_path / "data" / "mine"
    assert sorted(p.name for p in folder.iterdir()) == ["label2idx.txt", "split.json", "test.csv", "train.csv", "valid.csv"]
    # Valid and test are carved from the rows, 10% each, stratified: every row lands in one split.
    back = read_back(folder).sort_values("sentence", ignore_index=True)
    assert back.equals(frame.sort_values("sentence", ignore_index=True))
    record = json.loads((folder / "split.json").read_text())
    assert record["rows"] == {"train": 24, "valid": 3, "test": 3}
    assert record["sources"]["train"] == {"path": None, "format": "DataFrame", "files": []}  # no file to checksum


def test_a_dataframe_and_the_same_rows_in_a_file_make_the_same_splits(tmp_path):
    frame = emotions_frame()
    fec.prepare_data(frame, task="mine", text_column="sentence", label_column="emotion", data_dir=tmp_path / "data")
    frame.to_csv(tmp_path / "mine.csv", index=False)
    argv = ["--from", str(tmp_path / "mine.csv"), "--task", "again", "--data_dir", str(tmp_path / "data")]
    assert prepare_command.main([*argv, "--text_column", "sentence", "--label_column", "emotion"]) == 0
    for name in ("train.csv", "valid.csv", "test.csv", "label2idx.txt"):
        assert (tmp_path / "data" / "mine" / name).read_bytes() == (tmp_path / "data" / "again" / name).read_bytes()


def test_a_datasets_dataset_dict_brings_its_own_splits_and_label_names(tmp_path):
    datasets = pytest.importorskip("datasets")
    labels = datasets.ClassLabel(names=EMOTIONS)
    features = datasets.Features({"text": datasets.Value("string"), "label": labels})
    parts = {"train": emotions_frame(12), "validation": emotions_frame(6), "test": emotions_frame(3)}
    dataset = datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict(
                {"text": part["sentence"].tolist(), "label": [labels.str2int(e) for e in part["emotion"]]}, features=features
            )
            for name, part in parts.items()
        }
    )
    folder = fec.prepare_data(dataset, task="mine", data_dir=tmp_path / "data")

    # validation becomes valid.csv, as from a folder saved with save_to_disk; ClassLabel ids become their names.
    assert json.loads((folder / "split.json").read_text())["rows"] == {"train": 12, "valid": 6, "test": 3}
    assert read_back(folder).equals(pd.concat(parts.values(), ignore_index=True))


def test_extract_writes_the_features_the_command_line_writes(data_dir, tmp_path, tiny_models):
    variant = {"layers": "all", "pooling": ["mean"]}
    folder = fec.extract(
        "toy",
        "bert",
        model=str(tiny_models["bert"]),
        mode="valid",
        device="cpu",
        dtype="float32",
        data_dir=data_dir,
        dataset_dir=tmp_path / "from_python",
        **variant,
    )
    argv = extract_argv(tiny_models["bert"], data_dir, tmp_path / "from_cli", "valid", "--layers", "all", "--pooling", "mean")
    assert extract_command.main("bert", argv) == 0

    assert folder == tmp_path / "from_python" / "toy" / "bert-mean-all"  # the store folder, named by the variant
    python = load_features(feature_path(tmp_path / "from_python", "toy", folder.name, "valid"))
    cli = load_features(feature_path(tmp_path / "from_cli", "toy", folder.name, "valid"))
    assert torch.equal(python.features, cli.features)
    assert python.manifest["settings"] == cli.manifest["settings"]


def test_a_bad_setting_is_refused_by_its_name_before_any_work(data_dir, tmp_path, tiny_models):
    where = {"model": str(tiny_models["bert"]), "data_dir": data_dir, "dataset_dir": tmp_path / "dataset"}
    with pytest.raises(fec.SettingError, match="give a count, 'all', or layer indices") as refused:
        fec.extract("toy", "bert", layers="some", **where)
    assert refused.value.setting == "layers"
    with pytest.raises(fec.SettingError, match="'max' is not a pooling") as refused:
        fec.extract("toy", "bert", pooling=["mean", "max"], **where)
    assert refused.value.setting == "pooling"
    with pytest.raises(fec.SettingError, match="its kind must be named") as refused:
        fec.extract("toy", "e5", **where)  # a slot of yours: slot_kind="encoder" says how the fusion reads it
    assert refused.value.setting == "slot"
    with pytest.raises(fec.SettingError, match="must be a fraction in") as refused:
        fec.prepare_data(emotions_frame(), task="mine", valid_fraction=1.5, data_dir=tmp_path / "prepared")
    assert refused.value.setting == "valid_fraction"
    assert not (tmp_path / "dataset").exists() and not (tmp_path / "prepared").exists()


def test_help_lists_every_setting_with_its_meaning():
    assert "slot_kind: a slot of yours: decoder" in fec.extract.__doc__
    assert "label_column: the column holding each row's label" in fec.prepare_data.__doc__
