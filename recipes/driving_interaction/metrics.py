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
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recipes.driving_interaction.boxes import aligned_scale_iou, greedy_match, yaw_difference

__all__ = ["DISTANCE_THRESHOLDS", "TP_THRESHOLD", "FrameResult", "average_precision", "DetectionEvaluator",
           "nds_like"]

DISTANCE_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)
TP_THRESHOLD = 2.0
MIN_RECALL = MIN_PRECISION = 0.1


@dataclass
class FrameResult:
    """One frame: detections ``boxes (D, 7)``, ``labels (D,)`` class indices, ``scores (D,)``; ground truth
    ``gt_boxes (G, 7)``, ``gt_labels (G,)``."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray


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


@dataclass
class DetectionEvaluator:
    """Accumulate frames with :meth:`add`, then :meth:`compute` the metrics as a flat dict."""

    class_names: Sequence[str]
    thresholds: Sequence[float] = DISTANCE_THRESHOLDS
    frames: list[FrameResult] = field(default_factory=list)

    def add(self, frame: FrameResult) -> None:
        self.frames.append(frame)

    def reset(self) -> None:
        self.frames = []

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        aps, errors = [], {"ate": [], "ase": [], "aoe": []}
        for c, name in enumerate(self.class_names):
            num_gt = int(sum((f.gt_labels == c).sum() for f in self.frames))
            class_aps = []
            for threshold in self.thresholds:
                flags, scores = [], []
                ate, ase, aoe = [], [], []
                for f in self.frames:
                    det, gt = f.labels == c, f.gt_labels == c
                    match = greedy_match(f.boxes[det], f.scores[det], f.gt_boxes[gt], threshold)
                    flags.append(match.is_tp)
                    scores.append(f.scores[det])
                    if threshold == TP_THRESHOLD and len(match.pairs):
                        d, g = f.boxes[det][match.pairs[:, 0]], f.gt_boxes[gt][match.pairs[:, 1]]
                        ate.append(np.linalg.norm(d[:, :2] - g[:, :2], axis=1))
                        ase.append(1 - aligned_scale_iou(d[:, 3:6], g[:, 3:6]))
                        aoe.append(yaw_difference(d[:, 6], g[:, 6]))
                ap = average_precision(np.concatenate(flags) if flags else np.zeros(0, bool),
                                       np.concatenate(scores) if scores else np.zeros(0), num_gt)
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
        return out
