import pytest
import torch

from fusion_core.layers.cross_attention_block import CrossAttentionBlock


def build(seed=0, **options):
    torch.manual_seed(seed)
    return CrossAttentionBlock(8, num_heads=2, **options).eval()


def inputs(batch=2, seed=0, context_dim=8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 8, generator=g)
    context = torch.randn(batch, 5, context_dim, generator=g)
    key_mask = torch.ones(batch, 5, dtype=torch.bool)
    key_mask[-1, 3:] = False
    return x, context, key_mask


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("options", [{}, {"context_dim": 6}, {"ffn_mult": 0}, {"norm_context": False}])
def test_shapes(batch, options):
    block = build(**options)
    x, context, key_mask = inputs(batch, context_dim=options.get("context_dim", 8))
    out = block(x, context, key_mask, need_weights=True)
    assert out.out.shape == out.update.shape == (batch, 3, 8)
    assert out.weights.shape == (batch, 2, 3, 5)
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(batch, 2, 3))
    if "context_dim" in options:
        with pytest.raises(ValueError, match="context_dim == dim"):
            block(x)
    else:
        assert block(x).out.shape == (batch, 3, 8)  # context=None: self-attention


def test_the_block_is_attention_then_feed_forward_each_added_residually():
    block = build()
    x, context, key_mask = inputs()
    out = block(x, context, key_mask)
    attended = block.attention(block.query_norm(x), block.context_norm(context), key_mask).out
    torch.testing.assert_close(out.update, attended)
    after_attention = x + attended
    torch.testing.assert_close(out.out, after_attention + block.ffn(block.ffn_norm(after_attention)))
    bare = build(ffn_mult=0)
    assert bare.ffn is None and bare.ffn_norm is None
    torch.testing.assert_close(bare(x, context, key_mask).out, x + bare(x, context, key_mask).update)


@pytest.mark.parametrize("options", [{}, {"ffn_mult": 0, "norm_context": False}])
def test_every_parameter_gets_a_gradient(options):
    block = build(**options).train()
    x, context, key_mask = inputs()
    context = None if options else context  # the attention-only block is used for self-attention
    block(x, context, key_mask if context is not None else None).out.sum().backward()
    missing = [n for n, p in block.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_masked_keys_never_reach_the_output():
    block = build()
    x, context, key_mask = inputs()
    with torch.no_grad():
        base = block(x, context, key_mask).out
        poisoned = context.masked_fill(~key_mask[..., None], 1e6)
        out = block(x, poisoned, key_mask).out
    torch.testing.assert_close(out, base)


def test_a_query_without_keys_gets_no_attention_update():
    block = build()
    x, context, key_mask = inputs()
    key_mask[1] = False
    out = block(x, context, key_mask)
    assert torch.equal(out.update[1], torch.zeros(3, 8))
    torch.testing.assert_close(out.out[1], x[1] + block.ffn(block.ffn_norm(x[1])))
    assert torch.isfinite(out.out).all()


def test_samples_are_independent():
    block = build()
    x, context, key_mask = inputs()
    with torch.no_grad():
        both = block(x, context, key_mask).out
        first = block(x[:1], context[:1], key_mask[:1]).out
    torch.testing.assert_close(both[:1], first)


# out[:, 0, :4] of build() on inputs(seed=1); recompute only after a deliberate change to the block's maths
EXPECTED = [[-2.065963, -1.205181, -1.318729, -1.508368], [1.188982, -0.325446, -2.445007, -1.000813]]


def test_seeded_numeric_regression():
    block = build()
    with torch.no_grad():
        out = block(*inputs(seed=1)).out[:, 0, :4]
    torch.testing.assert_close(out, torch.tensor(EXPECTED), rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "options,match",
    [({"ffn_mult": -1}, "ffn_mult"), ({"num_heads": 3}, "divisible"), ({"context_dim": -2}, "context_dim"),
     ({"dropout": 1.0}, "dropout")],
)
def test_bad_arguments_raise(options, match):
    with pytest.raises(ValueError, match=match):
        CrossAttentionBlock(8, **{"num_heads": 2, **options})
