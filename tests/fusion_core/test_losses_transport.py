import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F

from fusion_core.losses import (
    SinkhornLoss,
    TransportOutput,
    cross_entropy_label_cost,
    pairwise_cost,
    sinkhorn_loss,
    sinkhorn_plan,
)

DOUBLE = torch.float64


def _random_case(seed, n=5, m=7):
    rng = np.random.default_rng(seed)
    cost = rng.random((n, m))
    a, b = rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(m))
    return cost, a, b


@pytest.mark.parametrize("seed, reg", [(0, 0.05), (1, 0.1), (2, 0.5)])
def test_matches_pot_sinkhorn_value_and_plan(seed, reg):
    cost, a, b = _random_case(seed)
    plan = sinkhorn_plan(
        torch.tensor(cost), torch.tensor(a), torch.tensor(b), epsilon=reg, n_iters=20000, tol=1e-12
    )
    pot_plan = ot.sinkhorn(a, b, cost, reg, numItermax=20000, stopThr=1e-12)
    pot_value = float(ot.sinkhorn2(a, b, cost, reg, numItermax=20000, stopThr=1e-12))
    assert plan.dtype == DOUBLE and plan.shape == (5, 7)
    assert (plan * torch.tensor(cost)).sum().item() == pytest.approx(pot_value, abs=1e-5)
    np.testing.assert_allclose(plan.numpy(), pot_plan, atol=1e-6)
    np.testing.assert_allclose(plan.sum(1).numpy(), a, atol=1e-9)
    np.testing.assert_allclose(plan.sum(0).numpy(), b, atol=1e-9)


def test_loss_on_features_matches_pot_with_uniform_marginals():
    g = torch.Generator().manual_seed(4)
    x_s = torch.randn(6, 3, generator=g, dtype=DOUBLE)
    x_t = torch.randn(4, 3, generator=g, dtype=DOUBLE) + 0.5
    cost = ot.dist(x_s.numpy(), x_t.numpy())  # squared Euclidean
    expected = float(ot.sinkhorn2(ot.unif(6), ot.unif(4), cost, 0.5, numItermax=20000, stopThr=1e-12))
    loss = sinkhorn_loss(x_s, x_t, epsilon=0.5, n_iters=20000, tol=1e-12)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    torch.testing.assert_close(pairwise_cost(x_s, x_t), torch.tensor(cost))


def test_identical_batches_give_entropic_baseline_that_grows_with_shift():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 4, generator=g, dtype=DOUBLE)
    direction = F.normalize(torch.randn(4, generator=g, dtype=DOUBLE), dim=0)
    kw = dict(epsilon=1.0, n_iters=2000, tol=1e-12)
    baseline = sinkhorn_loss(x, x, **kw).item()
    assert 0.0 < baseline < 0.2 * pairwise_cost(x, x).mean().item()
    losses = [sinkhorn_loss(x, x + shift * direction, **kw).item() for shift in (0.5, 1.0, 2.0)]
    assert baseline < losses[0] < losses[1] < losses[2]
    # A translation adds a separable term to the squared-Euclidean cost: the plan is unchanged and the
    # cost grows by exactly ‖δ‖² (uniform marginals on the same points).
    assert losses == pytest.approx([baseline + s**2 for s in (0.5, 1.0, 2.0)], abs=1e-8)


def test_small_epsilon_stays_finite_and_approaches_exact_ot():
    cost, _, _ = _random_case(6, n=6, m=6)
    plan = sinkhorn_plan(torch.tensor(cost), epsilon=1e-3, n_iters=20000, tol=1e-10)
    assert torch.isfinite(plan).all()
    # convergence at ε = 1e-3 is slow (the rate degrades as C/ε grows), but every iterate is finite
    np.testing.assert_allclose(plan.sum(1).numpy(), np.full(6, 1 / 6), atol=1e-4)
    np.testing.assert_allclose(plan.sum(0).numpy(), np.full(6, 1 / 6), atol=1e-12)
    exact = float(ot.emd2(ot.unif(6), ot.unif(6), cost))
    assert (plan * torch.tensor(cost)).sum().item() == pytest.approx(exact, abs=1e-2)
    # float32 too: the log domain never forms exp(-C/ε) on its own
    plan32 = sinkhorn_plan(torch.tensor(cost, dtype=torch.float32), epsilon=1e-3, n_iters=2000)
    assert torch.isfinite(plan32).all()


