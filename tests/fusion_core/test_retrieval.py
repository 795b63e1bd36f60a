import math

import pytest
import torch

from fusion_core.layers.retrieval import (
    ActivationUnit,
    gather_history,
    masked_softmax_pool,
    target_attention,
    top_k_search,
)


def brute_force_top_k(query, keys, mask, k):
    """Reference: sort each row's real behaviours by score in plain Python."""
    out = []
    for b in range(query.shape[0]):
        scored = [(float(query[b] @ keys[b, i]), i) for i in range(keys.shape[1]) if mask[b, i]]
        scored.sort(key=lambda pair: -pair[0])
        out.append(scored[:k])
    return out


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("length, k", [(12, 4), (6, 6), (3, 5)])
def test_top_k_matches_brute_force(batch, length, k):
    generator = torch.Generator().manual_seed(batch * 100 + length)
    query = torch.randn(batch, 8, generator=generator)
    keys = torch.randn(batch, length, 8, generator=generator)
    mask = torch.rand(batch, length, generator=generator) > 0.3
    mask[:, -1] = True
    found = top_k_search(query, keys, mask, k)
    assert found.scores.shape == found.indices.shape == found.valid.shape == (batch, k)
    for b, expected in enumerate(brute_force_top_k(query, keys, mask, k)):
        n = len(expected)
        assert found.indices[b, :n].tolist() == [i for _, i in expected]
        torch.testing.assert_close(found.scores[b, :n], torch.tensor([s for s, _ in expected]))
        assert found.valid[b, :n].all() and not found.valid[b, n:].any()
        assert torch.equal(found.scores[b, n:], torch.zeros(k - n))


def test_masked_positions_are_never_kept_even_with_the_highest_scores():
    query = torch.ones(2, 4)
    keys = torch.randn(2, 10, 4)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, :6] = True
    mask[1, 2] = True
    keys[~mask] = 1e6  # masked behaviours would win on score
    found = top_k_search(query, keys, mask, 3)
    kept = found.indices[found.valid]
    rows = torch.arange(2)[:, None].expand(2, 3)[found.valid]
    assert mask[rows, kept].all()
    assert found.valid.sum(dim=1).tolist() == [3, 1]
    assert torch.isfinite(found.scores).all()


def test_top_k_scores_carry_gradient_to_query_and_keys():
    query = torch.randn(2, 4, requires_grad=True)
    keys = torch.randn(2, 7, 4, requires_grad=True)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, :5] = False
    top_k_search(query, keys, mask, 3).scores.sum().backward()
    assert query.grad.abs().sum() > 0 and torch.isfinite(query.grad).all()
    assert torch.equal(keys.grad[1, :5], torch.zeros(5, 4))  # masked keys get no gradient


def test_top_k_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k must be positive"):
        top_k_search(torch.randn(1, 4), torch.randn(1, 3, 4), torch.ones(1, 3, dtype=torch.bool), 0)
    with pytest.raises(ValueError, match="key_mask"):
        top_k_search(torch.randn(1, 4), torch.randn(1, 3, 4), torch.ones(1, 2, dtype=torch.bool), 2)


def test_gather_history():
    x = torch.arange(12).reshape(2, 6)
    idx = torch.tensor([[5, 0], [1, 1]])
    assert gather_history(x, idx).tolist() == [[5, 0], [7, 7]]
    emb = torch.arange(24.0).reshape(2, 6, 2)
    assert torch.equal(gather_history(emb, idx)[1, 0], emb[1, 1])


@pytest.mark.parametrize("batch", [1, 2])
def test_target_attention_is_masked_softmax_of_scaled_dot_products(batch):
    torch.manual_seed(batch)
    query, keys, values = torch.randn(batch, 4), torch.randn(batch, 5, 4), torch.randn(batch, 5, 3)
    mask = torch.tensor([[True, True, False, True, False]] * batch)
    pool = target_attention(query, keys, values, mask, temperature=2.0)
    assert pool.interest.shape == (batch, 3) and pool.weights.shape == (batch, 5)
    for b in range(batch):
        logits = keys[b, mask[b]] @ query[b] / 2.0
        expected = torch.softmax(logits, dim=0)
        torch.testing.assert_close(pool.weights[b, mask[b]], expected)
        torch.testing.assert_close(pool.interest[b], expected @ values[b, mask[b]])
    assert torch.equal(pool.weights[~mask], torch.zeros(int((~mask).sum())))
    default = target_attention(query, keys, values, mask)  # temperature √D
    torch.testing.assert_close(default.weights, target_attention(query, keys, values, mask, math.sqrt(4)).weights)


def test_all_masked_row_gives_zeros_and_finite_gradients():
    query = torch.randn(2, 4, requires_grad=True)
    keys = torch.randn(2, 3, 4, requires_grad=True)
    values = torch.randn(2, 3, 6, requires_grad=True)
    mask = torch.tensor([[False, False, False], [True, False, True]])
    pool = target_attention(query, keys, values, mask)
    assert torch.equal(pool.interest[0], torch.zeros(6)) and torch.equal(pool.weights[0], torch.zeros(3))
    torch.testing.assert_close(pool.weights[1].sum(), torch.tensor(1.0))
    pool.interest.sum().backward()
    for tensor in (query, keys, values):
        assert torch.isfinite(tensor.grad).all()


def test_masked_entries_never_reach_the_output_even_as_nan():
    logits = torch.tensor([[0.3, float("nan"), -1.0]])
    values = torch.tensor([[[1.0, 2.0], [float("nan"), float("inf")], [3.0, 4.0]]])
    mask = torch.tensor([[True, False, True]])
    pool = masked_softmax_pool(logits, values, mask)
    assert torch.isfinite(pool.interest).all() and pool.weights[0, 1] == 0
    clean = masked_softmax_pool(torch.tensor([[0.3, 0.0, -1.0]]), torch.tensor([[[1.0, 2.0], [0.0, 0.0], [3.0, 4.0]]]), mask)
    torch.testing.assert_close(pool.interest, clean.interest)


def test_target_attention_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        target_attention(torch.randn(1, 4), torch.randn(1, 2, 4), torch.randn(1, 2, 4), torch.ones(1, 2, dtype=torch.bool), 0.0)


@pytest.mark.parametrize("batch", [1, 2])
def test_activation_unit_shapes_and_gradients(batch):
    torch.manual_seed(0)
    unit = ActivationUnit(6, hidden_dim=8)
    query, keys = torch.randn(batch, 6, requires_grad=True), torch.randn(batch, 5, 6)
    logits = unit(query, keys)
    assert logits.shape == (batch, 5)
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in unit.parameters())
    with pytest.raises(ValueError, match="positive"):
        ActivationUnit(0)
