"""Every bad input is refused the same way: one `error: ...` line naming the option, file, row or
field, exit code 2, no traceback, no model loaded, and nothing written or changed.

Each row of CASES is a command a user could type in a project folder (`data/`, `dataset/` with
the toy task extracted, `Logs/` with one finished run). The test runs it there and checks the
message, the exit code, that no backbone was loaded, and that every file of the project folder
is byte-identical afterwards (none added, none removed).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import extract_all, extract_argv, write_task

import explain as explain_script
import main as main_script
import predict as predict_script
import prepare_data as prepare_data_script
import report as report_script
from bench import extract_speed, train_speed
from fec.cli import extract, finetune, probe, tfidf, tune
from fec.core.errors import UsageError
from fec.core.paths import inside, slug, unique_slug

REPO = Path(__file__).resolve().parents[2]
SCRIPTS: dict[str, Callable[[list[str]], int]] = {
    "main.py": main_script.main,
    "bert_rep_extract.py": lambda argv: extract.main("bert", argv),
    "llama2_rep_extract.py": lambda argv: extract.main("llama", argv),
    "finetune.py": finetune.main,
    "baselines/tfidf.py": tfidf.main,
    "predict.py": predict_script.main,
    "explain.py": explain_script.main,
    "report.py": report_script.main,
    "probe.py": probe.main,
    "tune.py": tune.main,
    "prepare_data.py": prepare_data_script.main,
    "bench/extract_speed.py": extract_speed.main,
    "bench/train_speed.py": train_speed.main,
}


@dataclass
class Case:
    """`script argv` run in the project folder; `setup(project, models)` may add files first and
    returns extra arguments. `{bert}`, `{llama}`, `{roberta}` and `{run}` in argv become the tiny
    models' folders and the finished run's folder."""

    script: str
    argv: list[str]
    message: str
    setup: Callable[[Path, dict], list[str]] | None = None
    id: str = field(default="")


def recipe_file(values: dict) -> Callable[[Path, dict], list[str]]:
    """A recipe file beside the project, given with --recipe."""

    def setup(project: Path, models: dict) -> list[str]:
        path = project.parent / "recipe.json"
        path.write_text(json.dumps(values))
        return ["--recipe", str(path)]

    return setup


def task_with(project: Path, name: str, files: dict[str, str | bytes]) -> None:
    folder = project / "data" / name
    folder.mkdir(parents=True)
    for file, content in files.items():
        (folder / file).write_bytes(content if isinstance(content, bytes) else content.encode())


def header_only(project: Path, models: dict) -> list[str]:
    task_with(project, "empty", {"train.csv": "text,label\n", "valid.csv": "text,label\n", "label2idx.txt": "joy 0\nsad 1\n"})
    return []


def evil_label(project: Path, models: dict) -> list[str]:
    task_with(project, "evil", {"train.csv": "text,label\nhi,0\n", "label2idx.txt": "../../../../tmp/x 0\nsad 1\n"})
    return []


def slash_column(project: Path, models: dict) -> list[str]:
    task_with(project, "multi", {"train.csv": "text,joy,a/b\nhi,1,0\n"})
    return []


def duplicate_header(column: str) -> Callable[[Path, dict], list[str]]:
    def setup(project: Path, models: dict) -> list[str]:
        header = "text,label,text" if column == "text" else "text,label,label"
        task_with(project, "twice", {"train.csv": f"{header}\nhi,0,x\n", "label2idx.txt": "joy 0\n"})
        return []

    return setup


def changed_train_csv(project: Path, models: dict) -> list[str]:
    """A second data folder whose train.csv was edited after the store was extracted."""
    edited = project.parent / "edited_data"
    shutil.copytree(project / "data", edited)
    with open(edited / "toy" / "train.csv", "a", encoding="utf-8") as fh:
        fh.write("one more happy row,one more happy row,0\n")
    return ["-data_dir", str(edited)]


def broken_model(project: Path, models: dict) -> list[str]:
    folder = project.parent / "broken_model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return ["-model", str(folder)]


def pick_of_another_slot(project: Path, models: dict) -> list[str]:
    """A copy of the finished run whose model.json was edited so its llama source picks a folder of
    bert features (training refuses such a pick; a hand-edited run must be refused too)."""
    run = project.parent / "run_with_crossed_pick"
    shutil.copytree(finished_run(project), run)
    spec = json.loads((run / "model.json").read_text())
    spec["feature_manifests"]["llama"] = spec["feature_manifests"]["bert"]
    pick = {"pick": "llama:mean:-1@bert-mean+first-all", "folder": "bert-mean+first-all", "pooling": "mean"}
    spec["feature_picks"] = {"llama": pick | {"layer_indices": [2], "prompts": [], "chat_template": False}}
    (run / "model.json").write_text(json.dumps(spec))
    return ["-run", str(run)]


def unverifiable_run(project: Path, models: dict) -> list[str]:
    """A copy of the finished run whose model.json lost the weights' sha256 of one backbone."""
    run = project.parent / "run_without_fingerprint"
    shutil.copytree(finished_run(project), run)
    spec = json.loads((run / "model.json").read_text())
    spec["feature_manifests"]["bert"]["model_fingerprint"]["weights_sha256"] = None
    (run / "model.json").write_text(json.dumps(spec))
    return ["-run", str(run)]


def input_file(content: bytes) -> Callable[[Path, dict], list[str]]:
    def setup(project: Path, models: dict) -> list[str]:
        path = project.parent / "texts.csv"
        path.write_bytes(content)
        return ["-input", str(path)]

    return setup


def own_data(files: dict[str, str]) -> Callable[[Path, dict], list[str]]:
    """A user's data files in raw/ of the project, for `prepare_data.py --from raw/FILE --task NAME`."""

    def setup(project: Path, models: dict) -> list[str]:
        (project / "raw").mkdir()
        for name, content in files.items():
            (project / "raw" / name).write_text(content)
        return []

    return setup


def input_in_project(project: Path, models: dict) -> list[str]:
    (project / "texts.csv").write_text("text\nglad\n")
    return ["-input", str(project / "texts.csv")]


def cut_weights(script_argv: Callable[[Path], list[str]]) -> Callable[[Path, dict], list[str]]:
    """A copy of the tiny roberta whose model.safetensors is cut to its first 100 bytes."""

    def setup(project: Path, models: dict) -> list[str]:
        folder = project.parent / "cut_roberta"
        shutil.copytree(models["roberta"], folder)
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
        return script_argv(folder)

    return setup


