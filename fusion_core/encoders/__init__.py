"""Modality encoders: each turns one modality's raw input into tokens of the data contract."""
from fusion_core.encoders.ids import FieldEmbedding

__all__ = ["FieldEmbedding"]
