"""MaskedAttention / masked_attention against a plain softmax(QKᵀ/√d)V reference.

Contract on masked positions: masking decides which keys take part, it does not sanitise values. A masked
key or value must be finite (``prepare_inputs`` guarantees it with ``torch.where``); then its value never
reaches the output. A NaN left in place may propagate (``NaN · 0`` is NaN inside the matmul).
"""
import math

import pytest
import torch

from fusion_core.layers.attention import MaskedAttention, masked_attention


def reference_attention(q, k, v, key_mask=None):
    """softmax(q kᵀ/√d) v over unmasked keys; a query with no key gets zeros. Returns (out, weights)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Nq, Nk)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # all -inf row → NaN → 0
    return weights @ v, weights


def random_qkv(batch=3, heads=2, nq=4, nk=5, d=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, d, generator=g, dtype=dtype) for n in (nq, nk, nk)]


KEY_MASK = torch.tensor([[1, 1, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)  # last: no key


def test_matches_reference_with_mask_float64():
    q, k, v = random_qkv()
    out, weights = masked_attention(q, k, v, KEY_MASK, need_weights=True)
    ref_out, ref_weights = reference_attention(q, k, v, KEY_MASK)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(weights, ref_weights, rtol=1e-10, atol=1e-12)


def test_matches_reference_without_mask_float64():
    q, k, v = random_qkv(seed=1)
    out, weights = masked_attention(q, k, v, None, need_weights=True)
    ref_out, ref_weights = reference_attention(q, k, v)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(weights, ref_weights, rtol=1e-10, atol=1e-12)


def test_module_matches_reference_through_its_projections():
    torch.manual_seed(0)
    attn = MaskedAttention(dim=8, num_heads=2, context_dim=6).double().eval()
    g = torch.Generator().manual_seed(2)
    query = torch.randn(3, 4, 8, generator=g, dtype=torch.float64)
    context = torch.randn(3, 5, 6, generator=g, dtype=torch.float64)
    result = attn(query, context, KEY_MASK, need_weights=True)

    q = attn.to_q(query).view(3, 4, 2, 4).transpose(1, 2)  # (B, H, Nq, d)
    k, v = attn.to_kv(context).view(3, 5, 2, 2, 4).permute(2, 0, 3, 1, 4)  # 2 × (B, H, Nk, d)
    ref_out, ref_weights = reference_attention(q, k, v, KEY_MASK)
    expected = attn.proj(ref_out.transpose(1, 2).reshape(3, 4, 8))
    expected[2] = 0.0  # no key at all → zeros, also after the output projection's bias
    torch.testing.assert_close(result.out, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(result.weights, ref_weights, rtol=1e-10, atol=1e-12)


def test_query_without_keys_gives_zeros_and_finite_gradient():
    torch.manual_seed(0)
    attn = MaskedAttention(dim=8, num_heads=2)
    query = torch.randn(3, 4, 8, requires_grad=True)
    context = torch.randn(3, 5, 8, requires_grad=True)
    out = attn(query, context, KEY_MASK).out
    assert torch.equal(out[2], torch.zeros_like(out[2]))
    assert torch.isfinite(out).all()
    out.sum().backward()
    grads = [query.grad, context.grad] + [p.grad for p in attn.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.equal(query.grad[2], torch.zeros_like(query.grad[2]))  # a zeroed row passes no gradient


def test_need_weights_rows_sum_to_one_over_unmasked_keys_only():
    q, k, v = random_qkv(seed=3)
    _, weights = masked_attention(q, k, v, KEY_MASK, need_weights=True)  # (B, H, Nq, Nk)
    masked_out = ~KEY_MASK[:, None, None, :].expand_as(weights)
    assert torch.equal(weights[masked_out], torch.zeros_like(weights[masked_out]))
    row_sums = weights.sum(-1)
    torch.testing.assert_close(row_sums[:2], torch.ones_like(row_sums[:2]))
    assert torch.equal(row_sums[2], torch.zeros_like(row_sums[2]))  # the sample with no key


def test_masked_keys_values_do_not_leak_once_zeroed_by_caller():
    q, k, v = random_qkv(seed=4)
    base, _ = masked_attention(q, k, v, KEY_MASK)
    hidden = ~KEY_MASK[:, None, :, None]  # (B, 1, Nk, 1) broadcast over heads and width
    for garbage in (float("nan"), 1e6):
        k_bad = k.masked_fill(hidden, garbage)
        v_bad = v.masked_fill(hidden, garbage)
        # What the caller does (prepare_inputs): replace masked values by zeros with torch.where.
        k_safe = torch.where(hidden, torch.zeros((), dtype=k.dtype), k_bad)
        v_safe = torch.where(hidden, torch.zeros((), dtype=v.dtype), v_bad)
        out, weights = masked_attention(q, k_safe, v_safe, KEY_MASK, need_weights=True)
        assert torch.isfinite(out).all() and torch.isfinite(weights).all()
        torch.testing.assert_close(out, base, rtol=1e-12, atol=1e-12)
    # Finite garbage in masked positions is harmless even without zeroing: the mask alone excludes it.
    out, _ = masked_attention(q, k.masked_fill(hidden, 1e6), v.masked_fill(hidden, 1e6), KEY_MASK)
    torch.testing.assert_close(out, base, rtol=1e-12, atol=1e-12)


def test_module_with_nan_in_masked_context_through_where_has_finite_gradient():
    torch.manual_seed(0)
    attn = MaskedAttention(dim=8, num_heads=4)
    context = torch.randn(3, 5, 8).masked_fill(~KEY_MASK[..., None], float("nan")).requires_grad_()
    safe = torch.where(KEY_MASK[..., None], context, torch.zeros(()))
    out = attn(torch.randn(3, 2, 8), safe, KEY_MASK).out
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(context.grad).all()


@pytest.mark.parametrize("dim,num_heads", [(10, 4), (8, 3)])
def test_dim_not_divisible_by_heads_raises(dim, num_heads):
    with pytest.raises(ValueError, match="divisible by num_heads"):
        MaskedAttention(dim, num_heads)