def text_file_as_storage(project: Path, models: dict) -> list[str]:
    """A text file beside the project given as the study's SQLite database."""
    (project.parent / "notes.db").write_text("not a database, only notes\n" * 200)
    return ["--storage", f"sqlite:///{project.parent / 'notes.db'}"]


def fresh_task(project: Path, models: dict) -> list[str]:
    """A task with its data and no features yet."""
    shutil.copytree(project / "data" / "toy", project / "data" / "fresh")
    return []


def superscript_label(project: Path, models: dict) -> list[str]:
    task_with(project, "sup", {"train.csv": "text,label\nhi,²\n", "label2idx.txt": "joy 0\n"})
    return []


def finished_run(project: Path) -> Path:
    (run,) = [p for p in (project / "Logs").iterdir() if p.is_dir()]
    return run


def damaged_run_file(name: str, content: bytes) -> Callable[[Path, dict], list[str]]:
    """The finished run with its file `name` replaced by `content` (a hand edit, a cut copy)."""

    def setup(project: Path, models: dict) -> list[str]:
        (finished_run(project) / name).write_bytes(content)
        return []

    return setup


def model_json_without(key: str) -> Callable[[Path, dict], list[str]]:
    def setup(project: Path, models: dict) -> list[str]:
        path = finished_run(project) / "model.json"
        spec = json.loads(path.read_text())
        del spec[key]
        path.write_text(json.dumps(spec))
        return []

    return setup


NOT_SAFETENSORS = hashlib.sha256(b"not a checkpoint").digest() * 8  # its first 8 bytes read as a huge header length


EXTRACT = ["-task", "toy", "-device", "cpu", "-dtype", "float32", "-model", "{bert}"]
TRAIN = ["-dataset", "toy", "-device", "cpu"]
PREDICT = ["-run", "{run}", "-device", "cpu"]