def test_empty_marginal_bins_get_no_mass():
    cost, _, _ = _random_case(7, n=4, m=3)
    a = torch.tensor([0.5, 0.0, 0.25, 0.25], dtype=DOUBLE)
    plan = sinkhorn_plan(torch.tensor(cost), a=a, epsilon=0.1, n_iters=2000, tol=1e-12)
    assert (plan[1] == 0).all()
    torch.testing.assert_close(plan.sum(1), a)


def test_detached_plan_gradient_is_the_entropic_ot_gradient():
    g = torch.Generator().manual_seed(8)
    x_s = torch.randn(4, 2, generator=g, dtype=DOUBLE, requires_grad=True)
    x_t = torch.randn(5, 2, generator=g, dtype=DOUBLE)
    epsilon, kw = 0.3, dict(n_iters=20000, tol=1e-13)
    loss = sinkhorn_loss(x_s, x_t, epsilon, **kw)
    loss.backward()
    plan = sinkhorn_plan(pairwise_cost(x_s.detach(), x_t), epsilon=epsilon, **kw)
    analytic = 2 * (plan.sum(1, keepdim=True) * x_s.detach() - plan @ x_t)  # Σ_j P_ij ∂‖x_i - y_j‖²
    torch.testing.assert_close(x_s.grad, analytic)

    def entropic_value(xs):
        cost = pairwise_cost(xs, x_t)
        p = sinkhorn_plan(cost, epsilon=epsilon, **kw)
        return ((p * cost).sum() + epsilon * (p * (p.log() - 1)).sum()).item()

    h = 1e-6
    bump = torch.zeros_like(x_s)
    bump[1, 0] = h
    finite_difference = (entropic_value(x_s.detach() + bump) - entropic_value(x_s.detach() - bump)) / (2 * h)
    assert x_s.grad[1, 0].item() == pytest.approx(finite_difference, abs=1e-6)


def test_unrolled_plan_gradient_passes_gradcheck():
    g = torch.Generator().manual_seed(9)
    x_s = torch.randn(3, 2, generator=g, dtype=DOUBLE, requires_grad=True)
    x_t = torch.randn(4, 2, generator=g, dtype=DOUBLE, requires_grad=True)
    fn = lambda s, t: sinkhorn_loss(s, t, epsilon=0.5, n_iters=30, tol=0.0, detach_plan=False)
    assert torch.autograd.gradcheck(fn, (x_s, x_t))
    detached = torch.autograd.grad(sinkhorn_loss(x_s, x_t, 0.5, 30, 0.0), x_s)[0]
    unrolled = torch.autograd.grad(fn(x_s, x_t), x_s)[0]
    assert not torch.allclose(detached, unrolled)


@pytest.mark.parametrize("normalize_cost", ["mean", "max"])
def test_normalized_cost_is_scale_free(normalize_cost):
    g = torch.Generator().manual_seed(10)
    x_s, x_t = torch.randn(5, 3, generator=g), torch.randn(6, 3, generator=g)
    loss = sinkhorn_loss(x_s, x_t, normalize_cost=normalize_cost)
    cost = pairwise_cost(x_s, x_t)
    scale = cost.mean() if normalize_cost == "mean" else cost.max()
    torch.testing.assert_close(loss, sinkhorn_loss(x_s, x_t, cost_fn=lambda s, t: pairwise_cost(s, t) / scale))
    torch.testing.assert_close(loss, sinkhorn_loss(10 * x_s, 10 * x_t, normalize_cost=normalize_cost))


