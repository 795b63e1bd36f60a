"""Letterboxing: no distortion, the calibration moved with the image, boxes mapped back to the original exactly."""
from __future__ import annotations

import numpy as np
import pytest

from recipes.driving_interaction.boxes import box_corners_3d
from recipes.driving_interaction.data import frame_to_example
from recipes.driving_interaction.letterbox import Letterbox
from recipes.driving_interaction.readers import CalibrationMismatchError, Frame, check_image_fits_calibration
from recipes.driving_interaction.scenes import SceneConfig, default_calibration


@pytest.mark.parametrize(("image", "target", "resized", "pad"), [
    ((960, 540), (96, 320), (96, 54), (133, 0)),  # portrait phone photo: a column in the middle
    ((375, 1242), (96, 320), (96, 320), (0, 0)),  # KITTI: 0.6 % off the model's aspect, plain resize
    ((96, 640), (96, 320), (48, 320), (0, 24)),  # twice as wide: a band
    ((96, 320), (96, 320), (96, 320), (0, 0)),
])
def test_fit_keeps_the_aspect_ratio(image, target, resized, pad):
    box = Letterbox.fit(image, target)
    assert box.resized == resized and (box.pad_x, box.pad_y) == pad
    assert box.scale_x == pytest.approx(box.scale_y, rel=0.03)  # one scale, up to whole-pixel rounding
    assert box.apply(np.full((*image, 3), 200, np.uint8)).shape == (*target, 3)


def test_apply_pads_with_black_and_keeps_the_picture_in_the_middle():
    box = Letterbox.fit((100, 50), (96, 320))
    out = box.apply(np.full((100, 50, 3), 255, np.uint8))
    assert (out[:, : box.pad_x] == 0).all() and (out[:, box.pad_x + box.resized[1]:] == 0).all()
    assert (out[:, box.pad_x : box.pad_x + box.resized[1]] == 255).all()


def test_boxes_projected_in_the_letterbox_map_back_onto_the_original_image():
    """A 3D box projected with the letterboxed calibration into the model's input, mapped back, lands exactly where
    the original calibration puts it in the original image (the round trip of ``frame_to_example``)."""
    config = SceneConfig(image_height=300, image_width=400)  # 4:3, letterboxed into 96×320
    calib = default_calibration(config)
    frame = Frame("f", None, np.zeros((300, 400, 3), np.uint8), calib, np.zeros((0, 7)), np.zeros(0, np.int64))
    example = frame_to_example(frame, (96, 320), (0.0, 48.0), (-24.0, 24.0))
    box = Letterbox.fit((300, 400), (96, 320))
    corners = box_corners_3d(np.array([[15.0, 2.0, -0.9, 4.2, 1.8, 1.5, 0.4], [30.0, -5.0, -0.8, 0.7, 0.6, 1.7, 2.0]]))
    homo = np.concatenate([corners.reshape(-1, 3), np.ones((16, 1))], 1)
    in_model = homo @ example["projection"].double().numpy().T
    in_model = in_model[:, :2] / in_model[:, 2:]
    original, depth = calib.project_velo(corners.reshape(-1, 3))
    assert (depth > 0).all()
    np.testing.assert_allclose(box.to_original(in_model), original, atol=1e-3)  # float32 projection
    np.testing.assert_allclose(box.to_model(box.to_original(in_model)), in_model, atol=1e-9)
    # the 2D box of each object (min/max of its corners) round-trips too, and stays inside the picture's band
    boxes_model = np.stack([in_model.reshape(2, 8, 2).min(1), in_model.reshape(2, 8, 2).max(1)], 1)
    np.testing.assert_allclose(box.to_original(boxes_model), np.stack([original.reshape(2, 8, 2).min(1),
                                                                       original.reshape(2, 8, 2).max(1)], 1), atol=1e-3)
    assert (boxes_model[..., 0] >= box.pad_x - 1).all() and (boxes_model[..., 0] <= box.pad_x + box.resized[1] + 1).all()


def test_the_image_is_letterboxed_not_squashed_in_the_example():
    picture = np.zeros((300, 400, 3), np.uint8)
    picture[:, 190:210] = 255  # a vertical stripe in the middle, 5 % of the width
    calib = default_calibration(SceneConfig(image_height=300, image_width=400))
    frame = Frame("f", None, picture, calib, np.zeros((0, 7)), np.zeros(0, np.int64))
    image = frame_to_example(frame, (96, 320), (0.0, 48.0), (-24.0, 24.0))["image"].numpy()
    columns = np.nonzero(image[0].mean(0) > 0.5)[0]
    assert 155 <= columns.min() and columns.max() <= 165  # 128 wide picture in the middle: the stripe is ~6 px
    assert (image[:, :, :90] == 0).all() and (image[:, :, 230:] == 0).all()  # the borders are black


def test_a_calibration_of_another_image_size_is_a_clear_error():
    calib = default_calibration(SceneConfig(image_height=96, image_width=320))
    check_image_fits_calibration(calib, (96, 320), "img.png", "calib.txt")
    with pytest.raises(CalibrationMismatchError, match=r"img\.png: the image is 3024×4032 pixels but the calibration "
                                                       r"calib\.txt has its principal point at \(160, 29\)"):
        check_image_fits_calibration(calib, (4032, 3024), "img.png", "calib.txt")
    with pytest.raises(CalibrationMismatchError, match="do not crop, rotate or resize"):
        check_image_fits_calibration(calib, (192, 640), "img.png", "calib.txt")
