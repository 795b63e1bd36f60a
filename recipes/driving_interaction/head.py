"""The detection head: what the detector predicts on its BEV map and its queries, what it is trained towards, its loss
and its post-processing, all in :class:`CenterHead` (CenterNet-style queries, DETR-style heads).

Prediction: :meth:`CenterHead.heatmap` gives the BEV objectness logits whose peaks (:meth:`CenterHead.peak_cells`)
start the decoder's queries; :meth:`CenterHead.forward` turns each refined query into class logits (the last class
is background) and a box relative to its anchor cell (:meth:`CenterHead.decode_boxes`).

Training (:meth:`CenterHead.loss`): the detector decodes a query at every object's centre cell first (teacher
forcing, :meth:`CenterHead.teacher_cells`) followed by the heatmap's peaks. :meth:`CenterHead.targets` gives

* Gaussian objectness targets around the object centres (:func:`heatmap_targets`), scored by the penalty-reduced
  focal loss of CenterNet (Zhou et al., "Objects as Points", 2019, Eq. 1);
* each query's class: the class of the nearest object within :data:`ASSIGN_RADIUS` m of its cell, background
  otherwise (:func:`assign_queries`), scored by cross-entropy (weighted by ``class_weights`` when the config sets
  them);
* the box regression of the queries that found an object, scored by smooth-L1 and weighted by :data:`BOX_WEIGHT`;
* with ``camera_heatmap_weight``, the focal loss of the objectness read from the camera's own BEV map (the map a
  frame without LiDAR detects on) in every frame with a camera, times that weight;
* with ``lidar_branch_weight`` (``camera_branch_weight``), the LiDAR (camera) branch's whole detection loss (these
  same terms on its own heatmap and queries) in every frame with LiDAR (a camera), times that weight.

Inference (:meth:`CenterHead.detections`): class = best non-background class, score = its probability, then a greedy
centre-distance NMS (:meth:`CenterHead.nms`, :data:`NMS_RADIUS` m) and the config's ``min_score``.

Letters: B batch, D width, G ground-truth slots, Q queries, X/Y BEV cells, N = X·Y, C classes.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusion_core.layers.mlp import MLP
from recipes.driving_interaction.config import DrivingConfig
from recipes.driving_interaction.geometry import BevGeometry

__all__ = ["ASSIGN_RADIUS", "NMS_RADIUS", "BOX_WEIGHT", "SIZE_PRIOR", "Detections", "DetectionLoss", "DetectorOutput", "HeadOutput",
           "HeadTargets", "CenterHead", "heatmap_targets", "centre_cells", "assign_queries", "focal_heatmap_loss"]

ASSIGN_RADIUS = 2.0  # a query is responsible for the nearest object whose centre is this close (metres)
NMS_RADIUS = 0.8
BOX_WEIGHT = 2.0
# class-agnostic size prior (l, w, h); the box regression predicts log ratios to it
SIZE_PRIOR = (3.0, 1.4, 1.7)


class Detections(NamedTuple):
    """Detections of one frame (velodyne boxes), best first; ``query`` indexes the decoder query."""

    boxes: np.ndarray  # (D, 7)
    labels: np.ndarray  # (D,)
    scores: np.ndarray  # (D,)
    query: np.ndarray  # (D,)


class DetectorOutput(NamedTuple):
    """What the detector (:mod:`recipes.driving_interaction.model`) gives the head's loss and decoding."""

    heatmap: Tensor  # (B, X, Y) objectness logits
    query_cells: Tensor  # (B, Q) flat BEV cell index of each query
    class_logits: Tensor  # (B, Q, num_classes + 1); the last class is background
    boxes: Tensor  # (B, Q, 7) decoded velodyne boxes
    box_params: Tensor  # (B, Q, 8) raw regression: dx, dy, z, log l/w/h ratios, sin, cos
    stream_updates: Tensor  # (B, Q, 2) size of the decoder's cross-attention updates from [BEV, image]
    # (B, X, Y) objectness logits of the camera's own BEV map: interaction training with camera_heatmap_weight only
    camera_heatmap: Tensor | None = None
    # the LiDAR (camera) branch's own output (heatmap, queries, heads) of every frame: interaction training with
    # lidar_branch_weight (camera_branch_weight) only
    lidar_branch: "DetectorOutput | None" = None
    camera_branch: "DetectorOutput | None" = None


class HeadOutput(NamedTuple):
    """What the head predicts for ``Q`` queries."""

    class_logits: Tensor  # (B, Q, C + 1); the last class is background
    box_params: Tensor  # (B, Q, 8) raw regression: dx, dy, z, log l/w/h ratios, sin, cos
    boxes: Tensor  # (B, Q, 7) decoded velodyne boxes


