"""The ``dementia_speech`` recipe (alias ``dementia``): train, score and explain the speech dementia model.

Scoring input: ``speaker_id``, ``wav_path``; optional ``transcript`` (cleaned text, pauses ``(.)`` and fillers
``&uh`` as tokens) or ``cha_path`` (a CHAT file); without either, the recording is transcribed with pocketsphinx.
``label`` and ``domain`` are passed through when present. A recording at another sampling rate is resampled and a
stereo one averaged to mono; an empty, silent, too short, clipped or unreadable file gets an error naming the file
and the fix.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import polars as pl
import torch

from fusion_core.encoders.text import HashTokenizer
from recipes.runtime.recipe import Recipe

if TYPE_CHECKING:
    from recipes.dementia_speech.data import DementiaDataModule
    from recipes.dementia_speech.module import DementiaModule
    from recipes.runtime.runs import Run

__all__ = ["DementiaRecipe", "DementiaPredictor", "EncodedRows", "RECIPE", "SETTINGS_FILE"]

SETTINGS_FILE = "features.json"


class EncodedRows(NamedTuple):
    """Model inputs of the rows that could be read, with per-row errors and what the rows were read as."""

    batch: dict[str, torch.Tensor]
    valid_rows: list[int]
    errors: list[str | None]
    transcripts: list[str | None]
    transcript_sources: list[str | None]
    waveforms: list[np.ndarray | None]


class DementiaPredictor(NamedTuple):
    """The trained module and the front-end settings it was trained with."""

    module: "DementiaModule"
    settings: dict[str, Any]

    @property
    def features(self):
        from recipes.dementia_speech.data import FeatureConfig

        return FeatureConfig(self.settings["features"])

    def encode(self, frame: pl.DataFrame) -> EncodedRows:
        from recipes.dementia_speech.chat import read_chat
        from recipes.dementia_speech.data import SAMPLE_RATE, audio_images, encode_texts, load_waveform, transcribe

        n = frame.height
        errors: list[str | None] = [None] * n
        transcripts: list[str | None] = [None] * n
        sources: list[str | None] = [None] * n
        waves: list[np.ndarray | None] = [None] * n
        text_column = frame["transcript"].to_list() if "transcript" in frame.columns else [None] * n
        cha_column = frame["cha_path"].to_list() if "cha_path" in frame.columns else [None] * n
        for i, wav_path in enumerate(frame["wav_path"].to_list()):
            try:
                if wav_path is None or not str(wav_path).strip():
                    raise ValueError("wav_path is empty; give the path of the recording (a WAV file)")
                waves[i] = load_waveform(wav_path, SAMPLE_RATE, self.features["max_seconds"])
                if text_column[i] is not None and str(text_column[i]).strip():
                    transcripts[i], sources[i] = str(text_column[i]).strip(), "manual"
                elif cha_column[i] is not None and str(cha_column[i]).strip():
                    transcripts[i], sources[i] = read_chat(cha_column[i]).text, "manual"
                else:
                    transcripts[i], sources[i] = transcribe(waves[i]), "asr"
            except (ValueError, OSError) as error:
                errors[i] = str(error)
                waves[i] = None
        valid = [i for i in range(n) if errors[i] is None]
        batch: dict[str, torch.Tensor] = {}
        if valid:
            batch["image"] = audio_images([waves[i] for i in valid], self.features)
            batch.update(encode_texts([transcripts[i] for i in valid], self.settings["text_encoder"],
                                      self.settings["max_text_tokens"], self.settings["text_vocab_size"]))
        return EncodedRows(batch, valid, errors, transcripts, sources, waves)

    @torch.no_grad()
    def probability(self, batch: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.module.probability(batch, present)


def _check_text_ids(run: "Run", settings: dict[str, Any]) -> None:
    """A from-scratch text branch only reads the word ids it was trained on: refuse a run of another hashing scheme
    (runs from before the scheme was recorded used ``1 + crc32 mod (V - 1)`` over whitespace-split words)."""
    trained = settings.get("text_ids") or "unrecorded 1 + crc32 mod (V - 1)"
    if settings.get("text_encoder") == "scratch" and trained != HashTokenizer.SCHEME:
        raise ValueError(
            f"run {run.path} embeds word ids of the {trained!r} hashing scheme; the text branch now reads "
            f"{HashTokenizer.SCHEME!r} ids, so its scores would be wrong. Train a new run "
            "(fusion train dementia_speech --data.text_encoder scratch ...)"
        )


def _settings_of(datamodule: "DementiaDataModule") -> dict[str, Any]:
    h = datamodule.hparams
    settings = {"features": dict(datamodule.features), "text_encoder": h.text_encoder,
                "max_text_tokens": h.max_text_tokens, "text_vocab_size": h.text_vocab_size,
                "root": str(datamodule.root)}
    if h.text_encoder == "scratch":
        settings["text_ids"] = HashTokenizer.SCHEME  # the word ids its embedding table was trained on
    return settings


@dataclass
class DementiaRecipe(Recipe):
    """Dementia vs healthy control from a picture description: spectrogram transformer + MiniLM text, fused."""

    @property
    def module_class(self) -> type["DementiaModule"]:
        from recipes.dementia_speech.module import DementiaModule

        return DementiaModule

    @property
    def datamodule_class(self) -> type["DementiaDataModule"]:
        from recipes.dementia_speech.data import DementiaDataModule

        return DementiaDataModule

    def on_train_end(self, run: "Run", datamodule: "DementiaDataModule") -> None:
        (run.path / SETTINGS_FILE).write_text(json.dumps(_settings_of(datamodule), indent=2) + "\n")
        rows = datamodule.rows("test")
        self._save_test_predictions(run, datamodule, rows)

    def _save_test_predictions(self, run: "Run", datamodule: "DementiaDataModule", rows: pl.DataFrame) -> None:
        """Save the held-out probabilities (``test_predictions.parquet``) the dashboard's cohort view plots."""
        module = run.load_module()
        index = torch.as_tensor(datamodule.split_rows["test"])
        batch = {k: v[index] for k, v in datamodule.tensors.items()}
        with torch.no_grad():
            prob = module.probability(batch).double().numpy()
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
        _check_text_ids(run, settings)
        return DementiaPredictor(run.load_module(), settings)

    def score_frame(self, predictor: DementiaPredictor, frame: pl.DataFrame) -> pl.DataFrame:
        encoded = predictor.encode(frame)
        scores: list[float | None] = [None] * frame.height
        if encoded.valid_rows:
            for i, p in zip(encoded.valid_rows, predictor.probability(encoded.batch).double().tolist()):
                scores[i] = p
        return pl.DataFrame({"score": pl.Series(scores, dtype=pl.Float64),
                             "transcript_source": pl.Series(encoded.transcript_sources, dtype=pl.Utf8),
                             "error": pl.Series(encoded.errors, dtype=pl.Utf8)})

    def demo_input(self, run: "Run", path: Path) -> Path:
        frame = _held_out(run)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(path)
        return path

    # --- explaining ---------------------------------------------------------------------------------------
    def explain(self, run: "Run", input_path: Path | None, out_path: Path, *, max_examples: int = 4) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        from recipes.dementia_speech.explain import write_report

        predictor = self.load_predictor(run)
        frame = pl.read_parquet(input_path) if input_path is not None else _held_out(run)
        source = f"`{Path(input_path).name}`" if input_path is not None else "the run's held-out test speakers"
        return write_report(run, predictor, frame, source, out_path, max_examples)


