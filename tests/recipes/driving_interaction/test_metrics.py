"""nuScenes-style AP, TP errors and the NDS-like score on hand-made frames."""
from __future__ import annotations

import numpy as np
import pytest

from recipes.driving_interaction.metrics import DetectionEvaluator, FrameResult, average_precision, nds_like


def boxes(*rows):
    return np.array([[x, y, 0, 4, 2, 1.5, yaw] for x, y, yaw in rows], dtype=float).reshape(-1, 7)


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
    gt = boxes((10, 0, 0.1), (20, 3, 1.0))
    evaluator = DetectionEvaluator(["Car", "Truck"])
    evaluator.add(FrameResult(gt.copy(), np.array([0, 1]), np.array([0.9, 0.8]), gt, np.array([0, 1])))
    metrics = evaluator.compute()
    assert metrics["map"] == pytest.approx(1.0)
    assert metrics["ate"] == pytest.approx(0.0) and metrics["ase"] == pytest.approx(0.0) and metrics["aoe"] == pytest.approx(0.0)
    assert metrics["nds"] == pytest.approx(1.0)


def test_offsets_thresholds_and_errors():
    gt = boxes((10, 0, 0.0))
    det = boxes((11.5, 0, 0.5))  # 1.5 m off: a match at 2 and 4 m, not at 0.5 and 1 m
    evaluator = DetectionEvaluator(["Car"])
    evaluator.add(FrameResult(det, np.array([0]), np.array([0.7]), gt, np.array([0])))
    metrics = evaluator.compute()
    assert metrics["ap_car"] == pytest.approx(0.5)
    assert metrics["ate"] == pytest.approx(1.5) and metrics["aoe"] == pytest.approx(0.5)
    assert metrics["nds"] == pytest.approx(nds_like(0.5, 1.5, 0.0, 0.5))
    assert nds_like(0.5, 1.5, 0.0, 0.5) == pytest.approx(0.25 + 0.5 * (0 + 1 + 0.5) / 3)


def test_wrong_class_is_a_miss_and_classes_without_objects_are_skipped():
    gt = boxes((10, 0, 0.0))
    evaluator = DetectionEvaluator(["Car", "Truck", "Pedestrian"])
    evaluator.add(FrameResult(gt.copy(), np.array([1]), np.array([0.9]), gt, np.array([0])))
    metrics = evaluator.compute()
    assert metrics["ap_car"] == 0.0 and "ap_truck" not in metrics and "ap_pedestrian" not in metrics
    assert metrics["map"] == 0.0 and metrics["ate"] == 1.0  # no true positive: worst errors
