"""A recording as the acoustic branch reads it: mono 16 kHz audio checked for what makes a recording unusable, the
log-Mel/Δ/ΔΔ image of :class:`fusion_core.encoders.audio.LogMelImage`, and offline speech recognition for a
recording that comes without a transcript."""
from __future__ import annotations

from pathlib import Path
import numpy as np
import torch

__all__ = ["AudioInputError", "FeatureConfig", "SAMPLE_RATE", "audio_images", "load_waveform", "transcribe"]

SAMPLE_RATE = 16_000
MIN_SECONDS = 0.5
CLIPPED_FRACTION = 0.05
#: sampling rates a speech recording can plausibly have
MIN_RATE, MAX_RATE = 4_000, 384_000


class AudioInputError(ValueError):
    """A recording cannot be used; the message names the file, what is wrong and how to fix it."""


def load_waveform(path: str | Path, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Mono float32 audio of ``path`` at ``sample_rate``.

    Another sampling rate is resampled (polyphase, scipy); stereo and multichannel audio is averaged to mono; only
    the first ``max_seconds`` are read. Raises :class:`AudioInputError` for a missing file, a file that is not audio,
    an implausible sampling rate, an empty or too short recording (< 0.5 s), non-finite samples (NaN, inf) or samples
    outside [-1, 1] (a float WAV), a silent recording, and one clipped at full scale on more than 5 % of its samples.
    """
    import soundfile as sf
    from scipy.signal import resample_poly

    path = Path(path)
    if not path.is_file():
        raise AudioInputError(f"{path}: no such audio file; check the wav_path column")
    try:
        rate = int(sf.info(str(path)).samplerate)
        if not MIN_RATE <= rate <= MAX_RATE:
            raise AudioInputError(f"{path}: sampling rate {rate} Hz is not a speech recording's ({MIN_RATE}-{MAX_RATE} Hz); "
                                  f"resample it, e.g. `sox '{path.name}' -r 16000 -c 1 '{path.stem}.wav'`")
        frames = -1 if max_seconds is None else int(max_seconds * rate) + 1
        audio, rate = sf.read(str(path), frames=frames, dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        if isinstance(error, AudioInputError):
            raise
        raise AudioInputError(
            f"{path}: not a readable audio file ({type(error).__name__}); convert it to WAV, e.g. "
            f"`sox '{path.name}' -r 16000 -c 1 '{path.stem}.wav'`"
        ) from None
    if audio.shape[0] == 0:
        raise AudioInputError(f"{path}: the recording is empty (0 samples); record at least 1 s of speech")
    finite = np.isfinite(audio)
    if not finite.all():
        raise AudioInputError(f"{path}: {int((~finite).sum())} samples are not finite (NaN or inf); the file is corrupt — "
                              "export the recording again")
    if np.abs(audio).max() > 1.0 + 1e-6:
        raise AudioInputError(f"{path}: samples reach {np.abs(audio).max():.3g}, outside the [-1, 1] of a float WAV; "
                              "normalise the recording (e.g. `sox --norm=-1 in.wav out.wav`) or save it as 16-bit PCM")
    audio = audio.mean(axis=1)  # (T,) stereo → mono
    if audio.shape[0] < MIN_SECONDS * rate:
        raise AudioInputError(f"{path}: only {audio.shape[0] / rate:.2f} s of audio; at least {MIN_SECONDS} s of speech is needed")
    peak = float(np.abs(audio).max())
    if peak == 0.0:
        raise AudioInputError(f"{path}: the recording is silent (all samples zero); check the microphone and record again")
    clipped = float(np.mean(np.abs(audio) >= 0.999 * max(peak, 0.99))) if peak >= 0.99 else 0.0
    if clipped > CLIPPED_FRACTION:
        raise AudioInputError(
            f"{path}: {100 * clipped:.1f}% of the samples are clipped at full scale, which distorts the spectrogram; "
            "record again with a lower input gain"
        )
    if rate != sample_rate:
        divisor = np.gcd(int(rate), int(sample_rate))
        audio = resample_poly(audio, sample_rate // divisor, int(rate) // divisor).astype(np.float32)
    if max_seconds is not None:
        audio = audio[: int(max_seconds * sample_rate)]
    return audio.astype(np.float32)


class FeatureConfig(dict):
    """The front-end settings a run was trained with (a plain dict so it round-trips through YAML/JSON)."""

    @classmethod
    def build(cls, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, image_size: int,
              max_seconds: float) -> "FeatureConfig":
        return cls(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                   image_size=image_size, max_seconds=max_seconds)

    def frontend(self):
        from fusion_core.encoders.audio import LogMelImage

        return LogMelImage(sample_rate=self["sample_rate"], n_fft=self["n_fft"], hop_length=self["hop_length"],
                           n_mels=self["n_mels"], image_size=self["image_size"])


@torch.no_grad()
def audio_images(waveforms: list[np.ndarray], features: FeatureConfig) -> torch.Tensor:
    """``(N, 3, H, W)`` log-Mel/Δ/ΔΔ images, one recording at a time (lengths differ)."""
    frontend = features.frontend()
    return torch.cat([frontend(torch.from_numpy(w)[None]).image for w in waveforms]) if waveforms else \
        torch.zeros(0, 3, features["image_size"], features["image_size"])


def transcribe(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
    """Offline English ASR of a mono recording with pocketsphinx (the acoustic and language models ship inside
    its wheel). Returns lower-case words; an empty string when nothing was recognised.

    Every call builds a fresh decoder (about 0.3 s): a reused one carries its cepstral-mean estimate from one
    recording to the next, so the same audio was transcribed differently depending on what was decoded before it."""
    from pocketsphinx import Decoder

    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"transcribe expects {SAMPLE_RATE} Hz audio; got {sample_rate} (load it with load_waveform)")
    decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
    pcm = (np.clip(waveform, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return " ".join(w for w in (hypothesis.hypstr if hypothesis else "").lower().split() if w.isascii())
