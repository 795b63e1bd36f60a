"""The log-Mel + Δ + ΔΔ front end matches librosa, and the spectrogram transformer's shapes and gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion_core.encoders.audio import (
    LogMelImage,
    delta,
    log_mel_spectrogram,
    mel_filterbank,
    savgol_derivative_kernel,
)

librosa = pytest.importorskip("librosa")

SR = 16_000


def _signal(dtype=np.float64, seconds: float = 0.7) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(SR * seconds)) / SR
    chirp = np.sin(2 * np.pi * (200 + 1500 * t) * t) * np.exp(-2 * t)
    return (0.5 * chirp + 0.05 * rng.standard_normal(t.shape)).astype(dtype)


@pytest.mark.parametrize("n_fft,n_mels,fmin,fmax", [(512, 64, 0.0, None), (400, 40, 50.0, 4000.0)])
def test_mel_filterbank_equals_librosa(n_fft, n_mels, fmin, fmax):
    ours = mel_filterbank(SR, n_fft, n_mels, fmin, fmax).numpy()
    ref = librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float64)
    np.testing.assert_allclose(ours, ref, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("top_db", [80.0, None])
def test_log_mel_within_1e4_of_librosa(dtype, top_db):
    y = _signal(dtype)
    ref = librosa.power_to_db(
        librosa.feature.melspectrogram(y=y, sr=SR, n_fft=512, hop_length=160, n_mels=64, power=2.0),
        ref=1.0, amin=1e-10, top_db=top_db,
    )
    ours = log_mel_spectrogram(torch.from_numpy(y), mel_filterbank(SR, 512, 64), 512, 160, top_db=top_db)
    assert ours.shape == ref.shape
    assert np.abs(ours.numpy() - ref).max() < 1e-4


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("width", [5, 9])
def test_delta_within_1e4_of_librosa(order, width):
    spec = librosa.power_to_db(librosa.feature.melspectrogram(y=_signal(), sr=SR, n_fft=512, hop_length=160, n_mels=32))
    ref = librosa.feature.delta(spec, width=width, order=order, mode="nearest")
    ours = delta(torch.from_numpy(spec), width, order).numpy()
    assert np.abs(ours - ref).max() < 1e-4


def test_delta_of_a_line_is_its_slope_and_zero_curvature():
    line = torch.arange(20, dtype=torch.float64).repeat(3, 1) * 2.5  # (3, 20), slope 2.5
    assert torch.allclose(delta(line, 9, 1)[:, 4:-4], torch.full((3, 12), 2.5, dtype=torch.float64))
    assert torch.allclose(delta(line, 9, 2)[:, 4:-4], torch.zeros(3, 12, dtype=torch.float64), atol=1e-12)
    assert delta(torch.ones(2, 4, 1)).shape == (2, 4, 1)  # one frame: edges replicated


@pytest.mark.parametrize("width,order", [(4, 1), (1, 1), (5, 0), (5, 5)])
def test_bad_delta_arguments_raise(width, order):
    with pytest.raises(ValueError, match="width|order"):
        savgol_derivative_kernel(width, order)


@pytest.mark.parametrize("batch", [1, 2])
def test_log_mel_image_is_standardised_three_channel_image(batch):
    frontend = LogMelImage(image_size=32, n_mels=40)
    out = frontend(torch.from_numpy(np.stack([_signal(np.float32)] * batch)))
    assert out.image.shape == (batch, 3, 32, 32)
    assert out.log_mel.shape[:3] == (batch, 3, 40)
    assert torch.allclose(out.image.mean(dim=(-2, -1)), torch.zeros(batch, 3), atol=1e-5)
    assert torch.isfinite(out.image).all()
    with pytest.raises(ValueError, match="at least"):
        frontend(torch.zeros(1, 100))
