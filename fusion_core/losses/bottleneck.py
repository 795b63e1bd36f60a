"""KL term of a variational information bottleneck.

ITHP (Xiao et al., 2024, "Neuro-Inspired Information-Theoretic Hierarchical Perception for Multimodal
Learning") and the deep VIB (Alemi et al., 2017, "Deep Variational Information Bottleneck") regularise a
Gaussian latent ``q(z|x) = N(μ, σ²)`` towards the prior ``N(0, I)``.
"""
from __future__ import annotations

from torch import Tensor

__all__ = ["gaussian_kl"]


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(μ, diag σ²) || N(0, I))`` per sample, summed over every non-batch dimension.

    Closed form (Kingma & Welling, 2014, "Auto-Encoding Variational Bayes", App. B):
    ``½ Σ (σ² + μ² - 1 - log σ²)``.

    Args:
        mu: ``(B, ...)`` means.
        logvar: ``(B, ...)`` log-variances ``log σ²``, same shape as ``mu``.

    Returns:
        ``(B,)`` non-negative KL values.
    """
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have the same shape; got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    if mu.dim() < 1:
        raise ValueError("mu must have a batch dimension: pass (B, D) tensors")
    kl = 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar)  # (B, ...)
    return kl.reshape(mu.shape[0], -1).sum(dim=1)
