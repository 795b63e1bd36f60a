"""KITTI object format: reading, writing, the calibration chain, whole frames and splits, on fixtures in the exact
KITTI layout.

The calibration and label below are KITTI object ``training/`` frame 000000 (a pedestrian), so projecting the
labelled 3D box must reproduce the labelled 2D box."""
from __future__ import annotations

import numpy as np
import pytest

from recipes.driving_interaction.readers import (
    KittiFormatError,
    ObjectLabel,
    frame_paths,
    list_frames,
    load_frame,
    load_split,
    split_ids,
    read_calib,
    read_image,
    read_labels,
    read_velodyne,
    rotation_y_to_velo_yaw,
    velo_yaw_to_rotation_y,
    write_calib,
    write_image,
    write_labels,
    write_velodyne,
)
from recipes.driving_interaction.boxes import box_corners_3d

KITTI_000000_CALIB = """\
P0: 7.215377000000e+02 0.000000000000e+00 6.095593000000e+02 0.000000000000e+00 0.000000000000e+00 7.215377000000e+02 1.728540000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P1: 7.215377000000e+02 0.000000000000e+00 6.095593000000e+02 -3.875744000000e+02 0.000000000000e+00 7.215377000000e+02 1.728540000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P2: 7.215377000000e+02 0.000000000000e+00 6.095593000000e+02 4.485728000000e+01 0.000000000000e+00 7.215377000000e+02 1.728540000000e+02 2.163791000000e-01 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 2.745884000000e-03
P3: 7.215377000000e+02 0.000000000000e+00 6.095593000000e+02 -3.395242000000e+02 0.000000000000e+00 7.215377000000e+02 1.728540000000e+02 2.199936000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 2.729905000000e-03
R0_rect: 9.999239000000e-01 9.837760000000e-03 -7.445048000000e-03 -9.869795000000e-03 9.999421000000e-01 -4.278459000000e-03 7.402527000000e-03 4.351614000000e-03 9.999631000000e-01
Tr_velo_to_cam: 7.533745000000e-03 -9.999714000000e-01 -6.166020000000e-04 -4.069766000000e-03 1.480249000000e-02 7.280733000000e-04 -9.998902000000e-01 -7.631618000000e-02 9.998621000000e-01 7.523790000000e-03 1.480755000000e-02 -2.717806000000e-01
Tr_imu_to_velo: 9.999976000000e-01 7.553071000000e-04 -2.035826000000e-03 -8.086759000000e-01 -7.854027000000e-04 9.998898000000e-01 -1.482298000000e-02 3.195559000000e-01 2.024406000000e-03 1.482454000000e-02 9.998881000000e-01 -7.997231000000e-01
"""
KITTI_000000_LABEL = "Pedestrian 0.00 0 -0.20 712.40 143.00 810.73 307.92 1.89 0.48 1.20 1.84 1.47 8.41 0.01\n"


@pytest.fixture
def kitti_root(tmp_path):
    root = tmp_path / "training"
    (root / "calib").mkdir(parents=True)
    (root / "label_2").mkdir()
    (root / "calib" / "000000.txt").write_text(KITTI_000000_CALIB)
    (root / "label_2" / "000000.txt").write_text(KITTI_000000_LABEL)
    points = np.array([[10.0, 1.0, -1.0, 0.5], [20.0, -3.0, 0.2, 0.1]], dtype=np.float32)
    write_velodyne(root / "velodyne" / "000000.bin", points)
    write_image(root / "image_2" / "000000.png", np.full((375, 1242, 3), 90, dtype=np.uint8))
    return root


def test_labelled_box_projects_onto_its_2d_box(kitti_root):
    calib = read_calib(kitti_root / "calib" / "000000.txt")
    (label,) = read_labels(kitti_root / "label_2" / "000000.txt")
    assert label.type == "Pedestrian" and label.dimensions == (1.89, 0.48, 1.2)
    box = label.velo_box(calib)
    pixels, depth = calib.project_velo(box_corners_3d(box[None])[0])
    assert (depth > 0).all()
    x1, y1 = pixels.min(0)
    x2, y2 = pixels.max(0)
    # KITTI's 2D box is drawn tightly around the person, the projection is of the (wider) 3D box: within 25 px,
    # while a wrong yaw convention (the 1.2 m length along depth instead of across) would be ~60 px narrower
    np.testing.assert_allclose([x1, y1, x2, y2], label.bbox, atol=25)
    assert abs((x2 - x1) - (label.bbox[2] - label.bbox[0])) < 20


