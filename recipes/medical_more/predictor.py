"""What scoring and explaining run: a trained :class:`MoreModule` with the data settings of its run, reading real
files (:mod:`recipes.medical_more.readers`) and report texts into model inputs.

Shared by :mod:`recipes.medical_more.recipe` (scoring, the demo input) and :mod:`recipes.medical_more.explain` (the
report), neither of which imports the other's module for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recipes.medical_more.config import MODALITIES
from recipes.medical_more.data import MoreDataModule, report_inputs
from recipes.medical_more.module import MoreModule
from recipes.medical_more.readers import InputFileError, load_ecg, load_xray
from recipes.runtime.calibration import MIN_CALIBRATION_ROWS, Calibration, calibrate, collect_logits, load_temperature
from recipes.runtime.inputs import RowInputError, resolve_input_path

__all__ = ["MorePredictor", "EncodedFrame", "MAIN_FINDING", "INPUT_COLUMNS", "MAX_REPORT_CHARS", "CALIBRATION_DIR",
           "report_value", "calibrate_findings", "finding_temperatures"]

# one temperature per finding, each in the runtime's own file: <run>/calibration/<finding>/calibration.json
CALIBRATION_DIR = "calibration"

MAIN_FINDING = "cardiomegaly"
INPUT_COLUMNS = ("xray_path", "ecg_path", "report_text")
# the report encoder reads the first 128 word pieces; a longer text is cut here so a huge cell costs nothing
MAX_REPORT_CHARS = 20_000


def report_value(value: Any) -> str:
    """A ``report_text`` cell as the text the encoder reads ("" for blank), or :class:`RowInputError` for a value that
    is not text."""
    if not isinstance(value, str):
        raise RowInputError(f"report_text: expected the report as text, got {type(value).__name__}; store report_text "
                            "as a string column (FINDINGS / IMPRESSION text)")
    return " ".join(value[:MAX_REPORT_CHARS].split())


def _column_message(column: str, error: Exception) -> str:
    """``"<column>: <message>"``, the column named once."""
    text = str(error)
    return text if text.startswith(f"{column}:") else f"{column}: {text}"


def _head_logits(module: MoreModule, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (2B, F), labels (2B, F))``: the head on every row with the modalities it has, then without its report."""
    present = module.present_of(batch)
    embeddings = module.model.encode(batch).embeddings
    without_report = {**present, "report": torch.zeros_like(present["report"])}
    logits = [module.model.diagnose(embeddings, mask).logits for mask in (present, without_report)]
    return torch.cat(logits), torch.cat([batch["labels"], batch["labels"]])


def calibrate_findings(run_dir: Path, module: MoreModule, batches) -> dict[str, Calibration]:
    """Fit one temperature per finding on the validation ``batches`` and save each (``calibration/<finding>/``,
    :func:`recipes.runtime.calibration.calibrate`). Every row counts twice, scored with the modalities it has and
    without its report: with the report the head reads the finding from the text and is near certain, without it the
    radiograph and ECG decide, and rows arrive at scoring both ways. A split of fewer than ``MIN_CALIBRATION_ROWS``
    patients, or a finding with one class only there, keeps T = 1 (:func:`~recipes.runtime.calibration.calibrate`)."""
    logits, labels = collect_logits(module, batches, _head_logits)
    return {finding: calibrate(Path(run_dir) / CALIBRATION_DIR / finding, logits[:, column], labels[:, column],
                               min_rows=2 * MIN_CALIBRATION_ROWS)  # each patient counts twice
            for column, finding in enumerate(module.findings)}


def finding_temperatures(run_dir: Path | None, findings: list[str]) -> torch.Tensor:
    """``(F,)`` the run's temperature of each finding (1.0 for a finding, or a run, without one)."""
    if run_dir is None:
        return torch.ones(len(findings))
    return torch.tensor([load_temperature(Path(run_dir) / CALIBRATION_DIR / f) for f in findings])