CASES = [
    # Values that used to run and silently give a wrong result.
    Case("main.py", [*TRAIN, "-batch_size", "-5"], "argument --batch_size/-batch_size: must be a positive integer, got -5"),
    Case("main.py", [*TRAIN, "-seeds", "1", "1"], "argument --seeds/-seeds: 1 is given twice; each value must be distinct"),
    Case("main.py", [*TRAIN, "-runs", "0"], "argument --runs/-runs: must be a positive integer, got 0"),
    Case("main.py", [*TRAIN, "-sources", "llama", "llama"], "argument --sources/-sources: llama is given twice"),
    Case("bert_rep_extract.py", [*EXTRACT, "-max_len", "0"], "argument --max_len/-max_len: must be a positive integer, got 0"),
    Case(
        "bert_rep_extract.py",
        [*EXTRACT, "-batch_size", "0"],
        "argument --batch_size/-batch_size: must be a positive integer, got 0",
    ),
    Case(
        "bert_rep_extract.py",
        [*EXTRACT, "-batch_size", "-3"],
        "argument --batch_size/-batch_size: must be a positive integer, got -3",
    ),
    Case(
        "bert_rep_extract.py",
        [*EXTRACT, "-max_tokens", "0"],
        "argument --max_tokens/-max_tokens: must be a positive integer, got 0",
    ),
    Case(
        "bert_rep_extract.py",
        [*EXTRACT, "-compat", "reference", "-max_tokens", "4096"],
        "--max_tokens 4096: applies to length-sorted batches; the published file order (--batch_order file, "
        "--compat reference) takes --batch_size rows at a time",
    ),
    Case("main.py", TRAIN, "train.json: extracted from another version of", changed_train_csv, id="stale-train-features"),
    # Names that would lead outside the project's folders.
    Case(
        "bert_rep_extract.py",
        [*EXTRACT, "-task", "evil"],
        "label2idx.txt: line 1: label name '../../../../tmp/x' contains a path separator",
        evil_label,
        id="label-with-path",
    ),
    Case(
        "bert_rep_extract.py",
        [*EXTRACT, "-task", "multi"],
        "train.csv: header: label name 'a/b' contains a path separator",
        slash_column,
        id="label-column-with-path",
    ),
    Case(
        "bert_rep_extract.py",
        [*EXTRACT, "-task", "../../elsewhere"],
        "argument --task/-task: '../../elsewhere' is not a task name",
    ),
    Case("bert_rep_extract.py", [*EXTRACT, "-task", "/tmp/abs"], "argument --task/-task: '/tmp/abs' is not a task name"),
    Case("main.py", ["-dataset", "..", "-device", "cpu"], "argument --task/-task/--dataset/-dataset: '..' is not a task name"),
    Case(
        "finetune.py",
        ["-dataset", "../x", "-model", "{bert}"],
        "argument --task/-task/--dataset/-dataset: '../x' is not a task name",
    ),
    Case(
        "predict.py",
        ["-text", "so happy", "-device", "cpu"],
        "model_fingerprint has no weights_sha256, so the weights cannot be checked",
        unverifiable_run,
        id="fingerprint-missing",
    ),
    Case(
        "predict.py",
        ["-text", "so happy", "-device", "cpu"],
        "model.json: the llama source holds features extracted for the bert slot, not llama",
        pick_of_another_slot,
        id="predict-pick-of-another-slot",
    ),
    # User errors that used to end in a traceback.
    Case(
        "bert_rep_extract.py",
        [*EXTRACT, "-task", "empty"],
        "train.csv: no data rows (only a header)",
        header_only,
        id="extract-header-only",
    ),
    Case(
        "finetune.py",
        ["-dataset", "empty", "-model", "{bert}", "-device", "cpu"],
        "train.csv: no data rows (only a header)",
        header_only,
        id="finetune-header-only",
    ),
    Case("main.py", [*TRAIN, "-epochs", "0"], "argument --epochs/-epochs: must be a positive integer, got 0"),
    Case("main.py", [*TRAIN, "-batch_size", "0"], "argument --batch_size/-batch_size: must be a positive integer, got 0"),
    Case("main.py", [*TRAIN, "-lr", "-0.01"], "argument --lr/-lr: must be a number > 0, got -0.01"),
    Case("main.py", [*TRAIN, "-lr", "nan"], "argument --lr/-lr: must be a number > 0, got 'nan'"),
    Case("main.py", [*TRAIN, "-runs", "-2"], "argument --runs/-runs: must be a positive integer, got -2"),
    Case("main.py", [*TRAIN, "-dropout", "1"], "argument --dropout/-dropout: must be a rate in [0, 1), got 1"),
    Case("main.py", [*TRAIN, "-threshold", "1.5"], "argument --threshold/-threshold: must be a number strictly between 0 and 1"),
    Case("main.py", [*TRAIN, "-device", "gpu0"], "argument --device/-device: 'gpu0' is not a device"),
    Case(
        "finetune.py",
        ["-dataset", "toy", "-model", "{bert}", "-lr", "-0.01"],
        "argument --lr/-lr: must be a number > 0, got -0.01",
    ),
    Case(
        "finetune.py",
        ["-dataset", "toy", "-model", "{bert}", "-warmup_cap", "2"],
        "argument --warmup_cap/-warmup_cap: must be a fraction in [0, 1]",
    ),
    Case("baselines/tfidf.py", ["-dataset", "toy", "-seeds", "3", "3"], "argument --seeds/-seeds: 3 is given twice"),
    Case("bert_rep_extract.py", [*EXTRACT, "-max_len", "-5"], "argument --max_len/-max_len: must be a positive integer, got -5"),
    Case("bert_rep_extract.py", [*EXTRACT, "-device", "gpu0"], "argument --device/-device: 'gpu0' is not a device"),
    Case(
        "bert_rep_extract.py",
        ["-task", "toy", "-device", "cpu"],
        "config.json: no model_type, so transformers cannot tell",
        broken_model,
        id="model-config-empty",
    ),
    Case("bert_rep_extract.py", [*EXTRACT, "-limit", "-1"], "argument --limit/-limit: must be a positive integer, got -1"),
    Case(
        "bert_rep_extract.py",
        [*EXTRACT, "-chunk_rows", "0"],
        "argument --chunk_rows/-chunk_rows: must be a positive integer, got 0",
    ),
    Case(
        "llama2_rep_extract.py",
        ["-task", "toy", "-device", "cpu", "-dtype", "float32", "-model", "{llama}", "-layers", "0"],
        "--layers 0: a count must be at least 1",
    ),
    Case(
        "predict.py",
        PREDICT,
        "texts.csv: not UTF-8 text (byte 0xe9 at offset 8); save it as UTF-8",
        input_file("text\ncaf\xe9 joie\n".encode("latin-1")),
        id="predict-latin-1",
    ),
    Case("predict.py", PREDICT, "texts.csv: the file is empty", input_file(b""), id="predict-empty-file"),
    Case(
        "predict.py",
        [*PREDICT, "-text", "hi", "-topk", "0", "-output", "f.csv"],
        "argument --topk/-topk: must be a positive integer, got 0",
    ),
    Case("predict.py", [*PREDICT, "-text", "hi", "-topk", "-2"], "argument --topk/-topk: must be a positive integer, got -2"),
    Case("predict.py", [*PREDICT, "-text", "hi", "-topk", "4"], "-topk 4: the run has 3 labels"),
    Case("predict.py", [*PREDICT, "-text", "hi", "-output", "Logs"], "argument --output/-output: Logs: is a folder"),
    Case("predict.py", ["-run", "Logs/nothing_here", "-text", "hi"], "argument --run/-run: Logs/nothing_here: no such folder"),
    # Empty texts are refused at prediction as they are in training data.
    Case("predict.py", [*PREDICT, "-text", "fine", "-text", ""], "-text 2: empty text"),
    Case("predict.py", PREDICT, "texts.csv: row 2: empty text", input_file(b'text\nglad\n""\nsad\n'), id="predict-empty-cell"),
    Case("explain.py", [*PREDICT, "-text", "  "], "-text 1: empty text"),
    Case(
        "explain.py", [*PREDICT, "-text", "hi", "-label", "bored"], "-label bored: not a label of this run (joyful, sad, angry)"
    ),
    Case(
        "explain.py",
        [*PREDICT, "-text", "hi", "-max_evals", "0"],
        "argument --max_evals/-max_evals: must be a positive integer, got 0",
    ),
    # Damaged run folders: one validated reader; a named folder is one error line.
    Case(
        "predict.py",
        [*PREDICT, "-text", "hi"],
        "results.json: not a JSON object: it holds a list",
        damaged_run_file("results.json", b"[]"),
        id="predict-results-a-list",
    ),
    Case(
        "predict.py",
        [*PREDICT, "-text", "hi"],
        "model.json: not a JSON object: it holds a string",
        damaged_run_file("model.json", b'"x"'),
        id="predict-model-not-an-object",
    ),
    Case(
        "predict.py",
        [*PREDICT, "-text", "hi"],
        "model.json: no `sources` (a list expected)",
        model_json_without("sources"),
        id="predict-model-without-sources",
    ),
    Case(
        "predict.py",
        [*PREDICT, "-text", "hi"],
        "seed0.safetensors: not a safetensors checkpoint (Error while deserializing header: header too large)",
        damaged_run_file("checkpoints/seed0.safetensors", NOT_SAFETENSORS),
        id="predict-checkpoint-random-bytes",
    ),
    Case(
        "explain.py",
        [*PREDICT, "-text", "hi"],
        "results.json: `seeds` is an integer, expected a list",
        damaged_run_file("results.json", b'{"seeds": 3}'),
        id="explain-results-seeds-a-number",
    ),
    Case(
        "predict.py",
        [*PREDICT, "-text", "hi", "-output", "{run}/model.json"],
        "/model.json: is inside the run folder",
        id="predict-output-is-model-json",
    ),
    Case(
        "predict.py",
        [*PREDICT, "-text", "hi", "-output", "{run}/checkpoints/predictions.csv"],
        "/checkpoints/predictions.csv: is inside the run folder",
        id="predict-output-inside-run",
    ),
    Case(
        "explain.py",
        [*PREDICT, "-text", "hi", "-out", "{run}"],
        "is inside the run folder",
        id="explain-out-is-run-folder",
    ),
    Case(
        "predict.py",
        [*PREDICT, "-text", "hi", "-ensemble"],
        "has one seed (0); an ensemble needs a run with several seeds",
        id="predict-ensemble-of-one-seed",
    ),
    Case(
        "report.py",
        ["{run}"],
        "results.json: not a JSON object: it holds a string",
        damaged_run_file("results.json", b'"x"'),
        id="report-named-run-damaged",
    ),
    Case(
        "report.py",
        ["-html", "{run}"],
        "model.json: no `sources` (a list expected)",
        model_json_without("sources"),
        id="report-html-named-run-damaged",
    ),
    Case(
        "report.py",
        ["{run}"],
        "config.json: compat setting 'custom:abc': 'abc' is not one of llama_pooling, bert_source, norm set to a value",
        damaged_run_file(
            "config.json", json.dumps({"args": {"task": "toy"}, "train_config": {}, "recipe": "custom:abc"}).encode()
        ),
        id="report-recipe-name-edited",
    ),
    # Header problems.
    Case(
        "bert_rep_extract.py",
        [*EXTRACT, "-task", "twice"],
        "train.csv: header: column(s) 'text' appear more than once",
        duplicate_header("text"),
        id="duplicate-text-header",
    ),
    Case(
        "bert_rep_extract.py",
        [*EXTRACT, "-task", "twice"],
        "train.csv: header: column(s) 'label' appear more than once",
        duplicate_header("label"),
        id="duplicate-label-header",
    ),
    Case(
        "predict.py",
        [*PREDICT, "-text", "hi"],
        "-text and -input: give the texts one way",
        input_file(b"text\nglad\n"),
        id="predict-text-and-input",
    ),
    Case("predict.py", [*PREDICT, "-text", "hi", "-json", "-output", "f.csv"], "-json and -output: -output writes CSV"),
    Case(
        "predict.py",
        [*PREDICT, "-output", "texts.csv"],
        "is the -input file; name another file so the input is kept",
        input_in_project,
        id="predict-output-is-input",
    ),
    Case(
        "explain.py",
        [*PREDICT, "-text", "hi", "-out", "data/toy/train.csv"],
        "argument --out/-out: data/toy/train.csv: is a file",
    ),
    Case("bert_rep_extract.py", [*EXTRACT, "-max_memory", "0=1GiB"], "--max_memory 0=1GiB: applies with device_map only"),
    Case(
        "bert_rep_extract.py",
        [*EXTRACT, "-task", "sup"],
        "train.csv: row 1: label '²' is neither an id nor a name in label2idx.txt",
        superscript_label,
        id="label-superscript-digit",
    ),
    Case("baselines/tfidf.py", ["-dataset", "toy", "-C_grid", "1", "1"], "argument --C_grid/-C_grid: 1.0 is given twice"),
    # Picks read only a folder extracted for their own slot (its manifest says which).
    Case(
        "main.py",
        [*TRAIN, "--features", "llama:mean:-1,-2@bert-mean+first-all"],
        "--features llama:mean:-1,-2@bert-mean+first-all: dataset/toy/bert-mean+first-all holds features extracted for the "
        "bert slot, not llama",
    ),
    Case(
        "main.py",
        [*TRAIN, "--sources", "bert", "--features", "bert:mean:-1@llama-mean+last-all"],
        "dataset/toy/llama-mean+last-all holds features extracted for the llama slot, not bert",
    ),
    Case(
        "main.py",
        [*TRAIN, "--features", "llama:mean:-1@../other/llama-mean+last-all"],
        "argument --features/-features: @../other/llama-mean+last-all contains a path separator; @FOLDER is a folder of",
    ),
    Case("main.py", [*TRAIN, "--features", "llama:mean:-1@nowhere"], "dataset/toy/nowhere/train.json is missing or unreadable"),
    # Sources beyond the published three.
    Case(
        "main.py",
        [*TRAIN, "--sources", "llama", "bert", "roberta", "e5"],
        "--sources e5: not a published slot (llama, bert, roberta), so it is read through a pick: --features "
        "e5:POOLING:LAYERS (dataset/toy holds it as an encoder slot)",
    ),
    Case("main.py", [*TRAIN, "--sources", "llama", "qwen"], "dataset/toy holds no qwen features yet (extract them with --slot"),
    Case("main.py", [*TRAIN, "--sources", "llama", "E5"], "argument --sources/-sources: 'E5' is not a slot name: use a"),
    Case("bert_rep_extract.py", [*EXTRACT, "--slot", "mean"], "argument --slot/-slot: 'mean' is a pooling, not a slot name"),
    Case("bert_rep_extract.py", [*EXTRACT, "--slot", "roberta"], "--slot roberta: is a published slot; extract it with roberta"),
    Case("bert_rep_extract.py", ["-task", "toy", "-device", "cpu", "--slot", "e5"], "--slot e5: a slot of yours needs --model"),
    Case(
        "main.py",
        [*TRAIN, "--sources", "llama", "e5", "--features", "e5:mean:-1@llama-mean+last-all"],
        "dataset/toy/llama-mean+last-all holds features extracted for the llama slot, not e5 (llama is a decoder, e5 an "
        "encoder); pick an e5 folder",
    ),
    Case(
        "llama2_rep_extract.py",
        ["-task", "toy", "-device", "cpu", "-dtype", "float32", "-model", "{llama}", "--slot", "e5", "--layers", "all"],
        "--slot e5: dataset/toy/e5-mean-all holds it as an encoder slot, and this script extracts a decoder one",
    ),
    # Finished features are never replaced by an extraction with other settings without --overwrite.
    Case(
        "bert_rep_extract.py",
        [*EXTRACT, "-limit", "3"],
        "dataset/toy/bert/train.safetensors: already extracted with other settings (limit None -> 3); keep it and write "
        "elsewhere with --dataset_dir (or a variant: --pooling/--layers/--prompt), or replace it with --overwrite",
    ),
    Case("bert_rep_extract.py", [*EXTRACT, "-max_len", "64"], "already extracted with other settings (max_len 200 -> 64)"),
    Case(
        "llama2_rep_extract.py",
        ["-task", "toy", "-device", "cpu", "-dtype", "float32", "-model", "{llama}", "-layers", "3"],
        "dataset/toy/llama/train.safetensors: already extracted with other settings (layers 5 -> 3)",
    ),
    Case(
        "bert_rep_extract.py",
        ["-task", "toy", "-device", "cpu", "-dtype", "float32", "-model", "{roberta}"],
        "with other settings (model ",
    ),
    # What the configuration alone rules out is refused before the weights load.
    Case(
        "llama2_rep_extract.py",
        ["-task", "toy", "-device", "cpu", "-dtype", "float32", "-model", "{llama}", "-pooling", "pooler"],
        "--pooling pooler: llama models have no pooler (choose mean, first or last)",
    ),
    # A recipe file holds training options only; the seed options are checked after the merge.
    *(
        Case(
            "main.py",
            TRAIN,
            f"recipe.json: {key!r} says where or how a run goes, not what it trains; a recipe may set epochs",
            recipe_file({key: value}),
            id=f"recipe-sets-{key}",
        )
        for key, value in (("out", "/tmp/elsewhere"), ("dataset_dir", "x"), ("data_dir", "x"), ("device", "cpu"))
    ),
    Case(
        "main.py",
        TRAIN,
        "recipe.json: seeds and runs: give one of them",
        recipe_file({"seeds": [1], "runs": 2}),
        id="recipe-seeds-and-runs",
    ),  # fmt: skip
    # One --cv rule for every command that takes it.
    Case("probe.py", ["--task", "toy", "--cv", "100"], "--cv 100: give 0 (choose C on valid) or 2 to 90 folds"),
    Case("probe.py", ["--task", "toy", "--cv", "1"], "--cv 1: give 0 (choose C on valid) or 2 to 90 folds"),
    Case("main.py", [*TRAIN, "--cv", "100"], "--cv 100: give 0 (select on valid) or 2 to 90 folds"),
    Case("probe.py", ["--task", "toy", "--folders", "bert", "bert"], "argument --folders/-folders: bert is given twice"),
    # Task names: letters, digits, . _ - only (pages, cards, URLs, YAML, CSV).
    Case(
        "main.py",
        ["-dataset", "javascript:alert(1)", "-device", "cpu"],
        "argument --task/-task/--dataset/-dataset: 'javascript:alert(1)' is not a task name: "
        "use letters, digits, '.', '_' and '-' (e.g. ED, go_emotion)",
    ),
    Case("report.py", ["-task", "<b>x"], "argument --task/-task: '<b>x' is not a task name: use letters, digits"),
    Case("bert_rep_extract.py", [*EXTRACT, "-task", "a;b"], "argument --task/-task: 'a;b' is not a task name"),
    Case("finetune.py", ["-dataset", "x#y?z", "-model", "{bert}"], "--task/-task/--dataset/-dataset: 'x#y?z' is not a task name"),
    Case("baselines/tfidf.py", ["-dataset", "my task"], "argument --task/-task/--dataset/-dataset: 'my task' is not a task name"),
    Case("llama2_rep_extract.py", ["-task", "_hidden", "-model", "{llama}"], "--task/-task: '_hidden' is not a task name"),
    Case("prepare_data.py", ["--tasks", "ED", "a|b"], "argument --tasks: 'a|b' is not a task name"),
    Case("bench/extract_speed.py", ["--task", "émotion"], "argument --task: 'émotion' is not a task name"),
    Case("report.py", ["-task", "a\nb"], "argument --task/-task: 'a\\nb' is not a task name"),
    # The recipe search: its options checked before anything is extracted, searched or written.
    Case("tune.py", ["--task", "toy", "--preset", "offline"], "--preset: applies to the extractions of --extract; add --extract"),
    Case("tune.py", ["--task", "toy", "--dtype", "bfloat16"], "--dtype: applies to the extractions of --extract; add --extract"),
    Case(
        "tune.py",
        ["--task", "toy", "--compile"],
        "--compile: applies to the extractions of --extract; add --extract",
        id="tune.py--compile-without-extract",
    ),
    Case(
        "bench/extract_speed.py",
        ["--compile"],
        "--compile: applies to --batch_budget; add --batch_budget",
        id="extract_speed--compile-without-batch_budget",
    ),
    Case(
        "tune.py",
        ["--task", "toy", "--extract", "--model", "gpu=x"],
        "--model gpu=x: gpu is a slot of yours: name its kind, e.g. --slot_kind gpu=encoder",
    ),
    Case(
        "tune.py",
        ["--task", "toy", "--extract", "--model", "tfidf=x"],
        "--model tfidf=x: expected SLOT=MODEL with SLOT one of llama, bert, roberta or a slot of yours",
    ),
    Case(
        "tune.py",
        ["--task", "toy", "--extract", "--model", "e5=offline:e5-small"],
        "--model e5=offline:e5-small: unknown stand-in model 'offline:e5-small'; available: offline:all-minilm-l6-v2,",
    ),
    Case(
        "tune.py",
        ["--task", "toy", "--extract", "--model", "e5=x", "--slot_kind", "e5=gpu"],
        "--slot_kind e5=gpu: the kind is decoder or encoder",
    ),
    Case(
        "tune.py",
        ["--task", "toy", "--extract", "--model", "e5=x", "--slot_kind", "e6=encoder"],
        "--slot_kind e6=encoder: e6 is not a slot of --model; give its model there",
    ),
    Case(
        "tune.py",
        ["--task", "toy", "--extract", "--slot_kind", "bert=decoder"],
        "--slot_kind bert=decoder: expected SLOT=KIND with SLOT one of yours (llama, bert, roberta have their own)",
    ),
    Case(
        "tune.py",
        ["--task", "toy", "--slot_kind", "e5=encoder"],
        "--slot_kind: applies to the extractions of --extract; add --extract",
    ),
    Case(
        "tune.py",
        ["--task", "nothing"],
        "data/nothing: no data for task 'nothing'; bring it with `python prepare_data.py --from FILE --task nothing`",
    ),
    Case(
        "tune.py",
        ["--task", "fresh"],
        "dataset/fresh: no features for task 'fresh'; extract the search space with `python tune.py --task fresh --extract "
        "--preset offline` (or --model SLOT=MODEL), or run the extractors (`python llama2_rep_extract.py --task fresh",
        fresh_task,
        id="tune-task-without-features",
    ),
    # The search: every check the options decide before anything is extracted, probed or written.
    Case(
        "tune.py",
        ["--task", "toy", "--extract", "--model", "llama={llama}", "bert={bert}", "roberta=/no/such/model"],
        "/no/such/model: no such model directory",
        id="tune-extract-third-model-missing",
    ),
    Case("tune.py", ["--task", "toy", "--storage", "nonsense"], "--storage nonsense: not a database URL; e.g. sqlite:///"),
    Case("tune.py", ["--task", "toy", "--storage", "nosuch://x"], "--storage nosuch://x: unknown database kind 'nosuch'"),
    Case(
        "tune.py",
        ["--task", "toy", "--storage", "mysql://me:secret@localhost/studies"],  # test.sh installs PostgreSQL's driver
        "--storage mysql://me:***@localhost/studies: its driver MySQLdb is not installed; pip install it",
        id="tune-storage-driver-missing",
    ),
    Case(
        "tune.py",
        ["--task", "toy", "--storage", "sqlite:///no/folder/s.db"],
        "--storage sqlite:///no/folder/s.db: no/folder: no such folder",
    ),
    Case(
        "tune.py", ["--task", "toy", "--storage", "sqlite://"], "--storage sqlite://: an in-memory database ends with the search"
    ),
    Case(
        "tune.py",
        ["--task", "toy"],
        "notes.db: not a readable study database (file is not a database)",
        text_file_as_storage,
        id="tune-storage-not-a-database",
    ),
    Case("predict.py", [*PREDICT, "-text", "hi", "-output", "Logs/runs.csv"], "Logs/runs.csv: is the table of runs of"),
    Case("predict.py", [*PREDICT, "-text", "hi", "-output", "data/toy/test.csv"], "is inside the task data folder"),
    Case("predict.py", [*PREDICT, "-text", "hi", "-output", "dataset/toy/bert/train.json"], "is inside the feature store folder"),
    Case("predict.py", [*PREDICT, "-text", "hi", "-output", "{bert}/config.json"], "is inside the model folder"),
    Case(
        "tune.py",
        ["--task", "toy", "--extract", "--model", "llama={llama}", "bert={bert}"],
        "cut_roberta/model.safetensors: not a safetensors file",
        cut_weights(lambda folder: [f"roberta={folder}"]),
        id="tune-extract-third-model-cut",
    ),
    Case(
        "bert_rep_extract.py",
        ["-task", "toy", "-device", "cpu", "--slot", "e6"],
        "cut_roberta/model.safetensors: not a safetensors file",
        cut_weights(lambda folder: ["--model", str(folder)]),
        id="extract-weights-cut",
    ),
    Case(
        "tune.py",
        ["--task", "toy", "--extract", "--model", "llama={llama}", "bert={bert}", "roberta=models/nope"],
        "models/nope: not a local model folder, and not a model the hub gives",
        id="tune-extract-model-like-a-hub-id",
    ),
    Case(
        "tune.py",
        ["--task", "toy", "--storage", "sqlite:///data/toy/s.db"],
        "--storage sqlite:///data/toy/s.db: is inside the data folder of task toy data/toy; write outside it",
        id="tune-storage-inside-data",
    ),
    Case(
        "tune.py",
        ["--task", "toy", "--resume", "{run}"],
        "a run folder (no search.json); --resume takes a folder tune.py made, tune_TASK_STAMP/",
        id="tune-resume-a-run-folder",
    ),
    Case("tune.py", ["--task", "toy", "--resume", "Logs"], "Logs: not a search folder (no search.json)"),
    Case("tune.py", ["--task", "toy", "--resume", ""], "argument --resume/-resume: an empty path; name a file or folder"),
    Case(
        "tune.py",
        ["--task", "toy", "--resume", "data/toy/train.csv"],
        "argument --resume/-resume: data/toy/train.csv: is a file; name a folder",
    ),
    Case("tune.py", ["--task", "toy", "--storage", "sqlite:///Logs"], "--storage sqlite:///Logs: Logs: is a folder; name the"),
    Case("tune.py", ["--task", "toy", "--overwrite"], "--overwrite: applies to the extractions of --extract; add --extract"),
    Case(
        "tune.py",
        ["--task", "toy", "--extract", "--resume", "Logs"],
        "--extract and --resume: a search folder exists once its extraction is done",
    ),
    # One rule for every output option: never onto the command's inputs, checked before any work.
    Case(
        "tune.py",
        ["--task", "toy", "--save", "data/toy/train.csv"],
        "--save data/toy/train.csv: is inside the data folder of task toy data/toy; write outside it, so its files stay",
    ),
    Case("tune.py", ["--task", "toy", "--save", "dataset/toy/r.json"], "is inside the feature store of task toy dataset/toy"),
    Case(
        "tune.py",
        ["--task", "toy", "--save", "{run}/recipe.json"],
        "/recipe.json: is inside the run folder",
        id="tune-save-in-run",
    ),
    Case("tune.py", ["--task", "toy", "--save", "Logs/runs.csv/r.json"], "runs.csv is a file, so no folder can be made there"),
    Case("main.py", [*TRAIN, "--out", "data/toy"], "--out data/toy: is inside the data folder of task toy data/toy"),
    Case("main.py", [*TRAIN, "--out", "{run}"], "is inside the run folder", id="main-out-a-run-folder"),
    Case("probe.py", ["--task", "toy", "--out", "dataset/toy/probes"], "--out dataset/toy/probes: is inside the feature store"),
    Case("finetune.py", ["-dataset", "toy", "-model", "{bert}", "-out", "data/toy/x"], "is inside the data folder of task toy"),
    Case("baselines/tfidf.py", ["-dataset", "toy", "-out", "data/toy"], "--out data/toy: is inside the data folder of task toy"),
    Case(
        "tune.py", ["--task", "toy", "--budget_minutes", "0"], "argument --budget_minutes/-budget_minutes: must be a number > 0"
    ),
    Case("report.py", ["-task", "../x"], "argument --task/-task: '../x' is not a task name"),
    # Bringing your own data: the file, row and field named.
    Case(
        "prepare_data.py",
        ["--from", "raw/x.jsonl", "--task", "mine"],
        "raw/x.jsonl: row 2: field 'text': empty text",
        own_data({"x.jsonl": '{"text": "a", "label": "joy"}\n{"text": " ", "label": "joy"}\n'}),
        id="prepare_data-own-data-empty-text",
    ),
    Case(
        "prepare_data.py",
        ["--from", "raw/x.jsonl", "--valid", "raw/v.jsonl", "--task", "mine"],
        "raw/v.jsonl: row 1: field 'label': label 'fear' never appears in raw/x.jsonl (its labels: joy)",
        own_data(
            {
                "x.jsonl": '{"text": "a", "label": "joy"}\n{"text": "b", "label": "joy"}\n',
                "v.jsonl": '{"text": "c", "label": "fear"}\n',
            }
        ),
        id="prepare_data-own-data-label-not-in-train",
    ),
    Case(
        "prepare_data.py",
        ["--from", "raw/x.csv", "--task", "mine"],
        "raw/x.csv: row 3: field 'label': label 'fear' has one example; splitting stratified by label needs at least 2",
        own_data({"x.csv": "text,label\na,joy\nb,joy\nc,fear\n"}),
        id="prepare_data-own-data-one-example",
    ),
    Case(
        "prepare_data.py",
        ["--from", "raw/x.jsonl", "--task", "mine"],
        "raw/x.jsonl: row 2: field 'label' holds several labels (a list), but row 1 holds one label: mixed single- and multi",
        own_data({"x.jsonl": '{"text": "a", "label": "joy"}\n{"text": "b", "label": ["joy"]}\n'}),
        id="prepare_data-own-data-mixed",
    ),
    Case(
        "prepare_data.py",
        ["--from", "raw/x.csv", "--task", "mine"],
        "raw/x.csv: no column 'label' (columns: text, emotion); name it with --label_column",
        own_data({"x.csv": "text,emotion\na,joy\n"}),
        id="prepare_data-own-data-missing-column",
    ),
    Case(
        "prepare_data.py",
        ["--from", "raw/x.jsonl", "--task", "mine"],
        "raw/x.jsonl: row 2: not valid JSON",
        own_data({"x.jsonl": '{"text": "a", "label": "joy"}\n{"text": a}\n'}),
        id="prepare_data-own-data-unreadable",
    ),
    Case(
        "prepare_data.py",
        ["--from", "raw/x.xlsx", "--task", "mine"],
        "raw/x.xlsx: unknown format '.xlsx'",
        own_data({"x.xlsx": "?"}),
        id="prepare_data-own-data-unknown-format",
    ),
    Case(
        "prepare_data.py",
        ["--from", "raw/x.jsonl", "--task", "toy"],
        "data/toy: the task folder exists; --force replaces its data",
        own_data({"x.jsonl": '{"text": "a", "label": "joy"}\n{"text": "b", "label": "joy"}\n'}),
        id="prepare_data-own-data-existing-task",
    ),
    Case("prepare_data.py", ["--from", "no/such/folder"], "argument --from: no/such/folder: no such folder"),
    Case("prepare_data.py", ["--tasks", "ED", "ED"], "argument --tasks: ED is given twice"),
    Case("bench/extract_speed.py", ["--n", "0"], "argument --n: must be a positive integer, got 0"),
    Case("bench/extract_speed.py", ["--model", "gpu=x"], "--model gpu=x: expected SLOT=SPEC"),
    Case("bench/train_speed.py", ["--epochs", "-1"], "argument --epochs: must be a positive integer, got -1"),
    # Prediction: every file and option checked before a model loads.
    Case(
        "predict.py",
        [*PREDICT, "-text", "hi", "-model", "e5=elsewhere/e5"],
        "--model e5=elsewhere/e5: the run has no e5 slot (its slots: llama, bert, roberta)",
        id="predict-model-of-a-slot-the-run-lacks",
    ),
    Case(
        "predict.py",
        [*PREDICT, "-text", "hi", "-model", "roberta={bert}"],
        ": these weights differ from the roberta backbone the model was trained on",
        id="predict-model-other-weights-for-the-last-slot",
    ),
    Case(
        "predict.py",
        [*PREDICT, "-text", "hi", "-model", "bert=a", "-model", "bert=b"],
        "--model bert=b: the bert slot is given twice (bert=a); give each slot once",
        id="predict-model-slot-twice",
    ),
    Case(
        "predict.py",
        [*PREDICT, "-text", "hi", "-model", "bert"],
        "--model bert: expected SLOT=MODEL with SLOT one of llama, bert, roberta or a slot of yours",
        id="predict-model-without-equals",
    ),
    Case(
        "predict.py",
        [*PREDICT, "-text", "hi", "-model", "bert="],
        "--model bert=: expected SLOT=MODEL with SLOT one of llama, bert, roberta or a slot of yours",
        id="predict-model-empty-model",
    ),
    Case(
        "predict.py",
        [*PREDICT, "-text", "hi", "-model", "=elsewhere/bert"],
        "--model =elsewhere/bert: expected SLOT=MODEL with SLOT one of llama, bert, roberta or a slot of yours",
        id="predict-model-empty-slot",
    ),
    # Your own data, third round.
    Case(
        "prepare_data.py",
        ["--from", "raw/x.csv", "--valid", "raw/x.csv", "--task", "mine"],
        "--valid raw/x.csv: is the --from file; each split is a file of its own rows",
        own_data({"x.csv": "text,label\na,joy\nb,sad\nc,joy\nd,sad\n"}),
        id="prepare_data-valid-is-train",
    ),
    Case(
        "prepare_data.py",
        ["--from", "raw/x.csv", "--task", "toy", "--data_dir", "dataset", "--force"],
        "--data_dir dataset: dataset/toy is inside the feature store of a task",
        own_data({"x.csv": "text,label\na,joy\nb,sad\nc,joy\nd,sad\n"}),
        id="prepare_data-into-the-store",
    ),
    Case(
        "prepare_data.py",
        ["--from", "data/toy/train.csv", "--task", "toy", "--force"],
        "--from data/toy/train.csv: lies in data/toy, which --task toy writes; move it out first, so the data is kept",
        id="prepare_data-own-data-inside-its-task",
    ),
    Case(
        "prepare_data.py",
        ["--from", "data", "--force"],
        "--from data: is --data_dir itself; copy from another folder",
        id="prepare_data-from-is-data_dir",
    ),
    Case(
        "prepare_data.py",
        ["--from", "raw/x.csv", "--task", "mine"],
        "raw/x.csv: field 'label': every row has the label 'joy'; a task needs at least two labels",
        own_data({"x.csv": "text,label\na,joy\nb,joy\nc,joy\n"}),
        id="prepare_data-own-data-one-label",
    ),
    Case(
        "prepare_data.py",
        ["--from", "raw/x.csv", "--task", "mine", "--label_columns", "joy"],
        "raw/x.csv: field 'joy': the only label column; a task needs at least two labels",
        own_data({"x.csv": "text,joy,fear\na,1,0\nb,0,1\n"}),
        id="prepare_data-own-data-one-label-column",
    ),
    Case(
        "bert_rep_extract.py",
        [*EXTRACT, "-task", "one"],
        "data/one/label2idx.txt: the only label is 'joy'; a task needs at least two labels",
        lambda project, models: task_with(project, "one", {"train.csv": "text,label\nhi,0\n", "label2idx.txt": "joy 0\n"}) or [],
        id="extract-task-of-one-label",
    ),
    Case(
        "finetune.py",
        ["-dataset", "one", "-model", "{bert}", "-device", "cpu"],
        "data/one/train.csv: field 'label': every row has the label 'joy'; a task needs at least two labels",
        lambda project, models: (
            task_with(
                project,
                "one",
                {"train.csv": "text,label\nhi,0\nho,joy\n", "valid.csv": "text,label\nhm,1\n", "label2idx.txt": "joy 0\nsad 1\n"},
            )
            or []
        ),
        id="finetune-train-of-one-label",
    ),
    Case(
        "baselines/tfidf.py",
        ["-dataset", "one"],
        "data/one/train.csv: header: the only label column is 'joy'; a task needs at least two labels",
        lambda project, models: (
            task_with(project, "one", {"train.csv": "text,joy\nyay,1\nmeh,0\n", "valid.csv": "text,joy\nhm,1\n"}) or []
        ),
        id="tfidf-multilabel-task-of-one-column",
    ),
    Case(
        "main.py",
        [*TRAIN, "--sources", "bert", "q7", "--features", "q7:mean:-1@q7-mean-all"],
        "--features q7:mean:-1@q7-mean-all: dataset/toy holds no q7 features yet (extract them with --slot q7: python "
        "bert_rep_extract.py --task toy --slot q7 --model MODEL --layers all --pooling mean, or llama2_rep_extract.py for a "
        "decoder model)",
        id="train-pick-of-a-slot-not-extracted-with-folder",
    ),
    Case(
        "main.py",
        [*TRAIN, "--sources", "bert", "q7", "--features", "q7:first:-1"],
        "--features q7:first:-1: dataset/toy holds no q7 features yet (extract them with --slot q7: python bert_rep_extract.py "
        "--task toy --slot q7 --model MODEL --layers all --pooling first, or llama2_rep_extract.py for a decoder model)",
        id="train-pick-of-a-slot-not-extracted",
    ),
    Case(
        "main.py",
        [*TRAIN, "--features", "llama:first:-1"],
        "--features llama:first:-1: no llama variant in dataset/toy has them; name one with @FOLDER, or extract them: python "
        "llama2_rep_extract.py --task toy --model ",
        id="train-pick-of-a-pooling-not-extracted",
    ),
]


