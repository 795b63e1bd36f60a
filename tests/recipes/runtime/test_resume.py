"""The pieces of exact resume: an epoch's order depends on (seed, epoch) alone and can start part-way; a run whose
training process died reads as interrupted; the random state survives a weights-only checkpoint load."""
from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys

import numpy as np
import torch

from recipes.runtime.resume import EpochSampler, _rng_state, _set_rng_state
from recipes.runtime.runs import Run, process_start_ticks


def test_an_epochs_order_depends_on_seed_and_epoch_only():
    sampler = EpochSampler(20, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == sorted(second) == list(range(20)) and first != second
    fresh = EpochSampler(20, seed=3)
    fresh.set_epoch(1)
    assert list(fresh) == second  # no history: a new sampler at epoch 1 gives epoch 1's order
    assert list(EpochSampler(20, seed=4)) != first
    assert list(EpochSampler(5, seed=3, shuffle=False)) == [0, 1, 2, 3, 4]


def test_start_at_skips_once_and_only_in_its_epoch():
    sampler = EpochSampler(12, seed=0)
    whole = sampler.order(2).tolist()
    sampler.start_at(2, 8)
    assert sampler.epoch == 2 and list(sampler) == whole[8:]
    assert list(sampler) == whole  # the next pass is whole again
    sampler.start_at(2, 4)
    sampler.set_epoch(3)  # Lightning moved on before iterating: the skip belongs to epoch 2 only
    assert list(sampler) == sampler.order(3).tolist()


def test_rng_state_round_trips_through_a_weights_only_load():
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    buffer = io.BytesIO()
    torch.save({"state": _rng_state()}, buffer)
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    buffer.seek(0)
    _set_rng_state(torch.load(buffer, weights_only=True)["state"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


def _running_run(tmp_path, process):
    (tmp_path / "config.yaml").write_text("{}\n")
    (tmp_path / "run.json").write_text(json.dumps({"status": "running", "process": process}))
    return Run(tmp_path)


def test_a_running_run_whose_process_died_reads_as_interrupted(tmp_path):
    import socket

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host = socket.gethostname()
    assert _running_run(tmp_path, {"host": host, "pid": child.pid, "start": 1}).status == "interrupted"
    me = {"host": host, "pid": os.getpid(), "start": process_start_ticks(os.getpid())}
    assert _running_run(tmp_path, me).status == "running"
    assert _running_run(tmp_path, {**me, "start": me["start"] + 1}).status == "interrupted"  # the pid was reused
    assert _running_run(tmp_path, {**me, "host": "another-node"}).status == "running"  # cannot tell from here
    assert _running_run(tmp_path, None).status == "running"
