"""Bringing your own data: `prepare_data.py --from FILE --task NAME` (fec.core.data_import).

A user's CSV, TSV, JSON Lines or Parquet file, or a folder saved by `datasets`, becomes the data
contract that every script reads (`fec.core.data.load_splits`), with the splits not given carved
from train (seeded, stratified by label) and `split.json` recording where the data came from.
Bad data is refused before anything is written, with one line naming the file, row and field.

The `datasets` folders under tests/fixtures/ were written by datasets 5.2.0's `save_to_disk`:
`saved_dataset_dict` (train/validation/test, `label` a ClassLabel of sadness, joy, anger) and
`saved_dataset_multi` (one Dataset, `labels` a list of ClassLabel of anger, joy, fear).
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import prepare_data
from fec.core.data import load_splits

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LABELS = ["anger", "fear", "joy", "sadness"]


def records(n: int = 40) -> list[dict]:
    """n rows, the four labels in turn: 10 each for n=40."""
    return [{"text": f"text {i} about {LABELS[i % 4]}", "label": LABELS[i % 4]} for i in range(n)]


def write(path: Path, rows: list[dict]) -> Path:
    """`rows` in the format that `path`'s extension names, written by pandas."""
    frame = pd.DataFrame(rows)
    suffix = path.suffix
    if suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    return path


def bring(*argv: str | Path) -> int:
    return prepare_data.main([str(a) for a in argv])


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ----------------------------------------------------------------------------- one file, carved


