import pytest
import torch
from torch.distributions import Normal, kl_divergence

from fusion_core.losses import gaussian_kl


def test_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    kl = gaussian_kl(mu, logvar)
    assert kl.shape == (4,)
    torch.testing.assert_close(kl, expected)


def test_known_values_and_higher_rank_inputs():
    zeros = torch.zeros(2, 3)
    torch.testing.assert_close(gaussian_kl(zeros, zeros), torch.zeros(2))
    # μ = 1 in 3 dims, σ = 1: ½ Σ μ² = 1.5
    torch.testing.assert_close(gaussian_kl(torch.ones(1, 3), torch.zeros(1, 3)), torch.tensor([1.5]))
    mu, logvar = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    torch.testing.assert_close(gaussian_kl(mu, logvar), gaussian_kl(mu.reshape(2, 12), logvar.reshape(2, 12)))
    assert (gaussian_kl(mu, logvar) >= 0).all()


def test_gradients_reach_both_inputs():
    mu = torch.randn(3, 4, requires_grad=True)
    logvar = torch.randn(3, 4, requires_grad=True)
    gaussian_kl(mu, logvar).sum().backward()
    torch.testing.assert_close(mu.grad, mu.detach())
    torch.testing.assert_close(logvar.grad, 0.5 * (logvar.detach().exp() - 1))


def test_argument_errors():
    with pytest.raises(ValueError, match="same shape"):
        gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="batch dimension"):
        gaussian_kl(torch.tensor(0.0), torch.tensor(0.0))
