"""nuScenes-style detection metrics on the ground plane.

* **AP** per class and distance threshold ``d ∈ {0.5, 1, 2, 4}`` m: detections of the class from all frames in
  descending score order are matched greedily to the nearest unmatched ground truth of the class whose centre is
  within ``d`` (:func:`recipes.driving_interaction.boxes.greedy_match`, per frame). Precision is interpolated at
  101 recall levels; as in nuScenes, AP is the mean of ``max(p - 0.1, 0) / 0.9`` over recall levels above 0.1
  (a precision below 10 % counts as nothing). **mAP** averages over classes and thresholds.
* **True-positive errors** on the matches at ``d = 2`` m, averaged over classes: ATE (centre distance, m),
  ASE (``1 - IoU`` of the sizes after aligning centre and heading) and AOE (smallest heading difference, rad).
* **NDS-like**: nuScenes weighs mAP against five TP errors, ``(5·mAP + Σ (1 - min(1, err))) / 10``; with our three
  errors the same halves give ``NDS = mAP / 2 + mean over the three of (1 - min(1, err)) / 2``.

:class:`DetectionMetrics` is a :class:`torchmetrics.Metric`: each frame's detections and ground truth are kept as
flat tensors (every box of every frame, plus how many boxes each frame has), reduced by concatenation, so under
DDP ``compute()`` sees every frame of the split. Detections of equal score are ranked by their boxes, so the result
does not depend on the order in which frames (or processes) arrive.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from recipes.driving_interaction.boxes import aligned_scale_iou, greedy_match, yaw_difference

__all__ = ["DISTANCE_THRESHOLDS", "TP_THRESHOLD", "average_precision", "nds_like", "DetectionMetrics"]

DISTANCE_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)
TP_THRESHOLD = 2.0
MIN_RECALL = MIN_PRECISION = 0.1


def average_precision(is_tp: np.ndarray, scores: np.ndarray, num_gt: int) -> float:
    """nuScenes AP of detections (all frames) with match flags ``is_tp`` and ``scores`` against ``num_gt`` objects."""
    if num_gt == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    tp = np.cumsum(np.asarray(is_tp)[order])
    fp = np.cumsum(~np.asarray(is_tp)[order])
    precision = tp / (tp + fp)
    recall = tp / num_gt
    levels = np.linspace(0, 1, 101)
    # precision at recall r: the best precision reached at recall >= r (0 beyond the highest recall)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.searchsorted(recall, levels, side="left")
    interpolated = np.where(index < len(recall), envelope[np.minimum(index, len(recall) - 1)], 0.0)
    kept = interpolated[levels > MIN_RECALL + 1e-9]
    return float(np.mean(np.clip(kept - MIN_PRECISION, 0, None)) / (1 - MIN_PRECISION))


def nds_like(mean_ap: float, ate: float, ase: float, aoe: float) -> float:
    tp_score = np.mean([1 - min(1.0, e) for e in (ate, ase, aoe)])
    return float(0.5 * mean_ap + 0.5 * tp_score)


class DetectionMetrics(Metric):
    """``map``, ``nds``, ``ate``, ``ase``, ``aoe`` and ``ap_<class>`` (lower-case; only for classes with ground
    truth in the split) of the module docstring, over every frame seen by every process.

    ``update(preds, target)`` takes one entry per frame, as torchmetrics' ``MeanAveragePrecision`` does:
    ``preds[i]`` has ``boxes (D, 7)`` (velodyne x, y, z, l, w, h, yaw), ``scores (D,)`` and ``labels (D,)`` class
    indices into ``class_names``; ``target[i]`` has ``boxes (G, 7)`` and ``labels (G,)``. Tensors or arrays.
    """

    is_differentiable = False
    higher_is_better = None  # mAP and NDS: higher; the TP errors: lower
    full_state_update = False

    def __init__(self, class_names: Sequence[str], thresholds: Sequence[float] = DISTANCE_THRESHOLDS,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not class_names:
            raise ValueError("class_names must name at least one class")
        if TP_THRESHOLD not in thresholds:
            raise ValueError(f"thresholds must include the true-positive threshold {TP_THRESHOLD}; got {list(thresholds)}")
        self.class_names = tuple(class_names)
        self.thresholds = tuple(float(t) for t in thresholds)
        # every box of every frame, flat; *_counts says how many belong to each frame, in the order seen
        for name in ("det_boxes", "det_scores", "det_labels", "det_counts", "gt_boxes", "gt_labels", "gt_counts"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[Mapping[str, Any]], target: Sequence[Mapping[str, Any]]) -> None:
        if len(preds) != len(target):
            raise ValueError(f"preds and target must hold one entry per frame; got {len(preds)} and {len(target)}")
        for frame_preds, frame_target in zip(preds, target):
            boxes = self._tensor(frame_preds["boxes"], torch.float64).reshape(-1, 7)
            gt_boxes = self._tensor(frame_target["boxes"], torch.float64).reshape(-1, 7)
            scores = self._tensor(frame_preds["scores"], torch.float64).reshape(-1)
            labels = self._tensor(frame_preds["labels"], torch.long).reshape(-1)
            gt_labels = self._tensor(frame_target["labels"], torch.long).reshape(-1)
            if not len(boxes) == len(scores) == len(labels) or len(gt_boxes) != len(gt_labels):
                raise ValueError(f"a frame's boxes, scores and labels must have one length each for the detections "
                                 f"({len(boxes)}, {len(scores)}, {len(labels)}) and the ground truth "
                                 f"({len(gt_boxes)}, {len(gt_labels)})")
            self.det_boxes.append(boxes)
            self.det_scores.append(scores)
            self.det_labels.append(labels)
            self.det_counts.append(self._tensor([len(boxes)], torch.long))
            self.gt_boxes.append(gt_boxes)
            self.gt_labels.append(gt_labels)
            self.gt_counts.append(self._tensor([len(gt_boxes)], torch.long))

    def _tensor(self, value: Any, dtype: torch.dtype) -> Tensor:
        return torch.as_tensor(np.asarray(value) if not isinstance(value, Tensor) else value, dtype=dtype,
                               device=self.device)

    def _frames(self) -> list[tuple[np.ndarray, ...]]:
        """``(boxes, labels, scores, gt_boxes, gt_labels)`` of every frame, as float64 / int64 arrays."""
        def state(name: str, width: int | None = None) -> np.ndarray:
            value = dim_zero_cat(getattr(self, name)).cpu().numpy()
            return value.reshape(-1, width) if width else value

        if isinstance(self.det_counts, list) and not self.det_counts:
            return []
        det_counts, gt_counts = state("det_counts"), state("gt_counts")
        det_split, gt_split = np.cumsum(det_counts)[:-1], np.cumsum(gt_counts)[:-1]
        parts = [np.split(state(name, width), det_split) for name, width in
                 (("det_boxes", 7), ("det_labels", None), ("det_scores", None))]
        parts += [np.split(state(name, width), gt_split) for name, width in (("gt_boxes", 7), ("gt_labels", None))]
        return list(zip(*parts))

    def compute(self) -> dict[str, Tensor]:
        frames = self._frames()
        out: dict[str, float] = {}
        aps, errors = [], {"ate": [], "ase": [], "aoe": []}
        for c, name in enumerate(self.class_names):
            num_gt = int(sum((gt_labels == c).sum() for *_, gt_labels in frames))
            class_aps = []
            for threshold in self.thresholds:
                flags, scores, ranked = [], [], []
                ate, ase, aoe = [], [], []
                for boxes, labels, frame_scores, gt_boxes, gt_labels in frames:
                    det, gt = labels == c, gt_labels == c
                    match = greedy_match(boxes[det], frame_scores[det], gt_boxes[gt], threshold)
                    flags.append(match.is_tp)
                    scores.append(frame_scores[det])
                    ranked.append(boxes[det])
                    if threshold == TP_THRESHOLD and len(match.pairs):
                        d, g = boxes[det][match.pairs[:, 0]], gt_boxes[gt][match.pairs[:, 1]]
                        ate.append(np.linalg.norm(d[:, :2] - g[:, :2], axis=1))
                        ase.append(1 - aligned_scale_iou(d[:, 3:6], g[:, 3:6]))
                        aoe.append(yaw_difference(d[:, 6], g[:, 6]))
                flags_all = np.concatenate(flags) if flags else np.zeros(0, bool)
                scores_all = np.concatenate(scores) if scores else np.zeros(0)
                boxes_all = np.concatenate(ranked) if ranked else np.zeros((0, 7))
                # ties in score are ranked by box, not by the order the frames arrived in
                order = np.lexsort((*boxes_all.T[::-1], -scores_all))
                ap = average_precision(flags_all[order], scores_all[order], num_gt)
                class_aps.append(ap)
                if threshold == TP_THRESHOLD and ate:
                    for key, values in (("ate", ate), ("ase", ase), ("aoe", aoe)):
                        errors[key].append(float(np.concatenate(values).mean()))
            if num_gt:
                out[f"ap_{name.lower()}"] = float(np.mean(class_aps))
                aps.append(float(np.mean(class_aps)))
        out["map"] = float(np.mean(aps)) if aps else 0.0
        for key, values in errors.items():
            out[key] = float(np.mean(values)) if values else 1.0  # no true positive: the worst error, as nuScenes
        out["nds"] = nds_like(out["map"], out["ate"], out["ase"], out["aoe"])
        return {key: torch.tensor(value, dtype=torch.float64) for key, value in out.items()}
