"""A tiny driving run on tiny generated scenes, shared by the recipe tests and the driving dashboard tests."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

# ``fusion train driving --config quick`` shrunk to seconds: 8 generated frames, 8-wide model, 1 epoch
TINY_DRIVING_OVERRIDES: tuple[str, ...] = (
    "--config", "quick",
    "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1",
    "--model.dim", "8", "--model.num_heads", "2", "--model.grid_size", "[8, 8]", "--model.image_size", "[16, 48]",
    "--model.decoder_layers", "2", "--model.num_queries", "4",
    "--data.num_frames", "8", "--data.limit_frames", "null", "--data.batch_size", "4", "--data.image_size", "[16, 48]",
)


@contextmanager
def tiny_driving_env(root: Path, extra: Sequence[str] = ()) -> Iterator:
    """Train the tiny run with ``FUSION_DATA_DIR=root/data`` and ``FUSION_RUNS_DIR=root/runs`` set; yields the run
    with the variables still set (pages read them), and restores them on exit."""
    from recipes.runtime.train import train

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FUSION_DATA_DIR", str(root / "data"))
        patch.setenv("FUSION_RUNS_DIR", str(root / "runs"))
        yield train("driving", [*TINY_DRIVING_OVERRIDES, *extra])