def test_velodyne_and_camera_frames_round_trip(kitti_root):
    calib = read_calib(kitti_root / "calib" / "000000.txt")
    points = np.array([[5.0, 0.0, 0.0], [12.0, -2.0, 1.0], [30.0, 4.0, -1.5]])
    np.testing.assert_allclose(calib.cam_to_velo(calib.velo_to_cam(points)), points, atol=1e-9)
    cam = calib.velo_to_cam(points)
    assert (cam[:, 2] > 4).all()  # forward in velodyne is depth in the camera
    assert cam[1, 0] > cam[0, 0]  # velodyne right (-y) is camera right (+x)
    # a point straight ahead lands near the principal point
    (u, v), = calib.project_velo(np.array([[40.0, 0.0, 0.08]]))[0]
    assert abs(u - 609.6) < 20 and abs(v - 172.9) < 20
    homo = np.c_[points, np.ones(3)] @ calib.to_matrix().T
    np.testing.assert_allclose(homo[:, :2] / homo[:, 2:], calib.project_velo(points)[0], atol=1e-9)


def test_label_velo_box_round_trip_and_yaw_conventions(kitti_root):
    calib = read_calib(kitti_root / "calib" / "000000.txt")
    (label,) = read_labels(kitti_root / "label_2" / "000000.txt")
    box = label.velo_box(calib)
    assert box[2] == pytest.approx(calib.cam_to_velo(np.array([[1.84, 1.47 - 1.89 / 2, 8.41]]))[0, 2])
    assert rotation_y_to_velo_yaw(velo_yaw_to_rotation_y(0.3)) == pytest.approx(0.3)
    assert velo_yaw_to_rotation_y(0.0) == pytest.approx(-np.pi / 2)  # heading forward = rotation_y -π/2


def test_files_round_trip(kitti_root, tmp_path):
    assert list_frames(kitti_root) == ["000000"]
    paths = frame_paths(kitti_root, "000000")
    points = read_velodyne(paths["velodyne"])
    assert points.dtype == np.float32 and points.shape == (2, 4)
    assert read_image(paths["image_2"]).shape == (375, 1242, 3)
    calib = read_calib(paths["calib"])
    write_calib(tmp_path / "calib.txt", calib)
    again = read_calib(tmp_path / "calib.txt")
    np.testing.assert_allclose(again.P2, calib.P2)
    np.testing.assert_allclose(again.Tr_velo_to_cam, calib.Tr_velo_to_cam)
    labels = read_labels(paths["label_2"]) + [ObjectLabel("Car", 0.1, 1, 0.5, (1, 2, 3, 4), (1.5, 1.6, 4.0), (1, 2, 20), 0.2, 0.9)]
    write_labels(tmp_path / "label.txt", labels)
    assert read_labels(tmp_path / "label.txt") == labels


def test_malformed_files_raise_errors_naming_the_file(kitti_root, tmp_path):
    truncated = tmp_path / "000001.bin"
    truncated.write_bytes(np.zeros(10, dtype=np.float32).tobytes())  # 40 bytes: 2.5 points
    with pytest.raises(KittiFormatError, match=r"000001\.bin.*truncated"):
        read_velodyne(truncated)
    calib = tmp_path / "bad_calib.txt"
    calib.write_text("P2: 1 2 3\nR0_rect: 1 0 0 0 1 0 0 0 1\n")
    with pytest.raises(KittiFormatError, match=r"bad_calib\.txt.*P2 has 3 numbers"):
        read_calib(calib)
    calib.write_text("R0_rect: 1 0 0 0 1 0 0 0 1\n")
    with pytest.raises(KittiFormatError, match=r"missing calibration entries \['P2', 'Tr_velo_to_cam'\]"):
        read_calib(calib)
    with pytest.raises(KittiFormatError, match="no_such.bin"):
        read_velodyne(tmp_path / "no_such.bin")
    (tmp_path / "label.txt").write_text("Car 0 0\n")
    with pytest.raises(KittiFormatError, match=r"label\.txt:1: 3 fields"):
        read_labels(tmp_path / "label.txt")
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        write_velodyne(tmp_path / "x.bin", np.zeros((3, 3)))


