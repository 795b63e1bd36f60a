"""The ``medical_more`` recipe (alias ``medical``): MoRE X-ray / ECG / report pre-training and diagnosis.

Scoring input (Parquet), every column optional per row: ``patient_id``; ``xray_path`` (DICOM, PNG or JPG);
``ecg_path`` (a WFDB record base path, PTB-XL layout, or a DICOM 12-lead waveform); ``report_text`` (FINDINGS /
IMPRESSION text). A row needs at least one modality; the others are scored as missing. ``score`` is the
probability of :data:`MAIN_FINDING`; known labels (``cardiomegaly``, ``effusion``, ``opacity``, ``normal``) and
``patient_id`` pass through. ``modalities`` says which modalities a score used (``"xray+ecg+report"``); a modality
file that cannot be read leaves the row scored without it and says so in ``warnings``; ``error`` is for rows that
cannot be scored at all (no readable modality). Probabilities are temperature-scaled, one temperature per finding
fitted on the validation split at the end of training (``calibration/<finding>/calibration.json``; T = 1 below 100
validation patients).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import torch

from recipes.medical_more.explain import write_report
from recipes.medical_more.labels import FINDINGS
from recipes.medical_more.predictor import MAIN_FINDING, MorePredictor, calibrate_findings
from recipes.medical_more.readers import write_ecg_wfdb, write_xray_png
from recipes.runtime.recipe import Recipe

if TYPE_CHECKING:
    from recipes.runtime.runs import Run

__all__ = ["MedicalRecipe", "RECIPE", "DEMO_ROWS"]

DEMO_ROWS = 200


@dataclass
class MedicalRecipe(Recipe):
    """MoRE: contrastive X-ray/ECG/report pre-training, zero-shot and fine-tuned multi-finding diagnosis."""

    def card_notes(self, run: "Run") -> dict[str, str]:
        notes = super().card_notes(run)
        notes["Intended use"] = (
            "Research and demonstration of multimodal contrastive pre-training (MoRE) and missing-modality diagnosis. "
            "Not a medical device; never use it for decisions about patients."
        )
        notes["Limitations"] = (
            "The report texts are real (Indiana University, CC BY-NC-ND 4.0) but the radiographs and ECGs are "
            "synthesised from labels read from those reports, so the model learns the synthesiser's rules, not human "
            "anatomy or physiology. Labels come from MeSH terms and a simple negation rule and are noisy. "
            "With the report present the head can read the finding from the text; `auroc@without_report` (the "
            "robustness table) is the figure for images and signals. " + notes["Limitations"]
        )
        return notes

    def on_train_end(self, run: "Run", datamodule) -> None:
        """Fit one temperature per finding on the validation split (:func:`calibrate_findings`); scoring divides the
        head's logits by them."""
        calibrate_findings(run.path, run.load_module(), datamodule.val_dataloader())

    # ----------------------------------------------------------------------------------------- scoring
    def load_predictor(self, run: "Run") -> MorePredictor:
        return MorePredictor(run.load_module(), dict((run.config.get("data") or {})), run.path)

    def score_frame(self, predictor: MorePredictor, frame: pl.DataFrame) -> pl.DataFrame:
        """``score`` = P(:data:`MAIN_FINDING`); ``p_<finding>`` for every finding the model was trained on (null for
        the others and for rows that could not be scored); ``modalities``: what the score used (``"xray+report"``);
        ``warnings``: what a scored row was scored without and why; ``error``: why a row has no score."""
        encoded = predictor.encode_frame(frame)
        errors = list(encoded.errors)
        probabilities: dict[str, list[float | None]] = {f: [None] * frame.height for f in FINDINGS}
        rows = encoded.valid_rows
        if rows:
            # one row per forward pass: batched kernels round differently with the batch's size and contents, and a
            # row's score must not depend on the rows scored beside it (chunk size, order, a failed neighbour)
            values = torch.cat([predictor.probabilities(*encoded.rows([row])).double() for row in rows])  # (rows, findings)
            finite = torch.isfinite(values).all(dim=1).tolist()
            for row, ok in zip(rows, finite):
                if not ok:
                    errors[row] = ("the model gave a non-finite probability for this row; check its files (they were "
                                   "read without error) and report the row")
            for column, finding in enumerate(predictor.findings):
                if finding in probabilities:
                    for row, ok, value in zip(rows, finite, values[:, column].tolist()):
                        probabilities[finding][row] = value if ok else None
        used = [encoded.modalities_used(i) if errors[i] is None else None for i in range(frame.height)]
        return pl.DataFrame({
            "score": pl.Series(probabilities[MAIN_FINDING], dtype=pl.Float64),
            **{f"p_{f}": pl.Series(probabilities[f], dtype=pl.Float64) for f in FINDINGS},
            "modalities": pl.Series(used, dtype=pl.Utf8),
            "warnings": pl.Series([w if e is None else None for w, e in zip(encoded.warnings, errors)], dtype=pl.Utf8),
            "error": pl.Series(errors, dtype=pl.Utf8),
        })

    def demo_input(self, run: "Run", path: Path) -> Path:
        """The first :data:`DEMO_ROWS` held-out patients written as real files (PNG radiographs, WFDB ECGs) next to
        ``path`` in ``<stem>_files/``; every 5th row lacks its ECG and every 7th its report, to show scoring with gaps."""
        datamodule = self.load_predictor(run).datamodule()
        test = datamodule.dataset("test")
        cohort = datamodule.cohort
        by_index = {int(i): r for r, i in enumerate(cohort["index"].to_list())}
        files = path.parent / f"{path.stem}_files"
        records = []
        for row in range(min(DEMO_ROWS, len(test))):
            sample = test[row]
            record = cohort.row(by_index[int(sample["index"])], named=True)
            pid = record["patient_id"]
            xray = write_xray_png(sample["xray"][0].numpy(), files / "xray" / f"{pid}.png")
            ecg = write_ecg_wfdb(sample["ecg"].numpy(), files / "ecg" / pid, datamodule.sampling_rate)
            records.append({
                "patient_id": pid,
                "xray_path": str(xray),
                "ecg_path": None if row % 5 == 4 else str(ecg),
                "report_text": None if row % 7 == 6 else record["text"],
                **{f: int(record[f]) for f in FINDINGS},
            })
        path.parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame(records, schema={"patient_id": pl.Utf8, "xray_path": pl.Utf8, "ecg_path": pl.Utf8,
                                      "report_text": pl.Utf8, **{f: pl.Int8 for f in FINDINGS}}).write_parquet(path)
        return path

    # --------------------------------------------------------------------------------------- explaining
    def explain(self, run: "Run", input_path: Path | None, out_path: Path, *, max_examples: int = 4) -> Path:
        """The report of :func:`recipes.medical_more.explain.write_report` on ``input_path``, or on the run's held-out
        patients written as real files (PNG radiographs, WFDB ECGs) when None."""
        predictor = self.load_predictor(run)
        with tempfile.TemporaryDirectory() as scratch:  # the held-out files live until the report has read them
            if input_path is None:
                input_path, source = self.demo_input(run, Path(scratch) / "held_out.parquet"), (
                    "the run's held-out test split (written as PNG radiographs and WFDB ECGs)")
            else:
                source = f"`{Path(input_path).name}`"
            return write_report(predictor, pl.read_parquet(input_path), out_path, title=f"{self.name} — MoRE explained",
                                subtitle=f"run `{run.run_id}`; input: {source}", metrics=run.metrics,
                                max_examples=max_examples)


RECIPE = MedicalRecipe(
    name="medical_more",
    configs_dir=Path(__file__).parent / "configs",
    module="recipes.medical_more.module:MoreModule",
    datamodule="recipes.medical_more.data:MoreDataModule",
    variant_field="fusion",
    aliases=("medical", "more"),
    links=(
        ("data.image_size", "model.config.image_size"),
        ("data.ecg_samples", "model.config.ecg_samples"),
        ("data.report_encoder", "model.config.report_encoder"),
        ("data.vocab_size", "model.config.vocab_size"),
        ("data.text_max_len", "model.config.text_max_len"),
        ("data.findings", "model.config.findings"),
    ),
    modality_columns={"xray": ("xray_path",), "ecg": ("ecg_path",), "report": ("report_text",)},
    score_columns=(),
    passthrough=("patient_id", *FINDINGS),
    extra_outputs=(*((f"p_{f}", "Float64") for f in FINDINGS), ("modalities", "Utf8")),
    datasets=("iu-reports", "more-cohort"),
    description=(
        "MoRE-style contrastive pre-training of X-ray, 12-lead ECG and report encoders (report as anchor), "
        "zero-shot diagnosis from prompts, and a fused multi-finding head that scores with any modality missing."
    ),
)
