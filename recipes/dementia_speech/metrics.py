"""Classification and calibration metrics of binary probabilities.

ECE (Guo et al., 2017, "On Calibration of Modern Neural Networks", Eq. 3) comes from torchmetrics'
``binary_calibration_error``: equal-width bins of the predicted probability of class 1, each bin's mean
probability against its observed frequency of label 1 (the reliability diagram's gaps). Adaptive ECE
(Nixon et al., 2019, "Measuring Calibration in Deep Learning") uses equal-mass bins instead, which torchmetrics
does not have; Brier score and NLL are one line each.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_calibration_error,
    binary_f1_score,
    binary_precision,
    binary_recall,
)

__all__ = ["classification_metrics", "adaptive_ece", "brier_score", "binary_nll", "reliability_curve", "Reliability"]

_EPS = 1e-7


def adaptive_ece(prob: Tensor, label: Tensor, n_bins: int = 10) -> Tensor:
    """Expected calibration error over ``n_bins`` bins of sorted probabilities holding (nearly) equal numbers of
    samples: ``Σ_b |B_b|/N · |mean prob_b − mean label_b|`` (same convention as the ECE above)."""
    if prob.numel() == 0:
        raise ValueError("adaptive_ece needs at least one prediction")
    prob, label = prob.double(), label.double()
    order = torch.argsort(prob, stable=True)
    total = torch.zeros((), dtype=torch.float64)
    for chunk in torch.tensor_split(order, min(n_bins, order.numel())):
        total += (prob[chunk].mean() - label[chunk].mean()).abs() * chunk.numel()
    return total / order.numel()


def brier_score(prob: Tensor, label: Tensor) -> Tensor:
    return (prob.double() - label.double()).pow(2).mean()


def binary_nll(prob: Tensor, label: Tensor) -> Tensor:
    return F.binary_cross_entropy(prob.double().clamp(_EPS, 1 - _EPS), label.double())


class Reliability(NamedTuple):
    """Per equal-width confidence bin: mean predicted probability, observed frequency of label 1, count."""

    mean_predicted: Tensor
    observed: Tensor
    count: Tensor


def reliability_curve(prob: Tensor, label: Tensor, n_bins: int = 10) -> Reliability:
    """Reliability diagram data over equal-width bins of the predicted probability of class 1 (empty bins NaN)."""
    prob, label = prob.double(), label.double()
    bins = torch.clamp((prob * n_bins).long(), max=n_bins - 1)
    count = torch.bincount(bins, minlength=n_bins).double()
    mean_predicted = torch.bincount(bins, weights=prob, minlength=n_bins) / count
    observed = torch.bincount(bins, weights=label, minlength=n_bins) / count
    return Reliability(mean_predicted, observed, count)


def classification_metrics(prob: Tensor, label: Tensor, n_bins: int = 10) -> dict[str, float]:
    """acc, precision, recall, f1, auroc, ece, adaptive_ece, brier, nll of probabilities ``prob (N,)`` for
    0/1 ``label (N,)``. AUROC is NaN when only one class is present."""
    prob = prob.detach().float().cpu()
    label = label.detach().long().cpu()
    if prob.shape != label.shape or prob.dim() != 1 or prob.numel() == 0:
        raise ValueError(f"prob and label must be non-empty (N,) tensors; got {tuple(prob.shape)} and {tuple(label.shape)}")
    both_classes = bool(label.min() != label.max())
    return {
        "acc": float(binary_accuracy(prob, label)),
        "precision": float(binary_precision(prob, label)),
        "recall": float(binary_recall(prob, label)),
        "f1": float(binary_f1_score(prob, label)),
        "auroc": float(binary_auroc(prob, label)) if both_classes else float("nan"),
        "ece": float(binary_calibration_error(prob, label, n_bins=n_bins, norm="l1")),
        "adaptive_ece": float(adaptive_ece(prob, label, n_bins)),
        "brier": float(brier_score(prob, label)),
        "nll": float(binary_nll(prob, label)),
    }
