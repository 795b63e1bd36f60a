"""A pre-norm attention block: masked (cross-)attention then a feed-forward, each added residually.

``x ← x + Attn(LN(x), LN_c(context)); x ← x + FFN(LN(x))`` — the pre-norm layout of Xiong et al. (2020, "On
Layer Normalization in the Transformer Architecture"), with the context normalised by its own LayerNorm as in
the Perceiver's cross-attention. With ``context=None`` the block is self-attention over ``x``.

Letters: B batch, Nq queries, Nk keys, H heads, D width.
"""
from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from fusion_core.layers.attention import MaskedAttention
from fusion_core.layers.mlp import FeedForward

__all__ = ["CrossAttentionBlock", "CrossAttentionBlockOutput"]


class CrossAttentionBlockOutput(NamedTuple):
    out: Tensor  # (B, Nq, D) after both residual steps
    update: Tensor  # (B, Nq, D) what the attention added (zeros for a query with no unmasked key)
    weights: Tensor | None  # (B, H, Nq, Nk) when asked for


class CrossAttentionBlock(nn.Module):
    """Queries ``x (B, Nq, dim)`` attend to ``context (B, Nk, context_dim)`` where ``key_mask (B, Nk)`` is True.

    Args:
        dim: query width (and output width).
        num_heads: attention heads; must divide ``dim``.
        ffn_mult: hidden width of the feed-forward as a multiple of ``dim``; 0 leaves the feed-forward out
            (an attention-only block, e.g. the query self-attention of a DETR-style decoder layer).
        context_dim: key/value width (default ``dim``).
        norm_context: LayerNorm the context before attention (set False when the caller passes normed keys).
        dropout: on the attention probabilities and inside the feed-forward.

    A query whose keys are all masked receives a zero attention update (never NaN), so only its
    feed-forward step changes it.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        ffn_mult: int = 4,
        context_dim: int | None = None,
        norm_context: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(ffn_mult, int) or isinstance(ffn_mult, bool) or ffn_mult < 0:
            raise ValueError(f"ffn_mult must be an int >= 0 (0 = no feed-forward); got {ffn_mult!r}")
        if context_dim is not None and context_dim <= 0:
            raise ValueError(f"context_dim must be positive or None (= dim); got {context_dim}")
        context_dim = context_dim or dim
        self.query_norm = nn.LayerNorm(dim)
        self.context_norm = nn.LayerNorm(context_dim) if norm_context else nn.Identity()
        self.attention = MaskedAttention(dim, num_heads, context_dim=context_dim, dropout=dropout)
        self.ffn_norm = nn.LayerNorm(dim) if ffn_mult else None
        self.ffn = FeedForward(dim, ffn_mult, dropout) if ffn_mult else None

    def forward(
        self, x: Tensor, context: Tensor | None = None, key_mask: Tensor | None = None, need_weights: bool = False
    ) -> CrossAttentionBlockOutput:
        """``context=None`` is self-attention over ``x`` (then ``key_mask`` masks ``x``'s own tokens)."""
        normed = self.query_norm(x)
        if context is None and self.attention.to_kv.in_features != x.shape[-1]:
            raise ValueError("context=None means self-attention, which needs context_dim == dim; pass the context")
        context = normed if context is None else self.context_norm(context)
        attended = self.attention(normed, context, key_mask, need_weights=need_weights)
        out = x + attended.out
        if self.ffn is not None:
            out = out + self.ffn(self.ffn_norm(out))
        return CrossAttentionBlockOutput(out, attended.out, attended.weights)