def test_a_json_lines_file_becomes_the_data_contract_with_valid_and_test_carved_by_label(tmp_path):
    source = write(tmp_path / "mine.jsonl", records())
    assert bring("--from", source, "--task", "mine", "--data_dir", tmp_path / "data") == 0

    folder = tmp_path / "data" / "mine"
    assert sorted(p.name for p in folder.iterdir()) == ["label2idx.txt", "split.json", "test.csv", "train.csv", "valid.csv"]
    assert (folder / "label2idx.txt").read_text() == "anger 0\nfear 1\njoy 2\nsadness 3\n"  # sorted names, ids in order
    splits = load_splits(tmp_path / "data", "mine", ["train", "valid", "test"])
    assert {mode: len(split) for mode, split in splits.items()} == {"train": 32, "valid": 4, "test": 4}
    for split in splits.values():  # 10 rows a label, 10% each: one of each label in valid and in test
        assert np.bincount(split.labels, minlength=4).tolist() == [len(split) // 4] * 4
        assert all(split.label_names[y] in text for text, y in zip(split.texts, split.labels, strict=True))
    assert sorted(t for s in splits.values() for t in s.texts) == sorted(r["text"] for r in records())

    manifest = json.loads((folder / "split.json").read_text())
    assert manifest["sources"]["train"]["files"] == [
        {"path": str(source.resolve()), "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    ]
    assert manifest["carved_from_train"] == {"valid": 0.1, "test": 0.1} and manifest["stratified"] is True
    assert manifest["rows"] == {"train": 32, "valid": 4, "test": 4}
    assert manifest["options"]["seed"] == 0 and manifest["labels"] == LABELS and manifest["multilabel"] is False


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_every_format_gives_the_same_files_as_json_lines(tmp_path, suffix):
    write(tmp_path / "mine.jsonl", records())
    write(tmp_path / f"mine{suffix}", records())
    assert bring("--from", tmp_path / "mine.jsonl", "--task", "a", "--data_dir", tmp_path / "data") == 0
    assert bring("--from", tmp_path / f"mine{suffix}", "--task", "b", "--data_dir", tmp_path / "data") == 0
    a, b = files(tmp_path / "data" / "a"), files(tmp_path / "data" / "b")
    assert {n: t for n, t in a.items() if n != "split.json"} == {n: t for n, t in b.items() if n != "split.json"}


def test_the_seed_decides_the_carving_and_the_same_seed_gives_the_same_bytes(tmp_path):
    source = write(tmp_path / "mine.jsonl", records(200))
    for task, seed in (("s0", "0"), ("again", "0"), ("s1", "1")):
        assert bring("--from", source, "--task", task, "--seed", seed, "--data_dir", tmp_path / "data") == 0
    s0, again, s1 = (files(tmp_path / "data" / t) for t in ("s0", "again", "s1"))
    assert s0 == again
    assert s0["valid.csv"] != s1["valid.csv"]


def test_fractions_are_options_and_a_zero_test_fraction_makes_no_test_split(tmp_path):
    source = write(tmp_path / "mine.jsonl", records(200))
    argv = [
        "--from",
        source,
        "--task",
        "mine",
        "--data_dir",
        tmp_path / "data",
        "--valid_fraction",
        "0.25",
        "--test_fraction",
        "0",
    ]
    assert bring(*argv) == 0
    manifest = json.loads((tmp_path / "data" / "mine" / "split.json").read_text())
    assert manifest["rows"] == {"train": 150, "valid": 50}  # 50 rows a label: 12 or 13 of each in valid
    assert not (tmp_path / "data" / "mine" / "test.csv").exists()


def test_integer_labels_keep_their_numeric_order(tmp_path):
    rows = [{"text": f"t{i}", "label": [2, 10, 1][i % 3]} for i in range(30)]
    assert bring("--from", write(tmp_path / "n.jsonl", rows), "--task", "n", "--data_dir", tmp_path / "data") == 0
    assert (tmp_path / "data" / "n" / "label2idx.txt").read_text() == "1 0\n2 1\n10 2\n"


# ----------------------------------------------------------------------------- splits given


def test_split_files_are_used_as_given_and_a_missing_one_is_carved(tmp_path):
    train, valid, test = (write(tmp_path / f"{m}.jsonl", records(n)) for m, n in (("train", 40), ("valid", 8), ("test", 4)))
    assert bring("--from", train, "--valid", valid, "--test", test, "--task", "all", "--data_dir", tmp_path / "data") == 0
    splits = load_splits(tmp_path / "data", "all", ["train", "valid", "test"])
    assert [len(s) for s in splits.values()] == [40, 8, 4]
    assert splits["valid"].texts == [r["text"] for r in records(8)]  # in the file's order
    assert json.loads((tmp_path / "data" / "all" / "split.json").read_text())["carved_from_train"] == {}

    assert bring("--from", train, "--test", test, "--task", "some", "--data_dir", tmp_path / "data") == 0
    manifest = json.loads((tmp_path / "data" / "some" / "split.json").read_text())
    assert manifest["carved_from_train"] == {"valid": 0.1} and manifest["rows"] == {"train": 36, "valid": 4, "test": 4}


def test_a_datasets_dict_folder_brings_its_splits_and_class_names(tmp_path, capsys):
    assert bring("--from", FIXTURES / "saved_dataset_dict", "--task", "hf", "--data_dir", tmp_path / "data") == 0
    splits = load_splits(tmp_path / "data", "hf", ["train", "valid", "test"])
    assert splits["train"].label_names == ["anger", "joy", "sadness"]  # ClassLabel ids turned into names, then sorted
    assert [splits["valid"].label_names[y] for y in splits["valid"].labels] == ["sadness", "joy"]
    assert splits["test"].texts == ["i am so angry", "happy again"]
    manifest = json.loads((tmp_path / "data" / "hf" / "split.json").read_text())
    assert [f["path"].split("/")[-2:] for f in manifest["sources"]["valid"]["files"]] == [
        ["validation", "data-00000-of-00001.arrow"]
    ]
    other = write(tmp_path / "valid.jsonl", records(4))
    assert bring("--from", FIXTURES / "saved_dataset_dict", "--valid", other, "--task", "x", "--data_dir", tmp_path / "data") == 2
    assert error(capsys).endswith("a datasets folder brings its own splits; --valid and --test are for files")


# ----------------------------------------------------------------------------- multi-label


MULTI = [["anger"], ["joy"], ["fear"], ["anger", "joy"], [], ["joy", "fear"], ["anger"], ["joy"], ["fear"], ["anger", "fear"]]


def test_lists_separated_strings_and_0_1_columns_give_the_same_multilabel_task(tmp_path):
    texts = [f"sentence {i}" for i in range(len(MULTI))]
    write(tmp_path / "lists.jsonl", [{"text": t, "labels": m} for t, m in zip(texts, MULTI, strict=True)])
    write(tmp_path / "joined.csv", [{"text": t, "labels": ",".join(m)} for t, m in zip(texts, MULTI, strict=True)])
    columns = [
        {"text": t, **{name: int(name in m) for name in ("joy", "fear", "anger")}} for t, m in zip(texts, MULTI, strict=True)
    ]
    write(tmp_path / "columns.csv", columns)
    common = ["--data_dir", tmp_path / "data", "--valid_fraction", "0.2", "--test_fraction", "0.2"]
    assert bring("--from", tmp_path / "lists.jsonl", "--task", "lists", "--label_column", "labels", *common) == 0
    assert (
        bring(
            "--from", tmp_path / "joined.csv", "--task", "joined", "--label_column", "labels", "--label_separator", ",", *common
        )
        == 0
    )
    assert bring("--from", tmp_path / "columns.csv", "--task", "columns", "--label_columns", "joy", "fear", "anger", *common) == 0
    made = {t: files(tmp_path / "data" / t) for t in ("lists", "joined", "columns")}
    for task in ("joined", "columns"):
        assert {n: b for n, b in made[task].items() if n != "split.json"} == {
            n: b for n, b in made["lists"].items() if n != "split.json"
        }
    splits = load_splits(tmp_path / "data", "lists", ["train", "valid", "test"])
    assert splits["train"].multilabel and splits["train"].label_names == ["anger", "fear", "joy"]
    assert "label2idx.txt" not in made["lists"] and [len(s) for s in splits.values()] == [6, 2, 2]


def test_a_saved_dataset_of_classlabel_lists_is_multilabel(tmp_path):
    argv = [
        "--from",
        FIXTURES / "saved_dataset_multi",
        "--task",
        "m",
        "--label_column",
        "labels",
        "--data_dir",
        tmp_path / "data",
    ]
    assert bring(*argv, "--valid_fraction", "0.2", "--test_fraction", "0.2") == 0
    splits = load_splits(tmp_path / "data", "m", ["train", "valid", "test"])
    by_text = {
        t: {splits[m].label_names[j] for j in row.nonzero()[0]}
        for m in splits
        for t, row in zip(splits[m].texts, splits[m].labels, strict=True)
    }
    assert by_text == {f"sentence {i}": set(labels) for i, labels in enumerate(MULTI)}


# ----------------------------------------------------------------------------- round trip

# Texts a CSV writer or reader can cut, merge or change: line breaks of every kind (a bare carriage
# return ends a row for CSV readers), quotes, separators, spaces at the ends (texts are kept as
# read: only label names are stripped), values pandas would guess as NA or numbers, non-ASCII.
TRICKY = [
    "bare\rreturn",
    "new\nline",
    "windows\r\nline",
    "\rleading return",
    "trailing return\r",
    "blank lines\n\n\r\r\n\r\nbetween",
    'a "quoted" word',
    '"',
    "commas, and, more,",
    "tab\there\t",
    "  leading and trailing spaces  ",
    " ; | semicolons and bars ",
    "NA",
    "null",
    "1e5",
    "#not a comment",
    "back\\slash\\",
    "emoji 😀🎉 and a flag 🇫🇷",
    "中文 日本語の文 한국어",
    "\u2028line separator\x85next line\x0bvertical tab",
]
LABELED = [(text, ["anger", " joy ", "sadness"][i % 3]) for i, text in enumerate(TRICKY)]


def write_exactly(path: Path, rows: list[dict]) -> Path:
    """`rows` in `path`'s format such that every reader gets them back: delimited files fully
    quoted (pandas' default leaves a bare carriage return unquoted), a `datasets` folder as
    save_to_disk lays it out (one Arrow stream and its state.json)."""
    frame = pd.DataFrame(rows)
    if path.suffix in (".csv", ".tsv"):
        text = frame.to_csv(index=False, sep="\t" if path.suffix == ".tsv" else ",", quoting=csv.QUOTE_ALL)
        path.write_text(text, encoding="utf-8", newline="")
    elif not path.suffix:
        path.mkdir()
        table = pa.Table.from_pandas(frame, preserve_index=False)
        with pa.OSFile(str(path / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as out:
            out.write_table(table)
        (path / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    else:
        write(path, rows)
    return path


def read_back(data: Path, task: str) -> dict[str, list[tuple[str, object]]]:
    """Each split's (text, label) rows as the project's reader gives them: a label name, or the
    sorted names of a multi-label row."""
    splits = load_splits(data, task, ["train", "valid", "test"])
    back = {}
    for mode, split in splits.items():
        if split.multilabel:
            labels = [sorted(n for n, on in zip(split.label_names, row, strict=True) if on) for row in split.labels]
        else:
            labels = [split.label_names[y] for y in split.labels]
        back[mode] = list(zip(split.texts, labels, strict=True))
    return back


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet", ""], ids=["csv", "tsv", "jsonl", "parquet", "datasets"])
def test_what_is_written_reads_back_row_for_row_as_it_was_read(tmp_path, suffix):
    given = {"train": LABELED, "valid": LABELED[::2], "test": LABELED[1::3]}
    if suffix:
        paths = {
            mode: write_exactly(tmp_path / f"{mode}{suffix}", [{"text": t, "label": y} for t, y in rows])
            for mode, rows in given.items()
        }
        argv = ["--from", paths["train"], "--valid", paths["valid"], "--test", paths["test"]]
    else:  # a DatasetDict folder brings its own splits
        (tmp_path / "saved").mkdir()
        for mode, rows in given.items():
            write_exactly(tmp_path / "saved" / mode, [{"text": t, "label": y} for t, y in rows])
        (tmp_path / "saved" / "dataset_dict.json").write_text(json.dumps({"splits": list(given)}))
        argv = ["--from", tmp_path / "saved"]
    assert bring(*argv, "--task", "tricky", "--data_dir", tmp_path / "data") == 0
    expected = {mode: [(t, y.strip()) for t, y in rows] for mode, rows in given.items()}
    assert read_back(tmp_path / "data", "tricky") == expected


def test_carved_and_multilabel_splits_read_back_row_for_row(tmp_path):
    rows = [(f"{i} {t}", y) for i, (t, y) in enumerate(LABELED * 2)]  # each text twice, numbered
    source = write_exactly(tmp_path / "mine.csv", [{"text": t, "label": y} for t, y in rows])
    assert bring("--from", source, "--task", "carved", "--data_dir", tmp_path / "data", "--valid_fraction", "0.25") == 0
    back = read_back(tmp_path / "data", "carved")
    place = {(t, y.strip()): i for i, (t, y) in enumerate(rows)}
    assert sorted(place[row] for split in back.values() for row in split) == list(range(len(rows)))
    for split in back.values():  # each split keeps the file's order
        assert [place[row] for row in split] == sorted(place[row] for row in split)

    multi = [{"text": t, "labels": [["joy"], [], ["anger", "joy"]][i % 3]} for i, t in enumerate(TRICKY)]
    sources = [write_exactly(tmp_path / f"{mode}.jsonl", multi) for mode in ("train", "valid", "test")]  # the same rows
    argv = ["--from", sources[0], "--valid", sources[1], "--test", sources[2], "--task", "multi", "--label_column", "labels"]
    assert bring(*argv, "--data_dir", tmp_path / "data") == 0
    expected = [(row["text"], sorted(row["labels"])) for row in multi]
    assert read_back(tmp_path / "data", "multi") == {"train": expected, "valid": expected, "test": expected}


# ----------------------------------------------------------------------------- an existing task


def test_an_existing_task_folder_is_replaced_only_with_force_and_no_stale_split_stays(tmp_path, capsys):
    source = write(tmp_path / "mine.jsonl", records())
    data = tmp_path / "data"
    assert bring("--from", source, "--task", "mine", "--data_dir", data) == 0
    before = files(data / "mine")
    assert bring("--from", source, "--task", "mine", "--data_dir", data, "--test_fraction", "0") == 2
    assert error(capsys) == f"error: {data / 'mine'}: the task folder exists; --force replaces its data"
    assert files(data / "mine") == before
    assert bring("--from", source, "--task", "mine", "--data_dir", data, "--test_fraction", "0", "--force") == 0
    assert "test.csv" not in files(data / "mine")


# ----------------------------------------------------------------------------- refusals

# (files to write, extra arguments, the error after "error: "); {d} is the folder of the files.
BAD = {
    "empty-text": (
        {"x.jsonl": '{"text": "hi", "label": "joy"}\n{"text": "  ", "label": "sad"}\n'},
        [],
        "{d}/x.jsonl: row 2: field 'text': empty text",
    ),
    "null-text": ({"x.jsonl": '{"text": null, "label": "joy"}\n'}, [], "{d}/x.jsonl: row 1: field 'text': empty text"),
    "empty-label": ({"x.csv": "text,label\nhi,joy\nho,\n"}, [], "{d}/x.csv: row 2: field 'label': empty label"),
    "unseen-in-valid": (
        {"x.jsonl": '{"text": "a", "label": "joy"}\n', "v.jsonl": '{"text": "b", "label": "fear"}\n'},
        ["--valid", "{d}/v.jsonl", "--test_fraction", "0"],
        "{d}/v.jsonl: row 1: field 'label': label 'fear' never appears in {d}/x.jsonl (its labels: joy)",
    ),
    "one-example": (
        {"x.csv": "text,label\na,joy\nb,joy\nc,fear\n"},
        [],
        "{d}/x.csv: row 3: field 'label': label 'fear' has one example; splitting stratified by label needs at least 2",
    ),
    "mixed": (
        {"x.jsonl": '{"text": "a", "label": "joy"}\n{"text": "b", "label": ["joy", "fear"]}\n'},
        [],
        "{d}/x.jsonl: row 2: field 'label' holds several labels (a list), but row 1 holds one label: mixed single- and "
        "multi-label",
    ),
    "mixed-splits": (
        {"x.jsonl": '{"text": "a", "label": "joy"}\n', "v.jsonl": '{"text": "b", "label": ["joy"]}\n'},
        ["--valid", "{d}/v.jsonl"],
        "{d}/v.jsonl: row 1: field 'label': several labels per row, but {d}/x.jsonl is one label per row",
    ),
    "missing-column": (
        {"x.csv": "text,emotion\nhi,joy\n"},
        [],
        "{d}/x.csv: no column 'label' (columns: text, emotion); name it with --label_column",
    ),
    "missing-label-columns": (
        {"x.csv": "text,joy\nhi,1\n"},
        ["--label_columns", "joy", "fear"],
        "{d}/x.csv: no column 'fear' (columns: text, joy); name it with --label_columns",
    ),
    "not-0-or-1": (
        {"x.csv": "text,joy,fear\nhi,1,2\n"},
        ["--label_columns", "joy", "fear"],
        "{d}/x.csv: row 1: field 'fear': must be 0 or 1, got '2'",
    ),
    "reserved-label": (
        {"x.jsonl": '{"text": "a", "label": ["text"]}\n'},
        [],
        "{d}/x.jsonl: row 1: field 'label': label 'text' cannot name a label column",
    ),
    "slash-in-label": (
        {"x.csv": "text,label\na,x/y\n"},
        [],
        "{d}/x.csv: row 1: field 'label': label name 'x/y' contains a path separator",
    ),
    "bad-json": ({"x.jsonl": '{"text": "a", "label": "joy"}\n{"text": b}\n'}, [], "{d}/x.jsonl: row 2: not valid JSON"),
    "not-objects": ({"x.jsonl": '["a", "joy"]\n'}, [], "{d}/x.jsonl: row 1: not a JSON object"),
    "bad-parquet": ({"x.parquet": "not parquet"}, [], "{d}/x.parquet: not readable as Parquet"),
    "not-utf8": ({"x.csv": "text,label\ncaf\xe9,joy\n".encode("latin-1")}, [], "{d}/x.csv: not UTF-8 text (byte 0xe9"),
    "header-only": ({"x.csv": "text,label\n"}, [], "{d}/x.csv: no data rows"),
    "unknown-format": ({"x.xlsx": "?"}, [], "{d}/x.xlsx: unknown format '.xlsx'; use .csv, .tsv, .jsonl"),
    "valid-left-empty": (
        {"x.jsonl": '{"text": "a", "label": ["joy"]}\n{"text": "b", "label": ["fear"]}\n'},
        [],
        "{d}/x.jsonl: --valid_fraction 0.1 and --test_fraction 0.1 of its 2 rows leave valid empty",
    ),
    "none-left-for-train": (
        {"x.csv": "text,label\na,joy\nb,joy\nc,sad\nd,sad\n"},
        ["--valid_fraction", "0.5", "--test_fraction", "0.45"],
        "{d}/x.csv: label 'joy' (2 rows) has none left for train",
    ),
    "one-label": (
        {"x.csv": "text,label\na,joy\nb,joy\nc,joy\n"},
        [],
        "{d}/x.csv: field 'label': every row has the label 'joy'; a task needs at least two labels",
    ),
    "one-label-given-splits": (
        {"x.jsonl": '{"text": "a", "label": "joy"}\n', "v.jsonl": '{"text": "b", "label": "joy"}\n'},
        ["--valid", "{d}/v.jsonl", "--test_fraction", "0"],
        "{d}/x.jsonl: field 'label': every row has the label 'joy'; a task needs at least two labels",
    ),
    "one-label-in-lists": (
        {"x.jsonl": '{"text": "a", "label": ["joy"]}\n{"text": "b", "label": []}\n'},
        [],
        "{d}/x.jsonl: field 'label': the only label in its rows is 'joy'; a task needs at least two labels",
    ),
    "no-label-in-lists": (
        {"x.csv": "text,labels\na,\nb, \n"},
        ["--label_column", "labels", "--label_separator", ","],
        "{d}/x.csv: field 'labels': no row has a label; a task needs at least two labels",
    ),
    "one-label-column": (
        {"x.csv": "text,joy,fear\na,1,0\nb,0,0\n"},
        ["--label_columns", "joy"],
        "{d}/x.csv: field 'joy': the only label column; a task needs at least two labels",
    ),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_data_is_one_line_naming_file_row_and_field_and_nothing_is_written(case, tmp_path, capsys):
    sources, extra, message = BAD[case]
    d = tmp_path / "in"
    d.mkdir()
    for name, content in sources.items():
        (d / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    first = d / next(iter(sources))
    argv = ["--from", first, "--task", "mine", "--data_dir", tmp_path / "data", *(a.format(d=d) for a in extra)]
    assert bring(*argv) == 2
    assert error(capsys).startswith(f"error: {message.format(d=d)}")
    assert not (tmp_path / "data").exists()
