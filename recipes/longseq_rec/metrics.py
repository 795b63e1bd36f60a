"""The recommendation metric torchmetrics does not ship: the search stage's recall of the planted behaviours.

(AUC is torchmetrics' ``BinaryAUROC``, GAUC the runtime's :class:`recipes.runtime.metrics.GroupAUROC`.)
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["SearchRecall", "search_recall"]


def search_recall(retrieved: Tensor, relevant: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
    """Per-example recall of the planted relevant behaviours among the retrieved ones, over positives.

    retrieved ``(B, k)`` history positions (-1 = empty slot), relevant ``(B, L)`` bool, label ``(B,)``.
    Returns ``(recall (N,), count)``: one recall per positive example that has at least one relevant
    behaviour, ``|retrieved ∩ relevant| / min(|relevant|, k)``: the share of the relevant behaviours found when
    they fit in the k slots, else the share of the slots they fill (a liked theme can have thousands), so a
    search that finds as many as it can scores 1 either way.
    """
    relevant = relevant.bool()
    filled = retrieved >= 0
    hit = relevant.gather(1, retrieved.clamp_min(0)) & filled  # (B, k)
    num_relevant = relevant.sum(dim=1)
    keep = (label > 0.5) & (num_relevant > 0)
    recall = hit.sum(dim=1)[keep].float() / num_relevant[keep].clamp(max=retrieved.shape[1]).float()
    return recall, keep.sum()


class SearchRecall(Metric):
    """Mean :func:`search_recall` over every positive with planted behaviours: ``update(retrieved (B, k), relevant
    (B, L), label (B,))``. The sums are reduced across processes; ``compute()`` is NaN when no example had any
    planted behaviour (real logs), so the metric is then not logged."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, retrieved: Tensor, relevant: Tensor, label: Tensor) -> None:
        recall, count = search_recall(retrieved.detach(), relevant.detach(), label.detach())
        self.total += recall.double().sum()
        self.count += count

    def compute(self) -> Tensor:
        return (self.total / self.count).float() if self.count > 0 else torch.tensor(float("nan"))
