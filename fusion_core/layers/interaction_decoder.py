"""Predictive interaction: object queries refined by layers that alternate between two streams.

DeepInteraction++ (Yang et al., 2024, §3.3 "Predictive interaction"): the decoder keeps the two modality
representations apart and lets the queries read them in turn — layer ``i`` attends to ``sources[i]`` — so each
refinement step draws on one modality with the other's evidence already in the queries. Each layer is a
DETR-style decoder layer: query self-attention, then cross-attention to the layer's source and a feed-forward,
both :class:`~fusion_core.layers.cross_attention_block.CrossAttentionBlock` s.

Letters: B batch, Q queries, T tokens of a source, H heads, D width.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn

from fusion_core.layers.cross_attention_block import CrossAttentionBlock

__all__ = ["InteractionDecoder", "InteractionDecoderOutput"]


class InteractionDecoderOutput(NamedTuple):
    queries: Tensor  # (B, Q, D) refined queries
    updates: dict[str, Tensor]  # {source: (B, Q)} summed norm of the cross-attention updates drawn from it


class InteractionDecoder(nn.Module):
    """Layer ``i`` refines ``queries (B, Q, dim)`` by attention to ``memories[sources[i]] (B, T, dim)``.

    ``forward(queries, memories {source: (B, T_s, dim)}, masks {source: (B, T_s)} | None)`` →
    :class:`InteractionDecoderOutput`. A layer whose source has no real token for a sample (the sensor is
    absent) is skipped for that sample: its queries pass the layer unchanged and draw nothing from it.

    Set ``record_attention = True`` to keep the last forward's attention in ``last_attention``:
    ``[(source, (B, H, Q, T_s))]`` per layer (detached; zeros for a skipped sample).
    """

    def __init__(
        self, dim: int, num_heads: int, sources: Sequence[str], ffn_mult: int = 4, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if isinstance(sources, str) or not sources or not all(isinstance(s, str) and s for s in sources):
            raise ValueError(f"sources must be a non-empty sequence of stream names, one per layer; got {sources!r}")
        self.sources = tuple(sources)
        self.self_attention = nn.ModuleList(
            [CrossAttentionBlock(dim, num_heads, ffn_mult=0, norm_context=False, dropout=dropout) for _ in self.sources]
        )
        self.cross_attention = nn.ModuleList(
            [CrossAttentionBlock(dim, num_heads, ffn_mult, dropout=dropout) for _ in self.sources]
        )
        self.record_attention = False
        self.last_attention: list[tuple[str, Tensor]] = []

    def forward(
        self, queries: Tensor, memories: dict[str, Tensor], masks: dict[str, Tensor] | None = None
    ) -> InteractionDecoderOutput:
        masks = dict(masks or {})
        missing = sorted(set(self.sources) - set(memories))
        if missing:
            raise ValueError(f"memories lacks {missing}; the decoder's layers attend to {list(self.sources)}")
        B, Q, _ = queries.shape
        updates = {s: queries.new_zeros(B, Q) for s in dict.fromkeys(self.sources)}
        recorded = []
        for source, self_block, cross_block in zip(self.sources, self.self_attention, self.cross_attention):
            memory = memories[source]
            mask = masks.get(source)
            if mask is None:
                mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
            has_source = mask.any(dim=1)[:, None, None]  # (B, 1, 1)
            refined = self_block(queries).out
            attended = cross_block(refined, memory, mask, need_weights=self.record_attention)
            queries = torch.where(has_source, attended.out, queries)
            updates[source] = updates[source] + attended.update.norm(dim=-1)  # zero where the source is absent
            if self.record_attention:
                recorded.append((source, attended.weights.detach()))
        if self.record_attention:
            self.last_attention = recorded
        return InteractionDecoderOutput(queries, updates)
