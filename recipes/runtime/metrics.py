"""Metrics torchmetrics does not ship, as :class:`torchmetrics.Metric` subclasses, and the standard collections.

Every metric here keeps its state as torchmetrics states with a reduction (``cat`` or ``sum``), so under DDP
``compute()`` sees the whole split, never one process's share.

- :class:`AdaptiveCalibrationError`: expected calibration error over equal-mass bins (Nixon et al., 2019,
  "Measuring Calibration in Deep Learning"); torchmetrics' ``BinaryCalibrationError`` has equal-width bins only.
- :class:`BinaryNLL`: mean binary cross-entropy of probabilities (the log loss).
- :class:`GroupAUROC`: GAUC (Zhou et al., "Deep Interest Network", 2018, Eq. 6): the AUC of each group's (user's)
  impressions, weighted by the group's number of impressions, over groups that hold both classes.
- :func:`binary_classification_metrics`: the collection a binary classifier logs (accuracy, precision, recall, F1,
  AUROC, ECE, adaptive ECE, Brier score, NLL).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryCalibrationError,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
)
from torchmetrics.regression import MeanSquaredError
from torchmetrics.utilities import dim_zero_cat

__all__ = ["AdaptiveCalibrationError", "BinaryNLL", "GroupAUROC", "binary_classification_metrics", "adaptive_ece",
           "group_auc"]

_EPS = 1e-7


def _check_binary(preds: Tensor, target: Tensor) -> None:
    if preds.shape != target.shape or preds.dim() != 1:
        raise ValueError(f"preds and target must be 1-D of one length; got {tuple(preds.shape)} and {tuple(target.shape)}")


def adaptive_ece(prob: Tensor, label: Tensor, n_bins: int = 10) -> Tensor:
    """``Σ_b |B_b|/N · |mean prob_b − mean label_b|`` over ``n_bins`` bins of the sorted probabilities holding
    (nearly) equal numbers of samples. NaN for no samples."""
    if prob.numel() == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    prob, label = prob.double(), label.double()
    order = torch.argsort(prob, stable=True)
    total = torch.zeros((), dtype=torch.float64)
    for chunk in torch.tensor_split(order, min(n_bins, order.numel())):
        total += (prob[chunk].mean() - label[chunk].mean()).abs() * chunk.numel()
    return total / order.numel()


def group_auc(scores: Tensor, labels: Tensor, groups: Tensor) -> Tensor:
    """Impression-weighted mean of the per-group AUROC over groups with both classes; NaN if there is none.

    Vectorised over groups (one sort, no Python loop, so a test split of millions of users costs one pass): each
    group's AUROC is the Mann–Whitney statistic ``(R₊ − n₊(n₊+1)/2) / (n₊ n₋)`` with ``R₊`` the sum of the positives'
    ranks within the group, ties taking their average rank.
    """
    scores, labels, groups = scores.double().flatten(), labels.long().flatten(), groups.long().flatten()
    if scores.numel() == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    by_score = torch.argsort(scores, stable=True)
    order = by_score[torch.argsort(groups[by_score], stable=True)]  # sorted by (group, score)
    s, y, g = scores[order], labels[order], groups[order]
    _, group_index, counts = torch.unique_consecutive(g, return_inverse=True, return_counts=True)
    start = torch.cumsum(counts, 0) - counts
    position = torch.arange(s.numel()) - start[group_index]  # 0-based rank within the group
    new_block = torch.ones_like(y, dtype=torch.bool)
    new_block[1:] = (g[1:] != g[:-1]) | (s[1:] != s[:-1])
    block = torch.cumsum(new_block.long(), 0) - 1  # runs of equal (group, score): ties
    first = torch.full((int(block[-1]) + 1,), s.numel(), dtype=torch.long).scatter_reduce(0, block, position, "amin")
    last = torch.zeros_like(first).scatter_reduce(0, block, position, "amax")
    rank = (first[block] + last[block]).double() / 2 + 1  # average 1-based rank of the tie block
    positives = torch.zeros(counts.numel(), dtype=torch.float64).scatter_add(0, group_index, y.double())
    rank_sum = torch.zeros_like(positives).scatter_add(0, group_index, rank * y.double())
    negatives = counts.double() - positives
    valid = (positives > 0) & (negatives > 0)
    if not bool(valid.any()):
        return torch.tensor(float("nan"), dtype=torch.float64)
    auc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives).clamp(min=1)
    weight = counts.double() * valid
    return (auc * weight).sum() / weight.sum()


class AdaptiveCalibrationError(Metric):
    """Equal-mass-bin ECE of binary probabilities: ``update(preds (N,), target (N,))``; see :func:`adaptive_ece`."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, n_bins: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1; got {n_bins}")
        self.n_bins = int(n_bins)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        _check_binary(preds, target)
        self.preds.append(preds.detach().double())
        self.target.append(target.detach().double())

    def compute(self) -> Tensor:
        if isinstance(self.preds, list) and not self.preds:
            return torch.tensor(float("nan"))
        return adaptive_ece(dim_zero_cat(self.preds), dim_zero_cat(self.target), self.n_bins).float()


