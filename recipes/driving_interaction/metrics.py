"""Detection metrics: the nuScenes detection score, computed as the nuScenes devkit computes it, and KITTI-style
BEV AP.

**nuScenes** (Caesar et al., 2020, §4; ``nuscenes-devkit`` ``eval/detection/algo.py``), per class and centre-distance
threshold ``d ∈ {0.5, 1, 2, 4}`` m, in the devkit's steps:

* :func:`accumulate`: every detection of the class, from all frames, in descending score order takes the nearest
  still-unmatched ground truth of its frame whose centre is closer than ``d`` (strictly); the precision and the
  confidence are interpolated at 101 recall levels (``np.interp``, 0 beyond the highest recall), and each
  true-positive error's running mean over the matches is interpolated at those confidences;
* :func:`calc_ap`: the mean over the recall levels above 0.1 of ``max(p − 0.1, 0) / 0.9``;
* :func:`calc_tp`: the mean of an error between recall 0.1 (excluded) and the highest recall reached, at ``d = 2`` m;
  1 when that range is empty.

mAP averages AP over the classes with ground truth and the four thresholds. The true-positive errors are ATE (centre
distance, m), ASE (``1 − IoU`` after aligning centre and heading) and AOE (smallest heading difference, rad),
averaged over classes; our frames carry no velocity or attributes, so the devkit's AVE and AAE are left out and
``NDS = (5·mAP + Σ_{ATE, ASE, AOE} max(0, 1 − err)) / 8``, the devkit's ``nd_score`` over the errors that exist.

**KITTI-style BEV AP** (Geiger et al., 2012; the R40 variant of Simonelli et al., 2019): detections match the
ground truth of their frame greedily by score at rotated bird's-eye-view IoU ≥ 0.7 (``Car``, ``Truck``) or ≥ 0.5
(``Pedestrian``, ``Cyclist``), and AP is the mean interpolated precision at the 40 recall levels 1/40 … 1. No
difficulty levels (the generated labels have no 2D-box heights or occlusion flags to split by).

:class:`DetectionMetrics` is a :class:`torchmetrics.Metric`: each frame's detections and ground truth are kept as
flat tensors (every box of every frame, plus how many each frame has), reduced by concatenation, so under DDP
``compute()`` sees every frame of the split. Equal scores are ranked by their boxes, so the result does not depend on
the order frames (or processes) arrive in; that is the one place it may differ from the devkit, which breaks exact
ties by input order.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from recipes.driving_interaction.boxes import aligned_scale_iou, bev_iou, yaw_difference

__all__ = ["DISTANCE_THRESHOLDS", "TP_THRESHOLD", "TP_ERRORS", "KITTI_IOU", "CurveData", "accumulate", "calc_ap",
           "calc_tp", "nuscenes_nds", "kitti_bev_ap", "DetectionMetrics"]

DISTANCE_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)
TP_THRESHOLD = 2.0
MIN_RECALL = MIN_PRECISION = 0.1
MEAN_AP_WEIGHT = 5.0
RECALL_LEVELS = 101
#: our names of the devkit's trans_err, scale_err and orient_err
TP_ERRORS = {"ate": "trans_err", "ase": "scale_err", "aoe": "orient_err"}
#: KITTI's BEV IoU threshold per class (cars 0.7; pedestrians and cyclists 0.5); a truck counts as a car
KITTI_IOU = {"Car": 0.7, "Truck": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}

#: one frame: detection boxes (D, 7), labels (D,), scores (D,), ground-truth boxes (G, 7), labels (G,)
Frame = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class CurveData(NamedTuple):
    """The devkit's ``DetectionMetricData`` without velocity and attributes: each ``(101,)`` over recall levels."""

    recall: np.ndarray
    precision: np.ndarray
    confidence: np.ndarray
    trans_err: np.ndarray
    scale_err: np.ndarray
    orient_err: np.ndarray

    @classmethod
    def no_predictions(cls) -> "CurveData":
        zeros, ones = np.zeros(RECALL_LEVELS), np.ones(RECALL_LEVELS)
        return cls(np.linspace(0, 1, RECALL_LEVELS), zeros, zeros.copy(), ones, ones.copy(), ones.copy())

    @property
    def max_recall_ind(self) -> int:
        """Index of the highest recall reached: the last level with a non-zero confidence."""
        non_zero = np.nonzero(self.confidence)[0]
        return int(non_zero[-1]) if len(non_zero) else 0


