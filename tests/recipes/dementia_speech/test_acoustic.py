"""Acoustic markers: the VAD's segmenter on hand-made probabilities, the pause count and lengths of a clip with
planted silences, markers that do not depend on what was analysed before, the eGeMAPS + pause feature row; and the
acoustic branch of the model (``vit``, ``features``, ``both``)."""
from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest
import torch

from recipes.dementia_speech.acoustic import (
    MIN_PAUSE_SECONDS, PAUSE_FEATURES, VAD_WINDOW, acoustic_features, acoustic_markers, feature_names,
    speech_probability, speech_segments,
)

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs Debian espeak-ng (make system-deps)")
STEP = VAD_WINDOW / 16_000  # seconds per VAD window


def _speak(text: str) -> np.ndarray:
    import soundfile as sf
    from scipy.signal import resample_poly

    wav = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "--stdout", text], capture_output=True, check=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    audio = resample_poly(audio, 16_000, rate).astype(np.float32)
    voiced = np.flatnonzero(np.abs(audio) > 1e-3)
    return audio[voiced[0]: voiced[-1] + 1]  # espeak-ng's own leading and trailing silence cut off


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16_000), np.float32)


def test_segmenter_hysteresis_bridging_and_minimum_length():
    # windows: 10 speech, 4 silent (0.128 s < 0.25 s: bridged), 10 speech, 12 silent (0.384 s: a pause), 2 speech
    # (0.064 s < 0.1 s: dropped), 10 silent, then 0.4 (between the off and on thresholds) keeps speech going
    p = np.array([0.9] * 10 + [0.1] * 4 + [0.9] * 10 + [0.1] * 12 + [0.9] * 2 + [0.1] * 10 + [0.9] * 5 + [0.4] * 5 + [0.1] * 3)
    segments = speech_segments(p)
    assert segments == [(0.0, pytest.approx(24 * STEP)), (pytest.approx(48 * STEP), pytest.approx(58 * STEP))]
    assert 12 * STEP > MIN_PAUSE_SECONDS > 4 * STEP


@needs_espeak
def test_pause_count_and_lengths_of_a_clip_with_planted_silences():
    planted = (0.6, 1.5, 2.5)
    sentences = ["the boy is standing on a stool", "the girl is reaching for a cookie", "the water is overflowing",
                 "the mother is drying a plate"]
    parts = [_silence(0.4)]
    for sentence, pause in zip(sentences, (*planted, 0.4)):
        parts += [_speak(sentence), _silence(pause)]
    clip = np.concatenate(parts)
    markers = acoustic_markers(clip)
    assert len(markers.pauses) == len(planted)
    lengths = [end - start for start, end in markers.pauses]
    np.testing.assert_allclose(lengths, planted, atol=0.25)  # the VAD's 32 ms windows and its padding
    vector = dict(zip(PAUSE_FEATURES, markers.vector))
    assert vector["pause_count"] == 3 and vector["max_pause_seconds"] == pytest.approx(max(lengths))
    assert vector["total_seconds"] == pytest.approx(len(clip) / 16_000)
    assert 0.4 < vector["phonation_ratio"] < 0.8 and vector["long_pause_ratio"] == pytest.approx(2 / 3)


@needs_espeak
def test_markers_do_not_depend_on_what_was_analysed_before():
    clip = np.concatenate([_speak("the boy is on the stool"), _silence(0.8), _speak("and he falls")])
    first = speech_probability([clip])[0]
    speech_probability([np.random.default_rng(0).standard_normal(48_000).astype(np.float32) * 0.1])
    np.testing.assert_array_equal(speech_probability([clip])[0], first)
    batched = speech_probability([clip[:20_000], clip])[1]  # beside a shorter recording: its own state
    np.testing.assert_allclose(batched, first, atol=1e-4)  # batched kernels round differently


@needs_espeak
def test_feature_row_holds_the_egemaps_functionals_then_the_pause_statistics():
    clip = np.concatenate([_speak("the boy is on the stool"), _silence(0.8), _speak("and he falls")])
    table = acoustic_features([clip, clip[: len(clip) // 2]])
    names = feature_names()
    assert table.shape == (2, 88 + len(PAUSE_FEATURES)) and len(names) == table.shape[1]
    assert names[:2] == ["F0semitoneFrom27.5Hz_sma3nz_amean", "F0semitoneFrom27.5Hz_sma3nz_stddevNorm"]
    assert names[-len(PAUSE_FEATURES):] == list(PAUSE_FEATURES)
    assert np.isfinite(table).all() and table.dtype == np.float32
    assert table[0, names.index("pause_count")] == 1 and table[1, names.index("pause_count")] == 0


@needs_espeak
def test_feature_rows_on_several_threads_equal_one_thread_in_order():
    clip = np.concatenate([_speak("the boy is on the stool"), _silence(0.8), _speak("and he falls")])
    clips = [clip, clip[: len(clip) // 2], clip[len(clip) // 3:], _speak("the water is overflowing")]
    one = acoustic_features(clips, batch_size=3, workers=1)
    np.testing.assert_array_equal(acoustic_features(clips, batch_size=3, workers=3), one)


@pytest.mark.parametrize("acoustic,tokens", [("vit", 1 + 4), ("features", 1), ("both", 1 + 4 + 1)])
def test_acoustic_branch_tokens_and_gradients(acoustic, tokens):
    from recipes.dementia_speech.config import DementiaConfig
    from recipes.dementia_speech.model import DementiaModel

    torch.manual_seed(0)
    config = DementiaConfig(modalities=("audio", "text"), acoustic=acoustic, acoustic_features=7, dim=16, num_heads=2,
                            image_size=16, patch_size=8, audio_depth=1, text_encoder="scratch", text_dim=0,
                            text_vocab_size=50, dropout=0.0)
    model = DementiaModel(config)
    markers = torch.randn(32, 7) * 10 + 3
    if acoustic != "vit":
        model.marker_encoder.fit(markers)
        assert bool(model.marker_encoder.fitted)
        standard = (markers - model.marker_encoder.mean) / model.marker_encoder.scale
        torch.testing.assert_close(standard.mean(0), torch.zeros(7), atol=1e-5, rtol=0)
    batch = {"image": torch.randn(2, 3, 16, 16), "acoustic": markers[:2], "text_ids": torch.randint(1, 50, (2, 6)),
             "text_mask": torch.ones(2, 6, dtype=torch.bool)}
    audio, mask = model.audio_tokens(batch)
    assert audio.shape == (2, tokens, 16) and mask.shape == (2, tokens) and bool(mask.all())
    out = model(batch)
    out.logit.sum().backward()
    trained = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert trained == []
    # an absent recording never reaches the output, whatever its markers hold
    absent = {"audio": torch.tensor([False, True]), "text": torch.ones(2, dtype=torch.bool)}
    model.eval()
    poisoned = {**batch, "acoustic": torch.full_like(batch["acoustic"], 1e30), "image": torch.full_like(batch["image"], 1e30)}
    with torch.no_grad():
        assert torch.equal(model(batch, absent).logit[0], model(poisoned, absent).logit[0])


def test_a_features_model_needs_the_marker_count():
    from recipes.dementia_speech.config import DementiaConfig

    with pytest.raises(ValueError, match="acoustic_features must be their count"):
        DementiaConfig(acoustic="features")
    with pytest.raises(ValueError, match="choose one of"):
        DementiaConfig(acoustic="mfcc")
