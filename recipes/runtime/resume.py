"""Exact resume: a training run killed at any moment continues to the same weights it would have reached.

Three things make a resumed run repeat an uninterrupted one bit for bit on CPU:

- **Frequent checkpoints.** :func:`checkpoint_callbacks` saves every ``every_n_steps`` optimizer steps (Lightning
  writes through a temporary file and renames it, so a kill never leaves a torn checkpoint), keeps the last two
  step checkpoints and mirrors the newest as ``last.ckpt``.
- **The data position.** :class:`EpochSampler` draws epoch ``e``'s order from ``(seed, e)`` alone, not from a
  generator that advanced through earlier epochs, and can start an epoch part-way. :class:`ResumePoint` stores the
  epoch and the number of batches already trained in the checkpoint and, on load, tells the data module where to
  start (:meth:`recipes.runtime.datamodule.RecipeDataModule.resume_at`).
- **The random state** (torch, NumPy, Python) that dropout and augmentation draw from, saved beside the position
  and restored before the first resumed step.

Single-process runs resume mid-epoch exactly. Under DDP Lightning's ``DistributedSampler`` takes over the order, so
a DDP run resumes exactly only from an epoch boundary (and Lightning warns when it does not).
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import Sampler

__all__ = ["EpochSampler", "ResumePoint", "checkpoint_callbacks", "DEFAULT_CHECKPOINT_EVERY"]

DEFAULT_CHECKPOINT_EVERY = 50
_KEY = "fusion_resume"


class EpochSampler(Sampler[int]):
    """Indices ``0..n-1``, shuffled by a generator seeded with ``(seed, epoch)`` when ``shuffle``.

    Lightning calls :meth:`set_epoch` before each epoch (but creates the first epoch's iterator before that, which is
    why :meth:`start_at` sets the epoch too). :meth:`start_at` makes the next pass over ``epoch`` begin ``skip``
    indices in (batches already trained × batch size), once; later passes are whole again.
    """

    def __init__(self, size: int, *, seed: int, shuffle: bool = True) -> None:
        self.size, self.seed, self.shuffle = int(size), int(seed), bool(shuffle)
        self.epoch = 0
        self._skip = (0, 0)  # (epoch, indices to skip in it)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def start_at(self, epoch: int, skip: int) -> None:
        self.epoch, self._skip = int(epoch), (int(epoch), max(0, int(skip)))

    def order(self, epoch: int) -> torch.Tensor:
        """The full index order of ``epoch``."""
        if not self.shuffle:
            return torch.arange(self.size)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator)

    def __iter__(self) -> Iterator[int]:
        epoch, skip = self._skip
        self._skip = (0, 0)
        yield from self.order(self.epoch)[skip if epoch == self.epoch else 0:].tolist()

    def __len__(self) -> int:
        return self.size


def _rng_state() -> dict[str, Any]:
    """The global random states as tensors and plain numbers, so the checkpoint still loads with ``weights_only``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss_next"]))


class ResumePoint(Callback):
    """Saves the data position and the random state in every checkpoint; restores both on resume.

    The position is the epoch and the batches of it already trained (``batch_progress.current.processed``: a batch
    interrupted before its optimizer step is trained again). The data module receives it through ``resume_at``.
    """

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        per_epoch = trainer.num_training_batches
        checkpoint[_KEY] = {"epoch": trainer.current_epoch, "batches": int(progress.processed),
                            "per_epoch": None if per_epoch == float("inf") else int(per_epoch), "rng": _rng_state()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(_KEY)
        if state is None:
            return
        _set_rng_state(state["rng"])
        datamodule = getattr(trainer, "datamodule", None)
        if trainer.world_size == 1 and hasattr(datamodule, "resume_at"):
            epoch, batches = state["epoch"], state["batches"]
            if state["per_epoch"] is not None and batches >= state["per_epoch"]:
                epoch, batches = epoch + 1, 0  # saved at the end of an epoch: the next one starts whole
            datamodule.resume_at(epoch, batches)


def checkpoint_callbacks(directory, every_n_steps: int = DEFAULT_CHECKPOINT_EVERY) -> list[Callback]:
    """Step checkpoints every ``every_n_steps`` (the last two kept, named ``step=<n>.ckpt``), ``epoch-end.ckpt`` at
    the end of every epoch, ``last.ckpt`` a copy of the newest, and :class:`ResumePoint`."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    if every_n_steps < 1:
        raise ValueError(f"checkpoints every {every_n_steps} steps: need at least 1")
    steps = ModelCheckpoint(
        dirpath=directory, filename="{step}", monitor="step", mode="max", save_top_k=2, save_last=True,
        every_n_train_steps=every_n_steps, enable_version_counter=False, auto_insert_metric_name=True,
    )
    # Lightning writes last.ckpt only next to a top-k save, so the epoch-end one keeps its own (overwritten) file
    epochs = ModelCheckpoint(dirpath=directory, filename="epoch-end", save_top_k=1, save_last=True,
                             enable_version_counter=False)
    return [steps, epochs, ResumePoint()]