def _ranked(frames: Sequence[Frame], class_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(frame index, index in frame, score)`` of every detection of the class, best first (ties by box)."""
    rows = [(f, i, boxes[i], scores[i]) for f, (boxes, labels, scores, _, _) in enumerate(frames)
            for i in np.nonzero(labels == class_index)[0]]
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    boxes = np.stack([r[2] for r in rows])
    scores = np.array([r[3] for r in rows], dtype=np.float64)
    order = np.lexsort((*boxes.T[::-1], -scores))
    return np.array([r[0] for r in rows])[order], np.array([r[1] for r in rows])[order], scores[order]


def _cummean(x: np.ndarray) -> np.ndarray:
    return np.cumsum(x) / np.arange(1, len(x) + 1)


def accumulate(frames: Sequence[Frame], class_index: int, threshold: float) -> CurveData:
    """The devkit's ``accumulate`` for one class and centre-distance ``threshold`` (see the module docstring)."""
    num_gt = sum(int((gt_labels == class_index).sum()) for *_, gt_labels in frames)
    if num_gt == 0:
        return CurveData.no_predictions()
    frame_of, index_of, confidence = _ranked(frames, class_index)
    taken = [np.zeros(len(gt_labels), dtype=bool) for *_, gt_labels in frames]
    is_tp = np.zeros(len(confidence), dtype=bool)
    errors: dict[str, list[float]] = {"trans_err": [], "scale_err": [], "orient_err": []}
    for k, (f, i) in enumerate(zip(frame_of, index_of)):
        boxes, _, _, gt_boxes, gt_labels = frames[f]
        box = boxes[i]
        candidates = np.nonzero((gt_labels == class_index) & ~taken[f])[0]
        if not len(candidates):
            continue
        distance = np.linalg.norm(gt_boxes[candidates, :2] - box[:2], axis=1)
        nearest = int(np.argmin(distance))  # the first of equally near ones, as the devkit's strict '<' scan
        if distance[nearest] < threshold:
            g = candidates[nearest]
            taken[f][g] = True
            is_tp[k] = True
            errors["trans_err"].append(float(distance[nearest]))
            errors["scale_err"].append(float(1 - aligned_scale_iou(gt_boxes[g, 3:6], box[3:6])))
            errors["orient_err"].append(float(yaw_difference(gt_boxes[g, 6], box[6])))
    if not is_tp.any():
        return CurveData.no_predictions()
    tp, fp = np.cumsum(is_tp).astype(float), np.cumsum(~is_tp).astype(float)
    precision, recall = tp / (tp + fp), tp / num_gt
    levels = np.linspace(0, 1, RECALL_LEVELS)
    precision = np.interp(levels, recall, precision, right=0)
    conf = np.interp(levels, recall, confidence, right=0)
    match_conf = confidence[is_tp]
    # each error's running mean over the matches, read at the confidence of every recall level (np.interp needs
    # increasing x: both reversed)
    curves = {name: np.interp(conf[::-1], match_conf[::-1], _cummean(np.asarray(values))[::-1])[::-1]
              for name, values in errors.items()}
    return CurveData(levels, precision, conf, **curves)


def calc_ap(curve: CurveData, min_recall: float = MIN_RECALL, min_precision: float = MIN_PRECISION) -> float:
    """The devkit's ``calc_ap``: mean precision above ``min_recall`` (its level excluded), less ``min_precision``."""
    precision = curve.precision[round(100 * min_recall) + 1 :] - min_precision
    return float(np.mean(np.clip(precision, 0, None))) / (1.0 - min_precision)


def calc_tp(curve: CurveData, name: str, min_recall: float = MIN_RECALL) -> float:
    """The devkit's ``calc_tp`` of the error ``name`` (``trans_err``, ``scale_err``, ``orient_err``)."""
    first, last = round(100 * min_recall) + 1, curve.max_recall_ind
    if last < first:
        return 1.0
    return float(np.mean(getattr(curve, name)[first : last + 1]))


def nuscenes_nds(mean_ap: float, tp_errors: Mapping[str, float]) -> float:
    """The devkit's ``nd_score`` over the given true-positive errors: ``(5·mAP + Σ max(0, 1 − err)) / (5 + n)``."""
    scores = [max(0.0, 1.0 - float(error)) for error in tp_errors.values()]
    return float((MEAN_AP_WEIGHT * mean_ap + sum(scores)) / (MEAN_AP_WEIGHT + len(scores)))


def kitti_bev_ap(frames: Sequence[Frame], class_index: int, iou_threshold: float) -> float:
    """KITTI-style BEV AP (R40) of one class (module docstring); NaN without ground truth."""
    num_gt = sum(int((gt_labels == class_index).sum()) for *_, gt_labels in frames)
    if num_gt == 0:
        return float("nan")
    frame_of, index_of, _ = _ranked(frames, class_index)
    if not len(frame_of):
        return 0.0
    taken = [np.zeros(len(gt_labels), dtype=bool) for *_, gt_labels in frames]
    is_tp = np.zeros(len(frame_of), dtype=bool)
    for k, (f, i) in enumerate(zip(frame_of, index_of)):
        boxes, _, _, gt_boxes, gt_labels = frames[f]
        candidates = np.nonzero((gt_labels == class_index) & ~taken[f])[0]
        if len(candidates):
            iou = bev_iou(boxes[i : i + 1], gt_boxes[candidates])[0]
            best = int(np.argmax(iou))
            if iou[best] >= iou_threshold:
                taken[f][candidates[best]] = True
                is_tp[k] = True
    tp = np.cumsum(is_tp)
    precision, recall = tp / np.arange(1, len(tp) + 1), tp / num_gt
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at this recall or beyond
    levels = np.arange(1, 41) / 40
    index = np.searchsorted(recall, levels - 1e-12, side="left")
    return float(np.mean(np.where(index < len(recall), envelope[np.minimum(index, len(recall) - 1)], 0.0)))


class DetectionMetrics(Metric):
    """nuScenes ``map``, ``nds``, ``ate``, ``ase``, ``aoe``, ``ap_<class>`` and KITTI-style ``kitti_bev_map``,
    ``kitti_bev_ap_<class>`` (lower-case names; per-class values only for classes with ground truth in the split),
    over every frame seen by every process (module docstring).

    ``update(preds, target)`` takes one entry per frame, as torchmetrics' ``MeanAveragePrecision`` does:
    ``preds[i]`` has ``boxes (D, 7)`` (velodyne x, y, z, l, w, h, yaw), ``scores (D,)`` and ``labels (D,)`` class
    indices into ``class_names``; ``target[i]`` has ``boxes (G, 7)`` and ``labels (G,)``. Tensors or arrays.
    """

    is_differentiable = False
    higher_is_better = None  # mAP, NDS, BEV AP: higher; the TP errors: lower
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

    def frames(self) -> list[Frame]:
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
        frames = self.frames()
        out: dict[str, float] = {}
        aps, bev_aps, errors = [], [], {key: [] for key in TP_ERRORS}
        for c, name in enumerate(self.class_names):
            if not any((gt_labels == c).any() for *_, gt_labels in frames):
                continue
            curves = {threshold: accumulate(frames, c, threshold) for threshold in self.thresholds}
            out[f"ap_{name.lower()}"] = float(np.mean([calc_ap(curve) for curve in curves.values()]))
            aps.append(out[f"ap_{name.lower()}"])
            for key, field in TP_ERRORS.items():
                errors[key].append(calc_tp(curves[TP_THRESHOLD], field))
            out[f"kitti_bev_ap_{name.lower()}"] = kitti_bev_ap(frames, c, KITTI_IOU.get(name, 0.5))
            bev_aps.append(out[f"kitti_bev_ap_{name.lower()}"])
        out["map"] = float(np.mean(aps)) if aps else 0.0
        for key, values in errors.items():
            out[key] = float(np.mean(values)) if values else 1.0  # no class: the worst error, as the devkit
        out["nds"] = nuscenes_nds(out["map"], {key: out[key] for key in TP_ERRORS})
        out["kitti_bev_map"] = float(np.mean(bev_aps)) if bev_aps else 0.0
        return {key: torch.tensor(value, dtype=torch.float64) for key, value in out.items()}
