from fusion_core.losses.bottleneck import gaussian_kl
from fusion_core.losses.contrastive import ContrastiveOutput, MultiAnchorInfoNCE, info_nce, retrieval_recall_at_k, retrieval_recall_ceiling
from fusion_core.losses.smoothing import binary_label_smoothing_bce
from fusion_core.losses.transport import (
    SinkhornLoss,
    TransportOutput,
    cross_entropy_label_cost,
    pairwise_cost,
    sinkhorn_loss,
    sinkhorn_plan,
)

__all__ = [
    "gaussian_kl",
    "ContrastiveOutput",
    "MultiAnchorInfoNCE",
    "info_nce",
    "retrieval_recall_at_k",
    "retrieval_recall_ceiling",
    "binary_label_smoothing_bce",
    "SinkhornLoss",
    "TransportOutput",
    "cross_entropy_label_cost",
    "pairwise_cost",
    "sinkhorn_loss",
    "sinkhorn_plan",
]
