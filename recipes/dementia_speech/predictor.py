"""The trained dementia model as scoring, the report and the dashboard use it: the module with the front-end
settings it was trained with (``features.json`` in the run) and its temperature (``calibration.json``), and how rows
of a scoring file become its inputs.

A row is read on its own, so its inputs never depend on its neighbours: every path goes through
:func:`recipes.runtime.inputs.resolve_input_path`, the VAD and the recogniser start fresh for each recording.
What a row is scored without goes to its ``warnings``; a row that cannot be scored gets an ``error``:

- a recording that cannot be used (missing, not audio, empty, silent, clipped, non-finite or out-of-range samples)
  is an error when the row has no transcript, else the row is scored from the transcript alone, with a warning;
- a recording in which the VAD finds no speech is an error (its transcript, if any, is not of this recording) unless
  openSMILE's pitch tracker hears voiced, intonated sound in it — as much as in the least voiced training recording,
  with a margin (reverberant and telephone recordings the VAD misses; a warning then says the pause markers are
  unreliable); noise has no voiced frame and a tone a flat pitch, so both stay errors;
- a recording shorter than the shortest training recording is scored, with a warning.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import polars as pl
import torch

from fusion_core.encoders.text import HashTokenizer
from recipes.dementia_speech.audio import SAMPLE_RATE, AudioInputError, FeatureConfig, audio_images, load_waveform, transcribe
from recipes.dementia_speech.readers.chat import read_chat
from recipes.dementia_speech.text import encode_texts
from recipes.runtime.calibration import calibrated_probability
from recipes.runtime.inputs import RowInputError, resolve_input_path

if TYPE_CHECKING:
    from recipes.dementia_speech.data import DementiaDataModule
    from recipes.dementia_speech.module import DementiaModule
    from recipes.runtime.runs import Run

__all__ = ["DementiaPredictor", "EncodedRows", "SETTINGS_FILE", "MIN_SPEECH_SECONDS", "DEFAULT_SPEECH_FLOORS",
           "check_text_ids", "settings_of"]

#: the front-end settings of a run, written at the end of training
SETTINGS_FILE = "features.json"
#: a recording with less speech than this (VAD) has no speech to score, unless the pitch tracker hears voicing
MIN_SPEECH_SECONDS = 0.3
#: the voicing a recording the VAD hears no speech in must have to be scored (:class:`acoustic.Voicing`), for runs that
#: did not record their own (``acoustic="vit"``, older runs): half the minimum over the 400 training recordings (320
#: source, 80 telephone) of the large v2 cohort — voiced fraction 0.0084, pitch variation 0.0106 — where 3 of the 80
#: telephone training recordings have under 0.3 s of VAD speech; white, brown and hum noise give exactly 0
DEFAULT_SPEECH_FLOORS = {"voiced_fraction": 0.0042, "pitch_variation": 0.0053}


class EncodedRows(NamedTuple):
    """Model inputs of the rows that could be read, with per-row errors and what the rows were read as."""

    batch: dict[str, torch.Tensor]
    valid_rows: list[int]
    errors: list[str | None]
    transcripts: list[str | None]
    transcript_sources: list[str | None]
    waveforms: list[np.ndarray | None]
    warnings: list[str | None]
    markers: list[Any]


class _Row(NamedTuple):
    wave: np.ndarray | None
    markers: Any  # AcousticMarkers of the recording, None without audio
    vector: np.ndarray | None  # the model's acoustic marker input
    transcript: str
    source: str
    warnings: list[str]


class DementiaPredictor(NamedTuple):
    """The trained module, the front-end settings it was trained with, and its temperature (1.0: uncalibrated)."""

    module: "DementiaModule"
    settings: dict[str, Any]
    temperature: float = 1.0

    @property
    def features(self) -> FeatureConfig:
        return FeatureConfig(self.settings["features"])

    @property
    def acoustic(self) -> str:
        return self.settings.get("acoustic", "vit")

    @property
    def speech_floors(self) -> dict[str, float]:
        """The voicing below which a recording the VAD hears no speech in is refused (``settings["speech_floors"]``,
        else :data:`DEFAULT_SPEECH_FLOORS`)."""
        return self.settings.get("speech_floors") or DEFAULT_SPEECH_FLOORS

    def encode(self, frame: pl.DataFrame) -> EncodedRows:
        """Read each row's recording (``wav_path``) and transcript (``transcript``, else ``cha_path``, else ASR of the
        recording); a row that cannot be scored gets an error instead of inputs (see the module docstring)."""
        n = frame.height
        errors: list[str | None] = [None] * n
        rows: list[_Row | None] = [None] * n
        columns = {c: frame[c].to_list() if c in frame.columns else [None] * n for c in ("wav_path", "transcript", "cha_path")}
        for i in range(n):
            try:
                rows[i] = self._read_row(columns["wav_path"][i], columns["transcript"][i], columns["cha_path"][i])
            except (ValueError, OSError) as error:
                errors[i] = str(error)
        valid = [i for i in range(n) if rows[i] is not None]
        batch: dict[str, torch.Tensor] = {}
        if valid:
            silence = np.zeros(SAMPLE_RATE, dtype=np.float32)  # stands in for a missing recording; marked absent
            batch["image"] = audio_images([rows[i].wave if rows[i].wave is not None else silence for i in valid],
                                          self.features)
            batch["audio_present"] = torch.tensor([rows[i].wave is not None for i in valid])
            if self.acoustic != "vit":
                width = self.module.config.acoustic_features
                batch["acoustic"] = torch.from_numpy(np.stack(
                    [rows[i].vector if rows[i].vector is not None else np.zeros(width) for i in valid]).astype(np.float32))
            batch.update(encode_texts([rows[i].transcript for i in valid], self.settings["text_encoder"],
                                      self.settings["max_text_tokens"], self.settings["text_vocab_size"]))
        # the warnings column joins several with "; ", so one warning keeps none inside
        warnings = [("; ".join(w.replace("; ", ", ") for w in r.warnings) or None) if r is not None else None
                    for r in rows]
        return EncodedRows(batch, valid, errors, [r.transcript if r else None for r in rows],
                           [r.source if r else None for r in rows], [r.wave if r else None for r in rows], warnings,
                           [r.markers if r else None for r in rows])

    def _read_row(self, wav_value: Any, text_value: Any, cha_value: Any) -> _Row:
        from recipes.dementia_speech.acoustic import (
            acoustic_markers, egemaps, recording_features, speech_probability, voicing,
        )

        has_text = "text" in self.module.modalities
        warnings: list[str] = []
        transcript, source = None, None
        if text_value is not None:
            if not isinstance(text_value, str):
                raise RowInputError(f"transcript: expected text, got {type(text_value).__name__}; store transcript as "
                                    "a string column")
            if text_value.strip():
                transcript, source = text_value.strip(), "manual"
        if transcript is None and cha_value is not None and has_text:
            try:
                transcript, source = read_chat(resolve_input_path(cha_value, "cha_path")).text, "manual"
            except (ValueError, OSError) as error:
                if wav_value is None:
                    raise RowInputError(f"cha_path: {_reason(error)}") from None
                warnings.append(f"scored without cha_path: {_reason(error)}; the recording was transcribed instead")
        if not has_text:
            transcript = None  # an audio-only run reads no transcript
        if wav_value is None:
            if not has_text:
                raise RowInputError("wav_path is empty, and this run has only the acoustic branch; give the recording")
            if transcript is None:
                raise RowInputError("wav_path, transcript and cha_path are all empty; give the recording (wav_path), "
                                    "its transcript, or both")
            warnings.append("scored without wav_path: no recording given; scored from the transcript alone")
            return _Row(None, None, None, transcript, source, warnings)
        try:
            path = resolve_input_path(wav_value, "wav_path")
            wave = load_waveform(path, SAMPLE_RATE, self.features["max_seconds"])
        except (AudioInputError, RowInputError) as error:
            if transcript is None:
                raise RowInputError(f"wav_path: {_reason(error)}") from None
            warnings.append(f"scored without wav_path: {_reason(error)}; scored from the transcript alone")
            return _Row(None, None, None, transcript, source, warnings)
        probability = speech_probability([wave])[0]  # one recording, a fresh VAD state
        markers = acoustic_markers(wave, probability)
        functionals = None
        if markers.speech_seconds < MIN_SPEECH_SECONDS:
            functionals = egemaps(wave)
            heard, floors = voicing(functionals), self.speech_floors
            if heard.voiced_fraction < floors["voiced_fraction"] or heard.pitch_variation < floors["pitch_variation"]:
                raise RowInputError(
                    f"wav_path: {path}: no speech detected ({markers.speech_seconds:.2f} s of voice activity and "
                    f"{heard.voiced_fraction:.1%} voiced in {markers.total_seconds:.1f} s); check that wav_path is the "
                    "participant's recording of the picture description"
                )
            warnings.append(f"wav_path: the voice-activity detector heard only {markers.speech_seconds:.2f} s of speech "
                            f"in {markers.total_seconds:.1f} s (a reverberant or noisy recording?), the pitch tracker "
                            f"found {heard.voiced_fraction:.0%} of it voiced: scored, but its pause markers are unreliable")
        shortest = float(self.settings.get("shortest_training_seconds") or 0.0)
        if markers.total_seconds < shortest:
            warnings.append(f"wav_path: the recording is {markers.total_seconds:.1f} s long, shorter than every "
                            f"training recording (>= {shortest:.1f} s), so its score is less reliable; record a "
                            "longer picture description")
        vector = None
        if self.acoustic != "vit" and "audio" in self.module.modalities:
            vector, markers = recording_features(wave, probability, functionals)
        if transcript is None and has_text:
            transcript, source = transcribe(wave), "asr"
            if not transcript:
                warnings.append("transcript: the speech recogniser found no words in the recording; the text branch "
                                "read an empty transcript (give the transcript column)")
        return _Row(wave, markers, vector, transcript or "", source, warnings)

    @torch.no_grad()
    def logit(self, batch: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.module.logit(batch, present)

    @torch.no_grad()
    def probability(self, batch: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Calibrated probabilities: the sigmoid of the logits divided by the run's temperature
        (:func:`recipes.runtime.calibration.calibrated_probability`)."""
        return calibrated_probability(self.logit(batch, present), self.temperature)


def _reason(error: BaseException) -> str:
    """An input error's text without a column prefix the caller adds again."""
    text = str(error).strip()
    for column in ("wav_path: ", "cha_path: "):
        text = text.removeprefix(column)
    return text


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
                "root": str(datamodule.root), "acoustic": h.acoustic,
                "shortest_training_seconds": round(datamodule.shortest_training_seconds(), 3),
                "speech_floors": datamodule.speech_floors()}
    if h.text_encoder == "scratch":
        settings["text_ids"] = HashTokenizer.SCHEME  # the word ids its embedding table was trained on
    return settings
