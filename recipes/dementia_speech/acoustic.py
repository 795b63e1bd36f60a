"""The acoustic markers of a recording, as the literature on dementia speech measures them: the 88 eGeMAPS functionals
of openSMILE (Eyben et al., 2016; the ADReSS challenge baseline's feature set) and pause/speech statistics from the
Silero voice-activity detector (its model ships inside the ``silero-vad`` wheel) — pause count and length, speech
rate, phonation ratio (Pistono et al., 2019; Fraser et al., 2016).

Every function reads mono 16 kHz float audio (:func:`recipes.dementia_speech.audio.load_waveform`). The VAD runs
with a fresh state per recording, so a recording's markers never depend on what was analysed before it.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = ["AcousticMarkers", "PAUSE_FEATURES", "MIN_PAUSE_SECONDS", "Voicing", "acoustic_features", "acoustic_markers",
           "egemaps", "egemaps_names", "feature_names", "recording_features", "speech_probability", "speech_segments",
           "speech_floors", "voicing"]

VAD_RATE = 16_000
VAD_WINDOW = 512  # samples per Silero decision at 16 kHz (32 ms)
VAD_ON, VAD_OFF = 0.5, 0.35  # hysteresis thresholds of Silero's own segmenter
MIN_SPEECH_SECONDS = 0.1
#: a silence between two stretches of speech counts as a pause from this length (the 250 ms of most studies)
MIN_PAUSE_SECONDS = 0.25
#: the pause/speech statistics, in the order of :attr:`AcousticMarkers.vector`
PAUSE_FEATURES = ("total_seconds", "speech_seconds", "phonation_ratio", "pause_count", "pauses_per_minute",
                  "mean_pause_seconds", "max_pause_seconds", "pause_seconds_std", "long_pause_ratio",
                  "segments_per_minute", "mean_segment_seconds", "speech_rate")
LONG_PAUSE_SECONDS = 1.0

_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _vad_model():
    with _LOCK:
        if "vad" not in _MODELS:
            threads = torch.get_num_threads()
            from silero_vad import load_silero_vad  # importing it sets torch's thread count to 1: put it back

            torch.set_num_threads(threads)
            _MODELS["vad"] = load_silero_vad()
        return _MODELS["vad"]


def _smile():
    with _LOCK:
        if "smile" not in _MODELS:
            import opensmile

            _MODELS["smile"] = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                               feature_level=opensmile.FeatureLevel.Functionals)
        return _MODELS["smile"]


@torch.no_grad()
def speech_probability(waveforms: list[np.ndarray]) -> list[np.ndarray]:
    """Silero's speech probability of every 32 ms window of each recording (``(ceil(T / 512),)`` each). Recordings
    are run side by side as a batch, each with its own fresh state (the model's recurrent state is per batch row)."""
    if not waveforms:
        return []
    model = _vad_model()
    longest = max(len(w) for w in waveforms)
    frames = -(-longest // VAD_WINDOW)
    batch = torch.zeros(len(waveforms), frames * VAD_WINDOW)
    for row, wave in enumerate(waveforms):
        batch[row, : len(wave)] = torch.from_numpy(np.asarray(wave, dtype=np.float32))
    with _LOCK:
        threads = torch.get_num_threads()
        # ~1900 tiny sequential steps a minute of audio: more threads only contend (50x slower on 2 busy cores)
        torch.set_num_threads(1)
        try:
            model.reset_states()
            probability = model.audio_forward(batch, VAD_RATE).numpy()  # (N, frames + 1): the model pads one window
            model.reset_states()
        finally:
            torch.set_num_threads(threads)
    return [probability[row, : -(-len(w) // VAD_WINDOW)].astype(np.float64) for row, w in enumerate(waveforms)]


def speech_segments(probability: np.ndarray) -> list[tuple[float, float]]:
    """``[(start, end), ...]`` seconds of speech from window probabilities: on above 0.5, off below 0.35; stretches
    shorter than 0.1 s are dropped and silences shorter than :data:`MIN_PAUSE_SECONDS` bridged (Silero's rules)."""
    step = VAD_WINDOW / VAD_RATE
    segments: list[list[float]] = []
    speaking = False
    for index, p in enumerate(probability):
        if not speaking and p >= VAD_ON:
            speaking = True
            segments.append([index * step, len(probability) * step])
        elif speaking and p < VAD_OFF:
            speaking = False
            segments[-1][1] = index * step
    merged: list[list[float]] = []
    for start, end in segments:
        if merged and start - merged[-1][1] < MIN_PAUSE_SECONDS:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    return [(round(s, 4), round(e, 4)) for s, e in merged if e - s >= MIN_SPEECH_SECONDS]


class AcousticMarkers(NamedTuple):
    """Pause and speech statistics of one recording. ``segments``: the speech stretches (seconds); ``pauses``:
    the silences between them (seconds); ``speech_rate``: voiced segments (≈ syllables) per second of speech, from
    eGeMAPS' ``VoicedSegmentsPerSec`` when given, else stretches per second."""

    total_seconds: float
    segments: list[tuple[float, float]]
    pauses: list[tuple[float, float]]
    speech_rate: float

    @property
    def speech_seconds(self) -> float:
        return float(sum(e - s for s, e in self.segments))

    @property
    def vector(self) -> np.ndarray:
        """``(len(PAUSE_FEATURES),)`` float64 in the order of :data:`PAUSE_FEATURES`."""
        lengths = np.array([e - s for s, e in self.pauses], dtype=np.float64)
        minutes = max(self.total_seconds, 1e-6) / 60.0
        speech = self.speech_seconds
        return np.array([
            self.total_seconds, speech, speech / max(self.total_seconds, 1e-6), len(self.pauses),
            len(self.pauses) / minutes, lengths.mean() if lengths.size else 0.0, lengths.max() if lengths.size else 0.0,
            lengths.std() if lengths.size else 0.0,
            float((lengths >= LONG_PAUSE_SECONDS).mean()) if lengths.size else 0.0,
            len(self.segments) / minutes, speech / max(len(self.segments), 1), self.speech_rate,
        ], dtype=np.float64)


def acoustic_markers(waveform: np.ndarray, probability: np.ndarray | None = None,
                     voiced_per_second: float | None = None) -> AcousticMarkers:
    """The pause/speech statistics of a 16 kHz recording (``probability``: its :func:`speech_probability`, computed
    when not given). Pauses are the silences between speech stretches; leading and trailing silence is not a pause."""
    if probability is None:
        probability = speech_probability([waveform])[0]
    segments = speech_segments(probability)
    pauses = [(a_end, b_start) for (_, a_end), (b_start, _) in zip(segments, segments[1:])]
    speech = sum(e - s for s, e in segments)
    rate = voiced_per_second if voiced_per_second is not None else len(segments) / max(speech, 1e-6)
    return AcousticMarkers(len(waveform) / VAD_RATE, segments, pauses, float(rate))


def egemaps(waveform: np.ndarray) -> np.ndarray:
    """The 88 eGeMAPS v02 functionals of a 16 kHz recording, float64, in :func:`egemaps_names` order."""
    values = _smile().process_signal(np.asarray(waveform, dtype=np.float32), VAD_RATE).to_numpy()[0]
    return values.astype(np.float64)


def egemaps_names() -> list[str]:
    return list(_smile().feature_names)


class Voicing(NamedTuple):
    """What openSMILE's pitch tracker hears in a recording: ``voiced_fraction``, the share of the recording in voiced
    segments (eGeMAPS ``VoicedSegmentsPerSec`` × ``MeanVoicedSegmentLengthSec``), and ``pitch_variation``, the
    coefficient of variation of its F0 (``F0semitoneFrom27.5Hz_sma3nz_stddevNorm``). Noise has no voiced frame and a
    tone a flat pitch; speech the VAD misses (reverberant, band-limited telephone audio) still has both."""

    voiced_fraction: float
    pitch_variation: float


def voicing(functionals: np.ndarray) -> Voicing:
    """The :class:`Voicing` of a recording from its eGeMAPS functionals (:func:`egemaps`, or the first 88 columns of
    :func:`acoustic_features`); non-finite values count as 0."""
    names = egemaps_names()

    def value(name: str) -> float:
        return float(np.nan_to_num(functionals[names.index(name)], nan=0.0, posinf=0.0, neginf=0.0))

    return Voicing(value("VoicedSegmentsPerSec") * value("MeanVoicedSegmentLengthSec"),
                   value("F0semitoneFrom27.5Hz_sma3nz_stddevNorm"))


def speech_floors(feature_rows: np.ndarray, margin: float = 0.5) -> dict[str, float]:
    """``margin`` × the least voiced fraction and the least pitch variation (:func:`voicing`) over ``feature_rows``
    ``(N, >= 88)`` (the recordings a model trains on): the voicing a recording the VAD hears no speech in must reach
    to be scored."""
    heard = [voicing(row) for row in np.asarray(feature_rows, dtype=np.float64)]
    if not heard:
        raise ValueError("no recordings to set the speech floors from")
    return {"voiced_fraction": round(margin * min(h.voiced_fraction for h in heard), 6),
            "pitch_variation": round(margin * min(h.pitch_variation for h in heard), 6)}


def feature_names() -> list[str]:
    """Names of :func:`acoustic_features`' columns: the eGeMAPS functionals, then :data:`PAUSE_FEATURES`."""
    return [*egemaps_names(), *PAUSE_FEATURES]


def recording_features(waveform: np.ndarray, probability: np.ndarray,
                       functionals: np.ndarray | None = None) -> tuple[np.ndarray, AcousticMarkers]:
    """One recording's ``(88 + len(PAUSE_FEATURES),)`` float32 feature row (eGeMAPS functionals, then the pause
    statistics; a non-finite functional of a recording with no voiced frame becomes 0) and its markers, from its
    :func:`speech_probability` (and its :func:`egemaps`, computed when not given)."""
    functionals = egemaps(waveform) if functionals is None else functionals
    voiced = float(functionals[egemaps_names().index("VoicedSegmentsPerSec")])
    markers = acoustic_markers(waveform, probability, voiced if np.isfinite(voiced) else None)
    row = np.concatenate([functionals, markers.vector])
    return np.nan_to_num(row, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32), markers


def acoustic_features(waveforms: list[np.ndarray], batch_size: int = 16,
                      on_progress: Callable[[int, int], None] | None = None, workers: int | None = None) -> np.ndarray:
    """``(N, 88 + len(PAUSE_FEATURES))`` float32: :func:`recording_features` of each recording (the VAD runs
    ``batch_size`` recordings side by side). ``on_progress(done, total)`` is called after each batch.

    openSMILE, most of the time (about 0.5 s a recording against 0.08 s for the VAD), runs on ``workers`` threads
    (default: torch's thread count): each call builds its own openSMILE instance and native code holds no Python lock,
    so the rows are the same as one thread's, in order, 1.7 times as fast on 2 cores (``bench/dementia_markers.py``)."""
    from concurrent.futures import ThreadPoolExecutor

    rows = []
    with ThreadPoolExecutor(max(1, workers or torch.get_num_threads())) as pool:
        for first in range(0, len(waveforms), batch_size):
            chunk = waveforms[first: first + batch_size]
            functionals = pool.map(egemaps, chunk)
            rows += [recording_features(wave, probability, values)[0]
                     for wave, probability, values in zip(chunk, speech_probability(chunk), functionals)]
            if on_progress is not None:
                on_progress(len(rows), len(waveforms))
    return np.stack(rows) if rows else np.zeros((0, 88 + len(PAUSE_FEATURES)), dtype=np.float32)
