"""The ``dementia_speech`` recipe (alias ``dementia``): train, score and explain the speech dementia model.

Scoring input: ``speaker_id`` and any of ``wav_path`` (the recording), ``transcript`` (cleaned text, pauses ``(.)``
and fillers ``&uh`` as tokens) or ``cha_path`` (a CHAT file); a recording without either is transcribed with
pocketsphinx, a transcript without a recording is scored from the text alone (with a warning). ``label`` and ``domain``
are passed through when present. A recording at another sampling rate is resampled and a stereo one averaged to
mono; an empty, silent, too short, clipped, non-finite or unreadable file, or one with no speech, gets an error
naming the file and the fix (see :mod:`recipes.dementia_speech.predictor`). Probabilities are temperature-scaled
with the run's ``calibration.json`` (:mod:`recipes.runtime.calibration`), fit on the validation speakers when there are
at least 100 of them.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import torch

from recipes.dementia_speech.explain import write_report
from recipes.dementia_speech.predictor import SETTINGS_FILE, DementiaPredictor, check_text_ids, settings_of
from recipes.dementia_speech.readers.adress import load_cohort_frame
from recipes.runtime.calibration import calibrate, collect_logits, load_temperature
from recipes.runtime.recipe import Recipe

if TYPE_CHECKING:
    from recipes.dementia_speech.data import DementiaDataModule
    from recipes.runtime.runs import Run

__all__ = ["DementiaRecipe", "RECIPE"]


@dataclass
class DementiaRecipe(Recipe):
    """Dementia vs healthy control from a picture description: spectrogram transformer + MiniLM text, fused."""

    def on_train_end(self, run: "Run", datamodule: "DementiaDataModule") -> None:
        (run.path / SETTINGS_FILE).write_text(json.dumps(settings_of(datamodule), indent=2) + "\n")
        self._calibrate(run, datamodule)
        rows = datamodule.rows("test")
        self._save_test_predictions(run, datamodule, rows)

    def _calibrate(self, run: "Run", datamodule: "DementiaDataModule") -> None:
        """Fit the temperature on the whole validation split and save it (``calibration.json``); a split of fewer than
        100 speakers keeps T = 1 (the quick config's fold has 14–15; the large one's 192 are fit)."""
        logits, labels = collect_logits(run.load_module(), datamodule.val_dataloader(),
                                        lambda module, batch: (module.logit(batch), batch["label"]))
        calibrate(run.path, logits, labels)

    def _save_test_predictions(self, run: "Run", datamodule: "DementiaDataModule", rows: pl.DataFrame) -> None:
        """Save the held-out probabilities (``test_predictions.parquet``) the dashboard's cohort view plots."""
        predictor = DementiaPredictor(run.load_module(), {}, load_temperature(run.path))
        index = torch.as_tensor(datamodule.split_rows["test"])
        batch = {k: v[index] for k, v in datamodule.tensors.items()}
        prob = predictor.probability(batch).double().numpy()
        rows.select("speaker_id", "label", "domain", "transcript_source").with_columns(
            pl.Series("probability", prob)).write_parquet(run.path / "test_predictions.parquet")

    def card_notes(self, run: "Run") -> dict[str, str]:
        notes = super().card_notes(run)
        notes["Intended use"] = (
            "Research and teaching: how acoustic and linguistic markers of dementia can be fused and how a model "
            "trained on clean recordings adapts to telephone audio. Not a diagnostic device; a score is not a "
            "diagnosis and must not be used to make decisions about a person."
        )
        notes["Limitations"] = (
            "The default training data are synthetic (espeak-ng voices reading generated picture descriptions with "
            "planted markers of dementia, see data_cards/dementia-cohort.md); metrics on them say nothing about real "
            "patients. On real ADReSS data (data_cards/adress.md) the model is small and the data set has 156 "
            "speakers, so expect wide confidence intervals. " + notes["Limitations"]
        )
        return notes

    # --- scoring ------------------------------------------------------------------------------------------
    def load_predictor(self, run: "Run") -> DementiaPredictor:
        file = run.path / SETTINGS_FILE
        if not file.is_file():
            raise FileNotFoundError(
                f"run {run.path} has no {SETTINGS_FILE} (the audio front-end settings written at the end of training); "
                f"finish it with `fusion train {self.name} --resume {run.run_id}` or train a new run"
            )
        settings = json.loads(file.read_text())
        check_text_ids(run, settings)
        return DementiaPredictor(run.load_module(), settings, load_temperature(run.path))

    def score_frame(self, predictor: DementiaPredictor, frame: pl.DataFrame) -> pl.DataFrame:
        encoded = predictor.encode(frame)
        scores: list[float | None] = [None] * frame.height
        # one row at a time: a batched kernel rounds by its batch's shape, and a score must not depend on its chunk
        for position, i in enumerate(encoded.valid_rows):
            row = {k: v[position: position + 1] for k, v in encoded.batch.items()}
            scores[i] = float(predictor.probability(row).double()[0])
        return pl.DataFrame({"score": pl.Series(scores, dtype=pl.Float64),
                             "transcript_source": pl.Series(encoded.transcript_sources, dtype=pl.Utf8),
                             "warnings": pl.Series(encoded.warnings, dtype=pl.Utf8),
                             "error": pl.Series(encoded.errors, dtype=pl.Utf8)})

    def demo_input(self, run: "Run", path: Path) -> Path:
        """The run's held-out speakers, their recordings and transcripts copied into ``<stem>_files/`` next to
        ``path`` and named relative to it, so the file scores under ``fusion score``'s default data root."""
        frame = held_out_rows(run)
        files = path.parent / f"{path.stem}_files"
        files.mkdir(parents=True, exist_ok=True)

        def copied(column: str) -> list[str | None]:
            names = []
            for speaker, value in zip(frame["speaker_id"], frame[column]):
                if value is None:
                    names.append(None)
                    continue
                target = files / f"{speaker}{Path(value).suffix}"
                shutil.copyfile(value, target)
                names.append(str(target.relative_to(path.parent)))
            return names

        frame = frame.with_columns(pl.Series("wav_path", copied("wav_path"), dtype=pl.Utf8),
                                   pl.Series("cha_path", copied("cha_path"), dtype=pl.Utf8))
        frame.write_parquet(path)
        return path

    # --- explaining ---------------------------------------------------------------------------------------
    def explain(self, run: "Run", input_path: Path | None, out_path: Path, *, max_examples: int = 4) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        predictor = self.load_predictor(run)
        frame = pl.read_parquet(input_path) if input_path is not None else held_out_rows(run)
        source = f"`{Path(input_path).name}`" if input_path is not None else "the run's held-out test speakers"
        return write_report(run, predictor, frame, source, out_path, max_examples)


