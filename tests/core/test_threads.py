"""The CPU thread count of a job: what its work per step can use, at most the cores other jobs
leave free, at least one; `--threads` overrides it, and the choice is logged.

    python main.py --task ED                 # training: 1 CPU thread(s) (0.31 GFLOP per step; 1 of 2 cores free ...)
    python main.py --task ED --threads 2
"""

from __future__ import annotations

import logging

import torch

from fec.core import threads
from fec.core.threads import FLOPS_PER_THREAD, choose_threads, use_threads


def test_a_small_step_takes_one_thread_however_many_cores_are_free():
    assert choose_threads(0.3 * FLOPS_PER_THREAD, cores=16, busy=0) == 1


def test_a_large_step_takes_the_free_cores_and_never_one_another_job_is_using():
    assert choose_threads(8 * FLOPS_PER_THREAD, cores=4, busy=0) == 4
    assert choose_threads(8 * FLOPS_PER_THREAD, cores=2, busy=1) == 1
    assert choose_threads(8 * FLOPS_PER_THREAD, cores=2, busy=5) == 1  # an overloaded machine still runs


def test_the_choice_is_set_and_logged_and_threads_overrides_it(monkeypatch, caplog):
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_cores", lambda: 1)
    try:
        with caplog.at_level(logging.INFO, logger="fec.core.threads"):
            assert use_threads(None, 3 * FLOPS_PER_THREAD, "training") == 1
            assert torch.get_num_threads() == 1
            assert use_threads(2, 3 * FLOPS_PER_THREAD, "training") == 2
        assert "training: 1 CPU thread(s) (0.75 GFLOP per step; 1 of 2 cores free" in caplog.text
        assert "training: 2 CPU thread(s) (as asked" in caplog.text
    finally:
        torch.set_num_threads(before)
