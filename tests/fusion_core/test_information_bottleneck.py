import math

import pytest
import torch

from fusion_core.fusion import create_fusion
from fusion_core.fusion.information_bottleneck import InformationBottleneckFusion

DIMS3 = {"a": 2, "b": 3, "c": 2}


def _fix_output(mlp: torch.nn.Sequential, bias: list[float]) -> None:
    """Make an MLP output the constant ``bias`` whatever its input."""
    with torch.no_grad():
        mlp[-1].weight.zero_()
        mlp[-1].bias.copy_(torch.tensor(bias, dtype=mlp[-1].bias.dtype))


def _kl(mu: list[float], logvar: list[float]) -> float:
    """KL(N(mu, e^logvar) || N(0, 1)) averaged over dims, by hand."""
    return sum(0.5 * (math.exp(lv) + m * m - 1.0 - lv) for m, lv in zip(mu, logvar)) / len(mu)


def _mse(pred: list[float], target: list[float]) -> float:
    return sum((p - t) ** 2 for p, t in zip(pred, target)) / len(pred)


@pytest.mark.parametrize("dims", [{"a": 2}, DIMS3, {"a": 2, "b": 3, "c": 2, "d": 1}], ids=["M1", "M3", "M4"])
def test_aux_loss_equals_formula_on_hand_computed_case(dims):
    beta, gamma, lam = 8.0, 32.0, 0.3
    fusion = InformationBottleneckFusion(dims, dim=4, latent_dim=2, hidden_dim=3, beta=beta, gamma=gamma, lam=lam)
    fusion.double().eval()
    order = sorted(dims)
    latents = [([0.5, -1.0], [0.2, -0.3]), ([1.5, 0.0], [-1.0, 0.4]), ([-0.2, 0.7], [0.0, 0.1])]
    for k, encoder in enumerate(fusion.latent_encoders):
        mu, logvar = latents[k]
        _fix_output(encoder, mu + logvar)
    predictions = {}
    for k, predictor in enumerate(fusion.predictors):
        predictions[k] = [0.1 * (k + 1) * (j + 1) for j in range(dims[order[k + 1]])]
        _fix_output(predictor, predictions[k])

    # Two samples; each modality has two tokens, the second padded for sample 1.
    torch.manual_seed(0)
    tokens = {m: torch.randn(2, 2, d, dtype=torch.float64) for m, d in dims.items()}
    token_mask = {m: torch.tensor([[True, True], [True, False]]) for m in dims}
    pooled = {m: [tokens[m][0].mean(0).tolist(), tokens[m][1, 0].tolist()] for m in dims}

    expected = 0.0
    for k in range(max(len(order) - 1, 1)):
        weight = beta if k == 0 else gamma
        term = _kl(*latents[k])
        if k + 1 < len(order):
            target = pooled[order[k + 1]]
            term += weight * (_mse(predictions[k], target[0]) + _mse(predictions[k], target[1])) / 2
        expected += lam**k * term
    expected *= 2.0 / (beta + gamma)

    out = fusion(tokens, token_mask)
    assert out.aux_loss.shape == ()
    assert out.aux_loss.item() == pytest.approx(expected, rel=1e-12)
    # pooled = Linear([B_last ; Linear(prime)]) with B_last = μ of the last latent in eval mode.
    last_mu = torch.tensor(latents[len(fusion.latent_encoders) - 1][0], dtype=torch.float64).expand(2, 2)
    prime = torch.tensor(pooled[order[0]], dtype=torch.float64)
    want = fusion.out(torch.cat([last_mu, fusion.prime_proj(prime)], dim=-1))
    torch.testing.assert_close(out.pooled, want, rtol=1e-12, atol=1e-12)


def test_absent_predicted_modality_is_masked_out_of_its_prediction_mean():
    fusion = InformationBottleneckFusion(DIMS3, dim=4, latent_dim=2, hidden_dim=3).double().eval()
    for encoder in fusion.latent_encoders:
        _fix_output(encoder, [0.0, 0.0, 0.0, 0.0])  # KL terms vanish: μ = 0, logvar = 0
    _fix_output(fusion.predictors[0], [0.0, 0.0, 0.0])
    _fix_output(fusion.predictors[1], [1.0, -1.0])
    tokens = {m: torch.zeros(3, 1, d, dtype=torch.float64) for m, d in DIMS3.items()}
    tokens["c"][0, 0] = torch.tensor([3.0, -1.0])  # squared error 4, 0 -> 2
    tokens["c"][1, 0] = float("nan")  # absent below: must not count nor leak
    tokens["c"][2, 0] = torch.tensor([1.0, 3.0])  # squared error 0, 16 -> 8
    present = {"c": torch.tensor([True, False, True])}
    out = fusion(tokens, present=present)
    # pred0 = 0 (predictions equal the zero b features); pred1 over samples 0 and 2 only: (2 + 8) / 2.
    expected = 2.0 / 40.0 * (0.3 * 32.0 * (2.0 + 8.0) / 2)
    assert out.aux_loss.item() == pytest.approx(expected, rel=1e-12)
    # With c absent everywhere the c term disappears entirely.
    out = fusion(tokens, present={"c": torch.zeros(3, dtype=torch.bool)})
    assert out.aux_loss.item() == pytest.approx(0.0, abs=1e-15)


