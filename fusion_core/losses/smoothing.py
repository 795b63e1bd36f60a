"""Label-smoothed classification losses.

Label smoothing (Szegedy et al., 2016, "Rethinking the Inception Architecture", Sec. 7) trains against
``(1 - s)·onehot + s/C`` instead of the one-hot target; Ilias & Askounis use it for the dementia classifier,
where it also improves calibration (Müller et al., 2019, "When Does Label Smoothing Help?").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["label_smoothing_cross_entropy", "binary_label_smoothing_bce"]

_REDUCTIONS = ("mean", "sum", "none")


def _check(smoothing: float, reduction: str) -> None:
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1); got {smoothing}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def label_smoothing_cross_entropy(
    logits: Tensor, target: Tensor, smoothing: float = 0.1, reduction: str = "mean"
) -> Tensor:
    """Cross-entropy against ``(1 - s)·onehot(target) + s/C``; equals ``F.cross_entropy(label_smoothing=s)``.

    Args:
        logits: ``(B, C)`` unnormalised class scores.
        target: ``(B,)`` integer class indices in ``[0, C)``.
        smoothing: ``s`` in ``[0, 1)``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(B,)``).
    """
    _check(smoothing, reduction)
    if logits.dim() != 2 or target.shape != (logits.shape[0],):
        raise ValueError(
            f"logits must be (B, C) and target (B,); got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices; got dtype {target.dtype}")
    log_probs = F.log_softmax(logits, dim=-1)  # (B, C)
    nll = -log_probs.gather(1, target.long()[:, None]).squeeze(1)  # (B,)
    uniform = -log_probs.mean(dim=-1)  # (B,) cross-entropy against the uniform distribution
    return _reduce((1.0 - smoothing) * nll + smoothing * uniform, reduction)


def binary_label_smoothing_bce(
    logit: Tensor, target: Tensor, smoothing: float = 0.1, reduction: str = "mean"
) -> Tensor:
    """Binary cross-entropy with logits against the smoothed target ``t(1 - s) + s/2``.

    Args:
        logit: ``(B,)`` (or any shape) logits of the positive class.
        target: same shape as ``logit``; 0/1 labels (bool, int or float; soft labels in ``[0, 1]`` also work).
        smoothing: ``s`` in ``[0, 1)``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (same shape as ``logit``).
    """
    _check(smoothing, reduction)
    if logit.shape != target.shape:
        raise ValueError(
            f"logit and target must have the same shape; got {tuple(logit.shape)} and {tuple(target.shape)}"
        )
    smoothed = target.to(logit.dtype) * (1.0 - smoothing) + 0.5 * smoothing
    return F.binary_cross_entropy_with_logits(logit, smoothed, reduction=reduction)
