"""The recommendation vertical's data sets, registered with :mod:`recipes.runtime.datasets` on import.

This is the one module that registers them; it imports the readers and the lifelong generator only (no torch or
Lightning), so ``fusion data list`` and ``fusion data fetch`` stay light.
"""
from __future__ import annotations

from recipes.longseq_rec.lifelong import fetch_lifelong
from recipes.longseq_rec.readers import fetch_movielens_100k, fetch_taobao
from recipes.runtime.datasets import DatasetSpec, register_dataset

__all__ = ["DATASET_NAMES", "DATASETS"]

DATASETS: tuple[DatasetSpec, ...] = tuple(
    register_dataset(spec)
    for spec in (
        DatasetSpec(
            name="movielens-100k",
            description="MovieLens-100K ratings (GroupLens), 943 users × 1,682 movies; from the cache, GroupLens or RecBole's wheel",
            fetch=fetch_movielens_100k,
            card="data_cards/movielens-100k.md",
        ),
        DatasetSpec(
            name="lifelong-synthetic",
            description="Synthetic lifelong histories (10,000 behaviours) with planted relevant behaviours; generated locally",
            fetch=fetch_lifelong,
            card="data_cards/lifelong-synthetic.md",
        ),
        DatasetSpec(
            name="taobao",
            description="Taobao UserBehavior log (Alibaba Tianchi); not downloadable here — pass your copy with --path",
            fetch=fetch_taobao,
            card="data_cards/taobao-user-behavior.md",
        ),
    )
)
DATASET_NAMES: tuple[str, ...] = tuple(spec.name for spec in DATASETS)
