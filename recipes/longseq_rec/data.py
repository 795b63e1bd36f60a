"""The recommendation recipe's LightningDataModule: the DIN/DARE click task on ``movielens-100k``,
``lifelong-synthetic`` (the embedded default, generated from the ``lifelong_*`` arguments) or ``taobao``.

The parts live beside it: the file readers in :mod:`~recipes.longseq_rec.readers`, the generator in
:mod:`~recipes.longseq_rec.lifelong`, the task and its splits in :mod:`~recipes.longseq_rec.tasks`, the
vocabulary, batches and raw scoring schema in :mod:`~recipes.longseq_rec.encoding`. Importing this module
registers the three data sets (:mod:`recipes.longseq_rec.datasets`).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from recipes.longseq_rec.datasets import DATASET_NAMES
from recipes.longseq_rec.encoding import BatchBuilder, RecVocab, Samples, Sequences, built_batch, raw_scoring_frame
from recipes.longseq_rec.lifelong import LifelongData, generate_lifelong
from recipes.longseq_rec.readers import fetch_movielens_100k, movielens_folder
from recipes.longseq_rec.tasks import RecTask, lifelong_task, movielens_task, taobao_task
from recipes.runtime.datamodule import SPLITS, RecipeDataModule
from recipes.runtime.datasets import data_home, fetch_dataset, progress

__all__ = ["RecDataModule"]


class RecDataModule(RecipeDataModule):
    """The DIN/DARE click task for ``movielens-100k``, ``lifelong-synthetic`` or ``taobao``.

    ``prepare_data`` fetches MovieLens-100K (or checks the copy at ``data_path``); ``setup`` reads the data and
    builds the task. The table sizes ``num_users``, ``num_items``, ``num_cates`` and ``profile_cardinalities``
    (padding index 0 included) come from the data, and LightningCLI links them into the model as soon as this
    module is built, before the Trainer calls ``prepare_data``/``setup``: so the first read of a size (or of
    ``vocab``, ``sequences``, ``samples``) prepares and sets up on the spot, and the Trainer's own calls then find
    the work done. ``vocab`` is the :class:`RecVocab` to save with a run; ``samples`` the :class:`Samples` of each
    split. The dataset of a split is its :class:`BatchBuilder`, which builds each batch at once (vectorised), and
    every training sample is kept (no partial last batch dropped).

    ``data_path``: MovieLens folder (either layout; default: fetched into the cache), the lifelong folder
    written by ``fusion data fetch lifelong-synthetic`` (default: generated from the ``lifelong_*`` arguments),
    or the Taobao ``UserBehavior.csv`` (required). ``max_users`` keeps a seeded random subset of users (all
    catalogue items stay in the vocabulary for MovieLens). ``user_hash_buckets``: size of the hashed user field
    that is the profile of lifelong and Taobao users. ``taobao_behaviors``: behaviour types kept (None = all).
    ``lifelong_popularity``: Zipf exponent of the lifelong items' and categories' popularity (0 = uniform).
    ``lifelong_structure``: ``planted`` (a few relevant behaviours planted far back) or ``interests`` (users like
    ``lifelong_liked_themes`` themes per interest category; click from ``lifelong_match_logit`` and an item quality of
    std ``lifelong_quality_std``; see :func:`~recipes.longseq_rec.lifelong.generate_lifelong`).
    """

    drop_last_train = False  # train on every sample, as this recipe always has

    def __init__(
        self,
        dataset: str = "movielens-100k",
        data_path: str | None = None,
        max_history: int = 200,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        max_users: int | None = None,
        num_time_buckets: int = 16,
        lifelong_users: int = 2_000,
        lifelong_history: int = 10_000,
        lifelong_items: int = 2_000,
        lifelong_cates: int = 20,
        lifelong_themes: int = 10,
        lifelong_interests: int = 4,
        lifelong_relevant: int = 3,
        lifelong_targets_per_user: int = 8,
        lifelong_popularity: float = 0.0,
        lifelong_structure: str = "planted",
        lifelong_liked_themes: int = 3,
        lifelong_match_logit: float = 4.0,
        lifelong_quality_std: float = 1.0,
        taobao_behaviors: list[str] | None = None,
        user_hash_buckets: int = 1_000,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if dataset not in DATASET_NAMES:
            raise ValueError(f"unknown dataset {dataset!r}; choose one of {list(DATASET_NAMES)}")
        for name, value in (("max_history", max_history), ("user_hash_buckets", user_hash_buckets)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_time_buckets < 2:
            raise ValueError(f"num_time_buckets must be >= 2 (bucket 0 is padding), got {num_time_buckets}")
        if max_users is not None and max_users < 1:
            raise ValueError(f"max_users must be None (all users) or >= 1, got {max_users}")
        if dataset == "taobao" and data_path is None:
            raise ValueError(
                "dataset 'taobao' needs data_path: the UserBehavior.csv file "
                "(--data.dataset taobao --data.data_path /path/UserBehavior.csv; see data_cards/taobao-user-behavior.md)"
            )
        self.save_hyperparameters()
        self._prepared = False
        self._task: RecTask | None = None

    @classmethod
    def from_vocab(cls, vocab: RecVocab) -> "RecDataModule":
        """The data module a run was trained on, rebuilt from the settings saved with its vocabulary."""
        return cls(**vocab.settings)

    # --- loading ------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Fetch MovieLens-100K into the cache, or check the copy at ``data_path`` (Taobao is the user's own file;
        lifelong data are a saved folder or generated in ``setup``). Done once per instance."""
        if self._prepared:
            return
        hp = self.hparams
        if hp.dataset == "movielens-100k":
            if hp.data_path is not None:
                fetch_movielens_100k(Path(hp.data_path), Path(hp.data_path))
            else:
                fetch_dataset("movielens-100k")
        self._prepared = True

    def build_splits(self) -> dict[str, BatchBuilder]:
        """Read the data and build the task (vocabulary, behaviour sequences, samples); a batch builder per split."""
        hp = self.hparams
        # the arguments only: LightningCLI adds private entries (``_instantiator``) that are not arguments
        settings = {k: v for k, v in hp.items() if not str(k).startswith("_")}
        started = time.perf_counter()
        if hp.dataset == "movielens-100k":
            task = movielens_task(self._movielens_folder(), hp.seed, hp.max_users, settings)
        elif hp.dataset == "taobao":
            task = taobao_task(Path(hp.data_path), hp.taobao_behaviors, hp.seed, hp.max_users, hp.user_hash_buckets,
                               settings)
        else:
            task = lifelong_task(self._lifelong_data(), hp.seed, hp.user_hash_buckets, settings)
        self._task = task
        vocab = task.vocab
        sizes = ", ".join(f"{name} {len(samples):,}" for name, samples in task.splits.items())
        progress(f"{hp.dataset}: {vocab.num_users - 1:,} users, {vocab.num_items - 1:,} items, "
                 f"{vocab.num_cates - 1:,} categories; samples {sizes} ({time.perf_counter() - started:.1f} s)")
        return {split: BatchBuilder(task.sequences, vocab, task.splits[split], hp.max_history, hp.num_time_buckets)
                for split in SPLITS}

    def _movielens_folder(self) -> Path:
        """The copy at ``data_path``, else the cache (fetched here when ``prepare_data`` has not filled it)."""
        if self.hparams.data_path is not None:
            return movielens_folder(Path(self.hparams.data_path))
        cached = data_home() / "movielens-100k"
        return cached if any(cached.glob("*.inter")) else fetch_dataset("movielens-100k")

    def _lifelong_data(self) -> LifelongData:
        hp = self.hparams
        if hp.data_path is not None:
            data = LifelongData.load(hp.data_path)
            return data.head(hp.max_users) if hp.max_users is not None else data
        return generate_lifelong(
            num_users=min(hp.lifelong_users, hp.max_users or hp.lifelong_users), history_length=hp.lifelong_history,
            num_items=hp.lifelong_items, num_cates=hp.lifelong_cates, num_interests=hp.lifelong_interests,
            relevant_per_target=hp.lifelong_relevant, seed=hp.seed, num_themes=hp.lifelong_themes,
            targets_per_user=hp.lifelong_targets_per_user, popularity_exponent=hp.get("lifelong_popularity", 0.0),
            structure=hp.get("lifelong_structure", "planted"), themes_per_interest=hp.get("lifelong_liked_themes", 3),
            match_logit=hp.get("lifelong_match_logit", 4.0), quality_std=hp.get("lifelong_quality_std", 1.0),
        )

    @property
    def task(self) -> RecTask:
        """The loaded task; prepares and sets up on first use (see the class docstring)."""
        if self._task is None:
            self.prepare_data()
            self.setup()
        return self._task

    @property
    def vocab(self) -> RecVocab:
        return self.task.vocab

    @property
    def sequences(self) -> Sequences:
        return self.task.sequences

    @property
    def samples(self) -> dict[str, Samples]:
        """The samples of each split (``train``, ``val``, ``test``)."""
        return self.task.splits

    # --- sizes linked into the model (Recipe.links) -----------------------------------------------------------
    @property
    def num_users(self) -> int:
        return self.vocab.num_users

    @property
    def num_items(self) -> int:
        return self.vocab.num_items

    @property
    def num_cates(self) -> int:
        return self.vocab.num_cates

    @property
    def num_time_buckets(self) -> int:
        return self.hparams.num_time_buckets

    @property
    def profile_cardinalities(self) -> list[int]:
        return self.vocab.profile_cardinalities

    # --- batches ------------------------------------------------------------------------------------------
    def batch_builder(self, split: str) -> BatchBuilder:
        """The dataset of ``split``: ``builder(sample_indices) -> batch dict``."""
        return self.dataset(split)

    def collate_fn(self) -> Callable[[dict], dict]:
        return built_batch

    # --- raw views ----------------------------------------------------------------------------------------
    def scoring_frame(self, split: str = "test") -> pl.DataFrame:
        """``split`` in the raw scoring schema, plus ``label`` (see :func:`~recipes.longseq_rec.encoding.raw_scoring_frame`)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
        return raw_scoring_frame(self.batch_builder(split))

    def user_timeline(self, user_id: int) -> pl.DataFrame:
        """One user's full history (raw ids): item_id, title, category, timestamp, oldest first."""
        index = int(self.vocab.user_index(np.array([user_id]))[0])
        if index == 0:
            raise ValueError(f"user_id {user_id} is not in this data set")
        lo, hi = self.sequences.offsets[index - 1], self.sequences.offsets[index]
        items = self.sequences.item[lo:hi].astype(np.int64)
        timeline = pl.DataFrame({"item_id": self.vocab.item_raw(items), "timestamp": self.sequences.time[lo:hi]})
        return timeline.join(self.vocab.items.select("item_id", "title", "category"), on="item_id",
                             how="left", maintain_order="left").select("item_id", "title", "category", "timestamp")

