"""Scale-out and fault tolerance of extraction, on tiny real models: chunked resumable writes,
kill -9 and resume, corrupt and partial chunks, disk full, two processes under `accelerate
launch`, `-device_map auto`, quantised loading without bitsandbytes, memory-mapped reads."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import extract_argv

from fec.cli.extract import main
from fec.core.errors import StoreError
from fec.features import backbones, chunks, store
from fec.features.chunks import chunk_file, parts_dir, plan_chunks, prepare_parts, record_file, verify_chunk, write_chunk
from fec.features.locks import lock_path
from fec.features.store import feature_path, load_features, manifest_path, save_features, save_features_streamed

REPO = Path(__file__).resolve().parents[2]

# Run an extractor in a fresh interpreter with every chunk slowed down, so it can be killed mid-split.
SLOW_RUNNER = """
import sys, time
from fec.features import extract
real = extract.extract_features
def slow(*args, **kwargs):
    time.sleep(float(sys.argv[1]))
    return real(*args, **kwargs)
extract.extract_features = slow  # the name fec.features.extract calls
from fec.cli.extract import main
sys.exit(main(sys.argv[2], sys.argv[3:]))
"""


# Two processes on this machine's CPU under `accelerate launch` (gloo).
LAUNCH_TWO = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip


def subprocess_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def assert_same_store(a: Path, b: Path) -> None:
    one, other = load_features(a), load_features(b)
    torch.testing.assert_close(one.features, other.features, atol=1e-6, rtol=0)
    assert torch.equal(one.labels, other.labels)
    assert one.manifest["settings"] == other.manifest["settings"]


def test_streamed_merge_writes_the_bytes_save_features_writes_and_mmap_reads_them_back(tmp_path):
    feats, labels = torch.randn(7, 3, 5), torch.arange(7)
    whole, pieces = tmp_path / "a" / "train.safetensors", tmp_path / "b" / "train.safetensors"
    save_features(whole, feats, labels, {"run": 1})
    save_features_streamed(
        pieces, [7, 3, 5], torch.float32, [feats[:3], feats[3:6], store.tensor_bytes(feats[6:])], labels, {"run": 1}
    )
    assert whole.read_bytes() == pieces.read_bytes()
    assert (
        json.loads(manifest_path(pieces).read_text())["features_sha256"]
        == json.loads(manifest_path(whole).read_text())["features_sha256"]
    )
    mapped = load_features(pieces, mmap=True)
    assert torch.equal(mapped.features, feats) and torch.equal(mapped.labels, labels)
    assert str(pieces) in Path("/proc/self/maps").read_text()  # read through a memory map, not into RAM
    mapped.features.add_(1)  # a private mapping: the file never changes
    assert load_features(pieces).features.equal(feats)
    with pytest.raises(StoreError, match="expected"):
        save_features_streamed(tmp_path / "c.safetensors", [7, 3, 5], torch.float32, [feats[:3]], labels, {})
    assert not (tmp_path / "c.safetensors").exists()


def test_prepare_parts_keeps_finished_chunks_and_drops_stale_corrupt_or_partial_ones(tmp_path):
    parts = tmp_path / "train.parts"
    plan = plan_chunks(10, 4)
    assert [(c.start, c.stop) for c in plan] == [(0, 4), (4, 8), (8, 10)]
    for chunk in plan:
        write_chunk(parts, chunk, torch.full((chunk.rows, 3), float(chunk.index)), "key-a", {"seconds": 0})
    assert all(verify_chunk(parts, c, "key-a")[0] is not None for c in plan)
    (parts / ".rows-0000000000-0000000004.safetensors.abc.tmp").write_bytes(b"half")  # a write cut off by kill -9
    record_file(parts, plan[1]).unlink()  # killed between the file and its record
    data = bytearray(chunk_file(parts, plan[2]).read_bytes())
    data[-1] ^= 0xFF
    chunk_file(parts, plan[2]).write_bytes(bytes(data))
    done, todo = prepare_parts(parts, plan, "key-a", resume=True)
    assert done == plan[:1] and todo == plan[1:]
    assert sorted(p.name for p in parts.iterdir()) == [
        "rows-0000000000-0000000004.json",
        "rows-0000000000-0000000004.safetensors",
    ]
    assert prepare_parts(parts, plan, "key-b", resume=True) == ([], plan)  # other settings: redone
    write_chunk(parts, plan[0], torch.zeros(4, 3), "key-b", {})
    assert prepare_parts(parts, plan, "key-b", resume=False) == ([], plan) and not parts.exists()


def test_kill_9_mid_split_then_rerun_skips_finished_chunks_and_equals_an_uninterrupted_run(
    data_dir, tmp_path, tiny_models, capsys
):
    model, ds = tiny_models["llama"], tmp_path / "ds"
    args = extract_argv(model, data_dir, ds, "train", "-chunk_rows", "10")  # 90 rows: 9 chunks
    runner = tmp_path / "slow_runner.py"
    runner.write_text(SLOW_RUNNER)
    parts = parts_dir(feature_path(ds, "toy", "llama", "train"))
    proc = subprocess.Popen(
        [sys.executable, str(runner), "0.5", "llama", *args],
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while len(list(parts.glob("rows-*.json"))) < 3:
            assert proc.poll() is None, "the extraction ended before it could be killed"
            assert time.monotonic() < deadline, "no chunks appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    finished = len(list(parts.glob("rows-*.json")))
    assert 3 <= finished < 9 and not feature_path(ds, "toy", "llama", "train").exists()
    (parts / ".rows-0000000080-0000000090.safetensors.x1.tmp").write_bytes(b"cut off")

    capsys.readouterr()
    assert main("llama", args) == 0
    err = capsys.readouterr().err
    assert f"resuming: {finished} of 9 chunks already finished and verified, skipped" in err
    assert err.count("written (") == 9 - finished and "temp file of an interrupted write" in err
    assert not parts.exists()
    resumed = load_features(feature_path(ds, "toy", "llama", "train"))
    assert resumed.manifest["extraction"]["chunks"] == 9 and resumed.manifest["extraction"]["chunks_resumed"] == finished

    assert main("llama", extract_argv(model, data_dir, tmp_path / "ref", "train", "-chunk_rows", "10")) == 0
    assert_same_store(feature_path(ds, "toy", "llama", "train"), feature_path(tmp_path / "ref", "toy", "llama", "train"))


def test_disk_full_keeps_earlier_chunks_names_the_file_and_a_rerun_redoes_corrupt_and_partial_chunks(
    data_dir, tmp_path, tiny_models, monkeypatch, capsys
):
    model, ds = tiny_models["bert"], tmp_path / "ds"
    args = extract_argv(model, data_dir, ds, "valid", "-chunk_rows", "8")  # 30 rows: 4 chunks
    path = feature_path(ds, "toy", "bert", "valid")
    parts = parts_dir(path)
    real_save, calls = chunks.write_safetensors, []

    def disk_fills_up(filename, tensors, metadata=None):
        calls.append(filename)
        if len(calls) == 4:
            Path(filename).write_bytes(b"half a chunk")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(filename, tensors, metadata)

    monkeypatch.setattr(chunks, "write_safetensors", disk_fills_up)
    capsys.readouterr()
    assert main("bert", args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    target = chunk_file(parts, plan_chunks(30, 8)[3])
    assert last == f"error: {target}: cannot write (No space left on device); finished chunks are kept, rerun to resume"
    plan = plan_chunks(30, 8)
    key = json.loads(record_file(parts, plan[0]).read_text())["settings_sha256"]
    assert all(verify_chunk(parts, c, key)[0] is not None for c in plan[:3])
    assert sorted(p.name for p in parts.iterdir()) == sorted(f"{c.name}{s}" for c in plan[:3] for s in (".json", ".safetensors"))
    assert not path.exists()

    monkeypatch.setattr(chunks, "write_safetensors", real_save)
    data = bytearray(chunk_file(parts, plan[0]).read_bytes())
    data[-1] ^= 0x01  # one flipped bit in the features
    chunk_file(parts, plan[0]).write_bytes(bytes(data))
    record_file(parts, plan[1]).unlink()  # a chunk whose record never made it to disk
    assert main("bert", args) == 0
    err = capsys.readouterr().err
    assert "chunk rows 0-7 is checksum mismatch (corrupt); redoing it" in err
    assert "chunk rows 8-15 is partial (no record); redoing it" in err
    assert "resuming: 1 of 4 chunks already finished and verified, skipped (rows 16-23)" in err
    assert err.count("written (") == 3
    assert main("bert", extract_argv(model, data_dir, tmp_path / "ref", "valid", "-chunk_rows", "8")) == 0
    ref = load_features(feature_path(tmp_path / "ref", "toy", "bert", "valid"))
    assert torch.equal(load_features(path).features, ref.features)


def test_two_processes_under_accelerate_launch_write_the_store_one_process_writes(data_dir, tmp_path, tiny_models):
    model = tiny_models["bert"]
    cmd = [
        *LAUNCH_TWO,
        str(REPO / "bert_rep_extract.py"),
        *extract_argv(model, data_dir, tmp_path / "two", "all", "-chunk_rows", "16"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=subprocess_env(), timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 1/2:" in done.stderr
    assert main("bert", extract_argv(model, data_dir, tmp_path / "one", "all", "-chunk_rows", "16")) == 0
    for mode in ("train", "valid", "test"):
        two = feature_path(tmp_path / "two", "toy", "bert", mode)
        assert_same_store(two, feature_path(tmp_path / "one", "toy", "bert", mode))
        manifest = load_features(two).manifest
        assert manifest["extraction"]["processes"] == 2 and not parts_dir(two).exists()


# Rank 0 reaches the end seconds after rank 1 (it alone merges, and its merge is slowed down).
LATE_RANK_0_RUNNER = """
import os, sys, time
from fec.features import chunks
from fec.features import extract
real = chunks.merge_chunks
def late(*args, **kwargs):
    time.sleep(3)
    return real(*args, **kwargs)
