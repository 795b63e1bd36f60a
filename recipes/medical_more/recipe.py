"""The ``medical_more`` recipe (alias ``medical``): MoRE X-ray / ECG / report pre-training and diagnosis.

Scoring input (Parquet), every column optional per row: ``patient_id``; ``xray_path`` (DICOM, PNG or JPG);
``ecg_path`` (a WFDB record base path, PTB-XL layout, or a DICOM 12-lead waveform); ``report_text`` (FINDINGS /
IMPRESSION text). A row needs at least one modality; the others are scored as missing. ``score`` is the
probability of :data:`MAIN_FINDING`; known labels (``cardiomegaly``, ``effusion``, ``opacity``, ``normal``) and
``patient_id`` pass through.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch

from recipes.medical_more.labels import FINDINGS
from recipes.runtime.recipe import Recipe

if TYPE_CHECKING:
    from recipes.medical_more.data import MoreDataModule
    from recipes.medical_more.module import MoreModule
    from recipes.runtime.runs import Run

__all__ = ["MedicalRecipe", "MorePredictor", "RECIPE", "MAIN_FINDING", "INPUT_COLUMNS", "EncodedFrame"]

MAIN_FINDING = "cardiomegaly"
INPUT_COLUMNS = ("xray_path", "ecg_path", "report_text")
DEMO_ROWS = 200


@dataclass
class EncodedFrame:
    """A frame turned into model inputs: ``batch`` (all rows, absent values zero), ``present`` masks, and a per-row
    ``errors`` list (None where the row can be scored)."""

    batch: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    errors: list[str | None]

    @property
    def valid_rows(self) -> list[int]:
        return [i for i, e in enumerate(self.errors) if e is None]


class MorePredictor:
    """The trained module with the data settings of its run: reads files, embeds reports, gives probabilities."""

    def __init__(self, module: "MoreModule", data: dict[str, Any], run_path: Path | None = None) -> None:
        self.module, self.data, self.run_path = module.eval(), dict(data), run_path
        self.image_size = int(data.get("image_size", module.hparams.image_size))
        self.sampling_rate = int(data.get("sampling_rate", 100))
        self.ecg_samples = int(module.hparams.ecg_samples)
        self.report_encoder = str(module.hparams.report_encoder)
        self.findings = list(module.findings)

    # --------------------------------------------------------------------------------------- inputs
    def encode_texts(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The report inputs of this run's encoder (:func:`recipes.medical_more.data.report_inputs`)."""
        from recipes.medical_more.data import report_inputs

        hparams = self.module.hparams
        return report_inputs(texts, self.report_encoder, int(hparams.text_max_len), int(hparams.vocab_size))

    def encode_frame(self, frame: pl.DataFrame) -> EncodedFrame:
        from recipes.medical_more.loaders import InputFileError, load_ecg, load_xray

        size = frame.height
        xray = np.zeros((size, 1, self.image_size, self.image_size), dtype=np.float32)
        ecg = np.zeros((size, 12, self.ecg_samples), dtype=np.float32)
        present = {m: np.zeros(size, dtype=bool) for m in ("xray", "ecg", "report")}
        errors: list[str | None] = [None] * size
        column = {c: frame[c].to_list() if c in frame.columns else [None] * size for c in INPUT_COLUMNS}
        texts = [""] * size
        for i in range(size):
            problems = []
            path = column["xray_path"][i]
            if path is not None and str(path).strip():
                try:
                    xray[i, 0] = load_xray(str(path), self.image_size)
                    present["xray"][i] = True
                except InputFileError as error:
                    problems.append(f"xray_path: {error}")
            path = column["ecg_path"][i]
            if path is not None and str(path).strip():
                try:
                    ecg[i] = load_ecg(str(path), self.sampling_rate, self.ecg_samples)
                    present["ecg"][i] = True
                except InputFileError as error:
                    problems.append(f"ecg_path: {error}")
            text = column["report_text"][i]
            if text is not None and str(text).strip():
                texts[i], present["report"][i] = str(text), True
            if problems:
                errors[i] = "; ".join(problems)
            elif not any(present[m][i] for m in present):
                errors[i] = ("the row has no modality: give at least one of xray_path (DICOM/PNG/JPG), ecg_path "
                             "(WFDB record or DICOM waveform) or report_text")
        batch = {"xray": torch.from_numpy(xray), "ecg": torch.from_numpy(ecg), **self.encode_texts(texts)}
        masks = {m: torch.from_numpy(v) for m, v in present.items()}
        return EncodedFrame(batch, masks, errors)

    # -------------------------------------------------------------------------------------- outputs
    @torch.no_grad()
    def probabilities(self, batch: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B, F)`` finding probabilities."""
        return self.module(batch, present)

    @torch.no_grad()
    def embeddings(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{modality: (B, 128)}`` L2-normalised projections (for retrieval)."""
        return {m: torch.nn.functional.normalize(e, dim=-1) for m, e in self.module.model.encode(batch).embeddings.items()}

    def datamodule(self) -> "MoreDataModule":
        """The run's data module (from its config), set up."""
        from recipes.medical_more.data import MoreDataModule

        settings = {k: v for k, v in self.data.items() if not str(k).startswith("_")}
        datamodule = MoreDataModule(**settings)
        datamodule.setup()
        return datamodule


