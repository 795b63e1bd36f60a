"""3D box maths in the velodyne frame: corners, points inside, scale IoU, ray intersection, matching.

A box is ``(7,)`` = centre x, y, z, length (along its heading), width, height, yaw (around z, radians, 0 =
heading along +x). Arrays of boxes are ``(N, 7)``. Everything here is numpy.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "box_corners_bev",
    "box_corners_3d",
    "points_in_boxes",
    "aligned_scale_iou",
    "yaw_difference",
    "centre_distance",
    "bev_iou",
    "ray_box_hits",
    "Match",
    "greedy_match",
]


def box_corners_bev(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4, 2)`` corners in counter-clockwise order (front-left, rear-left, rear-right, front-right)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    half_l, half_w = boxes[:, 3] / 2, boxes[:, 4] / 2
    local = np.stack([np.stack([half_l, half_w], -1), np.stack([-half_l, half_w], -1),
                      np.stack([-half_l, -half_w], -1), np.stack([half_l, -half_w], -1)], axis=1)  # (N, 4, 2)
    cos, sin = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], axis=1)  # (N, 2, 2)
    return np.einsum("nij,nkj->nki", rotation, local) + boxes[:, None, :2]


def box_corners_3d(boxes: np.ndarray) -> np.ndarray:
    """``(N, 8, 3)``: the four BEV corners at the bottom, then the same four at the top."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    bev = box_corners_bev(boxes)
    bottom = (boxes[:, 2] - boxes[:, 5] / 2)[:, None, None].repeat(4, 1)
    top = (boxes[:, 2] + boxes[:, 5] / 2)[:, None, None].repeat(4, 1)
    return np.concatenate([np.concatenate([bev, bottom], -1), np.concatenate([bev, top], -1)], axis=1)


