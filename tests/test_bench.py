"""The speed benchmarks in bench/, on tiny models and the toy task: they run, print their tables
and write JSON with the expected keys (timing values are never checked). Also: the project's
LLaMA-slot features equal the straightforward one-text-at-a-time float32 computation."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import LABELS, SPLIT_ROWS, TINY_HIDDEN, make_text, only_run

import main as main_script
from bench import extract_speed, predict_speed, train_speed, tune_speed
from fec.features.backbones import load_backbone
from fec.features.forward_pass import Batching, extract_features

REPO = Path(__file__).resolve().parents[1]
RECIPE_KEYS = {
    "slot",
    "recipe",
    "model",
    "dtype",
    "device",
    "texts",
    "seconds",
    "texts_per_s",
    "tokens",
    "padded_tokens",
    "batches",
    "feature_shape",
    "finite",
    "peak_mb",
    "peak_kind",
}


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The benches take --threads 1 here (fast on a busy machine); give other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_extract_speed_prints_the_table_and_writes_json(data_dir, tmp_path, capsys):
    out = tmp_path / "extract.json"
    argv = [
        "--tiny",
        "--n",
        "8",
        "--inprocess",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--check_n",
        "4",
        "--data_dir",
        str(data_dir),
        "--task",
        "toy",
        "--results",
        str(out),
    ]
    assert extract_speed.main(argv) == 0
    printed = capsys.readouterr().out
    assert "published texts/s" in printed and "ours texts/s" in printed and "ratio" in printed
    assert "tiny random models" in printed and "llama-slot check on 4 texts" in printed
    report = json.loads(out.read_text())
    assert report["mode"] == "extract" and report["n"] == 8 and report["task"] == "toy"
    assert [r["slot"] for r in report["results"]] == ["llama", "bert", "roberta"]
    for row in report["results"]:
        assert set(row) >= {"slot", "model", "published", "ours", "ratio"}
        for recipe in ("published", "ours"):
            assert set(row[recipe]) >= RECIPE_KEYS and row[recipe]["texts"] == 8 and row[recipe]["finite"]
        assert row["published"]["feature_shape"] == row["ours"]["feature_shape"]
    llama = report["results"][0]
    assert llama["published"]["padded_tokens"] == 8 * 200  # every text padded to 200, as published
    assert llama["published"]["batches"] == 4 and len(llama["ours"]["feature_shape"]) == 2
    assert set(report["check"]) >= {"max_abs_diff", "within_atol", "ok"} and report["check"]["within_atol"]


def test_worker_mode_prints_one_json_line_and_parent_argv_parses(tiny_models, data_dir, capsys):
    argv = [
        "--worker",
        "bert",
        "ours",
        "--model_path",
        str(tiny_models["bert"]),
        "--device",
        "cpu",
        "--n",
        "4",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--data_dir",
        str(data_dir),
        "--task",
        "toy",
    ]
    assert extract_speed.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) >= RECIPE_KEYS and result["feature_shape"] == [TINY_HIDDEN["bert"]]
    assert result["peak_kind"] == "process peak RSS (ru_maxrss)" and result["peak_mb"] > 0
    # what the parent passes to a worker is a valid command line of the same script
    args = extract_speed.build_parser().parse_args(["--n", "8", "--task", "toy", "--threads", "1"])
    child = extract_speed.worker_argv(args, "llama", "check", "/some/model")
    assert child[1:3] == ["-m", "bench.extract_speed"]
    parsed = extract_speed.build_parser().parse_args(child[3:])
    assert parsed.worker == ["llama", "check"] and parsed.n == 8 and parsed.threads == 1 and parsed.task == "toy"


def test_extract_speed_times_the_peers_beside_fec_with_ratios_and_gflops(data_dir, tmp_path, capsys):
    out = tmp_path / "peers.json"
    argv = ["--tiny", "--n", "8", "--inprocess", "--threads", "1", "--device", "cpu", "--check_n", "0", "--slots", "bert"]
    assert extract_speed.main([*argv, "--data_dir", str(data_dir), "--task", "toy", "--peers", "--results", str(out)]) == 0
    assert "same vector / st_encode" in capsys.readouterr().out
    report = json.loads(out.read_text())
    (bert,) = report["results"]
    recipes = {"published", "ours", "st_encode", "st_encode_same_dtype", "pipeline", "ours_vector", "ours_every_layer"}
    assert recipes <= set(bert) and all(bert[r]["texts"] == 8 and bert[r]["finite"] for r in recipes)
    assert bert["ours_vector"]["feature_shape"][-1] == bert["st_encode"]["feature_shape"][-1]  # the same vector's width
    assert set(bert["peer_ratios"]) == set(extract_speed.PEER_RATIOS) and set(bert["gflops"]) == recipes
    assert set(report["matmul_peak_gflops"]) == {"float32", "bfloat16"}


@pytest.mark.slow
def test_extract_speed_script_runs_each_recipe_in_a_subprocess(data_dir):
    proc = subprocess.run(
        [
            sys.executable,
            "bench/extract_speed.py",
            "--tiny",
            "--n",
            "8",
            "--slots",
            "bert",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--data_dir",
            str(data_dir),
            "--task",
            "toy",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "one subprocess per recipe" in proc.stdout and "tiny-bert" in proc.stdout


def test_llama7b_random_tiny_runs_on_cpu(data_dir, tiny_models, tmp_path, capsys):
    out = tmp_path / "scale.json"
    argv = [
        "--llama7b-random",
        "--tiny",
        "--n",
        "16",
        "--published_n",
        "4",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--data_dir",
        str(data_dir),
        "--task",
        "toy",
        "--tokenizer",
        str(tiny_models["llama"]),
        "--results",
        str(out),
    ]
    assert extract_speed.main(argv) == 0
    printed = capsys.readouterr().out
    assert "TINY config" in printed and "not meaningful" in printed and "fraction of peak" in printed
    report = json.loads(out.read_text())
    assert report["meaningful"] is False and report["model"]["tiny"] is True
    assert report["lengths"]["texts"] == sum(SPLIT_ROWS.values()) and report["n"] == 16
    assert set(report) >= {
        "texts_per_s",
        "tokens_per_s",
        "achieved_tflops",
        "matmul_peak_tflops",
        "fraction_of_peak",
        "peak_memory_mb",
        "projected_seconds_all",
        "published",
        "ratio",
    }
    assert report["finite_rows"] == 16
    assert set(report["published"]) >= {"texts_per_s", "seconds", "peak_memory_mb"} and report["published"]["n"] == 4
    assert report["model"]["non_embedding_params"] < report["model"]["params"]


def test_llama7b_random_without_tiny_needs_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the full-size mode would run")
    assert extract_speed.main(["--llama7b-random", "--device", "cpu"]) == 2
    assert "--tiny" in capsys.readouterr().err


def test_fast_extractor_equals_the_straightforward_masked_mean(tiny_models):
    """Length-sorted, padded, masked batches give the features of one text at a time, unpadded."""
    torch.set_num_threads(1)  # tiny ops: one thread is fastest, and immune to a busy machine
    rng = random.Random(3)
    texts = [make_text(rng, rng.choice(LABELS)) for _ in range(11)]
    texts += ["happy", "i was at home today with my friend and the dog " * 6]  # 1 word; long (truncated at 40)
    backbone = load_backbone(str(tiny_models["llama"]), torch.device("cpu"), torch.float32)
    fast, info = extract_features(backbone, texts, "llama", batching=Batching(max_len=40, batch_size=4))
    assert info["batches"] > 1 and info["padded_tokens"] > info["tokens"]  # padding really happened
    reference = extract_speed.straightforward_layer_means(backbone.model, backbone.tokenizer, texts, max_len=40)
    result = extract_speed.compare_features(fast, reference)
    assert fast.shape == (len(texts), 5, TINY_HIDDEN["llama"])
    assert result["max_abs_diff"] < 1e-4 and result["within_atol"] and result["ok"]


def test_compare_features_flags_a_difference():
    a = torch.zeros(2, 5, 3)
    b = a.clone()
    b[1, 2, 0] = 1e-3
    result = extract_speed.compare_features(b, a)
    assert result["max_abs_diff"] == pytest.approx(1e-3) and not result["within_atol"] and not result["ok"]


def test_train_speed_prints_both_loops_and_writes_json(tmp_path, capsys):
    out = tmp_path / "train.json"
    argv = ["--n", "40", "--epochs", "1", "--dims", "standin", "--threads", "1", "--device", "cpu", "--results", str(out)]
    assert train_speed.main(argv) == 0
    printed = capsys.readouterr().out
    assert "published (DataLoader, 2 workers" in printed and "ours (fec.classify.fusion_training.train_seed" in printed
    assert "ratio (published s/epoch / ours s/epoch)" in printed
    report = json.loads(out.read_text())
    assert report["n"] == {"train": 40, "valid": 10, "test": 10}
    assert report["shapes"] == {"llama": [5, 576], "bert": [384], "roberta": [768]}
    for loop in ("published", "ours"):
        assert set(report[loop]) >= {"epoch_seconds", "total_seconds", "seconds_per_epoch"}
        assert len(report[loop]["epoch_seconds"]) == 1
    assert report["ratio"] > 0


def test_train_speed_times_the_thread_policy_idle_and_beside_a_busy_core(tmp_path, capsys):
    out = tmp_path / "train.json"
    argv = ["--n", "40", "--epochs", "1", "--dims", "standin", "--device", "cpu", "--threads_effect", "--results", str(out)]
    assert train_speed.main(argv) == 0
    assert "| one busy core | fec.core.threads |" in capsys.readouterr().out
    rows = json.loads(out.read_text())["threads_effect"]
    assert [(r["busy_cores"], r["threads_by"]) for r in rows] == [
        (0, "torch default"),
        (0, "fec.core.threads"),
        (1, "torch default"),
        (1, "fec.core.threads"),
    ]
    assert all(r["slowdown_beside_busy"] > 0 for r in rows) and rows[3]["threads"] == 1  # a stand-in head: one thread


def test_train_speed_synthetic_features_have_the_published_shapes_and_dtypes():
    data = train_speed.synthetic_data(8, "published", 32, seed=0)
    (llama, bert, roberta), labels = data["train"]
    assert llama.shape == (8, 5, 4096) and llama.dtype == torch.float16
    assert bert.shape == roberta.shape == (8, 1024) and bert.dtype == torch.float32
    assert data["valid"][1].shape == data["test"][1].shape == (2,) and int(labels.max()) < 32


def test_all_layers_bench_times_every_variant_against_last5_and_the_matmul_peak(data_dir, tmp_path, capsys):
    out = tmp_path / "layers.json"
    argv = ["--all_layers", "--tiny", "--n", "16", "--repeats", "1", "--peak_size", "64", "--threads", "1",
            "--data_dir", str(data_dir), "--task", "toy", "--results", str(out)]  # fmt: skip
    assert extract_speed.main(argv) == 0
    printed = capsys.readouterr().out
    for name in ("| last5 |", "| all_mean |", "| all_mean_last |", "matmul peak here: bfloat16"):
        assert name in printed
    report = json.loads(out.read_text())
    assert report["variants"]["last5"]["speed_vs_last5"] == 1.0
    assert all(v["gflops"] > 0 and v["texts_per_s"] > 0 for v in report["variants"].values())
    assert report["real_tokens"] > 16 and set(report["matmul_peak_gflops"]) == {"bfloat16", "float32"}


def test_batch_budget_bench_times_each_batching_and_splits_the_time_by_operator(data_dir, tmp_path, capsys):
    out = tmp_path / "budget.json"
    argv = ["--batch_budget", "--tiny", "--slots", "llama", "bert", "--budgets", "64x16384", "4x64", "--n", "24",
            "--repeats", "1", "--peak_size", "64", "--threads", "1", "--dtype", "float32", "--threads_effect",
            "--data_dir", str(data_dir), "--task", "toy", "--results", str(out)]  # fmt: skip
    assert extract_speed.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| llama | 4x64 |" in printed and "| bert | 64x16384 |" in printed and "Where the time goes" in printed
    report = json.loads(out.read_text())
    for slot in report["slots"]:
        budgets = slot["budgets"]
        assert budgets["64x16384"]["speed_vs_first"] == 1.0 and budgets["4x64"]["batches"] >= 6  # 24 texts, at most 4 a batch
        assert budgets["4x64"]["padded_over_real"] >= 1.0 and all(b["gflops"] > 0 for b in budgets.values())
        split = slot["time_split"]["seconds"]
        assert split["matmul"] > 0 and split["other"] > 0
    assert [s["time_split"]["seconds"]["attention"] > 0 for s in report["slots"]] == [True, True]  # both run SDPA
    effect = report["slots"][0]["threads_effect"]
    assert [(t["busy_cores"], t["threads_by"]) for t in effect] == [
        (0, "torch default"), (0, "fec.core.threads"), (1, "torch default"), (1, "fec.core.threads")]  # fmt: skip
    assert effect[-1]["threads"] == 1  # a tiny model's batch is not worth a second thread
    assert "Threads at the CPU default" in printed
    assert extract_speed.main(["--batch_budget", "--budgets", "64by2048"]) == 2


def test_predict_speed_times_cold_start_warm_latency_and_throughput_of_a_run(toy_store, tmp_path, capsys):
    data, dataset = toy_store
    out = tmp_path / "Logs"
    argv = ["-dataset", "toy", "-device", "cpu", "-dataset_dir", str(dataset), "-out", str(out), "-epochs", "2", "-seeds", "0"]
    assert main_script.main([*argv, "-data_dir", str(data)]) == 0
    run = only_run(out)
    results = tmp_path / "predict.json"
    argv = ["--runs", str(run), "--data_dir", str(data), "--n", "40", "--repeats", "5", "--threads", "1"]
    assert predict_speed.main([*argv, "--results", str(results)]) == 0
    assert "| run | sources | threads | load s | cold start s | warm p50 ms |" in capsys.readouterr().out
    (row,) = json.loads(results.read_text())["rows"]
    assert row["sources"] == ["llama", "bert", "roberta"] and row["texts"] == 40 and row["threads"] == 1
    assert 0 < row["load_s"] <= row["cold_start_s"] and row["warm_p50_ms"] <= row["warm_p95_ms"]


def test_tune_speed_times_the_search_before_and_now_and_reads_a_curve(toy_search_store, tmp_path, capsys):
    out = tmp_path / "tune.json"
    argv = ["--rows", "64", "--classes", "3", "--candidates", "2", "--epochs", "1", "--workers", "2", "--results", str(out)]
    assert tune_speed.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| valid | ratio now/before |" in printed and "| cv5 | now | 2 x 1 |" in printed
    results = json.loads(out.read_text())["results"]
    for selection, models in (("valid", 1), ("cv5", 6)):
        assert results[selection]["before"]["models_per_seed"] == models  # under CV, before trained the refit too
        assert results[selection]["ratio"] > 0
    root, _ = toy_search_store
    searches = sorted((root / "Logs").glob("tune_toy_*"))
    assert tune_speed.main(["--curve", str(searches[0])]) == 0
    assert "5 min:" in capsys.readouterr().out
    assert tune_speed.main(["--where", "--rows", "64", "--classes", "3", "--epochs", "1"]) == 0
    assert "| backward (every matrix product's gradients) |" in capsys.readouterr().out
