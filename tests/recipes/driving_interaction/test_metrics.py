"""nuScenes-style AP, TP errors and the NDS-like score on hand-made frames, and the metric's state across processes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.utilities import dim_zero_cat

from recipes.driving_interaction.config import CLASSES
from recipes.driving_interaction.metrics import DetectionMetrics, average_precision, nds_like


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


def test_average_precision_hand_made():
    assert average_precision(np.array([True]), np.array([0.9]), 1) == pytest.approx(1.0)
    # half the objects found with perfect precision: recall levels 0.11..0.50 of the 90 above 0.1
    assert average_precision(np.array([True]), np.array([0.9]), 2) == pytest.approx(40 / 90)
    # a false positive ranked first: precision 0.5 at full recall
    assert average_precision(np.array([False, True]), np.array([0.9, 0.8]), 1) == pytest.approx((0.5 - 0.1) / 0.9)
    # ranked after the true positive it costs nothing
    assert average_precision(np.array([True, False]), np.array([0.9, 0.8]), 1) == pytest.approx(1.0)
    assert average_precision(np.zeros(0, bool), np.zeros(0), 3) == 0.0
    assert np.isnan(average_precision(np.zeros(0, bool), np.zeros(0), 0))


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
    assert metrics["nds"] == pytest.approx(nds_like(0.5, 1.5, 0.0, 0.5))
    assert nds_like(0.5, 1.5, 0.0, 0.5) == pytest.approx(0.25 + 0.5 * (0 + 1 + 0.5) / 3)


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
    # box x 10 ranks before x 30: the hit first, precision 1 up to recall 0.5, then 0.5 at recall 1
    assert first["ap_car"] == pytest.approx(average_precision(np.array([True, False]), np.array([0.5, 0.5]), 2))


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
                                                                  "nds": 0.0}
    assert metric.compute()["map"].dtype == torch.float64
