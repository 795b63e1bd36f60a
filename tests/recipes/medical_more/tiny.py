"""The tiny medical_more run shared by the recipe contract test, the medical recipe tests and the dashboard tests:
``fusion train medical --config quick`` shrunk to seconds, on a cohort of 108 template reports the data module writes
under ``$FUSION_DATA_DIR`` (no download): 74 train / 20 val / 14 test patients (an even test split, so 2 DDP
processes split it without padding), 16×16 radiographs, 50 Hz ECGs, the from-scratch report encoder on hashed words,
16-wide encoders, 2 epochs of contrastive pre-training and 2 of the diagnosis head.

So that 1 and 2 processes train the same way, every step takes the whole training split (one batch of 74, or 37 on
each of 2 processes: the same global batch, since the contrastive loss gathers across processes and DDP averages the
equal halves' gradients), the radiograph stem is the strided patch convolution (the conv stem's BatchNorm would
normalise each process's half on its own; SyncBatchNorm needs a GPU) and modality dropout and the radiograph shift are
off (each process would draw its own masks and shifts); quick's choice of the best-validated pre-training epoch is off
too (2 epochs, 20 validation patients: near-tied scores). The recipe contract test switches the dropout back on where it tests it.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

TINY_OVERRIDES: tuple[str, ...] = (
    "--config", "quick",
    "--data.template_reports", "108",
    "--data.report_encoder", "scratch",
    "--data.vocab_size", "128",
    "--data.text_max_len", "24",
    "--data.image_size", "16",
    "--data.sampling_rate", "50",
    "--data.max_patients", "null",
    "--data.batch_size", "80",
    "--model.config.xray_stem", "patch",
    "--model.config.modality_dropout", "0.0",
    "--model.config.patch_size", "8",
    "--model.config.ecg_patch", "50",
    "--model.config.encoder_dim", "16",
    "--model.config.depth", "1",
    "--model.config.num_heads", "2",
    "--model.config.projection_dim", "16",
    "--model.config.fusion_dim", "16",
    "--model.config.fusion_options", "{num_layers: 1, num_heads: 2}",
    "--model.config.pretrain_epochs", "2",
    "--model.config.xray_shift", "0.0",
    "--model.config.select_pretraining", "false",
    "--trainer.max_epochs", "4",
    "--trainer.logger", "false",
    "--trainer.enable_progress_bar", "false",
)

# the diagnosis head fuses the three pooled projections: MultiModN's sequential fusion reads them one at a time and
# decodes the four findings from every state, each state's binary cross-entropy weighted into the loss
SEQUENTIAL_OVERRIDES: tuple[str, ...] | None = (
    "--model.config.fusion", "sequential",
    "--model.config.fusion_options", "{}",
    "--model.config.step_loss_weight", "0.5",
)

# 1 and 2 processes take the same 4 steps on the same global batch (see above), so they differ only by the order of
# floating-point sums (measured: 5e-7 on the contrastive loss, 0 on every AUROC and recall). 1e-3 is far above that
# noise and far below what a loss or gradient that saw one process's rows would move (an AUROC step on 14 patients is
# at least 1/49).
DDP_TOLERANCE = 1e-3


def write_template_cohort(folder: Path, count: int = 48) -> Path:
    """A ``more-cohort`` folder (``cohort.parquet`` only) of ``count`` template reports."""
    from recipes.medical_more.cohort import template_reports
    from recipes.medical_more.datasets import write_cohort

    write_cohort(template_reports(count), folder)
    return folder


@contextmanager
def tiny_medical_env(root: Path, extra: Sequence[str] = ()) -> Iterator:
    """Train the tiny run with ``FUSION_DATA_DIR=root/data`` and ``FUSION_RUNS_DIR=root/runs`` set; yields the run
    with the variables still set (pages and predictors read the data from there), and restores them on exit."""
    from recipes.runtime.train import train

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FUSION_DATA_DIR", str(root / "data"))
        patch.setenv("FUSION_RUNS_DIR", str(root / "runs"))
        yield train("medical_more", [*TINY_OVERRIDES, *extra])
