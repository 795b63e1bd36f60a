"""Letterboxing: a camera image of any size fitted into the detector's input without distorting it.

The image is scaled by one factor so that it fits the model's ``(H, W)`` and centred on a black canvas; the same
map moves the calibration (``P2``-based velodyne → pixel matrix), so the detector's geometry stays exact, and its
inverse takes pixel coordinates in the model's input back to the original image (:meth:`Letterbox.to_original`).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["ASPECT_TOLERANCE", "Letterbox"]

#: aspect ratios closer than this (relative) are resized to fill the input (KITTI's 1242×375 into 320×96: 0.6 %)
ASPECT_TOLERANCE = 0.02


class Letterbox(NamedTuple):
    """Original pixel ``(u, v)`` → model pixel ``(scale_x · u + pad_x, scale_y · v + pad_y)``.

    ``scale_x`` and ``scale_y`` differ only by the rounding of the resized image to whole pixels."""

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    resized: tuple[int, int]  # (h, w) of the scaled image inside the canvas
    target: tuple[int, int]  # (H, W) of the canvas, the model's input

    @classmethod
    def fit(cls, image_size: tuple[int, int], target: tuple[int, int]) -> "Letterbox":
        """The letterbox of an ``image_size (h, w)`` image in a ``target (H, W)`` canvas."""
        (height, width), (H, W) = image_size, target
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive; got {height}×{width}")
        if abs((width / height) / (W / H) - 1) < ASPECT_TOLERANCE:  # a border of a pixel or two is not worth it
            return cls(W / width, H / height, 0, 0, (H, W), (H, W))
        scale = min(W / width, H / height)
        new_w, new_h = min(W, max(1, round(width * scale))), min(H, max(1, round(height * scale)))
        return cls(new_w / width, new_h / height, (W - new_w) // 2, (H - new_h) // 2, (new_h, new_w), (H, W))

    @property
    def is_identity_aspect(self) -> bool:
        """True when the image filled the canvas (a plain resize, no border)."""
        return self.resized == self.target

    @property
    def matrix(self) -> np.ndarray:
        """``(3, 3)`` homogeneous pixel map original → model (left-multiply a ``(3, 4)`` projection)."""
        return np.array([[self.scale_x, 0.0, self.pad_x], [0.0, self.scale_y, self.pad_y], [0.0, 0.0, 1.0]])

    def to_model(self, uv: np.ndarray) -> np.ndarray:
        """``(..., 2)`` original pixel coordinates → model input coordinates."""
        uv = np.asarray(uv, dtype=np.float64)
        return uv * [self.scale_x, self.scale_y] + [self.pad_x, self.pad_y]

    def to_original(self, uv: np.ndarray) -> np.ndarray:
        """``(..., 2)`` model input coordinates → original pixel coordinates (inverse of :meth:`to_model`)."""
        uv = np.asarray(uv, dtype=np.float64)
        return (uv - [self.pad_x, self.pad_y]) / [self.scale_x, self.scale_y]

    def apply(self, image: np.ndarray) -> np.ndarray:
        """``(h, w, 3)`` uint8 image → ``(H, W, 3)`` uint8: bilinear resize into the centre of a black canvas."""
        H, W = self.target
        new_h, new_w = self.resized
        picture = np.asarray(image)
        if picture.shape[:2] != (new_h, new_w):
            from PIL import Image

            picture = np.array(Image.fromarray(picture).resize((new_w, new_h), Image.BILINEAR))
        if (new_h, new_w) == (H, W):
            return np.array(picture)  # a writable copy
        canvas = np.zeros((H, W, 3), dtype=np.uint8)
        canvas[self.pad_y : self.pad_y + new_h, self.pad_x : self.pad_x + new_w] = picture
        return canvas
