"""The tiny driving run: arguments the recipe contract test, the recipe tests and the dashboard tests train with."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

# ``fusion train driving --config quick`` shrunk to seconds: 16 generated frames (12 train / 2 val / 2 test, an even
# test split), an 8-wide model on an 8×8 BEV grid and 24×80 images (the generated images' aspect ratio), one optimizer step (one batch per process)
TINY_OVERRIDES: tuple[str, ...] = (
    "--config", "quick",
    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
    "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1",
    "--model.config.dim", "8", "--model.config.num_heads", "2", "--model.config.grid_size", "[8, 8]",
    "--model.config.decoder_layers", "2", "--model.config.num_queries", "4",
    "--data.num_frames", "16", "--data.limit_frames", "null", "--data.batch_size", "4", "--data.image_size", "[24, 80]",
)
# the detector fuses its two streams spatially (BEV cells and image cells attend to each other; ``concat`` merges
# BEV maps); it never fuses pooled modality vectors, so there is no ``sequential`` fusion to switch to
SEQUENTIAL_OVERRIDES: tuple[str, ...] | None = None
DDP_TOLERANCE = 1e-3


@contextmanager
def tiny_driving_env(root: Path, extra: Sequence[str] = ()) -> Iterator:
    """Train the tiny run with ``FUSION_DATA_DIR=root/data`` and ``FUSION_RUNS_DIR=root/runs`` set; yields the run
    with the variables still set (pages read them), and restores them on exit."""
    from recipes.runtime.train import train

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FUSION_DATA_DIR", str(root / "data"))
        patch.setenv("FUSION_RUNS_DIR", str(root / "runs"))
        yield train("driving", [*TINY_OVERRIDES, *extra])
