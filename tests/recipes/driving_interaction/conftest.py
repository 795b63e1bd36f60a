"""A tiny trained driving run on a tiny generated data set, shared by the recipe tests (module scope)."""
from __future__ import annotations

import pytest

from tests.recipes.driving_interaction.tiny import tiny_driving_env


@pytest.fixture(scope="module")
def tiny_driving_run(tmp_path_factory):
    """``fusion train driving --config quick`` shrunk to seconds; yields the run (env vars restored after)."""
    with tiny_driving_env(tmp_path_factory.mktemp("driving")) as run:
        yield run
