"""The detection head's training targets, its loss and its post-processing (CenterNet-style queries, DETR-style heads).

Training (:func:`detection_loss`): the detector decodes a query at every object's centre cell (teacher forcing, see
:meth:`DrivingDetector.forward`) followed by the heatmap's peaks. The loss is

* the penalty-reduced focal loss of CenterNet (Zhou et al., "Objects as Points", 2019, Eq. 1) between the BEV
  objectness heatmap and Gaussian targets around the object centres (:func:`heatmap_targets`);
* the cross-entropy of each query's class (weighted by ``class_weights`` when the config sets them), where a query
  takes the class of the nearest object within :data:`ASSIGN_RADIUS` m of its cell and background otherwise
  (:func:`assign_queries`);
* a smooth-L1 loss of the box regression of the queries that found an object, weighted by 2.

Inference (:func:`postprocess`): class = best non-background class, score = its probability, then a greedy
centre-distance NMS (:data:`NMS_RADIUS` m) and a score threshold.

Letters: B batch, G ground-truth slots, Q queries, N = X·Y BEV cells, C classes.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from recipes.driving_interaction.model import BevGeometry, DetectorOutput, DrivingDetector

__all__ = ["ASSIGN_RADIUS", "NMS_RADIUS", "Detections", "DetectionLoss", "heatmap_targets", "centre_cells",
           "assign_queries", "focal_heatmap_loss", "teacher_cells", "detection_loss", "postprocess"]

ASSIGN_RADIUS = 2.0  # a query is responsible for the nearest object whose centre is this close (metres)
NMS_RADIUS = 0.8
BOX_WEIGHT = 2.0


class Detections(NamedTuple):
    """Detections of one frame (velodyne boxes), best first; ``query`` indexes the decoder query."""

    boxes: np.ndarray  # (D, 7)
    labels: np.ndarray  # (D,)
    scores: np.ndarray  # (D,)
    query: np.ndarray  # (D,)


class DetectionLoss(NamedTuple):
    """The training loss and its three terms (unweighted)."""

    total: Tensor
    heatmap: Tensor
    classification: Tensor
    box: Tensor


def centre_cells(gt_boxes: Tensor, cell_xy: Tensor, cell: tuple[float, float]) -> Tensor:
    """``(B, G)`` flat cell of each box centre; -1 outside the grid."""
    distance = (gt_boxes[:, :, None, :2] - cell_xy[None, None]).abs()  # (B, G, N, 2)
    inside = (distance[..., 0] <= cell[0] / 2) & (distance[..., 1] <= cell[1] / 2)
    found = inside.any(-1)
    return torch.where(found, inside.float().argmax(-1), torch.full_like(found, -1, dtype=torch.long))


def heatmap_targets(gt_boxes: Tensor, gt_mask: Tensor, cell_xy: Tensor, grid_size: tuple[int, int],
                    cell: tuple[float, float]) -> Tensor:
    """``(B, X, Y)`` Gaussian objectness targets (CenterNet): 1 at each object's centre cell, falling off with a
    width of a quarter of the object's footprint (at least half a cell)."""
    X, Y = grid_size
    offset = cell_xy[None, None] - gt_boxes[:, :, None, :2]  # (B, G, N, 2)
    sigma = (0.25 * gt_boxes[..., 3:5].max(-1).values).clamp(min=0.5 * min(cell))  # (B, G)
    heat = torch.exp(-(offset ** 2).sum(-1) / (2 * sigma[..., None] ** 2)) * gt_mask[..., None]  # (B, G, N)
    heat = heat.max(1).values if heat.shape[1] else torch.zeros(gt_boxes.shape[0], X * Y, device=gt_boxes.device)
    centre = centre_cells(gt_boxes, cell_xy, cell)
    inside = gt_mask & (centre >= 0)
    for b, g in zip(*torch.nonzero(inside, as_tuple=True)):
        heat[b, centre[b, g]] = 1.0
    return heat.reshape(-1, X, Y)


