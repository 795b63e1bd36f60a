"""Target attention over a user's behaviour history, and the two-stage search that makes it affordable on
long histories (SIM/TWIN/DARE: a cheap stage-1 search keeps the top-k behaviours, stage 2 attends over them).

Shapes: B batch, L history length, k kept behaviours, D attention width, Dv value width.
Masking follows fusion_core's convention: masked entries are replaced with ``torch.where`` (never multiplied
by zero, ``NaN * 0`` is NaN), and a query with no real behaviour gets zero interest and zero weights.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from fusion_core.layers.mlp import MLP

__all__ = [
    "SearchResult",
    "AttentionPool",
    "top_k_search",
    "top_k_of_scores",
    "gather_history",
    "masked_softmax_pool",
    "target_attention",
    "ActivationUnit",
]


class SearchResult(NamedTuple):
    """Stage-1 search output, best first along ``k``."""

    scores: Tensor  # (B, k) query·key of the kept behaviours, 0 where not valid
    indices: Tensor  # (B, k) long, positions in the history
    valid: Tensor  # (B, k) bool, False where the history had fewer than k real behaviours


class AttentionPool(NamedTuple):
    interest: Tensor  # (B, Dv) attention-weighted sum of the values
    weights: Tensor  # (B, k) softmax weights, 0 on masked entries


def top_k_search(query: Tensor, keys: Tensor, key_mask: Tensor, k: int) -> SearchResult:
    """Keep the ``k`` behaviours with the largest dot product ``query · key`` among the unmasked ones.

    query ``(B, D)``, keys ``(B, L, D)``, key_mask ``(B, L)`` bool. Masked positions are never kept ahead of
    a real one; when a row has fewer than ``k`` real behaviours (or ``L < k``) the remaining slots are marked
    ``valid = False`` with score 0. The selection is not differentiable; the returned scores are (through the
    kept keys and the query).
    """
    if k <= 0:
        raise ValueError(f"k must be positive; got {k}")
    if query.dim() != 2 or keys.dim() != 3 or keys.shape[0] != query.shape[0] or keys.shape[-1] != query.shape[-1]:
        raise ValueError(f"expected query (B, D) and keys (B, L, D); got {tuple(query.shape)} and {tuple(keys.shape)}")
    if key_mask.shape != keys.shape[:2]:
        raise ValueError(f"key_mask has shape {tuple(key_mask.shape)}; expected {tuple(keys.shape[:2])}")
    scores = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)  # (B, L)
    return top_k_of_scores(scores, key_mask, k)


def top_k_of_scores(scores: Tensor, key_mask: Tensor, k: int) -> SearchResult:
    """The ``k`` largest of ``scores (B, L)`` among the positions where ``key_mask (B, L)`` is True, best first.

    For searches that score the history without materialising its ``(B, L, D)`` keys (a per-field dot product, or
    one score per catalogue item gathered by id: :meth:`fusion_core.encoders.FieldEmbedding.dot`). Same padding
    rules as :func:`top_k_search`.
    """
    if k <= 0:
        raise ValueError(f"k must be positive; got {k}")
    if key_mask.shape != scores.shape:
        raise ValueError(f"key_mask has shape {tuple(key_mask.shape)}; expected {tuple(scores.shape)}")
    batch, length = key_mask.shape
    key_mask = key_mask.bool()
    scores = scores.masked_fill(~key_mask, float("-inf"))
    kept = min(k, length)
    top_scores, indices = scores.topk(kept, dim=-1)  # (B, kept), descending
    valid = key_mask.gather(1, indices)
    top_scores = torch.where(valid, top_scores, top_scores.new_zeros(()))
    if kept < k:
        pad = k - kept
        top_scores = torch.cat([top_scores, top_scores.new_zeros(batch, pad)], dim=1)
        indices = torch.cat([indices, indices.new_zeros(batch, pad)], dim=1)
        valid = torch.cat([valid, valid.new_zeros(batch, pad)], dim=1)
    return SearchResult(top_scores, indices, valid)


def gather_history(x: Tensor, indices: Tensor) -> Tensor:
    """Pick positions ``indices (B, k)`` out of ``x (B, L)`` or ``x (B, L, D)`` → ``(B, k)`` / ``(B, k, D)``."""
    if x.dim() == 2:
        return x.gather(1, indices)
    return x.gather(1, indices[..., None].expand(-1, -1, x.shape[-1]))


def masked_softmax_pool(logits: Tensor, values: Tensor, mask: Tensor) -> AttentionPool:
    """``softmax(logits)`` over entries where ``mask (B, k)`` is True, then the weighted sum of ``values (B, k, Dv)``.

    Masked entries get weight 0 whatever their logit or value (NaN included); a row with no unmasked entry
    gets zero weights and zero interest.
    """
    mask = mask.bool()
    has_any = mask.any(dim=-1, keepdim=True)  # (B, 1)
    # rows with no real entry softmax over zeros instead of all -inf (which would be NaN), then get zeroed
    fill = torch.where(has_any, logits.new_full((), float("-inf")), logits.new_zeros(()))
    logits = torch.where(mask, logits, fill)
    weights = torch.softmax(logits, dim=-1)
    weights = torch.where(mask, weights, weights.new_zeros(()))  # (B, k)
    values = torch.where(mask[..., None], values, values.new_zeros(()))
    interest = torch.bmm(weights.unsqueeze(1), values).squeeze(1)  # (B, Dv)
    return AttentionPool(interest, weights)


def target_attention(
    query: Tensor, keys: Tensor, values: Tensor, mask: Tensor, temperature: float | None = None
) -> AttentionPool:
    """Scaled dot-product target attention of one query over ``k`` behaviours.

    query ``(B, D)``, keys ``(B, k, D)``, values ``(B, k, Dv)``, mask ``(B, k)``; logits ``query · key /
    temperature`` (default ``√D``), softmax over the unmasked entries, interest ``Σ weight · value``.
    """
    if temperature is None:
        temperature = math.sqrt(query.shape[-1])
    if temperature <= 0:
        raise ValueError(f"temperature must be positive; got {temperature}")
    logits = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1) / temperature  # (B, k)
    return masked_softmax_pool(logits, values, mask)


class ActivationUnit(nn.Module):
    """DIN's local activation unit (Zhou et al., 2018): a behaviour's attention logit is
    ``MLP([target, behaviour, target − behaviour, target ⊙ behaviour])``.

    ``forward(query (B, D), keys (B, L, D)) -> logits (B, L)``; normalise with :func:`masked_softmax_pool`.
    """

    def __init__(self, dim: int, hidden_dim: int = 36) -> None:
        super().__init__()
        if dim <= 0 or hidden_dim <= 0:
            raise ValueError(f"ActivationUnit widths must be positive; got dim={dim}, hidden_dim={hidden_dim}")
        self.mlp = MLP(4 * dim, [hidden_dim], 1, activation=nn.PReLU)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        query = query.unsqueeze(1).expand_as(keys)  # (B, L, D)
        features = torch.cat([query, keys, query - keys, query * keys], dim=-1)  # (B, L, 4D)
        return self.mlp(features).squeeze(-1)
