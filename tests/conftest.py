"""Fixtures shared across the test tree: temporary runs roots and tiny trained recommendation runs.

``tiny_rec_run`` (DARE) and ``tiny_twin_run`` (TWIN) are trained once per session, each into its own runs root,
on the lifelong synthetic generator at toy sizes (``tests/recipes/longseq_rec/tiny.py``; no network, a few seconds
each). A test that needs them side by side under one root copies them there with ``copy_run``, so no test sees runs
another test added.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.recipes.longseq_rec.tiny import TINY_OVERRIDES as TINY_REC_OVERRIDES


@pytest.fixture
def runs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty runs root, also exported as ``FUSION_RUNS_DIR``."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("FUSION_RUNS_DIR", str(root))
    return root


def train_tiny_rec(tmp_path_factory: pytest.TempPathFactory, model: str):
    """Train ``model`` (``dare`` | ``twin`` | ``din``) at toy size into a fresh runs root; returns the ``Run``."""
    from recipes.runtime.train import train

    root = tmp_path_factory.mktemp(f"tiny-{model}-runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FUSION_DATA_DIR", str(tmp_path_factory.mktemp("fusion-data")))
        run = train("longseq_rec", [*TINY_REC_OVERRIDES, "--model.config.model", model, "--runs-dir", str(root)])
    assert run.has_model, f"the tiny {model} run did not save a model: {run.path}"
    return run


@pytest.fixture(scope="session")
def tiny_rec_run(tmp_path_factory: pytest.TempPathFactory):
    """A finished DARE run of ``longseq_rec`` (``recipes.runtime.runs.Run``), alone in its runs root
    (``tiny_rec_run.path.parents[1]``). Read-only: copy it with ``copy_run`` before changing anything."""
    return train_tiny_rec(tmp_path_factory, "dare")


@pytest.fixture(scope="session")
def tiny_twin_run(tmp_path_factory: pytest.TempPathFactory):
    """Like ``tiny_rec_run`` but TWIN, on the same data."""
    return train_tiny_rec(tmp_path_factory, "twin")


@pytest.fixture
def copy_run() -> Callable:
    """``copy_run(run, root) -> Run``: a copy of a run folder under ``root/<recipe>/<run id>/``."""
    from recipes.runtime.runs import Run

    def copy(run, root: Path):
        target = Path(root) / run.recipe / run.run_id
        shutil.copytree(run.path, target)
        return Run(target)

    return copy