def case_id(case: Case) -> str:
    if case.id:
        return case.id
    option = next((a for a in reversed(case.argv) if a.startswith("-") and not a.lstrip("-").replace(".", "").isdigit()), "")
    value = case.argv[case.argv.index(option) + 1 :][:1] if option else []  # a switch has none
    return f"{case.script}{option}={value[0] if value else ''}"


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def template(tmp_path_factory, tiny_models) -> Path:
    """A project folder: the toy task in data/, extracted into dataset/, one finished run in Logs/."""
    project = tmp_path_factory.mktemp("template") / "project"
    write_task(project / "data")
    extract_all(project / "data", project / "dataset", tiny_models)
    for slot, poolings in (("llama", ["mean", "last"]), ("bert", ["mean", "first"])):  # variant folders to pick from
        argv = extract_argv(tiny_models[slot], project / "data", project / "dataset", "all", "--layers", "all", "--pooling",
                            *poolings)  # fmt: skip
        assert extract.main(slot, argv) == 0
    e5 = ["--slot", "e5", "--layers", "all", "--pooling", "mean"]  # a slot of the user's, an encoder
    assert extract.main("bert", extract_argv(tiny_models["bert"], project / "data", project / "dataset", "all", *e5)) == 0
    argv = [
        "-dataset",
        "toy",
        "-device",
        "cpu",
        "-dataset_dir",
        str(project / "dataset"),
        "-data_dir",
        str(project / "data"),
        "-out",
        str(project / "Logs"),
        "-epochs",
        "2",
    ]
    assert main_script.main(argv) == 0
    return project


