"""The data contract's validation errors and the feature store's guarantees."""

from __future__ import annotations

import json

import pytest
import torch

from fec.core.data import load_split, load_splits, read_label_map
from fec.core.errors import DataError, StoreError
from fec.features import store
from fec.features.store import feature_path, load_features, manifest_path, save_features


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def task(tmp_path):
    write(tmp_path / "t" / "label2idx.txt", "happy 0\nsad 1\n\n  \n")
    write(tmp_path / "t" / "train.csv", "text,aug_text,label\nso glad,x,0\nso down,x,1\n")
    return tmp_path


def test_label_ids_and_names_are_read(task):
    split = load_split(task, "t", "train")
    assert split.texts == ["so glad", "so down"]
    assert split.labels.tolist() == [0, 1] and split.label_names == ["happy", "sad"]
    assert not split.multilabel and len(split.csv_sha256) == 64


def test_string_labels_map_through_label2idx(task):
    write(task / "t" / "valid.csv", "text,label\nyay,happy\nboo,sad\n")
    assert load_split(task, "t", "valid").labels.tolist() == [0, 1]


@pytest.mark.parametrize(
    "csv, message",
    [
        ("label\n0\n", "no 'text' column (columns: label)"),
        ("text\nhello\n", "no 'label' column (columns: text)"),
        ("text,label\nfine,0\n,1\n", "row 2: empty text"),
        ("text,label\nfine,0\n   ,1\n", "row 2: empty text"),
        ("text,label\nfine,7\n", "row 1: label id 7 is outside label2idx.txt (ids 0..1)"),
        ("text,label\nfine,-1\n", "row 1: label id -1 is outside label2idx.txt (ids 0..1)"),
        ("text,label\nfine,0\nok,grumpy\n", "row 2: label 'grumpy' is neither an id nor a name in label2idx.txt"),
    ],
)
def test_bad_rows_give_one_line_errors_naming_file_and_row(task, csv, message):
    path = write(task / "t" / "valid.csv", csv)
    with pytest.raises(DataError) as err:
        load_split(task, "t", "valid")
    assert str(err.value) == f"{path}: {message}"
    assert "\n" not in str(err.value)


def test_missing_file_names_the_path_and_the_data_command(task):
    with pytest.raises(DataError, match=r"t/test\.csv: file not found \(bring the data with `python prepare_data.py`\)"):
        load_split(task, "t", "test")


def test_malformed_label_file_names_the_line(tmp_path):
    path = write(tmp_path / "label2idx.txt", "happy 0\nsad\n")
    with pytest.raises(DataError, match=r"label2idx.txt: line 2: expected 'name id'"):
        read_label_map(path)


def test_label_unseen_in_train_is_a_warning_not_an_error(task, caplog):
    write(task / "t" / "label2idx.txt", "happy 0\nsad 1\nangry 2\n")
    write(task / "t" / "test.csv", "text,label\nhmm,1\nyay,0\ngrr,2\n")
    write(task / "t" / "train.csv", "text,label\nso glad,0\nso down,1\n")
    splits = load_splits(task, "t", ["test"])
    assert "never seen in train: angry" in caplog.text
    assert splits["test"].warnings


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"label2idx.txt": "happy 0\n", "train.csv": "text,label\nso glad,0\n"}, "label2idx.txt: the only label is 'happy'"),
        (
            {"train.csv": "text,label\nso glad,0\nagain glad,happy\n", "valid.csv": "text,label\nso down,1\n"},
            "train.csv: field 'label': every row has the label 'happy'",
        ),
        ({"train.csv": "text,joy\nyay,1\nmeh,0\n"}, "train.csv: header: the only label column is 'joy'"),
    ],
    ids=["one-name", "one-used-in-train", "one-column"],
)
def test_a_task_with_fewer_than_two_labels_is_refused_whichever_split_is_asked_for(task, files, message):
    for name, text in files.items():
        write(task / "t" / name, text)
    for modes in [["train"]] + ([["valid"]] if "valid.csv" in files else []):  # valid alone reads train too
        with pytest.raises(DataError) as err:
            load_splits(task, "t", modes)
        assert str(err.value) == f"{task / 't' / message}; a task needs at least two labels"


def test_any_task_name_and_multilabel_columns_work(tmp_path):
    write(tmp_path / "my_task" / "train.csv", "id,text,anger,joy\na,grr,1,0\nb,yay and grr,1,1\nc,meh,0,0\n")
    split = load_split(tmp_path, "my_task", "train")
    assert split.multilabel and split.label_names == ["anger", "joy"]
    assert split.labels.tolist() == [[1, 0], [1, 1], [0, 0]]


def test_multilabel_cell_must_be_zero_or_one(tmp_path):
    path = write(tmp_path / "m" / "train.csv", "id,text,anger,joy\na,grr,1,0\nb,yay,2,1\n")
    with pytest.raises(DataError) as err:
        load_split(tmp_path, "m", "train", multilabel=True)
    assert str(err.value) == f"{path}: row 2: column 'anger' must be 0 or 1, got '2'"


def test_store_round_trip_keeps_tensors_and_manifest(tmp_path):
    path = feature_path(tmp_path, "t", "llama", "train")
    feats, labels = torch.randn(4, 5, 8), torch.tensor([0, 1, 1, 0])
    saved = save_features(path, feats, labels, {"slot": "llama"})
    back = load_features(path)
    assert torch.equal(back.features, feats) and torch.equal(back.labels, labels)
    assert back.manifest == saved and saved["rows"] == 4 and saved["feature_shape"] == [5, 8]


def test_store_refuses_features_without_manifest_or_with_changed_contents(tmp_path):
    path = feature_path(tmp_path, "t", "bert", "train")
    save_features(path, torch.randn(3, 4), torch.tensor([0, 1, 0]), {})
    manifest = manifest_path(path)
    save_file_bytes = path.read_bytes()
    path.write_bytes(save_file_bytes[:-4] + b"\x00\x00\x00\x01")
    with pytest.raises(StoreError, match="do not match its manifest's sha256"):
        load_features(path)
    manifest.unlink()
    with pytest.raises(StoreError, match="manifest missing"):
        load_features(path)


def test_interrupted_write_leaves_the_previous_file_and_no_half_file(tmp_path, monkeypatch):
    path = feature_path(tmp_path, "t", "roberta", "train")
    save_features(path, torch.ones(2, 3), torch.tensor([0, 1]), {"run": 1})
    before = path.read_bytes()

    def dies_halfway(tensors, filename):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "save_file", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_features(path, torch.zeros(2, 3), torch.tensor([1, 0]), {"run": 2})
    assert path.read_bytes() == before
    assert json.loads(manifest_path(path).read_text())["run"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.json", "train.safetensors"]


def test_written_files_get_ordinary_permissions(tmp_path):
    import os

    path = feature_path(tmp_path, "t", "bert", "train")
    save_features(path, torch.ones(1, 2), torch.tensor([0]), {})
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_byte_order_mark_is_not_part_of_the_first_label_or_column(tmp_path):
    bom = "\ufeff"
    write(tmp_path / "t" / "label2idx.txt", f"{bom}happy 0\nsad 1\n")
    write(tmp_path / "t" / "train.csv", f"{bom}text,label\nso glad,happy\nso down,1\n")
    split = load_split(tmp_path, "t", "train")
    assert split.label_names == ["happy", "sad"] and split.labels.tolist() == [0, 1]
    assert split.texts == ["so glad", "so down"]