def held_out_rows(run: "Run") -> pl.DataFrame:
    """The run's labelled test rows (source and target domain) in the scoring schema, with the absolute paths of the
    recordings and transcripts in the run's data folder (what the dashboard reads in place)."""
    settings = json.loads((run.path / SETTINGS_FILE).read_text())
    frame = load_cohort_frame(Path(settings["root"]))
    return frame.filter((pl.col("split") == "test") & pl.col("label").is_not_null()).select(
        "speaker_id", "wav_path", "cha_path", "label", "domain")


RECIPE = DementiaRecipe(
    name="dementia_speech",
    configs_dir=Path(__file__).parent / "configs",
    module="recipes.dementia_speech.module:DementiaModule",
    datamodule="recipes.dementia_speech.data:DementiaDataModule",
    variant_field="fusion",
    aliases=("dementia",),
    links=(("data.text_dim", "model.config.text_dim"), ("data.image_size", "model.config.image_size"),
           ("data.acoustic", "model.config.acoustic"), ("data.acoustic_features", "model.config.acoustic_features"),
           ("data.text_encoder", "model.config.text_encoder"), ("data.text_vocab_size", "model.config.text_vocab_size")),
    modality_columns={"audio": ("wav_path",), "text": ("transcript", "cha_path")},
    score_columns=("speaker_id",),
    passthrough=("speaker_id", "label", "domain"),
    extra_outputs=(("transcript_source", "Utf8"),),  # "manual" (given or .cha) or "asr" (pocketsphinx)
    datasets=("dementia-cohort",),
    description=(
        "Dementia detection from spontaneous speech: log-Mel/Δ/ΔΔ spectrogram transformer and MiniLM transcript "
        "encoder with context-based attention, gated self-attention or cross-modal fusion, label smoothing and "
        "Sinkhorn optimal-transport domain adaptation."
    ),
)
