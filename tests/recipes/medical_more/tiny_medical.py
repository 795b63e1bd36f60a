"""A toy MoRE cohort (template reports written here, not IU text) and a toy training run, shared by the medical
recipe tests and the medical dashboard tests (loaded by file path: the test folders are not packages)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

TEMPLATES = {
    "cardiomegaly": ("The heart is enlarged.", "Heart size is normal."),
    "effusion": ("Small left pleural effusion.", "No pleural effusion."),
    "opacity": ("Patchy right basilar opacity.", "No focal consolidation."),
}


def toy_reports(count: int = 48, seed: int = 0) -> pl.DataFrame:
    """``count`` templated reports in the ``iu-reports`` parquet schema, labels drawn at random."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        findings = {name: bool(rng.random() < 0.4) for name in TEMPLATES}
        sentences = [TEMPLATES[name][0 if on else 1] for name, on in findings.items()]
        impression = "No acute disease." if not any(findings.values()) else "Abnormal chest."
        rows.append({"uid": f"TOY{i:03d}", "comparison": "", "indication": "cough", "findings": " ".join(sentences),
                     "impression": impression, "mesh": ["normal"] if not any(findings.values()) else [],
                     "text": f"FINDINGS: {' '.join(sentences)} IMPRESSION: {impression}"})
    return pl.DataFrame(rows, schema={"uid": pl.Utf8, "comparison": pl.Utf8, "indication": pl.Utf8, "findings": pl.Utf8,
                                      "impression": pl.Utf8, "mesh": pl.List(pl.Utf8), "text": pl.Utf8})


def toy_cohort_dir(folder: Path, count: int = 48) -> Path:
    """A ``more-cohort`` folder (``cohort.parquet``) built from :func:`toy_reports`."""
    from recipes.medical_more.data import build_cohort

    folder.mkdir(parents=True, exist_ok=True)
    build_cohort(toy_reports(count)).write_parquet(folder / "cohort.parquet")
    return folder


def tiny_overrides(data_dir: Path, runs_dir: Path) -> list[str]:
    return [
        "--config", "quick",
        "--data.data_dir", str(data_dir),
        "--data.report_encoder", "scratch",
        "--data.vocab_size", "128",
        "--data.text_max_len", "24",
        "--data.image_size", "16",
        "--data.sampling_rate", "50",
        "--data.max_patients", "null",
        "--data.batch_size", "8",
        "--model.patch_size", "8",
        "--model.ecg_patch", "50",
        "--model.encoder_dim", "16",
        "--model.depth", "1",
        "--model.num_heads", "2",
        "--model.projection_dim", "16",
        "--model.fusion_dim", "16",
        "--model.fusion_options", "{num_layers: 1, num_heads: 2}",
        "--model.pretrain_epochs", "1",
        "--trainer.max_epochs", "2",
        "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false",
        "--runs-dir", str(runs_dir),
    ]


def train_tiny_medical(root: Path):
    """Train the toy run under ``root`` (``root/data``, ``root/runs``); returns the ``Run``."""
    from recipes.runtime.train import train

    data = toy_cohort_dir(root / "data")
    return train("medical_more", tiny_overrides(data, root / "runs"))
