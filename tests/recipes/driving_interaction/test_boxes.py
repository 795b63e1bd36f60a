"""Box maths against hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest

from recipes.driving_interaction.boxes import (
    aligned_scale_iou,
    box_corners_bev,
    centre_distance,
    greedy_match,
    points_in_boxes,
    ray_box_hits,
    yaw_difference,
)


def box(x=0.0, y=0.0, z=0.0, l=1.0, w=1.0, h=1.0, yaw=0.0):
    return np.array([x, y, z, l, w, h, yaw])


def test_corners_follow_the_heading():
    corners = box_corners_bev(box(l=4, w=2, yaw=np.pi / 2)[None])[0]
    np.testing.assert_allclose(corners[0], [-1, 2], atol=1e-12)  # front-left of a box heading +y
    np.testing.assert_allclose(np.abs(corners).max(0), [1, 2], atol=1e-12)


def test_scale_iou_yaw_difference_and_centre_distance():
    assert aligned_scale_iou(np.array([[2, 1, 1]]), np.array([[1, 1, 1]]))[0] == pytest.approx(0.5)
    assert yaw_difference(np.pi - 0.1, -np.pi + 0.1) == pytest.approx(0.2)
    assert centre_distance(box(x=3, y=4, z=9), box())[0, 0] == pytest.approx(5.0)  # height is ignored


def test_points_in_rotated_boxes():
    b = box(x=10, l=4, w=2, yaw=np.pi / 2)  # 4 m along y, 2 m along x
    points = np.array([[10, 1.9, 0], [10, 2.1, 0], [10.9, 0, 0], [11.1, 0, 0], [10, 0, 0.6]])
    np.testing.assert_array_equal(points_in_boxes(points, b[None])[:, 0], [True, False, True, False, False])
    assert points_in_boxes(points[[4]], b[None], margin=0.2)[0, 0]


def test_ray_box_hits_distance_and_face():
    boxes = np.stack([box(x=10, l=2), box(x=5, y=5), box(x=-10)])
    directions = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, -1.0]])
    t, axis = ray_box_hits(np.zeros(3), directions, boxes)
    assert t[0, 0] == pytest.approx(9.0) and axis[0, 0] == 0  # the front face of the box ahead
    assert np.isinf(t[0, 1]) and np.isinf(t[0, 2])  # beside and behind
    assert np.isinf(t[1]).all() and np.isinf(t[2]).all()
    t, _ = ray_box_hits(np.array([0, 0, 5.0]), np.array([[0, 0, -1.0]]), box()[None])
    assert t[0, 0] == pytest.approx(4.5)


def test_greedy_match_by_score_then_distance():
    gt = np.stack([box(x=0), box(x=10)])
    det = np.stack([box(x=0.4), box(x=0.2), box(x=12.5)])
    match = greedy_match(det, np.array([0.9, 0.5, 0.8]), gt, threshold=1.0)
    # the higher-scoring 0.4 m detection takes the first object, the closer 0.2 m one is a duplicate
    np.testing.assert_array_equal(match.is_tp, [True, False, False])
    np.testing.assert_array_equal(match.pairs, [[0, 0]])
    assert greedy_match(det, np.array([0.9, 0.5, 0.8]), gt, threshold=4.0).is_tp.tolist() == [True, False, True]
    assert greedy_match(np.zeros((0, 7)), np.zeros(0), gt, 1.0).pairs.shape == (0, 2)