def _held_out(run: "Run") -> pl.DataFrame:
    """The run's labelled test rows (source and target domain) in the scoring schema."""
    from recipes.dementia_speech.data import load_cohort_frame

    settings = json.loads((run.path / SETTINGS_FILE).read_text())
    frame = load_cohort_frame(Path(settings["root"]))
    return frame.filter((pl.col("split") == "test") & pl.col("label").is_not_null()).select(
        "speaker_id", "wav_path", "cha_path", "label", "domain")


RECIPE = DementiaRecipe(
    name="dementia_speech",
    configs_dir=Path(__file__).parent / "configs",
    aliases=("dementia",),
    links=(("data.text_dim", "model.text_dim"), ("data.image_size", "model.image_size"),
           ("data.text_encoder", "model.text_encoder"), ("data.text_vocab_size", "model.text_vocab_size")),
    score_columns=("speaker_id", "wav_path"),
    passthrough=("speaker_id", "label", "domain"),
    extra_outputs=(("transcript_source", "Utf8"),),  # "manual" (given or .cha) or "asr" (pocketsphinx)
    datasets=("dementia-cohort",),
    description=(
        "Dementia detection from spontaneous speech: log-Mel/Δ/ΔΔ spectrogram transformer and MiniLM transcript "
        "encoder with context-based attention, gated self-attention or cross-modal fusion, label smoothing and "
        "Sinkhorn optimal-transport domain adaptation."
    ),
)
