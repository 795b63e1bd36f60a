"""Bidirectional co-attention between modality token sets.

Implements the cross-modality encoder of LXMERT (Tan & Bansal, 2019, §2.2 "Cross-Modality Encoder") and
the inter-modal representation interaction of DeepInteraction++ (Yang et al., 2024): every modality keeps
its own token stream for the whole depth, and in each layer each stream queries the tokens of the *other*
streams; all streams update in parallel from the previous layer's states, nothing is merged early.
Cross-attention with BERT-style text tokens follows "An Efficient Multimodal Learning Framework to
Comprehend Consumer Preferences Using BERT and Cross-Attention".

Letters: B batch, N_m tokens of modality m, K keys (all other modalities' tokens, then m's own), H heads.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fusion_core.batch import FusionOutput, PreparedInputs, masked_mean
from fusion_core.fusion.base import FusionOperator
from fusion_core.fusion.registry import register_fusion
from fusion_core.layers.attention import MaskedAttention
from fusion_core.layers.mlp import FeedForward

__all__ = ["CrossAttentionFusion", "CoAttentionLayer", "check_transformer_options"]


def check_transformer_options(dim: int, num_layers: int, num_heads: int, ffn_mult: int, dropout: float) -> None:
    """Shared constructor checks of the attention-based operators."""
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be an int >= 1; got {num_layers!r}")
    if not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads must be an int >= 1; got {num_heads!r}")
    if dim % num_heads:
        raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}; pick num_heads dividing dim")
    if not isinstance(ffn_mult, int) or ffn_mult < 1:
        raise ValueError(f"ffn_mult must be an int >= 1; got {ffn_mult!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1); got {dropout}")


def _zero_padding(x: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))


class CoAttentionLayer(nn.Module):
    """One pre-norm co-attention layer over ``M`` modality streams of width ``dim``.

    ``forward(states [(B, N_m, dim)], masks [(B, N_m)])`` in modality order; returns the updated states and,
    when ``need_weights``, per modality the attention ``(B, H, N_m, K_m)`` whose keys are the other
    modalities' tokens in order followed by the modality's own tokens (used only as the fallback).
    """

    def __init__(self, num_modalities: int, dim: int, num_heads: int, ffn_mult: int, dropout: float) -> None:
        super().__init__()
        self.attn_norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(num_modalities)])
        self.attns = nn.ModuleList([MaskedAttention(dim, num_heads, dropout=dropout) for _ in range(num_modalities)])
        self.ffn_norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(num_modalities)])
        self.ffns = nn.ModuleList([FeedForward(dim, ffn_mult, dropout) for _ in range(num_modalities)])

    def forward(
        self, states: list[Tensor], masks: list[Tensor], need_weights: bool = False
    ) -> tuple[list[Tensor], list[Tensor | None]]:
        normed = [norm(x) for norm, x in zip(self.attn_norms, states)]  # each stream normed once, used as q and kv
        new_states, weights = [], []
        for i, x in enumerate(states):
            others = [j for j in range(len(states)) if j != i]
            other_masks = [masks[j] for j in others]
            has_other = (
                torch.cat(other_masks, dim=1).any(dim=1) if others else torch.zeros_like(masks[i][:, 0])
            )  # (B,)
            # The own tokens are always keys, but unmasked only where no other modality has a token: such a
            # sample falls back to self-attention instead of receiving a zero update.
            context = torch.cat([normed[j] for j in others] + [normed[i]], dim=1)  # (B, K, dim)
            key_mask = torch.cat(other_masks + [masks[i] & ~has_other[:, None]], dim=1)  # (B, K)
            attended = self.attns[i](normed[i], context, key_mask, need_weights=need_weights)
            x = x + attended.out
            x = x + self.ffns[i](self.ffn_norms[i](x))
            new_states.append(x)
            weights.append(attended.weights)
        return new_states, weights


@register_fusion("cross_attention")
class CrossAttentionFusion(FusionOperator):
    """Bidirectional co-attention fusion (LXMERT / DeepInteraction++).

    Input ``tokens {m: (B, N_m, D_m)}`` with masks. Each modality is projected to ``dim`` and gets a learned
    modality-type embedding; ``num_layers`` :class:`CoAttentionLayer` s then let each stream attend to the
    others. A sample whose other modalities are all absent attends to its own tokens instead.

    Output: ``tokens {m: (B, N_m, dim)}`` (final LayerNorm; padded and absent positions are zero);
    ``pooled (B, dim)`` = Linear(mean over the sample's present modalities of each one's masked token mean);
    a sample with no modality gets the Linear's bias. ``aux_loss`` is 0.

    Set ``record_attention = True`` to keep the last forward's attention in ``last_attention``:
    ``{m: [ {source: (B, H, N_m, N_source)} per layer ]}`` (detached), where ``source`` is another modality,
    or ``m`` itself for the self-fallback.
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
        num_modalities = len(self.modalities)
        # Lists in sorted modality order (names may contain '.', which nn.ModuleDict keys cannot).
        self.input_projs = nn.ModuleList([nn.Linear(d, dim) for d in self.modality_dims.values()])
        self.modality_embedding = nn.Parameter(torch.randn(num_modalities, dim) * 0.02)  # (M, dim)
        self.layers = nn.ModuleList(
            [CoAttentionLayer(num_modalities, dim, num_heads, ffn_mult, dropout) for _ in range(num_layers)]
        )
        self.final_norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(num_modalities)])
        self.head = nn.Linear(dim, dim)
        self.record_attention = False
        self.last_attention: dict[str, list[dict[str, Tensor]]] = {}

    def fuse(self, inputs: PreparedInputs) -> FusionOutput:
        masks = [inputs.mask[m] for m in self.modalities]
        states = [
            proj(inputs.tokens[m]) + self.modality_embedding[i]
            for i, (m, proj) in enumerate(zip(self.modalities, self.input_projs))
        ]  # each (B, N_m, dim)
        recorded: dict[str, list[dict[str, Tensor]]] = {m: [] for m in self.modalities}
        for layer in self.layers:
            states, weights = layer(states, masks, need_weights=self.record_attention)
            if self.record_attention:
                for i, m in enumerate(self.modalities):
                    recorded[m].append(self._split_by_source(i, weights[i].detach(), masks))
        if self.record_attention:
            self.last_attention = recorded

        out_tokens = {
            m: _zero_padding(norm(x), mask)
            for m, norm, x, mask in zip(self.modalities, self.final_norms, states, masks)
        }
        per_modality = torch.stack([masked_mean(out_tokens[m], inputs.mask[m]) for m in self.modalities], dim=1)
        present = torch.stack([inputs.present[m] for m in self.modalities], dim=1)  # (B, M)
        pooled = masked_mean(per_modality, present)  # (B, dim); zeros for a sample with nothing
        pooled = self.head(pooled)
        return FusionOutput(pooled=pooled, tokens=out_tokens, aux_loss=self.zero_loss(pooled), steps=None)

    def _split_by_source(self, i: int, weights: Tensor, masks: list[Tensor]) -> dict[str, Tensor]:
        sources = [j for j in range(len(self.modalities)) if j != i] + [i]
        chunks = weights.split([masks[j].shape[1] for j in sources], dim=-1)
        return {self.modalities[j]: chunk for j, chunk in zip(sources, chunks)}