extract.merge_chunks = late
from fec.cli.extract import main
sys.exit(main(sys.argv[1], sys.argv[2:]))
"""


def test_processes_that_reach_the_end_seconds_apart_both_exit_cleanly(data_dir, tmp_path, tiny_models):
    runner = tmp_path / "late_rank_0.py"
    runner.write_text(LATE_RANK_0_RUNNER)
    cmd = [
        *LAUNCH_TWO,
        str(runner),
        "bert",
        *extract_argv(tiny_models["bert"], data_dir, tmp_path / "ds", "valid", "-chunk_rows", "1000"),
    ]  # one chunk: rank 1 has none
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=subprocess_env(), timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "terminate called" not in done.stderr and "not every process reached the end" not in done.stderr
    assert load_features(feature_path(tmp_path / "ds", "toy", "bert", "valid")).manifest["extraction"]["processes"] == 2


def test_close_distributed_leaves_no_process_group_behind(tmp_path):
    import torch.distributed as dist

    from fec.features.distributed import close_distributed

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    box = [{"plan": [1, 2]}]
    dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
    close_distributed()
    assert not dist.is_initialized()
    close_distributed()  # alone, or a second time: nothing to do


def test_device_map_auto_gives_the_same_features_and_is_recorded(data_dir, tmp_path, tiny_models):
    model = tiny_models["llama"]
    assert main("llama", extract_argv(model, data_dir, tmp_path / "mapped", "valid", "-device_map", "auto")) == 0
    assert main("llama", extract_argv(model, data_dir, tmp_path / "plain", "valid")) == 0
    mapped = feature_path(tmp_path / "mapped", "toy", "llama", "valid")
    assert_same_store(mapped, feature_path(tmp_path / "plain", "toy", "llama", "valid"))
    manifest = load_features(mapped).manifest
    assert manifest["device_map"] == "auto" and manifest["device_placement"] and manifest["load_in"] is None


def test_quantised_loading_without_bitsandbytes_is_a_one_line_error(data_dir, tmp_path, tiny_models, monkeypatch, capsys):
    monkeypatch.setattr(backbones, "bitsandbytes_installed", lambda: False)
    assert main("llama", extract_argv(tiny_models["llama"], data_dir, tmp_path / "ds", "valid", "-load_in", "8bit")) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --load_in 8bit: needs the bitsandbytes package, which is not installed: pip install bitsandbytes"
    )
    assert backbones.parse_max_memory("0=20GiB, cpu=64GiB") == {0: "20GiB", "cpu": "64GiB"}


def test_a_second_extraction_of_a_split_being_extracted_stops_naming_the_holder(data_dir, tmp_path, tiny_models, capsys):
    model, ds = tiny_models["bert"], tmp_path / "ds"
    args = extract_argv(model, data_dir, ds, "train", "-chunk_rows", "10")  # 90 rows: 9 chunks
    runner = tmp_path / "slow_runner.py"
    runner.write_text(SLOW_RUNNER)
    path = feature_path(ds, "toy", "bert", "train")
    first = subprocess.Popen(
        [sys.executable, str(runner), "0.5", "bert", *args],
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not list(parts_dir(path).glob("rows-*.json")):
            assert first.poll() is None and time.monotonic() < deadline, "the first extraction never started a chunk"
            time.sleep(0.05)
        capsys.readouterr()
        assert main("bert", args) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith(
            f"error: {lock_path(path)}: train is being extracted by process {first.pid} on {socket.gethostname()}"
        )
        assert last.endswith("wait for it to finish (or pass -wait), or delete the lock file if that process is gone")
        assert main("bert", [*args, "-wait"]) == 0  # waits, then finds the split finished by the first
        assert "extracted by another process meanwhile, skipped" in capsys.readouterr().err
        assert first.wait(timeout=120) == 0, first.stderr.read()[-2000:]
    finally:
        first.kill()
        first.wait()
    assert load_features(path).manifest["extraction"]["chunks"] == 9
    assert not parts_dir(path).exists() and not lock_path(path).exists()


def test_a_lock_left_by_a_process_that_died_is_taken_over(data_dir, tmp_path, tiny_models, capsys):
    ds = tmp_path / "ds"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = lock_path(feature_path(ds, "toy", "bert", "valid"))
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "2026-01-01T00:00:00"}))
    assert main("bert", extract_argv(tiny_models["bert"], data_dir, ds, "valid")) == 0
    holder = f"process {dead.pid} on {socket.gethostname()} since 2026-01-01T00:00:00"
    assert f"left by {holder}, which no longer runs; taking it over" in capsys.readouterr().err
    assert not lock.exists() and feature_path(ds, "toy", "bert", "valid").is_file()
    # A lock its writer never filled in (killed between create and write) is stale after a minute.
    test_lock = lock_path(feature_path(ds, "toy", "bert", "test"))
    test_lock.write_text("")
    os.utime(test_lock, (time.time() - 120, time.time() - 120))
    assert main("bert", extract_argv(tiny_models["bert"], data_dir, ds, "test")) == 0
    assert not test_lock.exists() and feature_path(ds, "toy", "bert", "test").is_file()