@dataclass
class MedicalRecipe(Recipe):
    """MoRE: contrastive X-ray/ECG/report pre-training, zero-shot and fine-tuned multi-finding diagnosis."""

    @property
    def module_class(self) -> type["MoreModule"]:
        from recipes.medical_more.module import MoreModule

        return MoreModule

    @property
    def datamodule_class(self) -> type["MoreDataModule"]:
        from recipes.medical_more.data import MoreDataModule

        return MoreDataModule

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
            "With the report present the head can read the finding from the text; `auroc_no_report` is the figure "
            "for images and signals. " + notes["Limitations"]
        )
        return notes

    # ----------------------------------------------------------------------------------------- scoring
    def load_predictor(self, run: "Run") -> MorePredictor:
        return MorePredictor(run.load_module(), dict((run.config.get("data") or {})), run.path)

    def score_frame(self, predictor: MorePredictor, frame: pl.DataFrame) -> pl.DataFrame:
        """``score`` = P(:data:`MAIN_FINDING`); ``p_<finding>`` for every finding the model was trained on (null for
        the others and for rows that could not be scored)."""
        encoded = predictor.encode_frame(frame)
        probabilities: dict[str, list[float | None]] = {f: [None] * frame.height for f in FINDINGS}
        rows = encoded.valid_rows
        if rows:
            index = torch.tensor(rows)
            batch = {k: v[index] for k, v in encoded.batch.items()}
            present = {k: v[index] for k, v in encoded.present.items()}
            values = predictor.probabilities(batch, present).double()  # (rows, findings)
            for column, finding in enumerate(predictor.findings):
                if finding in probabilities:
                    for row, value in zip(rows, values[:, column].tolist()):
                        probabilities[finding][row] = value
        return pl.DataFrame({
            "score": pl.Series(probabilities[MAIN_FINDING], dtype=pl.Float64),
            **{f"p_{f}": pl.Series(probabilities[f], dtype=pl.Float64) for f in FINDINGS},
            "error": pl.Series(encoded.errors, dtype=pl.Utf8),
        })

    def demo_input(self, run: "Run", path: Path) -> Path:
        """The first :data:`DEMO_ROWS` held-out patients written as real files (PNG radiographs, WFDB ECGs) next to
        ``path`` in ``<stem>_files/``; every 5th row lacks its ECG and every 7th its report, to show scoring with gaps."""
        from recipes.medical_more.loaders import write_ecg_wfdb, write_xray_png

        datamodule = self.load_predictor(run).datamodule()
        test = datamodule.splits["test"]
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
        from recipes.medical_more.explain import write_report

        return write_report(self, run, input_path, out_path, max_examples=max_examples)


RECIPE = MedicalRecipe(
    name="medical_more",
    configs_dir=Path(__file__).parent / "configs",
    aliases=("medical", "more"),
    links=(
        ("data.image_size", "model.image_size"),
        ("data.ecg_samples", "model.ecg_samples"),
        ("data.report_encoder", "model.report_encoder"),
        ("data.vocab_size", "model.vocab_size"),
        ("data.text_max_len", "model.text_max_len"),
        ("data.findings", "model.findings"),
    ),
    score_columns=(),
    passthrough=("patient_id", *FINDINGS),
    extra_outputs=tuple((f"p_{f}", "Float64") for f in FINDINGS),
    datasets=("iu-reports", "more-cohort"),
    description=(
        "MoRE-style contrastive pre-training of X-ray, 12-lead ECG and report encoders (report as anchor), "
        "zero-shot diagnosis from prompts, and a fused multi-finding head that scores with any modality missing."
    ),
)