@dataclass
class EncodedFrame:
    """A frame turned into model inputs: ``batch`` (all rows, absent values zero), ``present`` masks, and per row
    ``errors`` (None where the row can be scored) and ``warnings`` (None, or what the row is scored without and why)."""

    batch: dict[str, torch.Tensor]
    present: dict[str, torch.Tensor]
    errors: list[str | None]
    warnings: list[str | None]

    @property
    def valid_rows(self) -> list[int]:
        return [i for i, e in enumerate(self.errors) if e is None]

    def rows(self, rows: list[int]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(batch, present)`` of the given rows."""
        index = torch.tensor(rows, dtype=torch.long)
        return {k: v[index] for k, v in self.batch.items()}, {k: v[index] for k, v in self.present.items()}

    def modalities_used(self, row: int) -> str:
        """``"xray+ecg+report"``: the modalities row ``row`` is scored from, in :data:`MODALITIES` order."""
        return "+".join(m for m in MODALITIES if bool(self.present[m][row]))


class MorePredictor:
    """The trained module with the data settings of its run: reads files, embeds reports, gives probabilities."""

    def __init__(self, module: MoreModule, data: dict[str, Any], run_path: Path | None = None) -> None:
        self.module, self.data, self.run_path = module.eval(), dict(data), run_path
        config = module.config
        self.image_size = int(data.get("image_size", config.image_size))
        self.sampling_rate = int(data.get("sampling_rate", 100))
        self.ecg_samples = int(config.ecg_samples)
        self.report_encoder = str(config.report_encoder)
        self.findings = list(module.findings)
        self.temperatures = finding_temperatures(run_path, self.findings)  # (F,), all 1 for an uncalibrated run

    # --------------------------------------------------------------------------------------- inputs
    def encode_texts(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The report inputs of this run's encoder (:func:`recipes.medical_more.data.report_inputs`)."""
        config = self.module.config
        return report_inputs(texts, self.report_encoder, int(config.text_max_len), int(config.vocab_size))

    def encode_frame(self, frame: pl.DataFrame) -> EncodedFrame:
        """Read every row's files (paths through :func:`recipes.runtime.inputs.resolve_input_path`) and texts. A
        modality that cannot be read is left out of the row with a warning naming its column, file and fix; a row
        left with no modality gets that as its error."""
        size = frame.height
        xray = np.zeros((size, 1, self.image_size, self.image_size), dtype=np.float32)
        ecg = np.zeros((size, 12, self.ecg_samples), dtype=np.float32)
        present = {m: np.zeros(size, dtype=bool) for m in MODALITIES}
        errors: list[str | None] = [None] * size
        warnings: list[str | None] = [None] * size
        column = {c: frame[c].to_list() if c in frame.columns else [None] * size for c in INPUT_COLUMNS}
        texts = [""] * size
        for i in range(size):
            problems = []
            value = column["xray_path"][i]
            if value is not None:
                try:
                    xray[i, 0] = load_xray(resolve_input_path(value, "xray_path"), self.image_size)
                    present["xray"][i] = True
                except (InputFileError, RowInputError) as error:
                    problems.append(_column_message("xray_path", error))
            value = column["ecg_path"][i]
            if value is not None:
                try:
                    ecg[i] = load_ecg(resolve_input_path(value, "ecg_path"), self.sampling_rate, self.ecg_samples)
                    present["ecg"][i] = True
                except (InputFileError, RowInputError) as error:
                    problems.append(_column_message("ecg_path", error))
            value = column["report_text"][i]
            if value is not None:
                try:
                    texts[i] = report_value(value)
                    present["report"][i] = bool(texts[i])
                except RowInputError as error:
                    problems.append(str(error))
            if any(present[m][i] for m in MODALITIES):
                if problems:  # "; " separates warnings, so a message's own "; " before its fix becomes " — "
                    warnings[i] = "; ".join(f"scored without {p.replace('; ', ' — ')}" for p in problems)
            elif problems:
                errors[i] = "; ".join(problems)
            else:
                errors[i] = ("the row has no modality: give at least one of xray_path (DICOM/PNG/JPG), ecg_path "
                             "(WFDB record or DICOM waveform) or report_text")
        batch = {"xray": torch.from_numpy(xray), "ecg": torch.from_numpy(ecg), **self.encode_texts(texts)}
        masks = {m: torch.from_numpy(v) for m, v in present.items()}
        return EncodedFrame(batch, masks, errors, warnings)

    # -------------------------------------------------------------------------------------- outputs
    @torch.no_grad()
    def probabilities(self, batch: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B, F)`` finding probabilities: the head's logits divided by each finding's temperature, sigmoid."""
        model = self.module.model
        logits = model.diagnose(model.encode(batch).embeddings, present).logits
        return torch.sigmoid(logits / self.temperatures.to(logits))

    @torch.no_grad()
    def embeddings(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{modality: (B, 128)}`` L2-normalised projections (for retrieval)."""
        return {m: torch.nn.functional.normalize(e, dim=-1) for m, e in self.module.model.encode(batch).embeddings.items()}

    def datamodule(self) -> MoreDataModule:
        """The run's data module (from its config), set up."""
        settings = {k: v for k, v in self.data.items() if not str(k).startswith("_")}
        datamodule = MoreDataModule(**settings)
        datamodule.setup()
        return datamodule
