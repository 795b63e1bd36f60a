"""A tiny trained driving run on a tiny generated data set, shared by the recipe tests (module scope)."""
from __future__ import annotations

import os
import pytest

TINY_OVERRIDES = [
    "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1",
    "--model.dim", "8", "--model.num_heads", "2", "--model.grid_size", "[8, 8]", "--model.image_size", "[16, 48]",
    "--model.decoder_layers", "2", "--model.num_queries", "4",
    "--data.num_frames", "8", "--data.limit_frames", "null", "--data.batch_size", "4", "--data.image_size", "[16, 48]",
]


@pytest.fixture(scope="module")
def tiny_driving_run(tmp_path_factory):
    """``fusion train driving --config quick`` shrunk to seconds; yields the run (env vars restored after)."""
    from recipes.runtime.train import train

    root = tmp_path_factory.mktemp("driving")
    saved = {k: os.environ.get(k) for k in ("FUSION_DATA_DIR", "FUSION_RUNS_DIR")}
    os.environ["FUSION_DATA_DIR"] = str(root / "data")
    os.environ["FUSION_RUNS_DIR"] = str(root / "runs")
    try:
        yield train("driving", ["--config", "quick", *TINY_OVERRIDES])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