def assign_queries(anchor_xy: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor,
                   background: int) -> tuple[Tensor, Tensor]:
    """Each query (anchored at ``(B, Q, 2)``) takes the nearest object within :data:`ASSIGN_RADIUS`: returns
    ``class target (B, Q)`` (``background`` when none) and the object's index ``(B, Q)``."""
    distance = torch.linalg.norm(anchor_xy[:, :, None] - gt_boxes[:, None, :, :2], dim=-1)  # (B, Q, G)
    distance = distance.masked_fill(~gt_mask[:, None], float("inf"))
    nearest, index = distance.min(-1)
    positive = nearest <= ASSIGN_RADIUS
    target = torch.where(positive, gt_labels.gather(1, index), torch.full_like(index, background))
    return target, index


def focal_heatmap_loss(logits: Tensor, target: Tensor) -> Tensor:
    """CenterNet's penalty-reduced focal loss (α = 2, β = 4), normalised by the number of centres."""
    prob = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = target.eq(1).float()
    pos_loss = -torch.log(prob) * (1 - prob) ** 2 * positive
    neg_loss = -torch.log(1 - prob) * prob ** 2 * (1 - target) ** 4 * (1 - positive)
    return (pos_loss.sum() + neg_loss.sum()) / positive.sum().clamp(min=1)


def teacher_cells(gt_boxes: Tensor, geometry: BevGeometry) -> Tensor:
    """``(B, G)`` the centre cell of every ground-truth slot (cell 0 for a centre off the grid or a padding slot;
    :func:`detection_loss` leaves those out), the queries training decodes before the heatmap's peaks."""
    return centre_cells(gt_boxes, geometry.cell_xy, geometry.config.cell).clamp(min=0)


def detection_loss(out: DetectorOutput, targets: Mapping[str, Tensor], geometry: BevGeometry) -> DetectionLoss:
    """The loss of the module docstring for ``out`` (decoded with :func:`teacher_cells` first) against
    ``targets`` ``gt_boxes (B, G, 7)``, ``gt_labels (B, G)``, ``gt_mask (B, G)``."""
    config = geometry.config
    gt_boxes, gt_labels = targets["gt_boxes"], targets["gt_labels"]
    gt_mask = targets["gt_mask"].bool() & (centre_cells(gt_boxes, geometry.cell_xy, config.cell) >= 0)
    anchor_xy = geometry.cell_xy[out.query_cells]  # (B, Q, 2)
    target, index = assign_queries(anchor_xy, gt_boxes, gt_labels, gt_mask, background=config.num_classes)
    heat_target = heatmap_targets(gt_boxes, gt_mask, geometry.cell_xy, config.grid_size, config.cell)
    loss_heat = focal_heatmap_loss(out.heatmap, heat_target)
    weight = None if config.class_weights is None else out.class_logits.new_tensor(config.class_weights)
    loss_class = F.cross_entropy(out.class_logits.flatten(0, 1), target.flatten(), weight=weight)
    positive = target != config.num_classes
    matched = gt_boxes.gather(1, index[..., None].expand(-1, -1, 7))  # (B, Q, 7)
    reg_target = DrivingDetector.encode(matched, anchor_xy)
    if positive.any():
        loss_box = F.smooth_l1_loss(out.box_params[positive], reg_target[positive], beta=0.2)
    else:
        loss_box = out.box_params.sum() * 0.0  # keeps every parameter in the graph (DDP needs its gradient)
    return DetectionLoss(loss_heat + loss_class + BOX_WEIGHT * loss_box, loss_heat, loss_class, loss_box)


@torch.no_grad()
def postprocess(out: DetectorOutput, min_score: float) -> list[Detections]:
    """Detections per frame, best first: class = best non-background class, score = its probability, a greedy
    centre-distance NMS (:data:`NMS_RADIUS`) and ``min_score``."""
    probs = torch.softmax(out.class_logits, -1)[..., :-1]  # (B, Q, C)
    scores, labels = probs.max(-1)
    results = []
    for b in range(scores.shape[0]):
        s, l, boxes = scores[b].cpu().numpy(), labels[b].cpu().numpy(), out.boxes[b].cpu().double().numpy()
        order = np.argsort(-s, kind="stable")
        kept: list[int] = []
        for q in order:
            if s[q] < min_score:
                break
            if all(np.hypot(*(boxes[q, :2] - boxes[k, :2])) > NMS_RADIUS for k in kept):
                kept.append(int(q))
        kept_array = np.asarray(kept, dtype=np.int64)
        results.append(Detections(boxes[kept_array].reshape(-1, 7), l[kept_array], s[kept_array].astype(np.float64),
                                  kept_array))
    return results
