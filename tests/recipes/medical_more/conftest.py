from __future__ import annotations

from pathlib import Path

import pytest

from tests.recipes.medical_more.tiny import tiny_medical_env, write_template_cohort


@pytest.fixture(scope="session")
def toy_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``more-cohort`` folder of 48 template reports (``cohort.parquet`` only; arrays are drawn on first use)."""
    return write_template_cohort(tmp_path_factory.mktemp("toy-cohort"))


@pytest.fixture(scope="module")
def tiny_medical_run(tmp_path_factory: pytest.TempPathFactory):
    """The tiny run of :mod:`tests.recipes.medical_more.tiny`; yields it with ``FUSION_DATA_DIR`` still set."""
    with tiny_medical_env(tmp_path_factory.mktemp("tiny-medical")) as run:
        assert run.has_model
        yield run
