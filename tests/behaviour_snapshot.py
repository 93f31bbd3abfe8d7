"""The root commands on tiny models, as a fingerprint of what they write: run before and after a
restructuring, the two fingerprints must match (a restructuring changes no behaviour).

    python tests/behaviour_snapshot.py /tmp/before.json            # run the commands, write the fingerprint
    python tests/behaviour_snapshot.py /tmp/after.json --compare /tmp/before.json

A fresh project in a fixed folder (so paths recorded in files are the same in both runs) gets the
toy task through prepare_data.py, its three slots and a variant extraction, main.py (plain, with
picks, with a recipe file, cross-validated), finetune.py, baselines/tfidf.py --store, probe.py,
tune.py (two candidates), predict.py and report.py. Every file written is fingerprinted: stores,
checkpoints, predictions and CSVs by their bytes; JSON records with their timing, date and version
fields left out (they differ between any two runs). Run folders are named by their order, not their
time stamp.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

from helpers import save_tiny_bert, save_tiny_llama, save_tiny_roberta, write_task  # noqa: E402

PROJECT = Path("/tmp/fec-behaviour-snapshot")
# Fields that differ between any two runs of the same code: clocks, dates, versions, hosts, threads.
VOLATILE = re.compile(
    r"seconds|time|date|stamp|started|finished|elapsed|version|commit|host|python|torch|threads|cpu|_s$|rate|per_s|wall|worker|duration|created|git_sha|argv"
)
STAMP = re.compile(r"\d{8}-\d{6}(-\d+)?")


def commands(models: dict[str, Path]) -> list[list[str]]:
    cpu = ["--device", "cpu"]
    extract = ["--task", "toy", "--mode", "all", "--dtype", "float32", *cpu]
    recipe = PROJECT / "recipe.json"
    recipe.write_text(json.dumps({"sources": ["llama", "roberta"], "epochs": 4, "lr": 0.002, "runs": 2}))
    return [
        ["prepare_data.py", "--from", str(PROJECT / "incoming"), "--tasks", "toy"],
        ["llama2_rep_extract.py", *extract, "--model", str(models["llama"])],
        ["bert_rep_extract.py", *extract, "--model", str(models["bert"])],
        ["roberta_rep_extract.py", *extract, "--model", str(models["roberta"])],
        ["llama2_rep_extract.py", *extract, "--model", str(models["llama"]), "--compat", "reference", "--max_len", "24"],
        ["bert_rep_extract.py", *extract, "--model", str(models["bert"]), "--layers", "all", "--pooling", "mean", "first"],
        ["main.py", "-dataset", "toy", "-device", "cpu", "--runs", "2", "--epochs", "6"],
        ["main.py", "--task", "toy", *cpu, "--features", "bert:mean:-1,-2", "--epochs", "4", "--cv", "3"],
        ["main.py", "--task", "toy", *cpu, "--recipe", str(recipe)],
        ["main.py", "--task", "toy", *cpu, "--compat", "reference", "--epochs", "3"],
        ["finetune.py", "--task", "toy", *cpu, "--model", str(models["bert"]), "--epochs", "2"],
        ["baselines/tfidf.py", "--task", "toy", "--store"],
        ["probe.py", "--task", "toy", *cpu],
        ["tune.py", "--task", "toy", *cpu, "--trials", "2", "--max_seeds", "1", "--final_seeds", "1", "--epochs", "3"],
        ["report.py", "--task", "toy"],
    ]


def run(out: Path) -> dict[str, str]:
    shutil.rmtree(PROJECT, ignore_errors=True)
    PROJECT.mkdir(parents=True)
    models = {
        "llama": save_tiny_llama(PROJECT / "models" / "llama"),
        "bert": save_tiny_bert(PROJECT / "models" / "bert"),
        "roberta": save_tiny_roberta(PROJECT / "models" / "roberta"),
    }
    write_task(PROJECT / "incoming")
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    log = []
    for argv in commands(models):
        done = subprocess.run(
            [sys.executable, str(ROOT / argv[0]), *argv[1:]], cwd=PROJECT, env=env, capture_output=True, text=True
        )
        log.append({"command": argv, "exit": done.returncode})
        if done.returncode:
            sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        print(f"ok  {' '.join(argv[:3])} ...", flush=True)
    first_run = sorted((PROJECT / "Logs").glob("toy_2*"))[0]  # main.py's first run folder
    for argv in (["predict.py", "--run", str(first_run), "--input", "incoming/toy/test.csv", "--output", "predicted.csv"],
                 ["predict.py", "--run", str(first_run), "--text", "i am so happy today", "--json"]):  # fmt: skip
        done = subprocess.run(
            [sys.executable, str(ROOT / argv[0]), *argv[1:], "--device", "cpu"],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        (PROJECT / f"predict-{len(log)}.out").write_text(done.stdout)
        log.append({"command": argv, "exit": done.returncode})
    fingerprint = fingerprint_files()
    fingerprint["commands"] = log
    out.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
    return fingerprint


def script(argv: list[str], env: dict) -> str:
    """Run a root script in the project; its standard output, or exit naming the failure."""
    done = subprocess.run([sys.executable, str(ROOT / argv[0]), *argv[1:]], cwd=PROJECT, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def stable(value):
    """A JSON value with its volatile fields left out and time stamps masked."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if not VOLATILE.search(k)}
    if isinstance(value, list):
        return [stable(v) for v in value]
    if isinstance(value, str):
        return STAMP.sub("STAMP", value)
    return value


