"""The scene generator: determinism, labels that match the geometry, faults, and KITTI files read back."""
from __future__ import annotations

import numpy as np
import pytest

from recipes.driving_interaction.boxes import points_in_boxes
from recipes.driving_interaction.config import CLASSES
from recipes.driving_interaction.readers import frame_paths, list_frames, load_frame, read_labels
from recipes.driving_interaction.scenes import (
    CLUTTER,
    SceneConfig,
    apply_fault,
    beam_index,
    generate_dataset,
    render_frame,
)

SMALL = SceneConfig(num_beams=16, azimuth_step_deg=0.8, image_height=48, image_width=160)


def test_same_seed_same_frame_other_seed_other_frame():
    a, b, c = render_frame(3, 7, SMALL), render_frame(3, 7, SMALL), render_frame(4, 7, SMALL)
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.image, b.image)
    assert [l.to_line() for l in a.labels] == [l.to_line() for l in b.labels]
    assert a.points.shape != c.points.shape or not np.array_equal(a.points, c.points)


def test_labels_match_scene_boxes_and_hold_their_points():
    frame = render_frame(0, 1, SMALL)
    assert frame.labels and all(l.type in CLASSES for l in frame.labels)
    assert CLUTTER in frame.scene.kinds  # present in the scene, never labelled
    scene_boxes = frame.scene.boxes[[k != CLUTTER for k in frame.scene.kinds]]
    for label in frame.labels:
        box = label.velo_box(frame.calib)
        nearest = scene_boxes[np.argmin(np.linalg.norm(scene_boxes[:, :3] - box[:3], axis=1))]
        np.testing.assert_allclose(box[:6], nearest[:6], atol=0.02)  # label files keep 2 decimals
    # every LiDAR return on an object lies inside that object's box; the rest are on the road plane
    inside = points_in_boxes(frame.points[:, :3], frame.scene.boxes, margin=0.15).any(1)
    assert inside.sum() > 20
    assert np.abs(frame.points[~inside, 2] + 1.73).max() < 0.2
    # projected points of a visible object fall inside its labelled 2D box
    for label in frame.labels:
        if label.occluded == 0 and label.truncated == 0:
            box = label.velo_box(frame.calib)
            hits = frame.points[points_in_boxes(frame.points[:, :3], box[None], margin=-0.05)[:, 0]]
            if len(hits):
                uv, _ = frame.calib.project_velo(hits[:, :3])
                x1, y1, x2, y2 = label.bbox
                assert ((uv[:, 0] >= x1 - 1) & (uv[:, 0] <= x2 + 1) & (uv[:, 1] >= y1 - 1) & (uv[:, 1] <= y2 + 1)).all()


def test_faults():
    frame = render_frame(0, 2, SMALL)
    points, image = apply_fault(frame.points, frame.image, "camera_blackout", config=SMALL)
    assert image.max() == 0 and points is frame.points
    _, night = apply_fault(frame.points, frame.image, "night", config=SMALL)
    assert night.mean() < 0.25 * frame.image.mean()
    lost, _ = apply_fault(frame.points, frame.image, "lidar_beam_loss", config=SMALL)
    assert len(np.unique(beam_index(lost, SMALL))) <= SMALL.num_beams // 2
    assert 0.2 * len(frame.points) < len(lost) < 0.8 * len(frame.points)
    assert apply_fault(frame.points, frame.image, "lidar_failure")[0] is None
    assert apply_fault(frame.points, frame.image, "camera_failure")[1] is None
    rain_points, rain_image = apply_fault(frame.points, frame.image, "rain", config=SMALL)
    assert not np.array_equal(rain_image, frame.image) and len(rain_points) != len(frame.points)
    with pytest.raises(ValueError, match="unknown fault 'fog'"):
        apply_fault(frame.points, frame.image, "fog")


def test_generated_folder_reads_back_as_kitti(tmp_path, capsys):
    generate_dataset(tmp_path, num_frames=4, seed=1, config=SMALL, splits=(0.5, 0.25))
    root = tmp_path / "training"
    assert list_frames(root) == ["000000", "000001", "000002", "000003"]
    assert (tmp_path / "ImageSets" / "train.txt").read_text().split() == ["000000", "000001"]
    assert (tmp_path / "ImageSets" / "test.txt").read_text().split() == ["000003"]
    assert "4/4 frames" in capsys.readouterr().out
    paths = frame_paths(root, "000002")
    frame = load_frame("000002", paths["velodyne"], paths["image_2"], paths["calib"], paths["label_2"])
    expected = render_frame(1, 2, SMALL)
    np.testing.assert_array_equal(frame.points, expected.points)
    np.testing.assert_array_equal(frame.image, expected.image)
    assert len(frame.gt_labels) == len(read_labels(paths["label_2"])) == len(expected.labels)


def test_config_checks():
    with pytest.raises(ValueError, match="num_beams"):
        SceneConfig(num_beams=1)
    with pytest.raises(ValueError, match="dropout"):
        SceneConfig(dropout=1.5)