def test_cross_entropy_label_cost_values():
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(4, 3, generator=g)
    labels = torch.tensor([0, 2])
    cost = cross_entropy_label_cost(labels, logits)
    expected = torch.tensor(
        [[F.cross_entropy(logits[j : j + 1], labels[i : i + 1]).item() for j in range(4)] for i in range(2)]
    )
    torch.testing.assert_close(cost, expected)
    torch.testing.assert_close(cross_entropy_label_cost(F.one_hot(labels, 3).float(), logits), expected)


def test_joint_cost_moves_mass_to_label_consistent_pairs():
    features = torch.zeros(4, 2)  # no feature signal: only labels can decide the matching
    source_labels = torch.tensor([0, 0, 1, 1])
    target_logits = torch.tensor([[5.0, -5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, 5.0]], requires_grad=True)
    loss_fn = SinkhornLoss(epsilon=0.05, n_iters=500, joint=True, label_weight=1.0)
    out = loss_fn(features, features, source_labels, target_logits)
    assert isinstance(out, TransportOutput) and not out.plan.requires_grad
    consistent = source_labels[:, None] == target_logits.argmax(1)[None, :]
    assert out.plan[consistent].sum().item() == pytest.approx(1.0, abs=1e-3)
    out.loss.backward()
    assert target_logits.grad is not None and target_logits.grad.abs().sum() > 0
    expected = sinkhorn_loss(
        features, features, 0.05, 500, label_cost=cross_entropy_label_cost(source_labels, target_logits)
    )
    torch.testing.assert_close(out.loss, expected)
    plain = SinkhornLoss(epsilon=0.05)(features, features).plan
    torch.testing.assert_close(plain, torch.full((4, 4), 1 / 16))


def test_module_gradients_reach_both_batches():
    x_s = torch.randn(5, 3, requires_grad=True)
    x_t = torch.randn(4, 3, requires_grad=True)
    SinkhornLoss(epsilon=0.2, cost_fn="cosine", feature_weight=2.0)(x_s, x_t).loss.backward()
    assert x_s.grad.abs().sum() > 0 and x_t.grad.abs().sum() > 0
    assert "joint=False" in repr(SinkhornLoss())


def test_argument_errors():
    cost = torch.rand(3, 4)
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        sinkhorn_plan(cost, epsilon=0.0)
    with pytest.raises(ValueError, match="n_iters must be >= 1"):
        sinkhorn_plan(cost, n_iters=0)
    with pytest.raises(ValueError, match="same positive total mass"):
        sinkhorn_plan(cost, a=torch.full((3,), 0.5))
    with pytest.raises(ValueError, match=r"expected \(4,\)"):
        sinkhorn_plan(cost, b=torch.full((3,), 1 / 3))
    with pytest.raises(ValueError, match="non-empty"):
        sinkhorn_plan(torch.rand(3))
    with pytest.raises(ValueError, match="same D"):
        sinkhorn_loss(torch.randn(3, 2), torch.randn(3, 5))
    with pytest.raises(ValueError, match="cost_fn must be one of"):
        sinkhorn_loss(torch.randn(3, 2), torch.randn(3, 2), cost_fn="manhattan")
    with pytest.raises(ValueError, match="normalize_cost must be one of"):
        sinkhorn_loss(torch.randn(3, 2), torch.randn(3, 2), normalize_cost="median")
    with pytest.raises(ValueError, match="label_cost has shape"):
        sinkhorn_loss(torch.randn(3, 2), torch.randn(4, 2), label_cost=torch.rand(4, 3))
    with pytest.raises(ValueError, match="joint=True needs"):
        SinkhornLoss(joint=True)(torch.randn(3, 2), torch.randn(3, 2))
    with pytest.raises(ValueError, match="epsilon must be > 0"):
        SinkhornLoss(epsilon=-1.0)
    with pytest.raises(ValueError, match="must be integer class indices"):
        cross_entropy_label_cost(torch.rand(3), torch.randn(4, 2))
