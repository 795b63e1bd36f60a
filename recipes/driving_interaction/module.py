"""The LightningModule that trains the camera-LiDAR detector (interaction model or a baseline)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from recipes.driving_interaction.metrics import DetectionEvaluator, FrameResult
from recipes.driving_interaction.model import VARIANTS, DetectorOutput, DrivingModelConfig, build_detector
from recipes.driving_interaction.scenes import CLASSES

__all__ = ["DrivingModule", "Detections", "heatmap_targets", "assign_queries"]

ASSIGN_RADIUS = 2.0  # a query is responsible for the nearest object whose centre is this close (metres)
NMS_RADIUS = 0.8


class Detections(NamedTuple):
    """Detections of one frame (velodyne boxes), best first; ``query`` indexes the decoder query."""

    boxes: np.ndarray  # (D, 7)
    labels: np.ndarray  # (D,)
    scores: np.ndarray  # (D,)
    query: np.ndarray  # (D,)


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


def centre_cells(gt_boxes: Tensor, cell_xy: Tensor, cell: tuple[float, float]) -> Tensor:
    """``(B, G)`` flat cell of each box centre; -1 outside the grid."""
    distance = (gt_boxes[:, :, None, :2] - cell_xy[None, None]).abs()  # (B, G, N, 2)
    inside = (distance[..., 0] <= cell[0] / 2) & (distance[..., 1] <= cell[1] / 2)
    found = inside.any(-1)
    return torch.where(found, inside.float().argmax(-1), torch.full_like(found, -1, dtype=torch.long))


def assign_queries(anchor_xy: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_mask: Tensor, background: int):
    """Each query (anchored at ``(B, Q, 2)``) takes the nearest object within :data:`ASSIGN_RADIUS`: returns
    ``class target (B, Q)`` (``background`` when none) and the object's index ``(B, Q)``."""
    distance = torch.linalg.norm(anchor_xy[:, :, None] - gt_boxes[:, None, :, :2], dim=-1)  # (B, Q, G)
    distance = distance.masked_fill(~gt_mask[:, None], float("inf"))
    nearest, index = distance.min(-1)
    positive = nearest <= ASSIGN_RADIUS
    target = torch.where(positive, gt_labels.gather(1, index), torch.full_like(index, background))
    return target, index


def _focal_heatmap_loss(logits: Tensor, target: Tensor) -> Tensor:
    """CenterNet's penalty-reduced focal loss (α = 2, β = 4), normalised by the number of centres."""
    prob = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = target.eq(1).float()
    pos_loss = -torch.log(prob) * (1 - prob) ** 2 * positive
    neg_loss = -torch.log(1 - prob) * prob ** 2 * (1 - target) ** 4 * (1 - positive)
    return (pos_loss.sum() + neg_loss.sum()) / positive.sum().clamp(min=1)


