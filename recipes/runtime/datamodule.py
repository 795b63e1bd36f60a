"""The base LightningDataModule every vertical's data module subclasses, and what they all need around it.

A vertical fills in two things: :meth:`RecipeDataModule.prepare_data` (fetch or build its data set, once per
machine) and :meth:`RecipeDataModule.build_splits` (read it and return ``{"train": Dataset, "val": ..., "test":
...}``); the base class does the rest the same way for all of them: ``setup`` runs ``build_splits`` once, the loaders
shuffle the training split in an order drawn from ``(seed, epoch)`` (so a run and its resume see the same order), drop a last
partial training batch only when the split is larger than a batch, and keep evaluation order. Every loader has its
own seeded generator, so iterating one (a validation pass) never draws from the global random state that training's
dropout uses: results do not depend on what ran before.

:class:`TensorRows` is the in-memory dataset most verticals need (a dict of tensors sharing their first dimension,
optionally restricted to some rows); :func:`atomic_save` and :func:`atomic_write_text` write cache files so that a
killed process never leaves a half-written file where a later one would read it.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from recipes.runtime.files import atomic_save, atomic_write_text

__all__ = ["RecipeDataModule", "TensorRows", "atomic_save", "atomic_write_text", "SPLITS"]

SPLITS = ("train", "val", "test")


class TensorRows(Dataset):
    """Rows of ``tensors`` (a dict of tensors with one first dimension): ``dataset[i]`` is ``{key: tensor[rows[i]]}``.

    ``rows`` (default: all) selects and orders the rows without copying the tensors.
    """

    def __init__(self, tensors: Mapping[str, Tensor], rows: np.ndarray | Tensor | None = None) -> None:
        if not tensors:
            raise ValueError("TensorRows needs at least one tensor")
        sizes = {key: int(value.shape[0]) for key, value in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"every tensor needs the same number of rows; got {sizes}")
        self.tensors = dict(tensors)
        total = next(iter(sizes.values()))
        self.rows = torch.arange(total) if rows is None else torch.as_tensor(np.asarray(rows), dtype=torch.long)
        if self.rows.numel() and (int(self.rows.min()) < 0 or int(self.rows.max()) >= total):
            raise ValueError(f"rows must index the {total} rows of the tensors; got the range "
                             f"[{int(self.rows.min())}, {int(self.rows.max())}]")

    def __len__(self) -> int:
        return int(self.rows.numel())

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        row = self.rows[index]
        return {key: value[row] for key, value in self.tensors.items()}


class RecipeDataModule(pl.LightningDataModule):
    """Base data module: seeded shuffling, the three loaders, ``setup`` once.

    Subclasses call ``super().__init__(batch_size=..., num_workers=..., seed=...)``, implement
    :meth:`prepare_data` and :meth:`build_splits`, and may override :meth:`collate_fn` (a batch collation other
    than PyTorch's default) or a loader (a training loader that combines two sources, say).
    """

    #: drop a last partial training batch (when the split is larger than a batch); False keeps every sample
    drop_last_train: bool = True

    def __init__(self, *, batch_size: int, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0; got {num_workers}")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.splits: dict[str, Dataset] | None = None
        self._resume: tuple[int, int] | None = None

    # --- what a vertical fills in ------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Fetch or build the data set (called once per machine, on local rank 0, before :meth:`setup`)."""

    def build_splits(self) -> dict[str, Dataset]:
        """Read the prepared data; return a dataset per split name (``train``, ``val``, ``test``)."""
        raise TypeError(f"{type(self).__name__} must implement build_splits() -> {{split: Dataset}}")

    def collate_fn(self) -> Callable[[list[Any]], Any] | None:
        """The loaders' ``collate_fn`` (None: PyTorch's default, which stacks dicts of tensors)."""
        return None

    # --- the same for every vertical ---------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            splits = self.build_splits()
            unknown = set(splits) - set(SPLITS)
            if unknown:
                raise ValueError(f"{type(self).__name__}.build_splits returned unknown split(s) {sorted(unknown)}; use {SPLITS}")
            self.splits = splits

    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` (runs :meth:`setup` first when needed)."""
        self.setup()
        assert self.splits is not None
        if split not in self.splits:
            raise KeyError(f"{type(self).__name__} has no {split!r} split; it has {sorted(self.splits)}")
        return self.splits[split]

    def resume_at(self, epoch: int, batches: int) -> None:
        """Start the next training loader at ``epoch`` after its first ``batches`` batches (called on resume by
        :class:`recipes.runtime.resume.ResumePoint`)."""
        self._resume = (int(epoch), int(batches))

    def loader(self, split: str, *, shuffle: bool | None = None, batch_size: int | None = None) -> DataLoader:
        """A DataLoader over ``split``: shuffled (training by default) in an order drawn from ``(seed, epoch)`` alone
        (:class:`~recipes.runtime.resume.EpochSampler`, so a resumed run sees the order an uninterrupted one would),
        the last partial batch dropped only when shuffling a split larger than a batch and :attr:`drop_last_train` is
        set."""
        from recipes.runtime.resume import EpochSampler

        dataset = self.dataset(split)
        shuffle = split == "train" if shuffle is None else shuffle
        size = self.batch_size if batch_size is None else int(batch_size)
        # evaluation keeps PyTorch's SequentialSampler, which Lightning splits across DDP processes as it always has
        sampler = EpochSampler(len(dataset), seed=self.seed) if shuffle else SequentialSampler(dataset)
        if shuffle and self._resume is not None:
            epoch, batches = self._resume
            sampler.start_at(epoch, batches * size)
            self._resume = None
        # a seeded generator even though the sampler does not use it: a DataLoader draws its workers' base seed from its
        # generator (the global RNG when it has none) each time it is iterated, so an unseeded pass would shift
        # training's randomness
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(dataset, batch_size=size, sampler=sampler, generator=generator, num_workers=self.num_workers,
                          collate_fn=self.collate_fn(), drop_last=shuffle and self.drop_last_train and len(dataset) > size,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")
