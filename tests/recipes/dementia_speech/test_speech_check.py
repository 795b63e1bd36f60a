"""The no-speech check of scoring: a reverberant telephone recording of the cohort that the VAD barely hears (speaker
S134 of the demo cohort, refused by ``make demo`` before) is scored with a warning, while noise and a tone stay errors;
the floors are half the least voicing of the training recordings."""
from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest
import soundfile as sf

from recipes.dementia_speech.acoustic import acoustic_markers, egemaps, speech_probability, voicing
from tests.recipes.dementia_speech.dementia_helpers import tone

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs Debian espeak-ng (make system-deps)")

# the demo cohort's (CohortSpec(), seed 0) telephone test speaker S134, as speakers.json records it
S134 = {"speaker_id": "S134", "domain": "target", "split": "test", "label": 1, "severity": 0.7505, "age": 63,
        "gender": "female", "mmse": 15, "voice": "en-gb-x-gbclan+Alicia", "rate": 117, "pitch": 80, "tract": 1.029,
        "gain": 0.32, "snr_db": 43.5, "rt60": 0.396, "tilt": 0.118}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, str]:
    from recipes.dementia_speech.cohort import Speaker, _speaker_files, _write_speaker

    root = tmp_path_factory.mktemp("speech-check")
    speaker = Speaker(**S134)
    _write_speaker(root, speaker, seed=0)
    noise = (np.random.default_rng(0).standard_normal(5 * 16_000) * 0.05).astype(np.float32)
    sf.write(root / "noise.wav", noise, 16_000)
    sf.write(root / "tone.wav", tone(3.0), 16_000)
    return {"S134": str(_speaker_files(root, speaker)[0]), "noise": str(root / "noise.wav"),
            "tone": str(root / "tone.wav")}


def _predictor(floors: dict[str, float] | None):
    """An untrained vit + scratch-text model with the settings a run records: the check runs before the model."""
    from recipes.dementia_speech.audio import FeatureConfig
    from recipes.dementia_speech.config import DementiaConfig
    from recipes.dementia_speech.module import DementiaModule
    from recipes.dementia_speech.predictor import DementiaPredictor

    module = DementiaModule(DementiaConfig(dim=16, num_heads=2, audio_depth=1, image_size=16, text_encoder="scratch",
                                           text_dim=0))
    settings = {"features": dict(FeatureConfig.build(16_000, 512, 160, 32, 16, 60.0)), "text_encoder": "scratch",
                "max_text_tokens": 32, "text_vocab_size": 4096, "acoustic": "vit", "shortest_training_seconds": 10.0,
                "speech_floors": floors}
    return DementiaPredictor(module.eval(), settings)


def test_the_vad_misses_s134_but_the_pitch_tracker_hears_it(recordings):
    from recipes.dementia_speech.audio import load_waveform
    from recipes.dementia_speech.predictor import DEFAULT_SPEECH_FLOORS, MIN_SPEECH_SECONDS

    heard = {}
    for name, path in recordings.items():
        wave = load_waveform(path, 16_000, 60.0)
        heard[name] = (acoustic_markers(wave, speech_probability([wave])[0]).speech_seconds, voicing(egemaps(wave)))
    assert heard["S134"][0] < MIN_SPEECH_SECONDS  # what refused it: 0.26 s of VAD speech in 39.6 s
    assert heard["S134"][1].voiced_fraction > 0.3 and heard["S134"][1].pitch_variation > 0.05
    assert heard["noise"][1].voiced_fraction == 0.0  # nothing voiced
    assert heard["tone"][1].voiced_fraction > 0.9 and heard["tone"][1].pitch_variation < 1e-3  # voiced, flat pitch
    assert DEFAULT_SPEECH_FLOORS["voiced_fraction"] > 0 and DEFAULT_SPEECH_FLOORS["pitch_variation"] > 1e-3


def test_s134_is_scored_with_a_warning_and_noise_and_a_tone_stay_errors(recordings):
    # every row has a transcript (the ASR is not what is tested): noise beside a transcript is still refused
    frame = pl.DataFrame({"wav_path": [recordings["S134"], recordings["noise"], recordings["tone"]],
                          "transcript": ["the mother is drying a plate"] * 3})
    encoded = _predictor(None).encode(frame)  # a run without floors of its own: DEFAULT_SPEECH_FLOORS
    assert encoded.errors[0] is None and encoded.valid_rows == [0]
    assert "voice-activity detector heard only" in encoded.warnings[0]
    assert "pause markers are unreliable" in encoded.warnings[0]
    for row in (1, 2):  # noise, a tone
        assert "no speech detected" in encoded.errors[row] and "wav_path" in encoded.errors[row]
    # a floor above S134's voicing refuses it: the floors decide
    strict = _predictor({"voiced_fraction": 0.99, "pitch_variation": 0.0}).encode(frame.head(1))
    assert "no speech detected" in strict.errors[0]


def test_the_floors_are_half_the_least_voicing_of_the_training_recordings():
    from recipes.dementia_speech.acoustic import egemaps_names, speech_floors

    names = egemaps_names()
    rows = np.zeros((4, 100))
    rows[:, names.index("VoicedSegmentsPerSec")] = [2.0, 1.0, 3.0, 0.5]
    rows[:, names.index("MeanVoicedSegmentLengthSec")] = [0.2, 0.1, 0.2, np.nan]  # voiced fractions .4, .1, .6, 0
    rows[:, names.index("F0semitoneFrom27.5Hz_sma3nz_stddevNorm")] = [0.3, 0.2, 0.05, 0.4]
    assert speech_floors(rows[:3]) == pytest.approx({"voiced_fraction": 0.05, "pitch_variation": 0.025})
    assert speech_floors(rows, margin=1.0) == pytest.approx({"voiced_fraction": 0.0, "pitch_variation": 0.05})
    with pytest.raises(ValueError, match="no recordings"):
        speech_floors(rows[:0])
