"""Reading recordings: wrong rate is resampled, stereo is averaged; empty, short, silent, clipped and non-audio
files raise an error that names the file and the fix."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from recipes.dementia_speech.audio import AudioInputError, load_waveform

from tests.recipes.dementia_speech.dementia_helpers import tone


def test_wrong_rate_is_resampled(tmp_path):
    path = tmp_path / "a44k.wav"
    sf.write(path, tone(1.0, rate=44_100, freq=300), 44_100)
    audio = load_waveform(path)
    assert audio.dtype == np.float32 and abs(len(audio) - 16_000) <= 1
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16_000 / len(audio) - 300) < 3  # the tone is still at 300 Hz


def test_stereo_is_downmixed(tmp_path):
    path = tmp_path / "stereo.wav"
    left, right = tone(1.0, amplitude=0.2), tone(1.0, amplitude=0.4)
    sf.write(path, np.stack([left, right], axis=1), 16_000)
    np.testing.assert_allclose(load_waveform(path), (left + right) / 2, atol=1e-4)


@pytest.mark.parametrize("case,match", [
    ("empty", r"empty\.wav: the recording is empty"),
    ("short", r"short\.wav: only 0\.10 s"),
    ("silent", r"silent\.wav: the recording is silent"),
    ("clipped", r"clipped\.wav: .*clipped at full scale.*lower input gain"),
    ("not_audio", r"not_audio\.wav: not a readable audio file.*sox"),
    ("missing", r"missing\.wav: no such audio file"),
])
def test_bad_files_raise_naming_the_file_and_the_fix(tmp_path, case, match):
    path = tmp_path / f"{case}.wav"
    if case == "empty":
        sf.write(path, np.zeros(0, np.float32), 16_000)
    elif case == "short":
        sf.write(path, tone(0.1), 16_000)
    elif case == "silent":
        sf.write(path, np.zeros(16_000, np.float32), 16_000)
    elif case == "clipped":
        sf.write(path, np.clip(tone(1.0, amplitude=3.0), -1, 1), 16_000)
    elif case == "not_audio":
        path.write_text("this is a text file, not a WAV")
    with pytest.raises(AudioInputError, match=match):
        load_waveform(path)
