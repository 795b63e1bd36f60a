"""Fixtures for the runtime tests: the toy recipe (registered per module) and one trained toy run per module."""
from __future__ import annotations

import pytest

from tests.recipes.runtime import toy_recipe


@pytest.fixture(scope="module")
def toy():
    with toy_recipe.registered() as recipe:
        yield recipe


@pytest.fixture(scope="module")
def trained_run(toy, tmp_path_factory):
    """A finished toy run trained with the `quick` config (2 epochs, ~1 s)."""
    from recipes.runtime.train import train

    runs = tmp_path_factory.mktemp("runs")
    return train("toy", ["--config", "quick", "--runs-dir", str(runs)])
