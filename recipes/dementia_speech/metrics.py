"""The dementia recipe's metrics: the runtime's binary classification metrics, once per domain.

A test batch mixes the source speakers (domain 0, clean recordings) and the target speakers (domain 1, telephone
recordings). :class:`DomainMetrics` keeps the probabilities and labels of one domain's rows as torchmetrics states
(``cat``-reduced, so under DDP ``compute()`` sees the rows of every process) and computes
:func:`recipes.runtime.metrics.binary_classification_metrics` on them. Keeping the rows rather than updating the
collection per batch is what makes a process whose share of the split holds no row of the domain safe: it still
contributes a (empty) state of the right type to the gather, where a never-updated metric would not.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.utilities import dim_zero_cat

from recipes.runtime.metrics import binary_classification_metrics

__all__ = ["DomainMetrics", "domain_metrics", "SOURCE", "TARGET", "TARGET_PREFIX"]

SOURCE, TARGET = 0, 1
TARGET_PREFIX = "target_"


class DomainMetrics(Metric):
    """The metrics of ``collection(sync_on_compute=False)`` (default: the runtime's binary classification metrics)
    over the rows of one ``domain``: ``update(preds (N,), target (N,), domain (N,))``; ``compute()`` gives
    ``{prefix + name: value}``, or ``{}`` when no process saw a row of the domain."""

    full_state_update = False

    def __init__(self, domain: int, prefix: str = "",
                 collection: Callable[..., MetricCollection] = binary_classification_metrics, **kwargs) -> None:
        super().__init__(**kwargs)
        self.domain = int(domain)
        self.prefix = prefix
        self.collection = collection
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor, domain: Tensor) -> None:
        chosen = domain == self.domain
        self.preds.append(preds.detach()[chosen].float())  # possibly empty: still a state of the right type
        self.target.append(target.detach()[chosen].long())

    def compute(self) -> dict[str, Tensor]:
        preds, target = dim_zero_cat(self.preds), dim_zero_cat(self.target)  # every process's rows, after the sync
        if preds.numel() == 0:
            return {}
        # the rows are gathered from every process already: computing must not gather again
        metrics = self.collection(sync_on_compute=False).to(preds.device)
        metrics.update(preds, target)
        return {f"{self.prefix}{name}": value for name, value in metrics.compute().items()}


def domain_metrics() -> MetricCollection:
    """acc, precision, recall, f1, auroc, ece, adaptive_ece, brier, nll of the source rows (those names) and of the
    target rows (``target_acc``, ...): ``collection.update(probability (N,), label (N,), domain (N,))``."""
    return MetricCollection({"source": DomainMetrics(SOURCE), "target": DomainMetrics(TARGET, prefix=TARGET_PREFIX)},
                            compute_groups=False)
