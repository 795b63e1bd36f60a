"""Masked multi-head attention on ``torch.nn.functional.scaled_dot_product_attention``.

Letters: b batch, h heads, q query tokens, k key tokens, d head width.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = ["MaskedAttention", "AttentionOutput", "masked_attention"]


class AttentionOutput(NamedTuple):
    out: Tensor  # (B, Nq, D)
    weights: Tensor | None  # (B, H, Nq, Nk), head-wise attention, when asked for


def masked_attention(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None, need_weights: bool = False, dropout_p: float = 0.0
) -> tuple[Tensor, Tensor | None]:
    """``softmax(q kᵀ / √d) v`` over keys where ``key_mask (B, Nk)`` is True.

    q ``(B, H, Nq, d)``, k/v ``(B, H, Nk, d)``. A query whose keys are all masked gets zeros (never NaN):
    such rows are computed against an all-True mask and then zeroed.
    """
    if key_mask is None:
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        weights = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1) if need_weights else None
        return out, weights
    has_key = key_mask.any(dim=-1)  # (B,)
    safe_mask = key_mask | ~has_key[:, None]  # rows with no key attend everywhere, then get zeroed
    attn_mask = safe_mask[:, None, None, :]  # (B, 1, 1, Nk) broadcast over heads and queries
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    out = torch.where(has_key[:, None, None, None], out, torch.zeros((), dtype=out.dtype, device=out.device))
    weights = None
    if need_weights:
        scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, Nq, Nk)
        scores = scores.masked_fill(~attn_mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1) * has_key[:, None, None, None]
    return out, weights


class MaskedAttention(nn.Module):
    """Multi-head attention of a query set over a key/value set with a per-sample key mask.

    ``forward(query (B, Nq, D), context (B, Nk, Dc) | None, key_mask (B, Nk) | None)``; ``context=None`` is
    self-attention. Output ``(B, Nq, D)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        context_dim: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if dim <= 0 or num_heads <= 0:
            raise ValueError(f"dim and num_heads must be positive; got dim={dim}, num_heads={num_heads}")
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}; pick num_heads dividing dim")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        context_dim = context_dim or dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_kv = nn.Linear(context_dim, 2 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        query: Tensor,
        context: Tensor | None = None,
        key_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> AttentionOutput:
        context = query if context is None else context
        q = rearrange(self.to_q(query), "b q (h d) -> b h q d", h=self.num_heads)
        k, v = rearrange(self.to_kv(context), "b k (two h d) -> two b h k d", two=2, h=self.num_heads)
        out, weights = masked_attention(
            q, k, v, key_mask, need_weights=need_weights, dropout_p=self.dropout if self.training else 0.0
        )
        out = self.proj(rearrange(out, "b h q d -> b q (h d)"))
        if key_mask is not None:  # keep "no key → zeros" true after the projection's bias
            out = torch.where(key_mask.any(dim=-1)[:, None, None], out, torch.zeros((), dtype=out.dtype, device=out.device))
        return AttentionOutput(out, weights)
