from __future__ import annotations

from pathlib import Path

import pytest

from tests.recipes.medical_more.tiny_medical import toy_cohort_dir, train_tiny_medical


@pytest.fixture(scope="session")
def toy_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toy_cohort_dir(tmp_path_factory.mktemp("toy-cohort"))


@pytest.fixture(scope="session")
def tiny_medical_run(tmp_path_factory: pytest.TempPathFactory):
    run = train_tiny_medical(tmp_path_factory.mktemp("tiny-medical"))
    assert run.has_model
    return run
