"""Label-smoothed binary cross-entropy.

Label smoothing (Szegedy et al., 2016, "Rethinking the Inception Architecture", Sec. 7) trains against
``(1 - s)·onehot + s/C`` instead of the one-hot target; Ilias & Askounis use it for the dementia classifier,
where it also improves calibration (Müller et al., 2019, "When Does Label Smoothing Help?"). The multi-class
form is built into PyTorch: ``F.cross_entropy(logits, target, label_smoothing=s)``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["binary_label_smoothing_bce"]

_REDUCTIONS = ("mean", "sum", "none")


def _check(smoothing: float, reduction: str) -> None:
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1); got {smoothing}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}")


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
