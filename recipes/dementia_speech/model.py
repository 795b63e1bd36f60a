"""The dementia classifier assembled from fusion_core parts (Ilias & Askounis).

audio image ``(B, 3, H, W)`` → a small DeiT-like :class:`ViTEncoder` → audio tokens ``(B, 1 + P, D)``
transcript → frozen MiniLM token embeddings ``(B, T, 384)`` → Linear, or hashed word ids → Embedding
→ ``(B, T, D)`` text tokens; both token sets → a fusion operator from the registry (``gated_self_attention``
or ``cross_attention``, the two fusion variants the paper compares) → per modality a
:class:`ContextAttentionPooling` (context-based attention) → concatenated with the operator's pooled output →
MLP → one logit.

A modality can be left out of the model (``modalities=("audio",)``) for the unimodal baselines, or marked
absent per sample through ``present`` (what modality Shapley values switch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from fusion_core import create_fusion
from fusion_core.encoders.image import ViTEncoder
from fusion_core.layers.context_attention import ContextAttentionPooling
from fusion_core.layers.mlp import MLP

__all__ = ["DementiaModelConfig", "DementiaModel", "DementiaOutput", "MODALITIES", "FUSIONS"]

MODALITIES = ("audio", "text")
FUSIONS = ("gated_self_attention", "cross_attention")


@dataclass(frozen=True)
class DementiaModelConfig:
    modalities: tuple[str, ...] = MODALITIES
    fusion: str = "gated_self_attention"
    dim: int = 64
    image_size: int = 64
    patch_size: int = 8
    audio_depth: int = 2
    num_heads: int = 4
    fusion_layers: int = 1
    context_heads: int = 1
    text_encoder: str = "minilm"
    text_dim: int = 384
    text_vocab_size: int = 4096
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if not self.modalities or any(m not in MODALITIES for m in self.modalities) or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities={list(self.modalities)}; pick one or both of {list(MODALITIES)}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion={self.fusion!r}; choose one of {list(FUSIONS)}")
        if self.text_encoder not in ("minilm", "scratch"):
            raise ValueError(f"text_encoder={self.text_encoder!r}; choose 'minilm' or 'scratch'")
        if self.text_encoder == "minilm" and self.text_dim <= 0:
            raise ValueError("text_dim must be the MiniLM width (384) with text_encoder='minilm'")


class DementiaOutput(NamedTuple):
    """logit ``(B,)``; features ``(B, (M + 1)·D)`` the representation the classifier and the OT loss see (each
    branch's context-attention summary and the fusion operator's pooled output);
    attention ``{modality: (B, H, N_m)}`` context-attention weights over each modality's tokens."""

    logit: Tensor
    features: Tensor
    attention: dict[str, Tensor]


class DementiaModel(nn.Module):
    """``forward(batch, present=None) -> DementiaOutput``; ``batch`` holds ``image`` and ``text`` (or ``text_ids``)
    with ``text_mask``; ``present {modality: (B,)}`` marks a branch absent per sample."""

    def __init__(self, config: DementiaModelConfig) -> None:
        super().__init__()
        self.config = config
        self.modalities = tuple(sorted(config.modalities))
        d = config.dim
        if "audio" in self.modalities:
            self.audio_encoder = ViTEncoder(config.image_size, config.patch_size, in_channels=3, dim=d,
                                            depth=config.audio_depth, num_heads=config.num_heads, mlp_ratio=2.0,
                                            dropout=config.dropout)
        if "text" in self.modalities:
            self.text_encoder = (nn.Sequential(nn.LayerNorm(config.text_dim), nn.Linear(config.text_dim, d))
                                 if config.text_encoder == "minilm" else nn.Embedding(config.text_vocab_size, d, padding_idx=0))
        self.fusion = create_fusion(config.fusion, modality_dims={m: d for m in self.modalities}, dim=d,
                                    num_layers=config.fusion_layers, num_heads=config.num_heads, dropout=config.dropout)
        self.pooling = nn.ModuleList([ContextAttentionPooling(d, config.context_heads) for _ in self.modalities])
        self.classifier = MLP(d * (len(self.modalities) + 1), [d], 1, dropout=config.dropout)

    def forward(self, batch: dict[str, Tensor], present: dict[str, Tensor] | None = None) -> DementiaOutput:
        tokens: dict[str, Tensor] = {}
        masks: dict[str, Tensor] = {}
        if "audio" in self.modalities:
            audio = self.audio_encoder(batch["image"])
            tokens["audio"], masks["audio"] = audio.tokens, audio.token_mask  # (B, 1 + P, D), (B, 1 + P)
        if "text" in self.modalities:
            text = batch["text"] if self.config.text_encoder == "minilm" else batch["text_ids"]
            tokens["text"] = self.text_encoder(text)  # (B, T, D)
            masks["text"] = batch["text_mask"].bool()
        fused = self.fusion(tokens, masks, present)
        pooled, attention = [], {}
        for m, pool in zip(self.modalities, self.pooling):
            mask = masks[m] if present is None or m not in present else masks[m] & present[m][:, None]
            out = pool(fused.tokens[m], mask)
            pooled.append(out.pooled)
            attention[m] = out.weights
        features = torch.cat([*pooled, fused.pooled], dim=-1)  # (B, (M + 1)·D): per-branch summaries, joint summary
        return DementiaOutput(self.classifier(features).squeeze(-1), features, attention)