class BinaryNLL(Metric):
    """Mean binary cross-entropy of probabilities ``preds (N,)`` against 0/1 ``target (N,)`` (clipped at 1e-7)."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        _check_binary(preds, target)
        loss = F.binary_cross_entropy(preds.detach().double().clamp(_EPS, 1 - _EPS), target.detach().double(), reduction="sum")
        self.total += loss
        self.count += target.numel()

    def compute(self) -> Tensor:
        return (self.total / self.count).float() if self.count > 0 else torch.tensor(float("nan"))


class GroupAUROC(Metric):
    """Streaming GAUC: ``update(preds (N,), target (N,), groups (N,))`` with ``groups`` the user ids; see
    :func:`group_auc`. ``compute()`` is NaN when no group holds both classes."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("groups", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor, groups: Tensor) -> None:
        _check_binary(preds, target)
        if groups.shape != preds.shape:
            raise ValueError(f"groups must have the shape of preds {tuple(preds.shape)}; got {tuple(groups.shape)}")
        self.preds.append(preds.detach().float())
        self.target.append(target.detach().long())
        self.groups.append(groups.detach().long())

    def compute(self) -> Tensor:
        if isinstance(self.preds, list) and not self.preds:
            return torch.tensor(float("nan"))
        preds, target, groups = dim_zero_cat(self.preds), dim_zero_cat(self.target), dim_zero_cat(self.groups)
        return group_auc(preds.cpu(), target.cpu(), groups.cpu()).float()


def binary_classification_metrics(n_bins: int = 10, **metric_kwargs: Any) -> MetricCollection:
    """``acc, precision, recall, f1, auroc, ece, adaptive_ece, brier, nll`` of probabilities ``preds (N,)`` for 0/1
    ``target (N,)``: ``collection.update(preds, target)``. ECE is torchmetrics' equal-width-bin L1 calibration error
    (Guo et al., 2017, Eq. 3); the Brier score is the mean squared error of the probability. ``metric_kwargs`` go to
    every metric (``sync_on_compute=False`` for rows that are already gathered from every process)."""
    kw = metric_kwargs
    return MetricCollection({
        "acc": BinaryAccuracy(**kw),
        "precision": BinaryPrecision(**kw),
        "recall": BinaryRecall(**kw),
        "f1": BinaryF1Score(**kw),
        "auroc": BinaryAUROC(**kw),
        "ece": BinaryCalibrationError(n_bins=n_bins, norm="l1", **kw),
        "adaptive_ece": AdaptiveCalibrationError(n_bins=n_bins, **kw),
        "brier": MeanSquaredError(**kw),
        "nll": BinaryNLL(**kw),
    }, compute_groups=False)
