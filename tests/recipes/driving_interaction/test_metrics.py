"""nuScenes-style AP, TP errors and the NDS-like score on hand-made frames, and the metric's state across processes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.utilities import dim_zero_cat

from recipes.driving_interaction.config import CLASSES
from recipes.driving_interaction.metrics import (DetectionMetrics, accumulate, calc_ap, calc_tp, kitti_bev_ap,
                                                 nuscenes_nds)


def boxes(*rows):
    return np.array([[x, y, 0, 4, 2, 1.5, yaw] for x, y, yaw in rows], dtype=float).reshape(-1, 7)


def frame(det_rows=(), det_labels=(), scores=(), gt_rows=(), gt_labels=()):
    """One frame as ``(preds, target)`` entries of :meth:`DetectionMetrics.update`."""
    return ({"boxes": boxes(*det_rows), "labels": np.array(det_labels, dtype=int), "scores": np.array(scores, float)},
            {"boxes": boxes(*gt_rows), "labels": np.array(gt_labels, dtype=int)})


def computed(metric: DetectionMetrics, frames) -> dict[str, float]:
    for preds, target in frames:
        metric.update([preds], [target])
    return {k: float(v) for k, v in metric.compute().items()}


def test_devkit_steps_on_hand_made_curves():
    one_hit = [frame([(10, 0, 0)], [0], [0.9], [(10, 0, 0)], [0])]
    assert calc_ap(accumulate(_frames(one_hit), 0, 1.0)) == pytest.approx(1.0)
    # half the objects found with perfect precision: recall levels 0.11..0.50 of the 90 above 0.1
    half = [frame([(10, 0, 0)], [0], [0.9], [(10, 0, 0), (30, 0, 0)], [0, 0])]
    assert calc_ap(accumulate(_frames(half), 0, 1.0)) == pytest.approx(40 / 90)
    # a false positive ranked first: the devkit interpolates linearly from (0, 0) to (1, 0.5), no envelope
    fp_first = [frame([(30, 0, 0), (10, 0, 0)], [0, 0], [0.9, 0.8], [(10, 0, 0)], [0])]
    levels = np.linspace(0, 1, 101)[11:]
    assert calc_ap(accumulate(_frames(fp_first), 0, 1.0)) == pytest.approx(np.mean(np.clip(0.5 * levels - 0.1, 0, None)) / 0.9)
    # ranked after the true positive it costs only the last recall level: np.interp reads the later of the two
    # points at recall 1 (precision 0.5), as in the devkit
    fp_last = [frame([(30, 0, 0), (10, 0, 0)], [0, 0], [0.8, 0.9], [(10, 0, 0)], [0])]
    assert calc_ap(accumulate(_frames(fp_last), 0, 1.0)) == pytest.approx((89 * 0.9 + 0.4) / 90 / 0.9)
    # a match must be strictly closer than the threshold
    assert calc_ap(accumulate(_frames([frame([(11, 0, 0)], [0], [0.9], [(10, 0, 0)], [0])]), 0, 1.0)) == 0.0
    empty = accumulate([], 0, 1.0)
    assert calc_ap(empty) == 0.0 and calc_tp(empty, "trans_err") == 1.0
    # TP errors: the running mean over the matches, read between recall 0.1 and the highest recall reached
    two = [frame([(10.5, 0, 0), (20.1, 0, 0)], [0, 0], [0.9, 0.8], [(10, 0, 0), (20, 0, 0), (40, 0, 0), (50, 0, 0)],
                 [0, 0, 0, 0])]
    curve = accumulate(_frames(two), 0, 2.0)
    assert curve.max_recall_ind == 50
    # recall 0.11..0.25 reads the first match (0.5 m); up to recall 0.5 the confidence falls linearly from 0.9 to 0.8
    # and the running mean with it from 0.5 to the mean of both, 0.3 m
    between = 0.5 - 0.2 * (np.arange(26, 51) / 100 - 0.25) / 0.25
    assert calc_tp(curve, "trans_err") == pytest.approx((15 * 0.5 + between.sum()) / 40)
    assert nuscenes_nds(0.5, {"ate": 1.5, "ase": 0.0, "aoe": 0.5}) == pytest.approx((2.5 + 0 + 1 + 0.5) / 8)


def _frames(entries) -> list:
    """``(preds, target)`` entries as the arrays :func:`accumulate` takes."""
    return [(p["boxes"], p["labels"], p["scores"], t["boxes"], t["labels"]) for p, t in entries]


def test_perfect_detections_score_one():
    gt = [(10, 0, 0.1), (20, 3, 1.0)]
    metrics = computed(DetectionMetrics(["Car", "Truck"]), [frame(gt, [0, 1], [0.9, 0.8], gt, [0, 1])])
    assert metrics["map"] == pytest.approx(1.0)
    assert metrics["ate"] == pytest.approx(0.0) and metrics["ase"] == pytest.approx(0.0) and metrics["aoe"] == pytest.approx(0.0)
    assert metrics["nds"] == pytest.approx(1.0)


def test_offsets_thresholds_and_errors():
    # 1.5 m off: a match at 2 and 4 m, not at 0.5 and 1 m
    metrics = computed(DetectionMetrics(["Car"]), [frame([(11.5, 0, 0.5)], [0], [0.7], [(10, 0, 0.0)], [0])])
    assert metrics["ap_car"] == pytest.approx(0.5)
    assert metrics["ate"] == pytest.approx(1.5) and metrics["aoe"] == pytest.approx(0.5)
    assert metrics["nds"] == pytest.approx((5 * 0.5 + 0 + 1 + 0.5) / 8)


def test_wrong_class_is_a_miss_and_classes_without_objects_are_skipped():
    gt = [(10, 0, 0.0)]
    metrics = computed(DetectionMetrics(["Car", "Truck", "Pedestrian"]), [frame(gt, [1], [0.9], gt, [0])])
    assert metrics["ap_car"] == 0.0 and "ap_truck" not in metrics and "ap_pedestrian" not in metrics
    assert metrics["map"] == 0.0 and metrics["ate"] == 1.0  # no true positive: worst errors


SCENE = [
    frame([(10, 0, 0.1), (30, 5, 0.0)], [0, 0], [0.9, 0.4], [(10.3, 0, 0.2), (20, -3, 1.0)], [0, 1]),
    frame([], [], [], [(15, 2, 0.0)], [2]),  # a missed pedestrian
    frame([(25, 1, 0.5), (8, -2, 0.0)], [1, 2], [0.7, 0.6], [(24, 1, 0.3)], [1]),
    frame([(40, 0, 0.0)], [0], [0.5], [], []),  # a false positive in an empty frame
    frame([(12, 4, 3.0)], [3], [0.8], [(12.6, 4, 2.8)], [3]),
]


def test_frames_split_across_processes_give_the_metrics_of_all_frames():
    """Each process keeps its frames as cat-reduced states; merged (what DDP's gather does before compute), they
    give the metrics of every frame in one process, whatever order the frames arrived in."""
    whole = computed(DetectionMetrics(CLASSES), SCENE)
    assert 0 < whole["map"] < 1 and {"ap_car", "ap_truck", "ap_pedestrian", "ap_cyclist"} <= set(whole)
    ranks = [DetectionMetrics(CLASSES), DetectionMetrics(CLASSES)]
    for i, (preds, target) in enumerate(SCENE):  # a DistributedSampler's interleaving
        ranks[i % 2].update([preds], [target])
    assert all(ranks[0]._reductions[name] is dim_zero_cat for name in ranks[0]._defaults)
    ranks[0].merge_state(ranks[1])
    merged = {k: float(v) for k, v in ranks[0].compute().items()}
    assert merged.keys() == whole.keys()
    for key, value in whole.items():
        assert merged[key] == pytest.approx(value, abs=1e-12), key
    assert computed(DetectionMetrics(CLASSES), SCENE[::-1]) == pytest.approx(whole, abs=1e-12)


def test_equal_scores_are_ranked_by_box_not_by_arrival():
    hit = frame([(10, 0, 0.0)], [0], [0.5], [(10, 0, 0.0)], [0])
    miss = frame([(30, 0, 0.0)], [0], [0.5], [(5, 9, 0.0)], [0])
    first, second = computed(DetectionMetrics(["Car"]), [hit, miss]), computed(DetectionMetrics(["Car"]), [miss, hit])
    assert first == second
    # box x 10 ranks before x 30: the hit first (precision 1 at recall 0.5), then the miss (0.5 at recall 0.5)
    precision = np.interp(np.linspace(0, 1, 101), [0.5, 0.5], [1.0, 0.5], right=0)[11:]
    assert first["ap_car"] == pytest.approx(np.mean(np.clip(precision - 0.1, 0, None)) / 0.9)


def test_update_checks_its_input_and_an_empty_split_computes():
    metric = DetectionMetrics(["Car"])
    preds, target = frame([(10, 0, 0.0)], [0], [0.5, 0.4], [(10, 0, 0.0)], [0])
    with pytest.raises(ValueError, match="one length each"):
        metric.update([preds], [target])
    with pytest.raises(ValueError, match="one entry per frame"):
        metric.update([preds], [])
    with pytest.raises(ValueError, match="true-positive threshold"):
        DetectionMetrics(["Car"], thresholds=(0.5, 1.0))
    metric.update([], [])
    assert {k: float(v) for k, v in metric.compute().items()} == {"map": 0.0, "ate": 1.0, "ase": 1.0, "aoe": 1.0,
                                                                  "nds": 0.0, "kitti_bev_map": 0.0}
    assert metric.compute()["map"].dtype == torch.float64


def test_kitti_bev_ap_uses_rotated_iou_and_forty_recall_levels():
    from recipes.driving_interaction.boxes import bev_iou

    square = np.array([[0, 0, 0, 2, 2, 1, 0]], float)
    assert bev_iou(square, square)[0, 0] == pytest.approx(1.0)
    assert bev_iou(square, square + [1, 0, 0, 0, 0, 0, 0])[0, 0] == pytest.approx(2 / 6)  # half overlap: 2 / (4 + 4 - 2)
    turned = square + [0, 0, 0, 0, 0, 0, np.pi / 4]  # an octagon: the square less four corners of legs 2 - √2
    overlap = 4 - 4 * (2 - np.sqrt(2)) ** 2 / 2
    assert bev_iou(square, turned)[0, 0] == pytest.approx(overlap / (8 - overlap), rel=1e-9)
    car = [frame([(10, 0, 0), (20.5, 0, 0)], [0, 0], [0.9, 0.8], [(10, 0, 0), (20, 0, 0)], [0, 0])]
    # the second car is 0.5 m off along its 4 m length: BEV IoU 3.5·2 / (16 - 7) = 0.78 ≥ 0.7, both found
    assert kitti_bev_ap(_frames(car), 0, 0.7) == pytest.approx(1.0)
    shifted = [frame([(10, 0, 0), (21.5, 0, 0)], [0, 0], [0.9, 0.8], [(10, 0, 0), (20, 0, 0)], [0, 0])]
    assert kitti_bev_ap(_frames(shifted), 0, 0.7) == pytest.approx(20 / 40)  # recall 0.5 at precision 1
    assert kitti_bev_ap(_frames(shifted), 0, 0.3) == pytest.approx(1.0)  # IoU 2.5·2 / 11 = 0.45


def _devkit():
    """The nuScenes devkit's detection modules, or skip. It is a test-only reference that cannot share this venv
    (nuscenes-devkit 1.2.0 pins numpy < 2): ``make test`` installs it without its pins into ``.venv/nuscenes-devkit``
    (see the Makefile); ``NUSCENES_DEVKIT_PATH`` points elsewhere."""
    import os
    import sys
    from pathlib import Path

    default = Path(__file__).resolve().parents[3] / ".venv" / "nuscenes-devkit"
    extra = os.environ.get("NUSCENES_DEVKIT_PATH") or (str(default) if default.is_dir() else None)
    if extra and extra not in sys.path:
        sys.path.append(extra)
    algo = pytest.importorskip("nuscenes.eval.detection.algo")
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.common.utils import center_distance
    from nuscenes.eval.detection.data_classes import DetectionBox

    return algo, EvalBoxes, DetectionBox, center_distance


def random_scene(seed: int, num_frames: int = 40) -> list:
    """Frames of every class: ground truth, detections near most of it (noisy centre, size and heading), a few
    false positives and wrong classes, all with distinct scores."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(num_frames):
        g = rng.integers(0, 8)
        gt = np.c_[rng.uniform(0, 50, (g, 2)), rng.uniform(-1, 0, g), rng.uniform(0.5, 6, (g, 3)), rng.uniform(-3, 3, g)]
        gt_labels = rng.integers(0, 4, g)
        found = rng.random(g) < 0.8
        det = gt[found] + np.c_[rng.normal(0, 0.8, (found.sum(), 2)), np.zeros(found.sum()),
                                rng.normal(0, 0.3, (found.sum(), 3)).clip(-0.4, 0.4), rng.normal(0, 0.5, found.sum())]
        det_labels = np.where(rng.random(found.sum()) < 0.9, gt_labels[found], rng.integers(0, 4, found.sum()))
        extra = rng.integers(0, 3)
        det = np.r_[det, np.c_[rng.uniform(0, 50, (extra, 2)), np.zeros(extra), rng.uniform(0.5, 5, (extra, 3)),
                               np.zeros(extra)]]
        det_labels = np.r_[det_labels, rng.integers(0, 4, extra)]
        frames.append((det, det_labels, rng.random(len(det)), gt, gt_labels))
    return frames


def devkit_results(frames: list, class_names=CLASSES) -> dict:
    """``{(class, threshold): (ap, {error: value})}`` of the nuScenes devkit on ``frames``."""
    algo, EvalBoxes, DetectionBox, center_distance = _devkit()
    from pyquaternion import Quaternion

    names = {"Car": "car", "Truck": "truck", "Pedestrian": "pedestrian", "Cyclist": "bicycle"}

    def box(token, row, label, score=-1.0):
        return DetectionBox(sample_token=token, translation=tuple(row[:3]), size=(row[4], row[3], row[5]),
                            rotation=tuple(Quaternion(axis=[0, 0, 1], angle=row[6]).elements), velocity=(0.0, 0.0),
                            detection_name=names[class_names[label]], detection_score=float(score), attribute_name="")

    gt_boxes, pred_boxes = EvalBoxes(), EvalBoxes()
    for f, (det, det_labels, scores, gt, gt_labels) in enumerate(frames):
        gt_boxes.add_boxes(f"s{f}", [box(f"s{f}", r, l) for r, l in zip(gt, gt_labels)])
        pred_boxes.add_boxes(f"s{f}", [box(f"s{f}", r, l, s) for r, l, s in zip(det, det_labels, scores)])
    out = {}
    for name in class_names:
        for threshold in (0.5, 1.0, 2.0, 4.0):
            md = algo.accumulate(gt_boxes, pred_boxes, names[name], center_distance, threshold)
            errors = {e: algo.calc_tp(md, 0.1, e) for e in ("trans_err", "scale_err", "orient_err")}
            out[(name, threshold)] = (algo.calc_ap(md, 0.1, 0.1), errors)
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_ap_and_tp_errors_match_the_nuscenes_devkit(seed):
    frames = random_scene(seed)
    reference = devkit_results(frames)
    for (name, threshold), (ap, errors) in reference.items():
        curve = accumulate(frames, CLASSES.index(name), threshold)
        assert calc_ap(curve) == pytest.approx(ap, abs=1e-12), (name, threshold)
        for error, value in errors.items():
            assert calc_tp(curve, error) == pytest.approx(value, abs=1e-9), (name, threshold, error)
    metric = DetectionMetrics(CLASSES)
    metric.update([{"boxes": d, "labels": l, "scores": s} for d, l, s, _, _ in frames],
                  [{"boxes": g, "labels": l} for *_, g, l in frames])
    result = {k: float(v) for k, v in metric.compute().items()}
    mean_ap = np.mean([ap for ap, _ in reference.values()])
    assert result["map"] == pytest.approx(mean_ap, abs=1e-12)
    tp = {key: np.mean([reference[(n, 2.0)][1][field] for n in CLASSES])
          for key, field in (("ate", "trans_err"), ("ase", "scale_err"), ("aoe", "orient_err"))}
    assert {k: result[k] for k in tp} == pytest.approx(tp, abs=1e-9)
    assert result["nds"] == pytest.approx((5 * mean_ap + sum(max(0, 1 - v) for v in tp.values())) / 8, abs=1e-9)
