"""Context-based attention pooling: tokens are scored against a learned context vector.

The "context-based self-attention" of Ilias & Askounis summarises each branch (the spectrogram patches, the
transcript tokens) the way Yang et al. (2016, "Hierarchical Attention Networks for Document Classification",
Eq. 5–7) summarise words: ``u_n = tanh(W h_n + b)``, ``α_n = softmax_n(u_n · u_c)``, ``s = Σ_n α_n h_n``, where
the context vector ``u_c`` is learned with the model and asks "which tokens are informative?". Several heads
keep several context vectors; their summaries are concatenated and projected back to ``dim``.

Letters: B batch, N tokens, H heads, D width.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["ContextAttentionPooling", "ContextAttentionOutput"]


class ContextAttentionOutput(NamedTuple):
    """pooled: ``(B, D)`` summary (zeros for a sample with no real token).
    weights: ``(B, H, N)`` attention over the tokens (zeros on masked tokens; rows of a sample with no real
    token are zero)."""

    pooled: Tensor
    weights: Tensor


class ContextAttentionPooling(nn.Module):
    """Masked attention pooling of ``tokens (B, N, dim)`` conditioned on ``num_heads`` learned context vectors.

    Args:
        dim: token width.
        num_heads: number of context vectors (each one attention distribution).
        attention_dim: width of the scoring space ``u_n`` (default ``dim``).
    """

    def __init__(self, dim: int, num_heads: int = 1, attention_dim: int | None = None) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int; got {dim!r}")
        if not isinstance(num_heads, int) or num_heads <= 0:
            raise ValueError(f"num_heads must be a positive int; got {num_heads!r}")
        attention_dim = attention_dim or dim
        if attention_dim <= 0:
            raise ValueError(f"attention_dim must be positive; got {attention_dim}")
        self.num_heads = num_heads
        self.score_proj = nn.Linear(dim, attention_dim)
        self.context = nn.Parameter(torch.randn(num_heads, attention_dim) * attention_dim**-0.5)  # (H, A)
        self.out_proj = nn.Linear(num_heads * dim, dim) if num_heads > 1 else nn.Identity()

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> ContextAttentionOutput:
        if tokens.dim() != 3:
            raise ValueError(f"tokens must be (B, N, D); got shape {tuple(tokens.shape)}")
        batch, n, _ = tokens.shape
        if mask is None:
            mask = torch.ones(batch, n, dtype=torch.bool, device=tokens.device)
        elif mask.shape != (batch, n):
            raise ValueError(f"mask has shape {tuple(mask.shape)}; expected ({batch}, {n})")
        mask = mask.bool()
        zero = torch.zeros((), dtype=tokens.dtype, device=tokens.device)
        tokens = torch.where(mask[..., None], tokens, zero)  # padding never reaches the output, even NaN
        keys = torch.tanh(self.score_proj(tokens))  # (B, N, A)
        scores = torch.einsum("bna,ha->bhn", keys, self.context)  # (B, H, N)
        has_token = mask.any(dim=1)  # (B,)
        safe = mask | ~has_token[:, None]
        scores = scores.masked_fill(~safe[:, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1) * has_token[:, None, None]  # (B, H, N)
        summaries = torch.einsum("bhn,bnd->bhd", weights, tokens)  # (B, H, D)
        pooled = self.out_proj(summaries.reshape(batch, -1))  # (B, D)
        pooled = torch.where(has_token[:, None], pooled, zero)
        return ContextAttentionOutput(pooled, weights)
