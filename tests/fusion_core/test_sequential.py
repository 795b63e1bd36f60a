import pytest
import torch

from fusion_core.fusion import create_fusion
from fusion_core.fusion.sequential import SequentialFusion

DIMS = {"a": 3, "b": 2, "c": 4}


def _batch(batch: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    tokens = {m: torch.randn(batch, 3, d, generator=gen, dtype=torch.float64) for m, d in DIMS.items()}
    token_mask = {m: torch.rand(batch, 3, generator=gen) < 0.8 for m in DIMS}
    present = {m: torch.rand(batch, generator=gen) < 0.6 for m in DIMS}
    present["a"][0] = present["b"][0] = present["c"][0] = False  # one sample with nothing at all
    for m in DIMS:  # absent values must never leak
        tokens[m][~present[m]] = float("nan")
        tokens[m][~token_mask[m]] = 1e6
    return tokens, token_mask, present


def _state_probe(fusion: SequentialFusion) -> SequentialFusion:
    """Make the decoder the identity, so ``steps`` are the states themselves."""
    with torch.no_grad():
        fusion.decoder.weight.copy_(torch.eye(fusion.dim, dtype=fusion.decoder.weight.dtype))
        fusion.decoder.bias.zero_()
    return fusion


def test_mixed_presence_batch_equals_each_sample_alone():
    torch.manual_seed(0)
    fusion = SequentialFusion(DIMS, dim=8, num_outputs=2).double().eval()
    with torch.no_grad():
        fusion.initial_state.normal_()
    tokens, token_mask, present = _batch(6)
    out = fusion(tokens, token_mask, present)
    assert out.pooled.shape == (6, 8) and out.tokens is None and out.aux_loss.item() == 0.0
    assert torch.isfinite(out.pooled).all()
    for i in range(6):
        alone = fusion(
            {m: t[i : i + 1] for m, t in tokens.items()},
            {m: t[i : i + 1] for m, t in token_mask.items()},
            {m: t[i : i + 1] for m, t in present.items()},
        )
        torch.testing.assert_close(alone.pooled[0], out.pooled[i], rtol=0, atol=1e-12)
        for step_alone, step in zip(alone.steps, out.steps):
            torch.testing.assert_close(step_alone[0], step[i], rtol=0, atol=1e-12)


def test_steps_hold_one_prediction_per_state_and_s0_is_shared():
    fusion = create_fusion("sequential", modality_dims=DIMS, dim=8, num_outputs=3).double()
    with torch.no_grad():
        fusion.initial_state.normal_()
    tokens, token_mask, present = _batch(4)
    out = fusion(tokens, token_mask, present)
    assert len(out.steps) == len(DIMS) + 1
    assert all(step.shape == (4, 3) for step in out.steps)
    assert (out.steps[0] == out.steps[0][:1]).all()
    torch.testing.assert_close(out.steps[0][0], fusion.decoder(fusion.initial_state))


def test_absent_modality_leaves_that_samples_state_unchanged():
    torch.manual_seed(1)
    fusion = _state_probe(SequentialFusion(DIMS, dim=8, num_outputs=8).double().eval())
    tokens, token_mask, present = _batch(6, seed=3)
    out = fusion(tokens, token_mask, present)
    torch.testing.assert_close(out.steps[-1], out.pooled)
    effective = {m: present[m] & token_mask[m].any(dim=1) for m in DIMS}
    for i, name in enumerate(fusion.order):
        before, after = out.steps[i], out.steps[i + 1]
        for b in range(6):
            if effective[name][b]:
                assert not torch.equal(before[b], after[b])
            else:
                assert torch.equal(before[b], after[b])
    assert effective["b"].any() and not effective["b"].all()  # the batch really mixes both cases


def test_batch_skip_skips_for_the_whole_batch_when_any_sample_lacks_it():
    torch.manual_seed(2)
    fusion = _state_probe(SequentialFusion(DIMS, dim=8, num_outputs=8, skip="batch").double())
    tokens = {m: torch.randn(3, 2, d, dtype=torch.float64) for m, d in DIMS.items()}
    lacking_b = {"b": torch.tensor([True, False, True])}
    for mode in ("train", "eval"):
        getattr(fusion, mode)()
        out = fusion(tokens, present=lacking_b)
        step_b = fusion.order.index("b")
        torch.testing.assert_close(out.steps[step_b + 1], out.steps[step_b], rtol=0, atol=0)
        full = fusion(tokens)
        assert not torch.allclose(full.steps[step_b + 1], full.steps[step_b])
        # Skipping b for all equals running every sample without b.
        without_b = fusion({m: t for m, t in tokens.items() if m != "b"})
        torch.testing.assert_close(out.pooled, without_b.pooled)
    # Per-sample skipping (the default) still uses b where it is present.
    per_sample = SequentialFusion(DIMS, dim=8, num_outputs=8).double().eval()
    per_sample.load_state_dict(fusion.state_dict())
    assert not torch.allclose(per_sample(tokens, present=lacking_b).pooled[0], without_b.pooled[0])


def test_shuffle_order_permutes_only_in_training():
    torch.manual_seed(3)
    fusion = SequentialFusion(DIMS, dim=8, order=["c", "a", "b"], shuffle_order=True).double()
    fixed = SequentialFusion(DIMS, dim=8, order=["c", "a", "b"]).double()
    fixed.load_state_dict(fusion.state_dict())
    tokens = {m: torch.randn(2, 2, d, dtype=torch.float64) for m, d in DIMS.items()}
    fusion.eval()
    for _ in range(5):
        torch.testing.assert_close(fusion(tokens).pooled, fixed(tokens).pooled)
        assert fusion.last_order == ["c", "a", "b"]
    fusion.train()
    seen = set()
    for _ in range(30):
        out = fusion(tokens)
        assert sorted(fusion.last_order) == sorted(DIMS)
        seen.add(tuple(fusion.last_order))
        fixed.order = fusion.last_order  # the same weights visited in the drawn order give the same result
        torch.testing.assert_close(out.pooled, fixed(tokens).pooled)
    assert len(seen) > 1


def test_every_parameter_gets_a_gradient():
    fusion = SequentialFusion(DIMS, dim=8)
    tokens = {m: torch.randn(2, 2, d) for m, d in DIMS.items()}
    out = fusion(tokens)
    (out.pooled.sum() + sum(step.sum() for step in out.steps)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fusion.parameters())


@pytest.mark.parametrize(
    "options, fix",
    [
        ({"order": ["a", "b"]}, "permutation"),
        ({"order": ["a", "b", "b"]}, "permutation"),
        ({"order": ["a", "b", "z"]}, "permutation"),
        ({"skip": "never"}, "'sample'"),
        ({"num_outputs": 0}, "num_outputs"),
    ],
)
def test_bad_options_raise(options, fix):
    with pytest.raises(ValueError, match=fix):
        SequentialFusion(DIMS, dim=8, **options)