class DrivingModule(pl.LightningModule):
    """3D detection from LiDAR and camera. ``variant`` picks ``interaction`` (DeepInteraction++-style) or a
    baseline ``lidar`` | ``camera`` | ``concat``; the other arguments size the model (see
    :class:`recipes.driving_interaction.model.DrivingModelConfig`). Logs ``train/loss`` and, on the validation
    and test splits, nuScenes-style ``map``, ``nds``, ``ate``, ``ase``, ``aoe`` and ``ap_<class>``."""

    def __init__(
        self,
        *,
        variant: str = "interaction",
        dim: int = 32,
        num_heads: int = 4,
        encoder_layers: int = 1,
        decoder_layers: int = 4,
        num_queries: int = 24,
        grid_size: tuple[int, int] = (32, 32),
        image_size: tuple[int, int] = (96, 320),
        x_range: tuple[float, float] = (0.0, 48.0),
        y_range: tuple[float, float] = (-24.0, 24.0),
        dropout: float = 0.0,
        min_score: float = 0.05,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant = {variant!r}; choose one of {list(VARIANTS)}")
        if lr <= 0 or weight_decay < 0 or not 0 <= min_score < 1:
            raise ValueError(f"need lr > 0, weight_decay >= 0 and 0 <= min_score < 1; got {lr}, {weight_decay}, {min_score}")
        grid_size, image_size = [int(v) for v in grid_size], [int(v) for v in image_size]
        x_range, y_range = [float(v) for v in x_range], [float(v) for v in y_range]
        self.save_hyperparameters()
        self.config = DrivingModelConfig(variant=variant, num_classes=len(CLASSES), x_range=tuple(x_range),
                                         y_range=tuple(y_range), grid_size=tuple(grid_size), image_size=tuple(image_size),
                                         dim=dim, num_heads=num_heads, encoder_layers=encoder_layers,
                                         decoder_layers=decoder_layers, num_queries=num_queries, dropout=dropout)
        self.detector = build_detector(self.config)
        self.evaluators = {stage: DetectionEvaluator(list(CLASSES)) for stage in ("val", "test")}

    def forward(self, batch: Mapping[str, Tensor], query_cells: Tensor | None = None) -> DetectorOutput:
        return self.detector(batch, query_cells)

    # --- training ---------------------------------------------------------------------------------------
    def losses(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        cfg = self.config
        geometry = self.detector.geometry
        gt_boxes, gt_labels, gt_mask = batch["gt_boxes"], batch["gt_labels"], batch["gt_mask"]
        centres = centre_cells(gt_boxes, geometry.cell_xy, cfg.cell)
        gt_mask = gt_mask & (centres >= 0)
        # queries: every object's centre cell (teacher forcing) plus the heatmap's peaks
        bev, image_features = self.detector.streams(batch)
        heatmap = self.detector.heatmap_head(bev)[:, 0]
        peaks = self.detector.peak_cells(heatmap.detach(), cfg.num_queries)
        query_cells = torch.cat([centres.clamp(min=0), peaks], 1)
        out = self.detector.decode_queries(batch, bev, image_features, heatmap, query_cells)
        anchor_xy = geometry.cell_xy[query_cells]
        target, index = assign_queries(anchor_xy, gt_boxes, gt_labels, gt_mask, cfg.num_classes)
        heat_target = heatmap_targets(gt_boxes, gt_mask, geometry.cell_xy, cfg.grid_size, cfg.cell)
        loss_heat = _focal_heatmap_loss(heatmap, heat_target)
        loss_class = F.cross_entropy(out.class_logits.flatten(0, 1), target.flatten())
        positive = target != cfg.num_classes
        matched = gt_boxes.gather(1, index[..., None].expand(-1, -1, 7))
        reg_target = self.detector.encode(matched, anchor_xy)
        if positive.any():
            loss_box = F.smooth_l1_loss(out.box_params[positive], reg_target[positive], beta=0.2)
        else:
            loss_box = out.box_params.sum() * 0.0
        total = loss_heat + loss_class + 2.0 * loss_box
        return {"loss": total, "heatmap": loss_heat, "class": loss_class, "box": loss_box}

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        losses = self.losses(batch)
        size = batch["projection"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=size)
        for key in ("heatmap", "class", "box"):
            self.log(f"train/{key}", losses[key], batch_size=size)
        return losses["loss"]

    def on_train_epoch_start(self) -> None:
        loader = self.trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if dataset is not None and hasattr(dataset, "epoch"):
            dataset.epoch = self.current_epoch  # a fresh draw of training faults each epoch

    # --- inference ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, batch: Mapping[str, Tensor], out: DetectorOutput | None = None) -> list[Detections]:
        """Post-processed detections per frame: class = best non-background class, score = its probability,
        a centre-distance NMS (:data:`NMS_RADIUS`) and ``min_score``."""
        out = self(batch) if out is None else out
        probs = torch.softmax(out.class_logits, -1)[..., :-1]  # (B, Q, C)
        scores, labels = probs.max(-1)
        results = []
        for b in range(scores.shape[0]):
            s, l, boxes = scores[b].cpu().numpy(), labels[b].cpu().numpy(), out.boxes[b].cpu().double().numpy()
            order = np.argsort(-s, kind="stable")
            kept: list[int] = []
            for q in order:
                if s[q] < self.hparams.min_score:
                    break
                if all(np.hypot(*(boxes[q, :2] - boxes[k, :2])) > NMS_RADIUS for k in kept):
                    kept.append(int(q))
            kept_array = np.asarray(kept, dtype=np.int64)
            results.append(Detections(boxes[kept_array].reshape(-1, 7), l[kept_array], s[kept_array].astype(np.float64),
                                      kept_array))
        return results

    def _evaluate(self, batch: Mapping[str, Tensor], stage: str) -> None:
        detections = self.detect(batch)
        for b, det in enumerate(detections):
            mask = batch["gt_mask"][b].bool()
            self.evaluators[stage].add(FrameResult(det.boxes, det.labels, det.scores,
                                                   batch["gt_boxes"][b][mask].cpu().double().numpy(),
                                                   batch["gt_labels"][b][mask].cpu().numpy()))

    def _log_epoch(self, stage: str) -> None:
        metrics = self.evaluators[stage].compute()
        self.evaluators[stage].reset()
        for key, value in metrics.items():
            self.log(f"{stage}/{key}", value, prog_bar=stage == "val" and key in ("map", "nds"))

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        steps = self.trainer.estimated_stepping_batches if self.trainer is not None else 1000
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.hparams.lr, total_steps=max(int(steps), 1),
                                                        pct_start=0.15)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
