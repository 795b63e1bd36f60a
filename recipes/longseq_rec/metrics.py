"""Recommendation metrics torchmetrics does not ship: group AUC and the search stage's recall.

GAUC (Zhou et al., "Deep Interest Network", 2018, Eq. 6): the AUC of each user's impressions, averaged with
weights equal to the user's number of impressions; users whose impressions are all one class have no AUC and
are skipped. Ties count one half (the Mann–Whitney statistic with average ranks).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["GroupAUROC", "binary_auc", "group_auc", "search_recall"]


def binary_auc(scores: Tensor, labels: Tensor) -> Tensor:
    """ROC AUC of ``scores (N,)`` for 0/1 ``labels (N,)`` with ties counted ½; NaN when one class is missing."""
    labels = labels.bool()
    num_pos = labels.sum()
    num_neg = labels.numel() - num_pos
    if num_pos == 0 or num_neg == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    scores = scores.double()
    ordered = scores.sort().values
    # 1-based average rank of each score among all: (first position + last position) / 2 of its tie block
    ranks = (torch.searchsorted(ordered, scores, right=False) + torch.searchsorted(ordered, scores, right=True) + 1) / 2.0
    rank_sum = ranks[labels].sum()
    return (rank_sum - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg)


def group_auc(scores: Tensor, labels: Tensor, groups: Tensor) -> Tensor:
    """Impression-weighted mean of the per-group AUC over groups with both classes; NaN if there is none."""
    order = torch.argsort(groups, stable=True)
    scores, labels, groups = scores[order], labels[order], groups[order]
    _, counts = torch.unique_consecutive(groups, return_counts=True)
    total = torch.zeros((), dtype=torch.float64)
    weight = 0
    for group_scores, group_labels in zip(scores.split(counts.tolist()), labels.split(counts.tolist())):
        auc = binary_auc(group_scores, group_labels)
        if torch.isnan(auc):
            continue
        total = total + auc * group_scores.numel()
        weight += group_scores.numel()
    if weight == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    return total / weight


class GroupAUROC(Metric):
    """Streaming GAUC: ``update(preds (N,), target (N,), groups (N,))`` with ``groups`` the user ids.

    ``compute()`` returns the impression-weighted per-user AUC (a float32 scalar; NaN when no user has both
    classes). States are concatenated across processes, so it is exact under DDP.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("groups", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor, groups: Tensor) -> None:
        if not preds.shape == target.shape == groups.shape or preds.dim() != 1:
            raise ValueError(
                f"preds, target and groups must be 1-D of one length; got {tuple(preds.shape)}, "
                f"{tuple(target.shape)}, {tuple(groups.shape)}"
            )
        self.preds.append(preds.detach().float())
        self.target.append(target.detach().long())
        self.groups.append(groups.detach().long())

    def compute(self) -> Tensor:
        if isinstance(self.preds, list) and not self.preds:
            return torch.tensor(float("nan"))
        preds, target, groups = dim_zero_cat(self.preds), dim_zero_cat(self.target), dim_zero_cat(self.groups)
        return group_auc(preds.cpu(), target.cpu(), groups.cpu()).float()


def search_recall(retrieved: Tensor, relevant: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
    """Per-example recall of the planted relevant behaviours among the retrieved ones, over positives.

    retrieved ``(B, k)`` history positions (-1 = empty slot), relevant ``(B, L)`` bool, label ``(B,)``.
    Returns ``(recall (N,), count)``: one recall per positive example that has at least one relevant
    behaviour, ``|retrieved ∩ relevant| / |relevant|``.
    """
    relevant = relevant.bool()
    filled = retrieved >= 0
    hit = relevant.gather(1, retrieved.clamp_min(0)) & filled  # (B, k)
    num_relevant = relevant.sum(dim=1)
    keep = (label > 0.5) & (num_relevant > 0)
    recall = hit.sum(dim=1)[keep].float() / num_relevant[keep].float()
    return recall, keep.sum()
