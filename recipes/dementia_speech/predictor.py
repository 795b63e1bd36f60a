"""The trained dementia model as scoring, the report and the dashboard use it: the module with the front-end
settings it was trained with (``features.json`` in the run), and how rows of a scoring file become its inputs."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import polars as pl
import torch

from fusion_core.encoders.text import HashTokenizer
from recipes.dementia_speech.audio import SAMPLE_RATE, FeatureConfig, audio_images, load_waveform, transcribe
from recipes.dementia_speech.readers.chat import read_chat
from recipes.dementia_speech.text import encode_texts

if TYPE_CHECKING:
    from recipes.dementia_speech.data import DementiaDataModule
    from recipes.dementia_speech.module import DementiaModule
    from recipes.runtime.runs import Run

__all__ = ["DementiaPredictor", "EncodedRows", "SETTINGS_FILE", "check_text_ids", "settings_of"]

#: the front-end settings of a run, written at the end of training
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
    def features(self) -> FeatureConfig:
        return FeatureConfig(self.settings["features"])

    def encode(self, frame: pl.DataFrame) -> EncodedRows:
        """Read each row's recording (``wav_path``) and transcript (``transcript``, else ``cha_path``, else ASR);
        a row that cannot be read gets an error instead of inputs."""
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


def check_text_ids(run: "Run", settings: dict[str, Any]) -> None:
    """A from-scratch text branch only reads the word ids it was trained on: refuse a run of another hashing scheme
    (runs from before the scheme was recorded used ``1 + crc32 mod (V - 1)`` over whitespace-split words)."""
    trained = settings.get("text_ids") or "unrecorded 1 + crc32 mod (V - 1)"
    if settings.get("text_encoder") == "scratch" and trained != HashTokenizer.SCHEME:
        raise ValueError(
            f"run {run.path} embeds word ids of the {trained!r} hashing scheme; the text branch now reads "
            f"{HashTokenizer.SCHEME!r} ids, so its scores would be wrong. Train a new run "
            "(fusion train dementia_speech --data.text_encoder scratch ...)"
        )


def settings_of(datamodule: "DementiaDataModule") -> dict[str, Any]:
    """What :data:`SETTINGS_FILE` holds: the audio front end, the text input and the data folder of a run."""
    h = datamodule.hparams
    settings = {"features": dict(datamodule.features), "text_encoder": h.text_encoder,
                "max_text_tokens": h.max_text_tokens, "text_vocab_size": h.text_vocab_size,
                "root": str(datamodule.root)}
    if h.text_encoder == "scratch":
        settings["text_ids"] = HashTokenizer.SCHEME  # the word ids its embedding table was trained on
    return settings
