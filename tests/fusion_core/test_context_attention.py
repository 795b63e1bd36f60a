"""Context-based attention pooling: shapes, masking, known values, gradients, argument checks."""
from __future__ import annotations

import pytest
import torch

from fusion_core.layers.context_attention import ContextAttentionPooling


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("heads", [1, 3])
def test_shapes_and_weights_sum_to_one(batch, heads):
    torch.manual_seed(0)
    pool = ContextAttentionPooling(8, num_heads=heads)
    out = pool(torch.randn(batch, 5, 8))
    assert out.pooled.shape == (batch, 8)
    assert out.weights.shape == (batch, heads, 5)
    assert torch.allclose(out.weights.sum(-1), torch.ones(batch, heads))


def test_padding_never_reaches_the_output_even_as_nan():
    torch.manual_seed(0)
    pool = ContextAttentionPooling(8, num_heads=2)
    tokens = torch.randn(2, 6, 8)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    poisoned = tokens.clone()
    poisoned[0, 4:] = float("nan")
    reference = pool(tokens, mask)
    out = pool(poisoned, mask)
    assert torch.isfinite(out.pooled).all()
    assert torch.allclose(out.pooled, reference.pooled)
    assert torch.allclose(out.pooled[0], pool(tokens[:1, :4]).pooled[0], atol=1e-6)  # same as dropping the padding
    assert (out.weights[0, :, 4:] == 0).all()


def test_a_sample_without_tokens_gets_zeros():
    pool = ContextAttentionPooling(4)
    out = pool(torch.full((2, 3, 4), 1e9), torch.tensor([[False] * 3, [True, False, False]]))
    assert (out.pooled[0] == 0).all() and (out.weights[0] == 0).all()
    assert torch.allclose(out.weights[1, 0], torch.tensor([1.0, 0.0, 0.0]))


def test_known_values_uniform_scores_give_the_masked_mean_and_context_picks_the_aligned_token():
    pool = ContextAttentionPooling(2)
    with torch.no_grad():
        pool.score_proj.weight.zero_()
        pool.score_proj.bias.zero_()
    tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    out = pool(tokens, torch.tensor([[True, True, False]]))
    assert torch.allclose(out.pooled, torch.tensor([[2.0, 3.0]]))

    with torch.no_grad():
        pool.score_proj.weight.copy_(torch.eye(2) * 10)
        pool.context.copy_(torch.tensor([[5.0, -5.0]]))
    out = pool(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    assert out.weights[0, 0, 0] > 0.999  # tanh(10)·5 − tanh(0)·5 against −5: the first token wins
    assert torch.allclose(out.pooled, torch.tensor([[1.0, 0.0]]), atol=1e-3)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    pool = ContextAttentionPooling(6, num_heads=2, attention_dim=4)
    pool(torch.randn(2, 5, 6), torch.tensor([[True] * 5, [True, True, False, False, False]])).pooled.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pool.parameters())


def test_seeded_numeric_regression():
    torch.manual_seed(1)
    pool = ContextAttentionPooling(4, num_heads=1)
    tokens = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4) / 10
    out = pool(tokens)
    expected = (out.weights[0, 0][:, None] * tokens[0]).sum(0)
    assert torch.allclose(out.pooled[0], expected)
    scores = torch.tanh(pool.score_proj(tokens[0])) @ pool.context[0]
    assert torch.allclose(out.weights[0, 0], torch.softmax(scores, 0))


@pytest.mark.parametrize("kwargs,match", [({"dim": 0}, "dim"), ({"dim": 4, "num_heads": 0}, "num_heads")])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ContextAttentionPooling(**kwargs)


def test_bad_mask_shape_raises():
    with pytest.raises(ValueError, match="mask has shape"):
        ContextAttentionPooling(4)(torch.randn(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))