def fingerprint_files() -> dict:
    """Every file the commands wrote, by its path with time stamps numbered in order: a JSON
    record's stable fields, or a file's sha256 (pages, logs and pictures carry dates and timings,
    so only their presence counts: their inputs are fingerprinted)."""
    files = sorted(p for p in PROJECT.rglob("*") if p.is_file() and p.relative_to(PROJECT).parts[0] != "models")
    stamps = sorted({m.group(0) for p in files for m in STAMP.finditer(str(p))})
    numbered = {stamp: f"STAMP{i}" for i, stamp in enumerate(stamps)}
    found = {}
    for path in files:
        name = STAMP.sub(lambda m: numbered[m.group(0)], str(path.relative_to(PROJECT)))
        if path.suffix == ".json":
            found[name] = stable(json.loads(path.read_text()))
        elif path.suffix == ".csv" and path.name != "runs.csv":
            found[name] = stable(list(csv.DictReader(path.open(encoding="utf-8"))))
        elif path.suffix in (".html", ".md", ".log", ".png", ".svg", ".db", ".lock") or path.name == "runs.csv":
            found[name] = "present"
        else:
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def differences(before, after, where: str = "") -> list[str]:
    """Where two fingerprints' values differ, down to the JSON field."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(before.keys() | after.keys()):
            if key not in before or key not in after:
                found.append(f"{where}/{key}: {'absent' if key not in before else 'present'} before, "
                             f"{'absent' if key not in after else 'present'} after")  # fmt: skip
            else:
                found += differences(before[key], after[key], f"{where}/{key}")
        return found
    return [] if before == after else [f"{where}: {str(before)[:100]} -> {str(after)[:100]}"]


def compare(after: dict, before: dict) -> int:
    # stable() again: a fingerprint written before a field was known to be volatile compares without it
    found = differences(
        stable({k: v for k, v in before.items() if k != "commands"}), stable({k: v for k, v in after.items() if k != "commands"})
    )
    print("\n".join(found))
    files = [len(set(fingerprint) - {"commands"}) for fingerprint in (before, after)]
    print(f"{files[0]} files before, {files[1]} after; {len(found)} differences")
    return 1 if found else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="where to write the fingerprint (JSON)")
    parser.add_argument("--compare", type=Path, default=None, help="an earlier fingerprint to compare with")
    parser.add_argument("--again", action="store_true", help="fingerprint the project the last run left, running nothing")
    args = parser.parse_args()
    if args.again:
        after = fingerprint_files()
        args.out.write_text(json.dumps(after, indent=1, sort_keys=True))
    else:
        after = run(args.out)
    return compare(after, json.loads(args.compare.read_text())) if args.compare else 0


if __name__ == "__main__":
    sys.exit(main())
