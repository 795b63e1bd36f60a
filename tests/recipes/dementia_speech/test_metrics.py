"""The metrics per domain: each domain's collection sees only its rows, a domain without rows logs nothing, and two
gloo processes (one of which holds no target row) compute the metrics of the whole split."""
from __future__ import annotations

import math
import os
import sys
import types
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recipes.dementia_speech.metrics import TARGET_PREFIX, domain_metrics
from recipes.runtime.metrics import binary_classification_metrics
from tests.apps.browser import free_port

NAMES = ("acc", "precision", "recall", "f1", "auroc", "ece", "adaptive_ece", "brier", "nll")
# source rows: 0.9, 0.9, 0.1, 0.1 for labels 1, 0, 0, 0; target rows: four more, interleaved with them
PROB = torch.tensor([0.9, 0.8, 0.9, 0.3, 0.1, 0.6, 0.1, 0.2])
LABEL = torch.tensor([1, 1, 0, 0, 0, 1, 0, 0])
DOMAIN = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])


def computed(collection) -> dict[str, float]:
    return {name: float(value) for metric in collection.values() for name, value in metric.compute().items()}


def reference(rows: torch.Tensor) -> dict[str, float]:
    collection = binary_classification_metrics()
    collection.update(PROB[rows], LABEL[rows])
    return {name: float(value) for name, value in collection.compute().items()}


def test_each_domain_is_scored_on_its_own_rows_only():
    metrics = domain_metrics()
    for start in (0, 4):  # two batches
        metrics.update(PROB[start:start + 4], LABEL[start:start + 4], DOMAIN[start:start + 4])
    values = computed(metrics)
    assert set(values) == {*NAMES, *(f"{TARGET_PREFIX}{n}" for n in NAMES)}
    source, target = reference(DOMAIN == 0), reference(DOMAIN == 1)
    assert {n: values[n] for n in NAMES} == pytest.approx(source)
    assert {n: values[f"{TARGET_PREFIX}{n}"] for n in NAMES} == pytest.approx(target)
    # hand-computed on the source rows: 3 of 4 right, precision ½, AUROC 2.5 of 3 pairs, ECE ½·0.1 + ½·0.4
    assert values["acc"] == pytest.approx(0.75) and values["precision"] == pytest.approx(0.5)
    assert values["auroc"] == pytest.approx(5 / 6) and values["ece"] == pytest.approx(0.25)
    assert values["brier"] == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    assert values["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.1) + 2 * math.log(0.9)) / 4)
    assert values[f"{TARGET_PREFIX}acc"] == pytest.approx(1.0)


def test_a_batch_without_a_domain_and_a_split_without_one():
    metrics = domain_metrics()
    metrics.update(PROB[:2], LABEL[:2], torch.zeros(2, dtype=torch.long))  # no target row in this batch
    metrics.update(PROB[2:], LABEL[2:], DOMAIN[2:])
    assert computed(metrics)[f"{TARGET_PREFIX}acc"] == pytest.approx(reference(torch.tensor([3, 5, 7]))["acc"])
    only_source = domain_metrics()
    only_source.update(PROB, LABEL, torch.zeros(8, dtype=torch.long))  # a real ADReSS copy: source domain only
    assert set(computed(only_source)) == set(NAMES)
    only_source.reset()
    only_source.update(PROB[:4], LABEL[:4], torch.ones(4, dtype=torch.long))
    assert set(computed(only_source)) == {f"{TARGET_PREFIX}{n}" for n in NAMES}


WORLD = 2


def _worker(rank: int, port: int, expected: dict[str, float]) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        # rank 0 holds source rows only, rank 1 the rest: a process may see no row of a domain in the whole split
        rows = torch.tensor([0, 2, 4]) if rank == 0 else torch.tensor([1, 3, 5, 6, 7])
        metrics = domain_metrics()
        metrics.update(PROB[rows], LABEL[rows], DOMAIN[rows])
        values = computed(metrics)
        assert set(values) == set(expected)
        for name, value in expected.items():
            assert values[name] == pytest.approx(value, abs=1e-6), name
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_two_processes_compute_the_metrics_of_the_whole_split(monkeypatch):
    whole = domain_metrics()
    whole.update(PROB, LABEL, DOMAIN)
    expected = computed(whole)
    # spawned workers re-run the parent's __main__ file; under pytest that may be a script another test left there
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    mp.spawn(_worker, args=(free_port(), expected), nprocs=WORLD, join=True)
