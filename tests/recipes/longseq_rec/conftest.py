"""Data shared by the longseq_rec data tests: a complete-sized ML-100K folder, its data module, a tiny lifelong set."""
from __future__ import annotations

from pathlib import Path

import pytest

from recipes.longseq_rec.data import RecDataModule
from recipes.longseq_rec.lifelong import LifelongData, generate_lifelong
from tests.recipes.longseq_rec.formats import movielens_content, write_atomic


@pytest.fixture(scope="session")
def ml_folder(tmp_path_factory) -> Path:
    """A complete-sized ML-100K in RecBole's atomic layout (passes the count check)."""
    return write_atomic(tmp_path_factory.mktemp("ml") / "atomic", *movielens_content())


@pytest.fixture(scope="session")
def ml_module(ml_folder) -> RecDataModule:
    return RecDataModule(data_path=str(ml_folder), max_users=12, max_history=8, batch_size=4, seed=3)


@pytest.fixture(scope="session")
def lifelong() -> LifelongData:
    return generate_lifelong(num_users=12, history_length=60, num_items=48, num_cates=4, num_interests=2,
                             relevant_per_target=2, seed=5, num_themes=3, targets_per_user=3, recent_window=10)