class HeadTargets(NamedTuple):
    """What the head is trained towards, for the queries at ``query_cells (B, Q)``."""

    heatmap: Tensor  # (B, X, Y) Gaussian objectness in [0, 1], 1 at each object's centre cell
    classes: Tensor  # (B, Q) class of each query, C (background) where no object is near
    box_params: Tensor  # (B, Q, 8) the regression of the query's object (meaningful where ``positive``)
    positive: Tensor  # (B, Q) bool: the query found an object


class DetectionLoss(NamedTuple):
    """The training loss and its terms (unweighted)."""

    total: Tensor
    heatmap: Tensor
    classification: Tensor
    box: Tensor
    camera_heatmap: Tensor  # 0 unless the detector gave ``camera_heatmap``
    lidar_branch: Tensor  # the LiDAR branch's detection loss (its own total); 0 unless the detector gave ``lidar_branch``
    camera_branch: Tensor  # the camera branch's, likewise


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


class CenterHead(nn.Module):
    """The detection head of :mod:`this file <recipes.driving_interaction.head>` on ``config.dim``-wide features.

    ``heatmap(bev (B, D, X, Y))`` → objectness logits ``(B, X, Y)``; ``peak_cells(heatmap, k)`` → ``(B, k)`` cells;
    ``forward(queries (B, Q, D), query_cells (B, Q))`` → :class:`HeadOutput`; ``teacher_cells(gt_boxes)``,
    ``targets(query_cells, batch)``, ``loss(out, batch)`` for training; ``detections(out)`` (with ``nms``) for
    inference (``out``: the detector's :class:`DetectorOutput`). ``geometry`` gives the cell centres the queries are
    anchored at (shared with the detector).
    """

    def __init__(self, config: DrivingConfig, geometry: BevGeometry) -> None:
        super().__init__()
        self.config = config
        self.geometry = geometry
        D = config.dim
        self.objectness = nn.Conv2d(D, 1, 1)
        nn.init.constant_(self.objectness.bias, -2.19)  # CenterNet: start at p ≈ 0.1
        self.classifier = MLP(D, [D], config.num_classes + 1)
        self.regressor = MLP(D, [D], 8)
        self.register_buffer("size_prior", torch.tensor(SIZE_PRIOR), persistent=False)

    # --- prediction ---------------------------------------------------------------------------------------
    def heatmap(self, bev: Tensor) -> Tensor:
        """``bev (B, D, X, Y)`` → objectness logits ``(B, X, Y)``."""
        return self.objectness(bev)[:, 0]

    @staticmethod
    def peak_cells(heatmap: Tensor, k: int) -> Tensor:
        """``(B, k)`` flat cells of the ``k`` highest local maxima (3×3) of ``heatmap (B, X, Y)``."""
        pooled = F.max_pool2d(heatmap[:, None], 3, 1, 1)[:, 0]
        peaks = torch.where(heatmap >= pooled, heatmap, torch.full_like(heatmap, -1e4))
        return peaks.flatten(1).topk(k, dim=1).indices

    def forward(self, queries: Tensor, query_cells: Tensor) -> HeadOutput:
        params = self.regressor(queries)
        return HeadOutput(self.classifier(queries), params, self.decode_boxes(params, self.geometry.cell_xy[query_cells]))

    def decode_boxes(self, params: Tensor, anchor_xy: Tensor) -> Tensor:
        """``(…, 8)`` regression at anchor cells ``(…, 2)`` → ``(…, 7)`` velodyne boxes."""
        size = self.size_prior.to(params.dtype) * torch.exp(params[..., 3:6].clamp(-3, 3))
        yaw = torch.atan2(params[..., 6], params[..., 7])
        return torch.cat([anchor_xy + params[..., :2], params[..., 2:3], size, yaw[..., None]], -1)

    def encode_boxes(self, boxes: Tensor, anchor_xy: Tensor) -> Tensor:
        """Inverse of :meth:`decode_boxes`: the regression of velodyne ``boxes (…, 7)`` at ``anchor_xy (…, 2)``."""
        prior = self.size_prior.to(boxes.dtype)
        return torch.cat([boxes[..., :2] - anchor_xy, boxes[..., 2:3], torch.log(boxes[..., 3:6] / prior),
                          torch.sin(boxes[..., 6:7]), torch.cos(boxes[..., 6:7])], -1)

    # --- training -------------------------------------------------------------------------------------------
    def teacher_cells(self, gt_boxes: Tensor) -> Tensor:
        """``(B, G)`` the centre cell of every ground-truth slot (cell 0 for a centre off the grid or a padding slot;
        :meth:`targets` leaves those out), the queries training decodes before the heatmap's peaks."""
        return centre_cells(gt_boxes, self.geometry.cell_xy, self.config.cell).clamp(min=0)

    def targets(self, query_cells: Tensor, batch: Mapping[str, Tensor]) -> HeadTargets:
        """The targets of the queries at ``query_cells (B, Q)`` and of the heatmap, from ``batch``'s
        ``gt_boxes (B, G, 7)``, ``gt_labels (B, G)`` and ``gt_mask (B, G)`` (objects off the grid are left out)."""
        config, cell_xy = self.config, self.geometry.cell_xy
        gt_boxes, gt_labels = batch["gt_boxes"], batch["gt_labels"]
        gt_mask = batch["gt_mask"].bool() & (centre_cells(gt_boxes, cell_xy, config.cell) >= 0)
        anchor_xy = cell_xy[query_cells]  # (B, Q, 2)
        classes, index = assign_queries(anchor_xy, gt_boxes, gt_labels, gt_mask, background=config.num_classes)
        matched = gt_boxes.gather(1, index[..., None].expand(-1, -1, 7))  # (B, Q, 7)
        return HeadTargets(heatmap_targets(gt_boxes, gt_mask, cell_xy, config.grid_size, config.cell), classes,
                           self.encode_boxes(matched, anchor_xy), classes != config.num_classes)

    def loss(self, out: DetectorOutput, batch: Mapping[str, Tensor],
             branch_heads: Mapping[str, "CenterHead"] | None = None) -> DetectionLoss:
        """The loss of the file's docstring for the detector's ``out`` (decoded with :meth:`teacher_cells` first)
        against ``batch``'s objects; with ``out.lidar_branch``, plus ``lidar_branch_weight`` times the LiDAR branch's
        own detection loss (``branch_heads["lidar"]``'s, the same terms) over the frames with LiDAR (``lidar_recorded``
        where the batch has it: those training's sensor dropout hid from the interaction path count too); the camera
        branch likewise."""
        target = self.targets(out.query_cells, batch)
        loss_heat = focal_heatmap_loss(out.heatmap, target.heatmap)
        weights = self.config.class_weights
        weight = None if weights is None else out.class_logits.new_tensor(weights)
        loss_class = F.cross_entropy(out.class_logits.flatten(0, 1), target.classes.flatten(), weight=weight)
        if target.positive.any():
            loss_box = F.smooth_l1_loss(out.box_params[target.positive], target.box_params[target.positive], beta=0.2)
        else:
            loss_box = out.box_params.sum() * 0.0  # keeps every parameter in the graph (DDP needs its gradient)
        total = loss_heat + loss_class + BOX_WEIGHT * loss_box
        loss_camera = loss_heat.new_zeros(())
        if out.camera_heatmap is not None:
            camera = batch["camera_present"].bool()
            loss_camera = focal_heatmap_loss(out.camera_heatmap[camera], target.heatmap[camera])
            total = total + self.config.camera_heatmap_weight * loss_camera
        branch_losses = {}
        for sensor, branch, weight in (("lidar", out.lidar_branch, self.config.lidar_branch_weight),
                                       ("camera", out.camera_branch, self.config.camera_branch_weight)):
            branch_losses[sensor] = loss_heat.new_zeros(())
            if branch is None:
                continue
            seen = batch.get(f"{sensor}_recorded", batch[f"{sensor}_present"]).bool()
            if seen.any():
                branch_losses[sensor] = branch_heads[sensor].loss(branch._make(None if f is None else f[seen] for f in branch),
                                                                  {k: v[seen] for k, v in batch.items()}).total
            else:  # keeps the branch in the graph (DDP needs its gradient)
                branch_losses[sensor] = sum(f.sum() for f in (branch.heatmap, branch.class_logits, branch.box_params)) * 0.0
            total = total + weight * branch_losses[sensor]
        return DetectionLoss(total, loss_heat, loss_class, loss_box, loss_camera, branch_losses["lidar"],
                             branch_losses["camera"])

    # --- inference ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def detections(self, out: DetectorOutput | HeadOutput, min_score: float | None = None) -> list[Detections]:
        """Detections per frame of the detector's ``out``, best first: class = best non-background class, score = its
        probability, then :meth:`nms` and ``min_score`` (default: the config's)."""
        min_score = self.config.min_score if min_score is None else min_score
        scores, labels = torch.softmax(out.class_logits, -1)[..., :-1].max(-1)  # (B, Q) each
        results = []
        for b in range(scores.shape[0]):
            s, l, boxes = scores[b].cpu().numpy(), labels[b].cpu().numpy(), out.boxes[b].cpu().double().numpy()
            kept = self.nms(boxes, s, min_score)
            results.append(Detections(boxes[kept].reshape(-1, 7), l[kept], s[kept].astype(np.float64), kept))
        return results

    @staticmethod
    def nms(boxes: np.ndarray, scores: np.ndarray, min_score: float) -> np.ndarray:
        """Indices of the boxes ``(Q, 7)`` a greedy centre-distance NMS keeps, best score first: a box survives when
        its score is at least ``min_score`` and its centre is farther than :data:`NMS_RADIUS` m from every kept one."""
        kept: list[int] = []
        for q in np.argsort(-scores, kind="stable"):
            if scores[q] < min_score:
                break
            if all(np.hypot(*(boxes[q, :2] - boxes[k, :2])) > NMS_RADIUS for k in kept):
                kept.append(int(q))
        return np.asarray(kept, dtype=np.int64)
