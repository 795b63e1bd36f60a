"""Audio front end: log-Mel spectrogram with Δ and ΔΔ stacked as a 3-channel image, in torch.

Ilias & Askounis turn each recording into a log-Mel spectrogram and its first and second time derivatives,
stacked as the three channels of an image for a vision transformer
(:class:`fusion_core.encoders.image.ViTEncoder` with ``in_channels=3``). torchaudio is not usable here, so the
pieces are written out and match librosa (tested to 1e-4):

- :func:`mel_filterbank` is ``librosa.filters.mel`` (Slaney mel scale, Slaney area normalisation);
- :func:`log_mel_spectrogram` is ``librosa.power_to_db(librosa.feature.melspectrogram(...))`` with a
  periodic Hann window, ``center=True`` and zero padding (librosa's defaults);
- :func:`delta` is ``librosa.feature.delta(S, width, order, mode="nearest")``: a Savitzky–Golay derivative
  filter of polynomial order ``order`` with edge-replicating padding.

Letters: B batch, T samples, F frequency bins, M mel bands, L frames, H×W image.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "mel_filterbank",
    "log_mel_spectrogram",
    "savgol_derivative_kernel",
    "delta",
    "LogMelImage",
    "LogMelImageOutput",
]

_F_SP = 200.0 / 3  # Slaney: 66.67 Hz per mel below 1 kHz
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_region = hz >= _MIN_LOG_HZ
    mel[log_region] = _MIN_LOG_MEL + np.log(hz[log_region] / _MIN_LOG_HZ) / _LOG_STEP
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = _F_SP * mel
    log_region = mel >= _MIN_LOG_MEL
    hz[log_region] = _MIN_LOG_HZ * np.exp(_LOG_STEP * (mel[log_region] - _MIN_LOG_MEL))
    return hz


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> Tensor:
    """``(M, n_fft // 2 + 1)`` triangular Slaney-normalised mel filters, as ``librosa.filters.mel`` (float64)."""
    if sample_rate <= 0 or n_fft <= 0 or n_mels <= 0:
        raise ValueError(f"sample_rate, n_fft and n_mels must be positive; got {sample_rate}, {n_fft}, {n_mels}")
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2; got fmin={fmin}, fmax={fmax}, sample_rate={sample_rate}")
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)  # (F,)
    mel_freqs = _mel_to_hz(np.linspace(_hz_to_mel(np.array([fmin]))[0], _hz_to_mel(np.array([fmax]))[0], n_mels + 2))
    widths = np.diff(mel_freqs)  # (M + 1,)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]  # (M + 2, F)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))  # (M, F)
    weights *= (2.0 / (mel_freqs[2 : n_mels + 2] - mel_freqs[:n_mels]))[:, None]  # equal area per band
    return torch.from_numpy(weights)


def log_mel_spectrogram(
    waveform: Tensor,
    filterbank: Tensor,
    n_fft: int,
    hop_length: int,
    amin: float = 1e-10,
    top_db: float | None = 80.0,
) -> Tensor:
    """dB-scaled mel power spectrogram of ``waveform (B, T)`` or ``(T,)`` → ``(B, M, L)`` or ``(M, L)``.

    ``10·log10(max(amin, mel_power))`` (reference 1.0), floored at ``max - top_db`` per example when
    ``top_db`` is set, as ``librosa.power_to_db``.
    """
    single = waveform.dim() == 1
    batch = waveform[None] if single else waveform
    window = torch.hann_window(n_fft, periodic=True, dtype=batch.dtype, device=batch.device)
    spec = torch.stft(batch, n_fft, hop_length=hop_length, window=window, center=True, pad_mode="constant",
                      return_complex=True)  # (B, F, L)
    power = spec.real.pow(2) + spec.imag.pow(2)
    mel = filterbank.to(power) @ power  # (B, M, L)
    db = 10.0 * torch.log10(mel.clamp_min(amin))
    if top_db is not None:
        floor = db.amax(dim=(-2, -1), keepdim=True) - top_db
        db = torch.maximum(db, floor)
    return db[0] if single else db


