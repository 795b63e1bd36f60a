"""Modality encoders: each turns one modality's raw input into tokens of the data contract."""
from fusion_core.encoders.audio import LogMelImage, LogMelImageOutput, delta, log_mel_spectrogram, mel_filterbank
from fusion_core.encoders.ids import FieldEmbedding
from fusion_core.encoders.image import EncoderOutput, ViTEncoder, vit_tiny
from fusion_core.encoders.points import PillarEncoder, PillarOutput
from fusion_core.encoders.signal1d import SignalPatchEncoder, ecg_tiny
from fusion_core.encoders.text import HashTokenizer, SentenceEncoder, TextTransformerEncoder

__all__ = [
    "EncoderOutput",
    "FieldEmbedding",
    "HashTokenizer",
    "LogMelImage",
    "LogMelImageOutput",
    "PillarEncoder",
    "PillarOutput",
    "SentenceEncoder",
    "SignalPatchEncoder",
    "TextTransformerEncoder",
    "ViTEncoder",
    "delta",
    "ecg_tiny",
    "log_mel_spectrogram",
    "mel_filterbank",
    "vit_tiny",
]
