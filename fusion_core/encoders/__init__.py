"""Modality encoders: each turns one modality's raw input into tokens of the data contract."""
from fusion_core.encoders.audio import LogMelImage, LogMelImageOutput, delta, log_mel_spectrogram, mel_filterbank
from fusion_core.encoders.ids import FieldEmbedding
from fusion_core.encoders.image import EncoderOutput, ViTEncoder, vit_tiny
from fusion_core.encoders.points import PillarEncoder, PillarOutput
from fusion_core.encoders.signal1d import SignalPatchEncoder, ecg_tiny
from fusion_core.encoders.text import HashTokenizer, TextTransformerEncoder, TokenBatch
from fusion_core.encoders.text_minilm import (
    MINILM_DIM,
    MINILM_MAX_TOKENS,
    SentenceEncoder,
    frozen_sentence_encoder,
    minilm_encode,
    minilm_tokenize,
)

__all__ = [
    "MINILM_DIM",
    "MINILM_MAX_TOKENS",
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
    "TokenBatch",
    "ViTEncoder",
    "delta",
    "ecg_tiny",
    "frozen_sentence_encoder",
    "log_mel_spectrogram",
    "mel_filterbank",
    "minilm_encode",
    "minilm_tokenize",
    "vit_tiny",
]