def savgol_derivative_kernel(width: int, order: int) -> Tensor:
    """Weights ``w (width,)`` with ``Δ^order x[t] = Σ_k w[k] x[t + k - width//2]`` (float64).

    The ``order``-th derivative at the window centre of the least-squares polynomial of degree ``order`` —
    ``scipy.signal.savgol_filter(deriv=order, polyorder=order)``, which ``librosa.feature.delta`` uses.
    """
    if width < 3 or width % 2 == 0:
        raise ValueError(f"width must be an odd integer >= 3; got {width}")
    if order < 1 or order >= width:
        raise ValueError(f"order must be in [1, width); got order={order}, width={width}")
    half = width // 2
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    design = offsets[:, None] ** np.arange(order + 1)[None, :]  # (width, order + 1)
    coefficients = np.linalg.pinv(design)  # (order + 1, width): polynomial coefficients from samples
    return torch.from_numpy(math.factorial(order) * coefficients[order])


def delta(features: Tensor, width: int = 9, order: int = 1) -> Tensor:
    """Time derivative of ``features (..., M, L)`` along the last axis, edge frames replicated
    (``librosa.feature.delta(features, width=width, order=order, mode="nearest")``)."""
    if features.shape[-1] < 1:
        raise ValueError("features has no frames")
    kernel = savgol_derivative_kernel(width, order).to(features)  # (width,)
    lead = features.shape[:-1]
    flat = features.reshape(-1, 1, features.shape[-1])  # (B·M, 1, L)
    half = width // 2
    padded = F.pad(flat, (half, half), mode="replicate")  # (B·M, 1, L + width - 1)
    out = F.conv1d(padded, kernel.view(1, 1, -1))  # (B·M, 1, L); conv1d correlates, as the kernel is defined
    return out.reshape(*lead, features.shape[-1])


class LogMelImageOutput(NamedTuple):
    """image: ``(B, 3, H, W)`` log-Mel, Δ, ΔΔ resized and standardised per channel.
    log_mel: ``(B, 3, M, L)`` the same channels before resizing, in dB (for plots)."""

    image: Tensor
    log_mel: Tensor


class LogMelImage(nn.Module):
    """Waveform ``(B, T)`` at ``sample_rate`` → 3-channel image ``(B, 3, H, W)`` (log-Mel, Δ, ΔΔ).

    Each channel is standardised per example (zero mean, unit variance over the image) so the image is on the
    scale a vision transformer expects whatever the recording level.
    """

    def __init__(
        self,
        sample_rate: int = 16_000,
        n_fft: int = 512,
        hop_length: int = 160,
        n_mels: int = 64,
        fmin: float = 0.0,
        fmax: float | None = None,
        delta_width: int = 9,
        image_size: int = 64,
        top_db: float | None = 80.0,
    ) -> None:
        super().__init__()
        if hop_length <= 0 or image_size <= 0:
            raise ValueError(f"hop_length and image_size must be positive; got {hop_length}, {image_size}")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.delta_width = delta_width
        self.image_size = image_size
        self.top_db = top_db
        savgol_derivative_kernel(delta_width, 2)  # validates the width early
        self.register_buffer("filterbank", mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax).float(), persistent=False)

    def forward(self, waveform: Tensor) -> LogMelImageOutput:
        if waveform.dim() != 2:
            raise ValueError(f"waveform must be (B, T); got shape {tuple(waveform.shape)}")
        if waveform.shape[-1] < self.n_fft // 2 + 1:
            raise ValueError(f"waveform has {waveform.shape[-1]} samples; need at least {self.n_fft // 2 + 1}")
        log_mel = log_mel_spectrogram(waveform, self.filterbank, self.n_fft, self.hop_length, top_db=self.top_db)
        stacked = torch.stack(
            [log_mel, delta(log_mel, self.delta_width, 1), delta(log_mel, self.delta_width, 2)], dim=1
        )  # (B, 3, M, L)
        image = F.interpolate(stacked, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        mean = image.mean(dim=(-2, -1), keepdim=True)
        std = image.std(dim=(-2, -1), keepdim=True).clamp_min(1e-5)
        return LogMelImageOutput((image - mean) / std, stacked)