def _to_local(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``(P, N, 3)`` coordinates of each point in each box's frame."""
    offset = points[:, None, :3] - boxes[None, :, :3]
    cos, sin = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    x = offset[..., 0] * cos + offset[..., 1] * sin
    y = -offset[..., 0] * sin + offset[..., 1] * cos
    return np.stack([x, y, offset[..., 2]], -1)


def points_in_boxes(points: np.ndarray, boxes: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """``(P, N)`` True where point p lies inside box n (grown by ``margin`` metres on every side)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, np.asarray(points).shape[-1])
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    local = np.abs(_to_local(points, boxes))
    half = boxes[None, :, 3:6] / 2 + margin
    return (local <= half).all(-1)


def aligned_scale_iou(size_a: np.ndarray, size_b: np.ndarray) -> np.ndarray:
    """``(N,)`` IoU of two boxes with the same centre and heading, sizes ``(N, 3)`` (nuScenes' scale error is
    ``1 - this``)."""
    size_a, size_b = np.asarray(size_a, dtype=np.float64), np.asarray(size_b, dtype=np.float64)
    inter = np.minimum(size_a, size_b).prod(-1)
    return inter / (size_a.prod(-1) + size_b.prod(-1) - inter)


def yaw_difference(a: np.ndarray, b: np.ndarray, period: float = 2 * np.pi) -> np.ndarray:
    """Smallest absolute angle between headings, in [0, period/2]."""
    diff = (np.asarray(a) - np.asarray(b)) % period
    return np.minimum(diff, period - diff)


def centre_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(Na, Nb)`` ground-plane distance between box centres (nuScenes matches on this, not IoU)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 7), np.asarray(b, dtype=np.float64).reshape(-1, 7)
    return np.linalg.norm(a[:, None, :2] - b[None, :, :2], axis=-1)


def ray_box_hits(origin: np.ndarray, directions: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance along each ray to each box, and the hit face's axis.

    ``origin (3,)``, ``directions (R, 3)`` unit vectors, ``boxes (N, 7)``. Returns ``t (R, N)`` (inf where the
    ray misses or the box is behind) and ``axis (R, N)`` in {0, 1, 2}: the box-frame axis of the face hit
    (0 = front/back, 1 = sides, 2 = top/bottom). Slab method in each box's frame.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    directions = np.asarray(directions, dtype=np.float64)
    if len(boxes) == 0:
        return np.full((len(directions), 0), np.inf), np.zeros((len(directions), 0), dtype=np.int64)
    cos, sin = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    offset = np.asarray(origin, dtype=np.float64)[None] - boxes[:, :3]  # (N, 3)
    origin_local = np.stack([offset[:, 0] * cos + offset[:, 1] * sin, -offset[:, 0] * sin + offset[:, 1] * cos,
                             offset[:, 2]], -1)  # (N, 3)
    dir_local = np.stack([directions[:, None, 0] * cos + directions[:, None, 1] * sin,
                          -directions[:, None, 0] * sin + directions[:, None, 1] * cos,
                          np.broadcast_to(directions[:, None, 2], (len(directions), len(boxes)))], -1)  # (R, N, 3)
    half = boxes[:, 3:6] / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / np.where(np.abs(dir_local) < 1e-12, 1e-12, dir_local)
        t1 = (-half[None] - origin_local[None]) * inverse
        t2 = (half[None] - origin_local[None]) * inverse
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    t_enter, axis = near.max(-1), near.argmax(-1)
    t_exit = far.min(-1)
    hit = (t_enter <= t_exit) & (t_enter > 1e-6)
    return np.where(hit, t_enter, np.inf), axis


class Match(NamedTuple):
    """``pairs (M, 2)`` = (detection index, ground-truth index); ``is_tp (D,)`` per detection in input order."""

    pairs: np.ndarray
    is_tp: np.ndarray


def _clip(polygon: np.ndarray, edge_start: np.ndarray, edge_end: np.ndarray) -> np.ndarray:
    """The part of ``polygon (K, 2)`` left of the directed edge (Sutherland–Hodgman, one edge)."""
    if not len(polygon):
        return polygon
    direction = edge_end - edge_start
    side = direction[0] * (polygon[:, 1] - edge_start[1]) - direction[1] * (polygon[:, 0] - edge_start[0])  # (K,)
    out = []
    for k in range(len(polygon)):
        current, following = polygon[k], polygon[(k + 1) % len(polygon)]
        s_current, s_following = side[k], side[(k + 1) % len(polygon)]
        if s_current >= 0:
            out.append(current)
        if (s_current >= 0) != (s_following >= 0):
            t = s_current / (s_current - s_following)
            out.append(current + t * (following - current))
    return np.asarray(out).reshape(-1, 2)


def _area(polygon: np.ndarray) -> float:
    if len(polygon) < 3:
        return 0.0
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def bev_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(Na, Nb)`` IoU of the rotated bird's-eye-view rectangles of two sets of boxes (KITTI's BEV overlap)."""
    corners_a, corners_b = box_corners_bev(a), box_corners_bev(b)
    area_a = np.asarray(a, dtype=np.float64).reshape(-1, 7)[:, 3:5].prod(-1)
    area_b = np.asarray(b, dtype=np.float64).reshape(-1, 7)[:, 3:5].prod(-1)
    out = np.zeros((len(corners_a), len(corners_b)))
    for i, polygon_a in enumerate(corners_a):
        for j, polygon_b in enumerate(corners_b):
            if np.linalg.norm(polygon_a.mean(0) - polygon_b.mean(0)) > (np.ptp(polygon_a, 0).max() + np.ptp(polygon_b, 0).max()):
                continue  # too far apart to overlap
            inter = polygon_a
            for k in range(4):  # counter-clockwise: the inside is left of every edge
                inter = _clip(inter, polygon_b[k], polygon_b[(k + 1) % 4])
            overlap = _area(inter)
            out[i, j] = overlap / (area_a[i] + area_b[j] - overlap)
    return out


def greedy_match(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray, threshold: float) -> Match:
    """nuScenes matching: detections in descending score order each take the nearest still-unmatched ground
    truth whose centre lies closer than ``threshold`` metres (strictly, as the devkit)."""
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 7)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 7)
    is_tp = np.zeros(len(det_boxes), dtype=bool)
    pairs = []
    if len(det_boxes) and len(gt_boxes):
        distance = centre_distance(det_boxes, gt_boxes)
        taken = np.zeros(len(gt_boxes), dtype=bool)
        for d in np.argsort(-np.asarray(det_scores), kind="stable"):
            candidates = np.where(taken, np.inf, distance[d])
            g = int(np.argmin(candidates))
            if candidates[g] < threshold:
                taken[g] = True
                is_tp[d] = True
                pairs.append((int(d), g))
    return Match(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), is_tp)
