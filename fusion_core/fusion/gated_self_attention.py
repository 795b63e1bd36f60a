"""Joint self-attention over all modalities' tokens with a learned sigmoid gate on the update.

Implements the "self-attention with a gate model" of Ilias & Askounis, "Context-Aware Attention Layers
coupled with Optimal Transport Domain Adaptation and Multimodal Fusion Methods for Recognizing Dementia from
Spontaneous Speech" (ADReSS): the attended context is mixed into each token through a gate computed from
the token and its context. The gate plays the role of ConViT's gating parameter (d'Ascoli et al., 2021,
"gated positional self-attention"), here per token and per channel rather than one scalar per head.

Letters: B batch, N all modalities' tokens concatenated (sorted modality order), H heads.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fusion_core.batch import FusionOutput, PreparedInputs, masked_mean
from fusion_core.fusion.base import FusionOperator
from fusion_core.fusion.cross_attention import check_transformer_options
from fusion_core.fusion.registry import register_fusion
from fusion_core.layers.attention import MaskedAttention
from fusion_core.layers.gating import SigmoidGate
from fusion_core.layers.mlp import FeedForward

__all__ = ["GatedSelfAttentionFusion", "GatedSelfAttentionLayer"]


class GatedSelfAttentionLayer(nn.Module):
    """``ctx = Attn(LN(x)); g = σ(W_g [x; ctx] + b); x ← x + g ⊙ ctx; x ← x + FFN(LN(x))``.

    ``forward(x (B, N, dim), mask (B, N))`` returns ``(x, weights (B, H, N, N) | None, gate (B, N, dim))``.

    The gate starts at about 0.5 on every channel (weights ~ N(0, 0.02²), bias 0), where the sigmoid is
    steepest (σ' = 1/4): the gate can learn to open or close from the first step, and the attention branch
    gets half its gradient. Near 0 the attention would be starved of gradient (its output is multiplied by
    g); near 1 the block is an ungated transformer whose saturated sigmoid barely learns. ConViT likewise
    starts its gate unsaturated (λ = 1, σ(1) ≈ 0.73).
    """

    def __init__(self, dim: int, num_heads: int, ffn_mult: int, dropout: float, gate_bias_init: float = 0.0) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = MaskedAttention(dim, num_heads, dropout=dropout)
        self.gate = SigmoidGate(2 * dim, dim, bias_init=gate_bias_init)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_mult, dropout)

    def forward(self, x: Tensor, mask: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None, Tensor]:
        attended = self.attn(self.attn_norm(x), key_mask=mask, need_weights=need_weights)
        gate = self.gate(x, attended.out)  # (B, N, dim)
        x = x + gate * attended.out
        x = x + self.ffn(self.ffn_norm(x))
        return x, attended.weights, gate


@register_fusion("gated_self_attention")
class GatedSelfAttentionFusion(FusionOperator):
    """Gated joint self-attention fusion (Ilias & Askounis; ConViT-style gate).

    Input ``tokens {m: (B, N_m, D_m)}`` with masks. Each modality is projected to ``dim`` plus a learned
    modality-type embedding; the token sets are concatenated to ``(B, N, dim)`` and passed through
    ``num_layers`` :class:`GatedSelfAttentionLayer` s, attending over every real token of every present
    modality.

    Output: ``tokens {m: (B, N_m, dim)}`` (final LayerNorm, split back per modality, padded positions zero);
    ``pooled (B, dim)`` = Linear(masked mean over all real tokens); a sample with no modality gets the
    Linear's bias. ``aux_loss`` is 0.

    Set ``record_attention = True`` to keep, detached, ``last_attention {m: [ {source: (B, H, N_m, N_source)}
    per layer ]}`` and ``last_gates {m: [(B, N_m, dim) per layer]}``.
    """

    def __init__(
        self,
        modality_dims: dict[str, int],
        dim: int,
        num_layers: int = 2,
        num_heads: int = 4,
        ffn_mult: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(modality_dims, dim)
        check_transformer_options(dim, num_layers, num_heads, ffn_mult, dropout)
        # Lists in sorted modality order (names may contain '.', which nn.ModuleDict keys cannot).
        self.input_projs = nn.ModuleList([nn.Linear(d, dim) for d in self.modality_dims.values()])
        self.modality_embedding = nn.Parameter(torch.randn(len(self.modalities), dim) * 0.02)  # (M, dim)
        self.layers = nn.ModuleList(
            [GatedSelfAttentionLayer(dim, num_heads, ffn_mult, dropout) for _ in range(num_layers)]
        )
        self.final_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, dim)
        self.record_attention = False
        self.last_attention: dict[str, list[dict[str, Tensor]]] = {}
        self.last_gates: dict[str, list[Tensor]] = {}

    def fuse(self, inputs: PreparedInputs) -> FusionOutput:
        sizes = [inputs.mask[m].shape[1] for m in self.modalities]
        x = torch.cat(
            [
                proj(inputs.tokens[m]) + self.modality_embedding[i]
                for i, (m, proj) in enumerate(zip(self.modalities, self.input_projs))
            ],
            dim=1,
        )  # (B, N, dim)
        mask = torch.cat([inputs.mask[m] for m in self.modalities], dim=1)  # (B, N)
        attention: dict[str, list[dict[str, Tensor]]] = {m: [] for m in self.modalities}
        gates: dict[str, list[Tensor]] = {m: [] for m in self.modalities}
        for layer in self.layers:
            x, weights, gate = layer(x, mask, need_weights=self.record_attention)
            if self.record_attention:
                query_rows = weights.detach().split(sizes, dim=2)  # per modality (B, H, N_m, N)
                for m, rows, gate_m in zip(self.modalities, query_rows, gate.detach().split(sizes, dim=1)):
                    attention[m].append(dict(zip(self.modalities, rows.split(sizes, dim=3))))
                    gates[m].append(gate_m)
        if self.record_attention:
            self.last_attention, self.last_gates = attention, gates

        x = self.final_norm(x)
        x = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        out_tokens = dict(zip(self.modalities, x.split(sizes, dim=1)))
        pooled = self.head(masked_mean(x, mask))  # (B, dim)
        return FusionOutput(pooled=pooled, tokens=out_tokens, aux_loss=self.zero_loss(pooled), steps=None)
