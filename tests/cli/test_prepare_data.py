"""prepare_data.py / fec.core.fetch: copy and download, sha256 checks, nothing half-written.

Offline: downloads are served from a local `file://` folder (fetch.BASE_URL is patched).
"""

from __future__ import annotations

import csv
import hashlib
import re
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

import prepare_data
from fec.core import fetch

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"

TOY_FILES = {
    "train.csv": "text,aug_text,label\nhello there,hi there,0\nso sad,very sad,1\n",
    "valid.csv": "text,aug_text,label\nyay,hooray,0\n",
    "test.csv": "text,aug_text,label\nboo,meh,1\n",
    "label2idx.txt": "joy 0\nsad 1\n",
    "label_tree.tsv": "joy\troot\nsad\troot\n",
}
MULTI_FILES = {  # semeval-like: no test split, no label files
    "train.csv": "id,text,anger,joy\na1,grr,1,0\na2,yay,0,1\n",
    "valid.csv": "id,text,anger,joy\nb1,meh,0,0\n",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_task(root: Path, task: str, files: dict[str, str]) -> Path:
    d = root / task
    d.mkdir(parents=True)
    for name, text in files.items():
        (d / name).write_bytes(text.encode())
    return d


def _listing(root: Path) -> dict[str, bytes]:
    """Every file under root (hidden temp files included) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def src(tmp_path, monkeypatch):
    """A source folder with tasks `toy` and `multi`, and checksum tables that know them."""
    root = tmp_path / "src"
    _write_task(root, "toy", TOY_FILES)
    _write_task(root, "multi", MULTI_FILES)
    monkeypatch.setattr(
        fetch,
        "SHA256",
        {
            "toy": {n: _sha(t.encode()) for n, t in TOY_FILES.items()},
            "multi": {n: _sha(t.encode()) for n, t in MULTI_FILES.items()},
        },
    )
    monkeypatch.setattr(
        fetch,
        "DOWNLOADS",
        {
            "toy": ("train.csv", "valid.csv", "test.csv", "label2idx.txt"),
        },
    )
    monkeypatch.setattr(fetch, "BASE_URL", root.as_uri())
    return root


def _err_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------- copy


def test_copy_all_known_tasks(src, tmp_path, capsys):
    dst = tmp_path / "data"
    assert prepare_data.main(["--from", str(src), "--data-dir", str(dst)]) == 0
    assert _listing(dst) == {
        **{f"toy/{n}": t.encode() for n, t in TOY_FILES.items()},
        **{f"multi/{n}": t.encode() for n, t in MULTI_FILES.items()},
    }
    err = capsys.readouterr().err
    assert "toy/train.csv: copying" in err and "7 copied" in err


def test_already_present_files_are_skipped(src, tmp_path, capsys):
    dst = tmp_path / "data"
    assert prepare_data.main(["--from", str(src), "--data-dir", str(dst), "--tasks", "toy"]) == 0
    inode = (dst / "toy" / "train.csv").stat().st_ino
    capsys.readouterr()
    assert prepare_data.main(["--from", str(src), "--data-dir", str(dst), "--tasks", "toy"]) == 0
    err = capsys.readouterr().err
    assert "toy/train.csv: already present, checksum ok, skipped" in err
    assert "copying" not in err and "5 present" in err
    assert (dst / "toy" / "train.csv").stat().st_ino == inode  # not rewritten
    # --force fetches again
    assert prepare_data.main(["--from", str(src), "--data-dir", str(dst), "--tasks", "toy", "--force"]) == 0
    assert "5 copied" in capsys.readouterr().err


def test_present_file_with_wrong_checksum_needs_force(src, tmp_path, capsys):
    dst = tmp_path / "data"
    (dst / "toy").mkdir(parents=True)
    (dst / "toy" / "valid.csv").write_text("edited by hand\n")
    before = _listing(dst)
    assert prepare_data.main(["--from", str(src), "--data-dir", str(dst), "--tasks", "toy"]) == 2
    line = _err_line(capsys)
    assert "toy/valid.csv" in line and "--force" in line
    assert fetch.SHA256["toy"]["valid.csv"] in line and _sha(b"edited by hand\n") in line
    assert _listing(dst) == before  # nothing written, not even the other files
    assert prepare_data.main(["--from", str(src), "--data-dir", str(dst), "--tasks", "toy", "--force"]) == 0
    assert (dst / "toy" / "valid.csv").read_text() == TOY_FILES["valid.csv"]


def test_wrong_checksum_in_source_is_rejected_and_destination_untouched(src, tmp_path, capsys):
    dst = tmp_path / "data"
    assert prepare_data.main(["--from", str(src), "--data-dir", str(dst), "--tasks", "toy"]) == 0
    before = _listing(dst)
    bad = src / "toy" / "train.csv"
    bad.write_bytes(bad.read_bytes() + b"extra row,x,0\n")
    capsys.readouterr()
    # --force: the good train.csv already there must survive the failed copy
    assert prepare_data.main(["--from", str(src), "--data-dir", str(dst), "--tasks", "toy", "--force"]) == 2
    line = _err_line(capsys)
    assert line.startswith("error: checksum mismatch for ") and str(bad) in line
    assert f"expected {fetch.SHA256['toy']['train.csv']}" in line
    assert f"actual {_sha(bad.read_bytes())}" in line
    assert _listing(dst) == before  # no temp file, old file intact

    fresh = tmp_path / "fresh"
    assert prepare_data.main(["--from", str(src), "--data-dir", str(fresh), "--tasks", "toy"]) == 2
    assert not fresh.exists()  # no partial file, not even an empty folder


def test_missing_required_file(src, tmp_path, capsys):
    (src / "toy" / "label2idx.txt").unlink()
    dst = tmp_path / "data"
    assert prepare_data.main(["--from", str(src), "--data-dir", str(dst)]) == 2
    assert _err_line(capsys) == f"error: missing required file: {src / 'toy' / 'label2idx.txt'}"
    assert not dst.exists()


def test_optional_files(src, tmp_path, capsys):
    (src / "toy" / "label_tree.tsv").unlink()  # optional even though its hash is known
    (src / "multi" / "test.csv").write_text("id,text,anger,joy\nc1,hm,0,1\n")  # hash unknown
    dst = tmp_path / "data"
    assert prepare_data.main(["--from", str(src), "--data-dir", str(dst)]) == 0
    assert not (dst / "toy" / "label_tree.tsv").exists()
    assert (dst / "multi" / "test.csv").read_text() == "id,text,anger,joy\nc1,hm,0,1\n"
    assert "warning: multi/test.csv: no known checksum, copied unverified" in capsys.readouterr().err


def test_task_selection(src, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(fetch.SHA256, "absent", {"train.csv": "0" * 64})
    dst = tmp_path / "data"
    # by default a known task missing from --from DIR is skipped ...
    assert prepare_data.main(["--from", str(src), "--data-dir", str(dst)]) == 0
    assert "absent: not in" in capsys.readouterr().err
    assert sorted(p.name for p in dst.iterdir()) == ["multi", "toy"]
    # ... but named explicitly it is an error
    assert prepare_data.main(["--from", str(src), "--data-dir", str(dst), "--tasks", "toy", "absent"]) == 2
    assert _err_line(capsys) == f"error: task folder not found: {src / 'absent'}"
    # a missing source folder
    assert prepare_data.main(["--from", str(tmp_path / "nope"), "--data-dir", str(dst)]) == 2
    assert _err_line(capsys) == f"error: argument --from: {tmp_path / 'nope'}: no such folder"


def test_unknown_task_copied_as_is_with_warning(src, tmp_path, capsys):
    _write_task(src, "mine", {"train.csv": "text,label\na,x\n", "valid.csv": "text,label\nb,y\n", "notes.md": "my data\n"})
    dst = tmp_path / "data"
    assert prepare_data.main(["--from", str(src), "--data-dir", str(dst), "--tasks", "mine"]) == 0
    assert _listing(dst / "mine") == _listing(src / "mine")
    assert "warning: mine: unknown task" in capsys.readouterr().err
    (src / "mine" / "valid.csv").unlink()
    assert prepare_data.main(["--from", str(src), "--data-dir", str(tmp_path / "d2"), "--tasks", "mine"]) == 2
    assert "missing required file" in _err_line(capsys)


# ----------------------------------------------------------------------------- download


def test_download_from_file_url(src, tmp_path, capsys):
    dst = tmp_path / "data"
    assert prepare_data.main(["--data-dir", str(dst)]) == 0
    assert _listing(dst) == {f"toy/{n}": TOY_FILES[n].encode() for n in fetch.DOWNLOADS["toy"]}
    err = capsys.readouterr().err
    assert f"downloading {src.as_uri()}/toy/train.csv" in err
    assert "multi: no public download, skipped" in err
    # present and valid: skipped without touching the network
    assert prepare_data.main(["--data-dir", str(dst)]) == 0
    assert "4 present" in capsys.readouterr().err


def test_corrupted_download_rejected(src, tmp_path, capsys):
    dst = tmp_path / "data"
    assert prepare_data.main(["--data-dir", str(dst)]) == 0
    before = _listing(dst)
    (src / "toy" / "test.csv").write_text("tampered\n")
    capsys.readouterr()
    assert prepare_data.main(["--data-dir", str(dst), "--force"]) == 2
    line = _err_line(capsys)
    assert f"checksum mismatch for {src.as_uri()}/toy/test.csv" in line
    assert f"actual {_sha(b'tampered' + chr(10).encode())}" in line
    assert _listing(dst) == before  # the good copy survives, no partial file

    fresh = tmp_path / "fresh"
    assert prepare_data.main(["--data-dir", str(fresh)]) == 2
    # train.csv and valid.csv came before the bad file and were verified; no trace of test.csv
    assert sorted(_listing(fresh)) == ["toy/train.csv", "toy/valid.csv"]


def test_download_refusals(tmp_path, capsys):
    dst = tmp_path / "data"  # real tables; nothing here reaches the network
    assert prepare_data.main(["--tasks", "semeval_eng", "--data-dir", str(dst)]) == 2
    line = _err_line(capsys)
    assert "semeval_eng" in line and "no pinned public download" in line and "--from DIR" in line
    assert prepare_data.main(["--tasks", "mine", "--data-dir", str(dst)]) == 2
    line = _err_line(capsys)
    assert "unknown task 'mine'" in line and "--from DIR" in line
    assert not dst.exists()


def test_network_unreachable(src, tmp_path, capsys, monkeypatch):
    def offline(url, timeout):
        assert timeout == fetch.DOWNLOAD_TIMEOUT_S
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    monkeypatch.setattr(fetch, "BASE_URL", "https://example.invalid/data")
    monkeypatch.setattr(fetch.urllib.request, "urlopen", offline)
    dst = tmp_path / "data"
    assert prepare_data.main(["--data-dir", str(dst)]) == 2
    line = _err_line(capsys)
    assert "cannot download https://example.invalid/data/toy/train.csv" in line
    assert "Network is unreachable" in line and "--from DIR" in line
    assert not dst.exists()


# ----------------------------------------------------------------------------- tables, CLI


def test_tables_are_consistent():
    assert fetch.PINNED_COMMIT in fetch.BASE_URL and len(fetch.PINNED_COMMIT) == 40
    for task, files in fetch.DOWNLOADS.items():
        for name in files:  # never download something we cannot verify
            assert name in fetch.SHA256[task], (task, name)
    for table in fetch.SHA256.values():
        for digest in table.values():
            assert re.fullmatch(r"[0-9a-f]{64}", digest), digest
    assert set(fetch.SHA256["semeval_eng"]) == {"train.csv", "valid.csv"}


def test_help_and_script_entry_point(tmp_path, capsys):
    assert prepare_data.main(["-h"]) == 0
    assert "--from DIR" in capsys.readouterr().out
    proc = subprocess.run(
        [sys.executable, str(ROOT / "prepare_data.py"), "--tasks", "semeval_eng", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


# ----------------------------------------------------------------------------- bringing your own data (options)


def _jsonl(path: Path, n: int = 20) -> Path:
    path.write_text("".join(f'{{"text": "text {i}", "label": "{["joy", "sad"][i % 2]}"}}\n' for i in range(n)))
    return path


def test_own_data_through_the_script_and_fec_data(tmp_path):
    """The end-to-end path a user takes: a JSON Lines file, then `fec data` or the script; the
    tests of the import itself are in test_data_import.py."""
    source = _jsonl(tmp_path / "mine.jsonl")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "prepare_data.py"), "--from", str(source), "--task", "mine", "--data-dir", "d"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "mine: 16 train, 2 valid, 2 test rows, 2 labels (single-label) written to d/mine" in proc.stderr
    from fec.cli import main as fec_main

    assert fec_main(["data", "--from", str(source), "--task", "again", "--data_dir", str(tmp_path / "d")]) == 0
    assert _listing(tmp_path / "d" / "again") == {
        name.replace("mine/", ""): data for name, data in _listing(tmp_path / "d" / "mine").items()
    }


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--from", "{src}"], "--from {src}: a data file or datasets folder; name the task to make from it with --task NAME"),
        (["--task", "mine"], "--task NAME: give the data with --from FILE"),
        (["--tasks", "ED", "--text_column", "body"], "--text_column: only with --task NAME"),
        (["--from", "{src}", "--task", "mine", "--tasks", "ED"], "--tasks and --task: give --tasks to copy or download"),
        (
            ["--from", "{src}", "--task", "m", "--valid", "{src}", "--valid_fraction", "0.2"],
            "--valid_fraction: the valid split is",
        ),
        (["--from", "{src}", "--task", "m", "--label_columns", "a", "--label_separator", ","], "--label_separator: applies to"),
        (
            ["--from", "{src}", "--task", "m", "--label_column", "a", "--label_columns", "b"],
            "argument --label_columns: not allowed with argument --label_column",
        ),
        (["--from", "{src}", "--task", "m", "--valid_fraction", "0"], "--valid_fraction 0: a valid split is required"),
        (
            ["--from", "{src}", "--task", "m", "--valid_fraction", "0.5", "--test_fraction", "0.5"],
            "--valid_fraction + --test_fraction = 1: leaves nothing",
        ),
        (["--from", "{src}", "--task", "m", "--test_fraction", "1.5"], "argument --test_fraction: must be a fraction in [0, 1]"),
        (["--from", "no/such.jsonl", "--task", "m"], "argument --from: no/such.jsonl: no such file"),
        (["--from", "{src}", "--task", "../m"], "argument --task: '../m' is not a task name"),
    ],
)
def test_own_data_options_that_cannot_work_together_are_refused(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    src = str(_jsonl(tmp_path / "mine.jsonl"))
    assert prepare_data.main([a.format(src=src) for a in argv]) == 2
    assert _err_line(capsys).startswith(f"error: {message.format(src=src)}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.jsonl"]  # no data/ made


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} not present")
def test_copy_real_shared_data(tmp_path, capsys):
    dst = tmp_path / "data"
    assert prepare_data.main(["--from", str(SHARED_DATA), "--data-dir", str(dst)]) == 0
    with open(dst / "ED" / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["text", "aug_text", "label"]
    assert len(rows) - 1 == 17802
    for task, table in fetch.SHA256.items():
        for name in table:
            if name not in fetch.OPTIONAL_FILES or (SHARED_DATA / task / name).exists():
                assert fetch.sha256_file(dst / task / name) == table[name]


def test_bringing_data_loads_no_model_library():
    """`fec data` and `fec.prepare_data` stay quick to start: neither torch nor scikit-learn is imported."""
    code = "import sys, fec, fec.cli.prepare_data; fec.prepare_data; print(sorted({'torch', 'sklearn'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