def test_a_frame_keeps_the_known_classes_and_goes_on_without_a_sensor(kitti_root):
    paths = frame_paths(kitti_root, "000000")
    with paths["label_2"].open("a") as file:
        file.write("DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10\n")
        file.write("Van 0.00 0 1.94 0.00 181.81 176.85 259.70 1.90 1.84 4.32 -11.48 1.77 12.73 1.21\n")
    frame = load_frame("000000", paths["velodyne"], None, paths["calib"], paths["label_2"])
    assert frame.image is None and frame.points.shape == (2, 4)
    assert frame.gt_labels.tolist() == [2] and frame.gt_boxes.shape == (1, 7)  # the pedestrian; Van, DontCare dropped
    calib = read_calib(paths["calib"])
    np.testing.assert_allclose(frame.gt_boxes[0], read_labels(paths["label_2"])[0].velo_box(calib))
    unlabelled = load_frame("000000", paths["velodyne"], paths["image_2"], paths["calib"])
    assert unlabelled.gt_boxes.shape == (0, 7) and unlabelled.image.shape == (375, 1242, 3)
    with pytest.raises(KittiFormatError, match="missing.png: no such image file.*leave the path empty"):
        load_frame("000000", paths["velodyne"], kitti_root / "missing.png", paths["calib"])


def test_splits_come_from_image_sets_or_a_75_12_5_cut(kitti_root):
    for i in range(1, 8):
        write_velodyne(frame_paths(kitti_root, f"{i:06d}")["velodyne"], np.zeros((1, 4), dtype=np.float32))
    root = kitti_root.parent
    assert split_ids(root, "train") == [f"{i:06d}" for i in range(6)]
    assert split_ids(root, "val") == ["000006"] and split_ids(root, "test") == ["000007"]
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "test.txt").write_text("000000\n\n")
    assert split_ids(root, "test") == ["000000"]
    (frame,) = load_split(root, "test")
    assert frame.frame_id == "000000" and frame.gt_labels.tolist() == [2]
    (root / "ImageSets" / "train.txt").write_text("000000\n000000\n000000\n")
    assert len(load_split(root, "train", limit=2)) == 2


def test_a_blank_image_is_no_camera(kitti_root):
    """A picture whose every pixel is the same (a dead or covered camera) shows nothing: the example has no camera,
    and a scoring row with it is scored from its LiDAR with a warning saying why (without LiDAR, it is an error)."""
    from recipes.driving_interaction.data import blank_image, frame_to_example, read_scoring_row

    paths = frame_paths(kitti_root, "000000")
    frame = load_frame("000000", paths["velodyne"], paths["image_2"], paths["calib"])
    assert blank_image(frame.image)  # the fixture's picture is one grey
    example = frame_to_example(frame, (96, 320), (0.0, 48.0), (-24.0, 24.0))
    assert not example["camera_present"] and (example["image"] == 0).all() and example["lidar_present"]
    picture = frame.image.copy()
    picture[0, 0, 0] = 91
    assert not blank_image(picture)
    assert frame_to_example(frame._replace(image=picture), (96, 320), (0.0, 48.0), (-24.0, 24.0))["camera_present"]
    row = {"frame_id": "000000", "velodyne_path": str(paths["velodyne"]), "image_path": str(paths["image_2"]),
           "calib_path": str(paths["calib"])}
    scored = read_scoring_row(row)
    assert scored.error is None and scored.frame.image is None and scored.frame.points is not None
    (warning,) = scored.warnings
    assert "image_path" in warning and "every pixel of the image is 90" in warning and "scored without this sensor" in warning
    failed = read_scoring_row({**row, "velodyne_path": None})
    assert failed.frame is None and "every pixel of the image is 90" in failed.error
