"""The LightningModule that trains the camera-LiDAR detector (interaction model or a baseline) on the recipe base."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchmetrics import MetricCollection

from recipes.driving_interaction.config import CLASSES, MODALITIES, DrivingConfig
from recipes.driving_interaction.data import collate_examples, frame_to_example
from recipes.driving_interaction.head import Detections, DetectionLoss
from recipes.driving_interaction.metrics import DetectionMetrics
from recipes.driving_interaction.model import DetectorOutput, build_detector
from recipes.driving_interaction.readers import Frame
from recipes.runtime.module import RecipeModule

__all__ = ["DrivingModule", "OBJECT_STRATA"]

#: upper bounds of the object-count strata of :meth:`DrivingModule.strata_of`: up to 6, 7-8, 9 or more objects
#: (about a third of the generated training frames each)
OBJECT_STRATA = (6, 8)


class DrivingModule(RecipeModule):
    """3D detection from LiDAR and camera (see :class:`DrivingConfig`: ``variant`` picks ``interaction`` or a
    baseline). Logs ``train/loss`` (and its ``heatmap``, ``class``, ``box``, ``camera_heatmap``, ``lidar_branch`` and ``camera_branch`` terms) and, on the validation and test
    splits, the nuScenes ``map``, ``nds``, ``ate``, ``ase``, ``aoe`` and ``ap_<class>`` as the devkit computes them and
    KITTI-style ``kitti_bev_map`` (:class:`recipes.driving_interaction.metrics.DetectionMetrics`); the test split also
    without each sensor (``test/map@without_camera``, ``test/map@without_lidar``).

    The modalities are ``camera`` and ``lidar``; a frame has a sensor when its ``<sensor>_present`` flag is set
    (a failed sensor is absent, a degraded one present: see :mod:`recipes.driving_interaction.data`).
    """

    config_class = DrivingConfig
    progress_metrics = ("map", "nds")
    config: DrivingConfig

    def __init__(self, config: DrivingConfig = DrivingConfig()) -> None:
        super().__init__(config, modalities=MODALITIES)
        self.detector = build_detector(self.config)

    def forward(self, batch: Mapping[str, Tensor], query_cells: Tensor | None = None) -> DetectorOutput:
        return self.detector(batch, query_cells)

    # --- the recipe base's hooks ----------------------------------------------------------------------------
    def present_of(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {m: batch[f"{m}_present"].bool() for m in self.modalities}

    @staticmethod
    def with_present(batch: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``batch`` with its sensor flags replaced by ``present``."""
        return {**batch, **{f"{m}_present": p for m, p in present.items()}}

    def training_present(self, batch: Mapping[str, Tensor], present: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The base's per-frame sensor dropout (``modality_dropout: {camera: p, lidar: p}``), except that a frame keeps
        its sensors when the draw took every one the variant reads: a frame with nothing to see teaches the detector
        nothing (so the LiDAR-only and camera-only baselines never lose their one sensor).
        Thinned LiDAR beams, a blacked-out or night camera are drawn per frame by the data set (``fault_prob``)."""
        original = self.present_of(batch) if present is None else present
        dropped = super().training_present(batch, original)
        read = {"camera": self.config.uses_camera, "lidar": self.config.uses_lidar}
        nothing_left = ~torch.stack([dropped[m] for m in self.modalities if read[m]]).any(0)  # (B,)
        return {m: torch.where(nothing_left, original[m], dropped[m]) for m in self.modalities}

    def strata_of(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``Long (B,)``: how crowded each frame is, the number of labelled objects bucketed by
        :data:`OBJECT_STRATA` (0: up to 6, 1: 7-8, 2: 9 or more). With ``balance_missingness`` a sensor is then
        missing as often in crowded frames as in empty ones, so its absence says nothing about how many objects
        to expect."""
        counts = batch["gt_mask"].sum(1)
        return torch.bucketize(counts, torch.tensor(OBJECT_STRATA, device=counts.device))

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"detection": DetectionMetrics(CLASSES)})

    def update_metrics(self, metrics: MetricCollection, batch: Mapping[str, Tensor], present: dict[str, Tensor]) -> None:
        detections = self.detect(self.with_present(batch, present))
        targets = [{"boxes": boxes[mask], "labels": labels[mask]}
                   for boxes, labels, mask in zip(batch["gt_boxes"], batch["gt_labels"], batch["gt_mask"].bool())]
        metrics.update([det._asdict() for det in detections], targets)

    # --- training -------------------------------------------------------------------------------------------
    def losses(self, batch: Mapping[str, Tensor]) -> DetectionLoss:
        """The detection loss (:meth:`recipes.driving_interaction.head.CenterHead.loss`) of ``batch`` as it is."""
        detector = self.detector
        return detector.head.loss(detector(batch, teacher_cells=detector.head.teacher_cells(batch["gt_boxes"])), batch,
                                  {sensor: branch.head for sensor, branch in detector.branches.items()})

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        # the LiDAR branch learns from every recorded scan, as the LiDAR-only model does; sensor dropout is the
        # interaction path's
        recorded = {"lidar_recorded": self.present_of(batch)["lidar"]}
        losses = self.losses({**self.with_present(batch, self.training_present(batch)), **recorded})
        size = batch["projection"].shape[0]
        self.log("train/loss", losses.total, prog_bar=True, batch_size=size)
        for key, value in (("heatmap", losses.heatmap), ("class", losses.classification), ("box", losses.box),
                           ("camera_heatmap", losses.camera_heatmap), ("lidar_branch", losses.lidar_branch),
                           ("camera_branch", losses.camera_branch)):
            self.log(f"train/{key}", value, batch_size=size)
        return losses.total

    def on_train_epoch_start(self) -> None:
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        if dataset is not None and hasattr(dataset, "epoch"):
            dataset.epoch = self.current_epoch  # a fresh draw of training faults each epoch

    def configure_optimizers(self):
        # the base's AdamW, under the one-cycle schedule the detector was tuned with (warm-up matters for the heads)
        optimizer = super().configure_optimizers()
        steps = self.trainer.estimated_stepping_batches if self._trainer is not None else 1000
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.config.lr, total_steps=max(int(steps), 1),
                                                        pct_start=0.15)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- inference ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def detect(self, batch: Mapping[str, Tensor], out: DetectorOutput | None = None) -> list[Detections]:
        """Post-processed detections per frame (:meth:`recipes.driving_interaction.head.CenterHead.detections`)."""
        return self.detector.head.detections(self(batch) if out is None else out)

    @torch.no_grad()
    def detect_frames(self, frames: Sequence[Frame], batch_size: int = 8,
                      present: Mapping[str, Tensor] | None = None) -> list[Detections]:
        """Detections of frames read from disk; ``present`` (``{sensor: Bool (len(frames),)}``) switches sensors
        off on top of what each frame has."""
        cfg = self.config
        out: list[Detections] = []
        for start in range(0, len(frames), batch_size):
            chunk = frames[start : start + batch_size]
            # each frame's point subsample is seeded by its id, never its position: a score depends on its row only
            batch = collate_examples([frame_to_example(f, cfg.image_size, cfg.x_range, cfg.y_range) for f in chunk])
            batch = {k: v.to(self.device) for k, v in batch.items()}
            if present is not None:
                kept = self.present_of(batch)
                batch = self.with_present(batch, {m: kept[m] & present[m][start : start + len(chunk)].to(self.device)
                                                  for m in kept if m in present})
            out.extend(self.detect(batch))
        return out