def test_prime_absent_gives_the_no_prime_answer_and_no_loss_terms():
    torch.manual_seed(1)
    fusion = InformationBottleneckFusion(DIMS3, dim=4).double()
    tokens = {m: torch.randn(3, 2, d, dtype=torch.float64) for m, d in DIMS3.items()}
    tokens["a"][1] = float("nan")
    present = {"a": torch.tensor([True, False, True])}
    no_prime = fusion.out(torch.cat([torch.zeros(1, 4, dtype=torch.float64), fusion.prime_proj.bias[None]], dim=-1))
    for mode in ("train", "eval"):
        getattr(fusion, mode)()
        torch.manual_seed(2)
        out = fusion(tokens, present=present)
        assert torch.isfinite(out.pooled).all() and torch.isfinite(out.aux_loss)
        torch.testing.assert_close(out.pooled[1], no_prime[0])  # not sampled, even in train mode
    # Its terms are left out of every mean: the loss is that of the batch without it.
    fusion.eval()
    kept = {m: t[[0, 2]] for m, t in tokens.items()}
    torch.testing.assert_close(fusion(tokens, present=present).aux_loss, fusion(kept).aux_loss)
    # A batch without any prime has nothing to compress: loss 0, output the no-prime answer.
    out = fusion(tokens, present={"a": torch.zeros(3, dtype=torch.bool)})
    assert out.aux_loss.item() == 0.0
    torch.testing.assert_close(out.pooled, no_prime.expand(3, 4))


def test_only_the_prime_feeds_pooled_the_others_only_the_loss():
    torch.manual_seed(3)
    fusion = create_fusion("information_bottleneck", modality_dims=DIMS3, dim=4, order=["b", "c", "a"]).eval()
    tokens = {m: torch.randn(2, 3, d) for m, d in DIMS3.items()}
    base = fusion(tokens)
    changed = dict(tokens, a=torch.randn(2, 3, 2), c=torch.randn(2, 3, 2))
    out = fusion(changed)
    torch.testing.assert_close(out.pooled, base.pooled)
    assert not torch.allclose(out.aux_loss, base.aux_loss)
    out = fusion(dict(tokens, b=torch.randn(2, 3, 3)))
    assert not torch.allclose(out.pooled, base.pooled)


@pytest.mark.parametrize(
    "order", [["a", "b"], ["a", "b", "b"], ["a", "b", "x"], "abc", ["a", "b", "c", "a"], ["a", 1, "c"]]
)
def test_order_must_be_a_permutation(order):
    with pytest.raises(ValueError, match="permutation"):
        InformationBottleneckFusion(DIMS3, dim=4, order=order)


@pytest.mark.parametrize(
    "options, fix",
    [
        ({"beta": -1.0}, "non-negative"),
        ({"beta": 0.0, "gamma": 0.0}, "beta \\+ gamma"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"hidden_dim": 2.5}, "hidden_dim"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_options_raise(options, fix):
    with pytest.raises(ValueError, match=fix):
        InformationBottleneckFusion(DIMS3, dim=4, **options)


def test_eval_is_deterministic_train_samples():
    torch.manual_seed(4)
    fusion = InformationBottleneckFusion(DIMS3, dim=4)
    tokens = {m: torch.randn(2, 2, d) for m, d in DIMS3.items()}
    fusion.eval()
    first, second = fusion(tokens), fusion(tokens)
    torch.testing.assert_close(first.pooled, second.pooled)
    torch.testing.assert_close(first.aux_loss, second.aux_loss)
    fusion.train()
    torch.manual_seed(5)
    sampled = fusion(tokens)
    torch.manual_seed(5)
    again = fusion(tokens)
    torch.manual_seed(6)
    other = fusion(tokens)
    torch.testing.assert_close(sampled.pooled, again.pooled)
    assert not torch.allclose(sampled.pooled, other.pooled)
    assert not torch.allclose(sampled.pooled, first.pooled)
    # Gradients reach every parameter through the reparameterised samples.
    (sampled.pooled.sum() + sampled.aux_loss).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in fusion.parameters())