@pytest.fixture
def project(template, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the template, as the current folder (scripts read data/, dataset/, Logs/)."""
    copy = tmp_path / "project"
    shutil.copytree(template, copy)
    monkeypatch.chdir(copy)
    return copy


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_a_bad_input_is_one_error_line_exit_2_with_nothing_loaded_or_written(case, project, tiny_models, model_loads, capsys):
    extra = case.setup(project, tiny_models) if case.setup else []
    names = {slot: str(tiny_models[slot]) for slot in ("bert", "llama", "roberta")} | {"run": str(finished_run(project))}
    argv = [a.format(**names) for a in case.argv] + extra
    before = snapshot(project)
    capsys.readouterr()

    code = SCRIPTS[case.script](argv)

    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and case.message in last, last
    assert model_loads == []
    assert snapshot(project) == before
    assert not Path("/tmp/x.html").exists() and not (project.parent / "elsewhere").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["main.py", "-dataset", "toy", "-batch_size", "-5"],
        ["bert_rep_extract.py", "-task", "../../elsewhere", "-mode", "train"],
        ["predict.py", "-run", "Logs", "-text", "hi", "-topk", "-2"],
    ],
)
def test_the_published_command_lines_exit_2_with_one_line_on_stderr(command, project):
    done = subprocess.run(
        [sys.executable, str(REPO / command[0]), *command[1:]], capture_output=True, text=True, cwd=project, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: argument "), done.stderr
    assert done.stdout == ""


def test_names_from_data_become_file_names_only_through_one_slug_and_paths_stay_inside_their_root(tmp_path):
    assert slug("../../../../tmp/x") == "tmp-x"
    assert slug("<img src=x onerror=alert(1)>") == "img-src-x-onerror-alert-1"
    assert slug("\x00\n") == "text"
    assert unique_slug("我很高兴") != unique_slug("我很难过") and unique_slug("Joy") != unique_slug("joy")
    assert inside(tmp_path, "ED", "llama", "train.safetensors") == tmp_path / "ED" / "llama" / "train.safetensors"
    for escape in (["..", "x"], ["/tmp/x"], ["ED/../../x"]):
        with pytest.raises(UsageError, match="outside"):
            inside(tmp_path, *escape)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "ED").symlink_to(tmp_path / "elsewhere")  # a task folder on another disk
    assert inside(tmp_path / "store", "ED", "llama") == tmp_path / "store" / "ED" / "llama"


@pytest.fixture
def mount_tmpfs(tmp_path):
    """mount_tmpfs(options) -> an empty tmpfs folder mounted with those options (a real read-only
    or full file system); skipped where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    mounted = []

    def mount(options: str) -> Path:
        folder = tmp_path / f"mnt{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_read_only_out_folder_is_one_error_line_and_no_run(project, mount_tmpfs, capsys):
    read_only = mount_tmpfs("ro,size=1m")
    assert main_script.main([*TRAIN, "-out", str(read_only)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"error: --out {read_only}: cannot create a run folder in it (Read-only file system)"
    assert "Traceback" not in err


def test_a_full_disk_under_out_is_one_error_line_naming_the_file(project, mount_tmpfs, capsys):
    full = mount_tmpfs("size=4k")
    (full / "filler").write_bytes(b"x" * 4096)  # the one page there is
    assert main_script.main([*TRAIN, "-out", str(full)]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: {full}/toy_") and last.endswith(": cannot write (No space left on device)"), last
    assert "Traceback" not in err


def test_an_output_beside_what_the_project_keeps_is_written_but_never_over_it(tmp_path, monkeypatch):
    """A folder holding a task's splits and a model's files (a researcher's working folder) takes
    new outputs; only its kept files, and the records of runs and searches, are refused."""
    from fec.runs.output_rule import output_problem

    for name in ("train.csv", "valid.csv", "config.json", "best.pt"):
        (tmp_path / name).write_text("kept")
    monkeypatch.chdir(tmp_path)
    for new in ("Logs", "preds.csv", "recipes/mine.json"):
        assert output_problem(Path(new), {}) is None, new
    assert output_problem(Path("train.csv"), {}).startswith(f"is inside the task data folder {tmp_path}")
    (tmp_path / "Logs" / "tune_x").mkdir(parents=True)
    (tmp_path / "Logs" / "tune_x" / "search.json").write_text("{}")
    assert output_problem(Path("Logs/tune_x/new.json"), {}).startswith("is inside the search folder")
