"""Entropic optimal transport (Sinkhorn) between two batches, for domain adaptation.

The plan solves ``min_P <P, C> - ε H(P)`` subject to ``P 1 = a``, ``Pᵀ 1 = b``, with
``H(P) = -Σ P (log P - 1)`` (Cuturi, 2013, "Sinkhorn Distances"; the same problem as POT's
``ot.sinkhorn(a, b, M, reg=ε)``). Iterations run on the dual potentials in the log domain
(Peyré & Cuturi, 2019, "Computational Optimal Transport", Alg. 3 / Sec. 4.4), so a small ``ε`` does not
underflow ``exp(-C/ε)`` as the plain matrix-scaling form does.

The loss ``<P, C>`` with ``C = α·C_features + λ·C_labels`` is DeepJDOT's joint cost (Damodaran et al., 2018,
"DeepJDOT: Deep Joint Distribution Optimal Transport for Unsupervised Domain Adaptation", Eq. 6), used by
Ilias & Askounis for the dementia model's optimal-transport domain adaptation.

Letters: ``N`` source samples, ``M`` target samples, ``D`` feature width, ``K`` classes.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "TransportOutput",
    "sinkhorn_plan",
    "pairwise_cost",
    "cross_entropy_label_cost",
    "sinkhorn_loss",
    "SinkhornLoss",
]

CostFn = Callable[[Tensor, Tensor], Tensor]
_COSTS = ("sqeuclidean", "euclidean", "cosine")
_NORMALIZERS = (None, "mean", "max")
_CHECK_EVERY = 10  # test convergence every few iterations: each test is a host sync on a GPU


class TransportOutput(NamedTuple):
    """What :class:`SinkhornLoss` returns.

    loss: scalar ``<P, C>`` (``C`` after normalisation, if any).
    plan: ``(N, M)`` transport plan (detached when ``detach_plan``), e.g. for plotting which source samples
          a target sample is matched to.
    """

    loss: Tensor
    plan: Tensor


def _marginal(weights: Tensor | None, size: int, like: Tensor, name: str) -> Tensor:
    if weights is None:
        return torch.full((size,), 1.0 / size, dtype=like.dtype, device=like.device)
    if weights.shape != (size,):
        raise ValueError(f"{name} has shape {tuple(weights.shape)}; expected ({size},), one weight per sample")
    if (weights < 0).any():
        raise ValueError(f"{name} has negative weights; marginals must be non-negative")
    return weights.to(like.dtype)


def sinkhorn_plan(
    cost: Tensor,
    a: Tensor | None = None,
    b: Tensor | None = None,
    epsilon: float = 0.1,
    n_iters: int = 100,
    tol: float = 1e-6,
) -> Tensor:
    """Entropic OT plan by log-domain Sinkhorn iterations.

    Args:
        cost: ``(N, M)`` cost matrix.
        a: ``(N,)`` source marginal, default uniform ``1/N``.
        b: ``(M,)`` target marginal, default uniform ``1/M``; must carry the same mass as ``a``.
        epsilon: entropic weight ``ε > 0`` (POT's ``reg``), in the units of ``cost``.
        n_iters: maximum number of (f, g) updates.
        tol: stop when the L1 error of the row marginal is below ``tol`` (tested every 10 iterations);
            ``0`` always runs ``n_iters``.

    Returns:
        ``(N, M)`` plan ``P_ij = exp((f_i + g_j - C_ij) / ε)``, differentiable through the iterations.
    """
    if cost.dim() != 2 or 0 in cost.shape:
        raise ValueError(f"cost must be a non-empty (N, M) matrix; got shape {tuple(cost.shape)}")
    if not cost.dtype.is_floating_point:
        raise ValueError(f"cost must be a floating-point tensor; got {cost.dtype}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0; got {epsilon}")
    if n_iters < 1:
        raise ValueError(f"n_iters must be >= 1; got {n_iters}")
    if tol < 0:
        raise ValueError(f"tol must be >= 0; got {tol}")
    n, m = cost.shape
    a = _marginal(a, n, cost, "a")
    b = _marginal(b, m, cost, "b")
    mass_a, mass_b = a.sum(), b.sum()
    if not mass_a > 0 or not torch.isclose(mass_a, mass_b, rtol=1e-5, atol=1e-8):
        raise ValueError(
            f"a and b must have the same positive total mass; got {mass_a.item():.6g} and {mass_b.item():.6g} "
            "(normalise both to sum to 1)"
        )
    log_a, log_b = a.log(), b.log()  # (N,), (M,); -inf for empty bins gives all-zero rows/columns
    scaled = cost / epsilon  # (N, M)
    f_eps = torch.zeros(n, dtype=cost.dtype, device=cost.device)  # f / ε
    g_eps = torch.zeros(m, dtype=cost.dtype, device=cost.device)  # g / ε
    for it in range(n_iters):
        row_lse = torch.logsumexp(g_eps[None, :] - scaled, dim=1)  # (N,)
        if tol > 0 and it > 0 and it % _CHECK_EVERY == 0:
            # After a g-update the column marginal is exact; the row marginal measures what is left.
            row_error = (torch.exp(f_eps + row_lse) - a).abs().sum()
            if row_error.item() < tol:
                break
        f_eps = log_a - row_lse
        g_eps = log_b - torch.logsumexp(f_eps[:, None] - scaled, dim=0)  # (M,)
    return torch.exp(f_eps[:, None] + g_eps[None, :] - scaled)


def pairwise_cost(x_s: Tensor, x_t: Tensor, cost_fn: str | CostFn = "sqeuclidean") -> Tensor:
    """Feature cost ``(N, M)`` between ``x_s (N, D)`` and ``x_t (M, D)``.

    ``"sqeuclidean"``: ``‖x_s - x_t‖²`` (DeepJDOT); ``"euclidean"``: ``‖x_s - x_t‖``;
    ``"cosine"``: ``1 - cos(x_s, x_t)``; or a callable returning ``(N, M)``.
    """
    if x_s.dim() != 2 or x_t.dim() != 2 or x_s.shape[1] != x_t.shape[1]:
        raise ValueError(
            f"x_s and x_t must be (N, D) and (M, D) with the same D; got {tuple(x_s.shape)} and {tuple(x_t.shape)}"
        )
    if callable(cost_fn):
        cost = cost_fn(x_s, x_t)
    elif cost_fn == "sqeuclidean":
        # Explicit difference rather than the ‖x‖² + ‖y‖² - 2xy expansion: exact zeros on the diagonal
        # of identical batches and no negative round-off.
        cost = (x_s[:, None, :] - x_t[None, :, :]).pow(2).sum(-1)  # (N, M)
    elif cost_fn == "euclidean":
        cost = torch.cdist(x_s, x_t)
    elif cost_fn == "cosine":
        cost = 1.0 - F.normalize(x_s, dim=-1) @ F.normalize(x_t, dim=-1).T
    else:
        raise ValueError(f"cost_fn must be one of {_COSTS} or a callable; got {cost_fn!r}")
    if cost.shape != (x_s.shape[0], x_t.shape[0]):
        raise ValueError(f"cost_fn returned shape {tuple(cost.shape)}; expected ({x_s.shape[0]}, {x_t.shape[0]})")
    return cost


def cross_entropy_label_cost(source_labels: Tensor, target_logits: Tensor) -> Tensor:
    """DeepJDOT's label cost ``L(y_i^s, f(x_j^t))``: cross-entropy of source label ``i`` under target prediction ``j``.

    Args:
        source_labels: ``(N,)`` class indices or ``(N, K)`` class probabilities (one-hot or smoothed).
        target_logits: ``(M, K)`` classifier logits on the target batch.

    Returns:
        ``(N, M)`` cost ``-Σ_k y_ik log softmax(target_logits)_jk``.
    """
    if target_logits.dim() != 2:
        raise ValueError(f"target_logits must be (M, K); got shape {tuple(target_logits.shape)}")
    num_classes = target_logits.shape[1]
    if source_labels.dim() == 1:
        if source_labels.dtype.is_floating_point:
            raise ValueError(
                "source_labels of shape (N,) must be integer class indices; pass (N, K) probabilities otherwise"
            )
        source_labels = F.one_hot(source_labels.long(), num_classes).to(target_logits.dtype)
    if source_labels.dim() != 2 or source_labels.shape[1] != num_classes:
        raise ValueError(
            f"source_labels must be (N,) indices or (N, {num_classes}) probabilities; "
            f"got shape {tuple(source_labels.shape)}"
        )
    log_probs = F.log_softmax(target_logits, dim=-1)  # (M, K)
    return -source_labels.to(log_probs.dtype) @ log_probs.T  # (N, M)


def _normalize(cost: Tensor, normalize_cost: str | None) -> Tensor:
    if normalize_cost is None:
        return cost
    scale = cost.detach().mean() if normalize_cost == "mean" else cost.detach().max()
    return cost / scale.clamp_min(torch.finfo(cost.dtype).tiny)


def _transport(
    x_s: Tensor,
    x_t: Tensor,
    epsilon: float,
    n_iters: int,
    tol: float,
    a: Tensor | None,
    b: Tensor | None,
    cost_fn: str | CostFn,
    label_cost: Tensor | None,
    feature_weight: float,
    label_weight: float,
    normalize_cost: str | None,
    detach_plan: bool,
) -> TransportOutput:
    if normalize_cost not in _NORMALIZERS:
        raise ValueError(f"normalize_cost must be one of {_NORMALIZERS}; got {normalize_cost!r}")
    cost = feature_weight * pairwise_cost(x_s, x_t, cost_fn)  # (N, M)
    if label_cost is not None:
        if label_cost.shape != cost.shape:
            raise ValueError(
                f"label_cost has shape {tuple(label_cost.shape)}; expected {tuple(cost.shape)} = (N source, M target)"
            )
        cost = cost + label_weight * label_cost
    cost = _normalize(cost, normalize_cost)
    if detach_plan:
        with torch.no_grad():
            plan = sinkhorn_plan(cost.detach(), a, b, epsilon, n_iters, tol)
    else:
        plan = sinkhorn_plan(cost, a, b, epsilon, n_iters, tol)
    return TransportOutput((plan * cost).sum(), plan)


def sinkhorn_loss(
    x_s: Tensor,
    x_t: Tensor,
    epsilon: float = 0.1,
    n_iters: int = 100,
    tol: float = 1e-6,
    a: Tensor | None = None,
    b: Tensor | None = None,
    cost_fn: str | CostFn = "sqeuclidean",
    label_cost: Tensor | None = None,
    label_weight: float = 1.0,
    feature_weight: float = 1.0,
    normalize_cost: str | None = None,
    detach_plan: bool = True,
) -> Tensor:
    """Transport cost ``<P, C>`` between a source batch and a target batch.

    Args:
        x_s: ``(N, D)`` source features (e.g. embeddings of the labelled domain).
        x_t: ``(M, D)`` target features.
        epsilon, n_iters, tol, a, b: as in :func:`sinkhorn_plan`.
        cost_fn: feature cost, see :func:`pairwise_cost`.
        label_cost: optional ``(N, M)`` cost between source labels and target predictions (DeepJDOT, e.g.
            :func:`cross_entropy_label_cost`); ``C = feature_weight · C_features + label_weight · label_cost``.
        normalize_cost: ``None``, ``"mean"`` or ``"max"``: divide ``C`` by its mean or max (a constant, no
            gradient) so that ``epsilon`` is relative to the typical cost and stays meaningful while feature
            scales drift during training. The returned loss is then in normalised units.
        detach_plan: treat the plan as a constant. This is DeepJDOT's alternating scheme (the plan is fixed
            while the network takes a step) and, by the envelope theorem, the resulting gradient
            ``Σ P_ij ∂C_ij`` is exactly the gradient of the entropic OT value
            ``min_P <P, C> - εH(P)`` at the converged plan. It costs one no-grad Sinkhorn. ``False``
            differentiates ``<P, C>`` through every iteration, storing all of them.

    Returns:
        Scalar loss.
    """
    return _transport(
        x_s, x_t, epsilon, n_iters, tol, a, b, cost_fn, label_cost, feature_weight, label_weight,
        normalize_cost, detach_plan,
    ).loss


class SinkhornLoss(nn.Module):
    """Sinkhorn OT loss between source and target batches, optionally DeepJDOT's joint feature/label cost.

    Args:
        epsilon: entropic weight (see :func:`sinkhorn_plan`).
        n_iters: maximum Sinkhorn iterations.
        tol: row-marginal L1 tolerance for early stopping.
        feature_weight: ``α``, weight of the feature cost.
        label_weight: ``λ``, weight of the label cost when ``joint``.
        joint: add the cross-entropy label cost (needs ``source_labels`` and ``target_logits`` in forward).
        cost_fn: ``"sqeuclidean"``, ``"euclidean"`` or ``"cosine"``.
        normalize_cost: ``None``, ``"mean"`` or ``"max"`` (see :func:`sinkhorn_loss`).
        detach_plan: treat the plan as a constant (see :func:`sinkhorn_loss`).
    """

    def __init__(
        self,
        epsilon: float = 0.1,
        n_iters: int = 100,
        tol: float = 1e-6,
        feature_weight: float = 1.0,
        label_weight: float = 1.0,
        joint: bool = False,
        cost_fn: str = "sqeuclidean",
        normalize_cost: str | None = None,
        detach_plan: bool = True,
    ) -> None:
        super().__init__()
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0; got {epsilon}")
        if n_iters < 1:
            raise ValueError(f"n_iters must be >= 1; got {n_iters}")
        if tol < 0:
            raise ValueError(f"tol must be >= 0; got {tol}")
        if feature_weight < 0 or label_weight < 0:
            raise ValueError(f"feature_weight and label_weight must be >= 0; got {feature_weight}, {label_weight}")
        if cost_fn not in _COSTS:
            raise ValueError(f"cost_fn must be one of {_COSTS}; got {cost_fn!r}")
        if normalize_cost not in _NORMALIZERS:
            raise ValueError(f"normalize_cost must be one of {_NORMALIZERS}; got {normalize_cost!r}")
        self.epsilon = epsilon
        self.n_iters = n_iters
        self.tol = tol
        self.feature_weight = feature_weight
        self.label_weight = label_weight
        self.joint = joint
        self.cost_fn = cost_fn
        self.normalize_cost = normalize_cost
        self.detach_plan = detach_plan

    def forward(
        self,
        x_s: Tensor,
        x_t: Tensor,
        source_labels: Tensor | None = None,
        target_logits: Tensor | None = None,
        a: Tensor | None = None,
        b: Tensor | None = None,
    ) -> TransportOutput:
        """Args:
            x_s: ``(N, D)`` source features; x_t: ``(M, D)`` target features.
            source_labels: ``(N,)`` indices or ``(N, K)`` probabilities (required when ``joint``).
            target_logits: ``(M, K)`` classifier logits on the target batch (required when ``joint``).
            a, b: optional ``(N,)`` / ``(M,)`` marginals, uniform by default.
        """
        label_cost = None
        if self.joint:
            if source_labels is None or target_logits is None:
                raise ValueError("joint=True needs source_labels (N,) and target_logits (M, K) in forward")
            label_cost = cross_entropy_label_cost(source_labels, target_logits)
        return _transport(
            x_s, x_t, self.epsilon, self.n_iters, self.tol, a, b, self.cost_fn, label_cost,
            self.feature_weight, self.label_weight, self.normalize_cost, self.detach_plan,
        )

    def extra_repr(self) -> str:
        return (
            f"epsilon={self.epsilon}, n_iters={self.n_iters}, joint={self.joint}, cost_fn={self.cost_fn!r}, "
            f"feature_weight={self.feature_weight}, label_weight={self.label_weight}, "
            f"normalize_cost={self.normalize_cost!r}, detach_plan={self.detach_plan}"
        )
