"""The KITTI object format, read and written for real: ``velodyne/*.bin``, ``image_2/*.png``, ``calib/*.txt``,
``label_2/*.txt``, whole frames (:func:`load_frame`) and a folder's splits (:func:`load_split`).

Frames (KITTI's own conventions):

* velodyne (LiDAR): x forward, y left, z up, metres; a ``.bin`` is float32 ``(N, 4)`` = x, y, z, reflectance.
* camera (rectified camera 0 frame): x right, y down, z forward. ``Tr_velo_to_cam`` (3×4) maps velodyne to
  camera 0, ``R0_rect`` (3×3) rectifies, ``P2`` (3×4) projects rectified coordinates into the left colour image.
* a label line: ``type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y [score]`` where
  ``(x, y, z)`` is the bottom centre of the box in rectified camera coordinates and ``rotation_y`` the yaw
  around the camera's y axis.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from recipes.driving_interaction.config import CLASSES

__all__ = [
    "KittiFormatError",
    "CalibrationMismatchError",
    "Frame",
    "load_frame",
    "with_labels",
    "split_ids",
    "load_split",
    "Calibration",
    "ObjectLabel",
    "read_velodyne",
    "write_velodyne",
    "read_calib",
    "check_calibration",
    "check_image_fits_calibration",
    "write_calib",
    "read_labels",
    "write_labels",
    "read_image",
    "write_image",
    "frame_paths",
    "list_frames",
    "velo_yaw_to_rotation_y",
    "rotation_y_to_velo_yaw",
]

SUBFOLDERS = {"velodyne": ".bin", "image_2": ".png", "calib": ".txt", "label_2": ".txt"}
#: a KITTI scan is ~2 MB and a calibration or label file a few kB: anything far larger is not one
MAX_VELODYNE_BYTES = 64 * 2**20
MAX_TEXT_BYTES = 2**20
MAX_IMAGE_BYTES = 64 * 2**20
#: no focal length (pixels), rotation entry or translation (metres) of a real calibration comes near this
MAX_CALIBRATION_VALUE = 1e6
#: the camera image formats read (Pillow format names)
IMAGE_FORMATS = ("PNG", "JPEG")


class KittiFormatError(ValueError):
    """A KITTI file that cannot be read; the message names the file and how to fix it."""


class CalibrationMismatchError(KittiFormatError):
    """An image and a calibration that cannot belong together (:func:`check_image_fits_calibration`)."""


@dataclass(frozen=True)
class Calibration:
    """``P2 (3, 4)``, ``R0_rect (3, 3)``, ``Tr_velo_to_cam (3, 4)`` of one frame."""

    P2: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray

    @property
    def velo_to_rect(self) -> np.ndarray:
        """``(4, 4)`` homogeneous map from velodyne to rectified camera coordinates."""
        out = np.eye(4)
        out[:3, :] = self.R0_rect @ self.Tr_velo_to_cam
        return out

    def velo_to_cam(self, points: np.ndarray) -> np.ndarray:
        """``(N, 3)`` velodyne points → ``(N, 3)`` rectified camera points."""
        homo = np.concatenate([points[:, :3], np.ones((len(points), 1))], axis=1)
        return (homo @ self.velo_to_rect.T)[:, :3]

    def cam_to_velo(self, points: np.ndarray) -> np.ndarray:
        """``(N, 3)`` rectified camera points → ``(N, 3)`` velodyne points."""
        homo = np.concatenate([points[:, :3], np.ones((len(points), 1))], axis=1)
        return (homo @ np.linalg.inv(self.velo_to_rect).T)[:, :3]

    def project_velo(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image pixel coordinates ``(N, 2)`` (u right, v down) and camera depth ``(N,)`` of velodyne points.
        Points behind the camera get depth <= 0; their pixel coordinates are meaningless."""
        cam = self.velo_to_cam(points)
        homo = np.concatenate([cam, np.ones((len(cam), 1))], axis=1) @ self.P2.T  # (N, 3)
        depth = homo[:, 2]
        safe = np.where(np.abs(depth) < 1e-6, 1e-6, depth)
        return homo[:, :2] / safe[:, None], depth

    def to_matrix(self) -> np.ndarray:
        """The velodyne → pixel matrix ``P2 · R0 · Tr`` as ``(3, 4)``, for projecting in torch."""
        return self.P2 @ self.velo_to_rect


@dataclass(frozen=True)
class ObjectLabel:
    """One line of a ``label_2`` file (KITTI conventions, see the module docstring)."""

    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: tuple[float, float, float, float]
    dimensions: tuple[float, float, float]  # h, w, l
    location: tuple[float, float, float]  # bottom centre, rectified camera frame
    rotation_y: float
    score: float | None = None

    def to_line(self) -> str:
        values = [self.type, f"{self.truncated:.2f}", str(int(self.occluded)), f"{self.alpha:.2f}",
                  *(f"{v:.2f}" for v in self.bbox), *(f"{v:.2f}" for v in self.dimensions),
                  *(f"{v:.2f}" for v in self.location), f"{self.rotation_y:.2f}"]
        if self.score is not None:
            values.append(f"{self.score:.4f}")
        return " ".join(values)

    def velo_box(self, calib: Calibration) -> np.ndarray:
        """``(7,)`` box in velodyne coordinates: centre x, y, z, length, width, height, yaw (around z)."""
        h, w, l = self.dimensions
        bottom = np.asarray(self.location, dtype=np.float64)
        centre_cam = bottom - np.array([0.0, h / 2.0, 0.0])  # camera y points down
        centre = calib.cam_to_velo(centre_cam[None])[0]
        return np.array([*centre, l, w, h, rotation_y_to_velo_yaw(self.rotation_y)])


def velo_yaw_to_rotation_y(yaw: np.ndarray | float) -> np.ndarray | float:
    """Yaw around the velodyne z axis → KITTI ``rotation_y`` (around camera y), wrapped to [-π, π)."""
    return _wrap(-np.asarray(yaw) - np.pi / 2)


def rotation_y_to_velo_yaw(rotation_y: np.ndarray | float) -> np.ndarray | float:
    return _wrap(-np.asarray(rotation_y) - np.pi / 2)


def _wrap(angle):
    out = (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi
    return float(out) if out.ndim == 0 else out


# --- velodyne -----------------------------------------------------------------------------------------------


def _check_size(path: Path, limit: int, what: str) -> None:
    """Refuse a file larger than ``limit`` bytes before reading it (a wrong path or a hostile input, not a frame)."""
    try:
        size = path.stat().st_size
    except OSError as error:
        raise KittiFormatError(f"{path}: cannot read the {what} file ({error.strerror or 'unreadable'}); check the "
                               "path") from None
    if size > limit:
        raise KittiFormatError(f"{path}: {size / 2**20:.0f} MiB is too large for a {what} file (at most "
                               f"{limit / 2**20:.0f} MiB); check that the column names the right file")


def read_velodyne(path: str | Path) -> np.ndarray:
    """``(N, 4)`` float32 points of a KITTI ``.bin`` file (at most :data:`MAX_VELODYNE_BYTES`)."""
    path = Path(path)
    _check_size(path, MAX_VELODYNE_BYTES, "velodyne")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise KittiFormatError(f"{path}: cannot read the velodyne file ({error.strerror or 'unreadable'}); check the "
                               "path") from None
    if len(raw) % 16:
        raise KittiFormatError(
            f"{path}: {len(raw)} bytes is not a whole number of points (16 bytes = 4 float32 x, y, z, reflectance "
            "each); the file is truncated or not a KITTI velodyne scan — copy it again or drop the frame"
        )
    points = np.frombuffer(raw, dtype="<f4").reshape(-1, 4).astype(np.float32)
    if not np.isfinite(points).all():
        raise KittiFormatError(f"{path}: holds NaN or infinite coordinates; the scan is corrupt — regenerate or drop it")
    return points


def write_velodyne(path: str | Path, points: np.ndarray) -> None:
    points = np.ascontiguousarray(points, dtype="<f4")
    if points.ndim != 2 or points.shape[1] != 4:
        raise ValueError(f"velodyne points must be (N, 4) x, y, z, reflectance; got {points.shape}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(points.tobytes())


# --- calibration --------------------------------------------------------------------------------------------

_CALIB_SHAPES = {"P2": (3, 4), "R0_rect": (3, 3), "Tr_velo_to_cam": (3, 4)}


def read_calib(path: str | Path) -> Calibration:
    """The ``P2``, ``R0_rect`` and ``Tr_velo_to_cam`` entries of a KITTI calibration file (others ignored), checked
    by :func:`check_calibration`. Errors name the file and the entry, never the file's content."""
    path = Path(path)
    _check_size(path, MAX_TEXT_BYTES, "calibration")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "not UTF-8 text"
        raise KittiFormatError(f"{path}: cannot read the calibration file ({reason}); check the path") from None
    found: dict[str, np.ndarray] = {}
    for line in text.splitlines():
        key, sep, values = line.partition(":")
        key = key.strip()
        if not sep or key not in _CALIB_SHAPES:
            continue
        try:
            numbers = np.array([float(v) for v in values.split()], dtype=np.float64)
        except ValueError:
            raise KittiFormatError(f"{path}: entry {key} holds a value that is not a number; write it as "
                                   f"'{key}: ' followed by plain decimal numbers") from None
        shape = _CALIB_SHAPES[key]
        if numbers.size != shape[0] * shape[1]:
            raise KittiFormatError(
                f"{path}: entry {key} has {numbers.size} numbers, expected {shape[0] * shape[1]} ({shape[0]}×{shape[1]}, "
                "row-major); fix the line or copy the calibration file again"
            )
        found[key] = numbers.reshape(shape)
    missing = [k for k in _CALIB_SHAPES if k not in found]
    if missing:
        raise KittiFormatError(
            f"{path}: missing calibration entries {missing}; a KITTI object calib file needs lines "
            "'P2: 12 numbers', 'R0_rect: 9 numbers' and 'Tr_velo_to_cam: 12 numbers'"
        )
    calibration = Calibration(found["P2"], found["R0_rect"], found["Tr_velo_to_cam"])
    check_calibration(calibration, str(path))
    return calibration


def check_calibration(calib: Calibration, source: str) -> None:
    """Raise :class:`KittiFormatError` (naming ``source``) unless every entry is finite, ``R0_rect · Tr_velo_to_cam``
    is an invertible rigid-looking map and ``P2`` a pinhole projection with a positive focal length: the detector
    inverts both (camera rays onto the BEV grid), so a zero or singular calibration cannot give a meaningful score."""
    for key in _CALIB_SHAPES:
        if not np.isfinite(getattr(calib, key)).all():
            raise KittiFormatError(f"{source}: entry {key} holds NaN or infinite numbers; use the frame's real "
                                   "calibration file")
        if np.abs(getattr(calib, key)).max() > MAX_CALIBRATION_VALUE:
            raise KittiFormatError(f"{source}: entry {key} holds implausibly large numbers (above "
                                   f"{MAX_CALIBRATION_VALUE:.0e}; pixels and metres are far smaller); use the frame's "
                                   "real calibration file")
    rotation = calib.velo_to_rect[:3, :3]
    if abs(np.linalg.det(rotation)) < 1e-6 or np.linalg.cond(rotation) > 1e6:
        raise KittiFormatError(f"{source}: R0_rect · Tr_velo_to_cam is singular (all zeros or degenerate), so LiDAR "
                               "points cannot be placed in the camera; use the frame's real calibration file")
    intrinsics = calib.P2[:, :3]
    if abs(np.linalg.det(intrinsics)) < 1e-9 or np.linalg.cond(intrinsics) > 1e9 or calib.P2[0, 0] <= 0 \
            or calib.P2[1, 1] <= 0:
        raise KittiFormatError(f"{source}: P2 is not a pinhole projection (its left 3×3 block is singular or has a "
                               "focal length <= 0); use the frame's real calibration file")


def check_image_fits_calibration(calib: Calibration, image_size: tuple[int, int], image_source: str,
                                 calib_source: str) -> None:
    """Raise :class:`KittiFormatError` when ``P2``'s principal point cannot belong to an image of ``image_size``
    ``(H, W)``: a real camera's principal point lies near the middle of the width and well inside the height, so a
    calibration of another camera, or an image that was cropped, rotated or resized, is caught before it is scored
    with boxes in the wrong place."""
    height, width = image_size
    cx, cy = calib.P2[0, 2] / calib.P2[2, 2], calib.P2[1, 2] / calib.P2[2, 2]
    if not (0.3 * width <= cx <= 0.7 * width and 0.1 * height <= cy <= 0.9 * height):
        raise CalibrationMismatchError(
            f"{image_source}: the image is {width}×{height} pixels but the calibration {calib_source} has its principal "
            f"point at ({cx:.0f}, {cy:.0f}), which belongs to an image of another size; use the calibration of this "
            "camera at this resolution (do not crop, rotate or resize the image)"
        )


def write_calib(path: str | Path, calib: Calibration) -> None:
    """A full KITTI object calibration file (P0..P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo)."""
    def row(name: str, matrix: np.ndarray) -> str:
        return f"{name}: " + " ".join(f"{v:.12e}" for v in np.asarray(matrix).reshape(-1))

    lines = [row(f"P{i}", calib.P2) for i in range(4)]
    lines[2] = row("P2", calib.P2)
    lines += [row("R0_rect", calib.R0_rect), row("Tr_velo_to_cam", calib.Tr_velo_to_cam),
              row("Tr_imu_to_velo", np.eye(4)[:3])]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines) + "\n")


# --- labels -------------------------------------------------------------------------------------------------


def read_labels(path: str | Path) -> list[ObjectLabel]:
    path = Path(path)
    _check_size(path, MAX_TEXT_BYTES, "label")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "not UTF-8 text"
        raise KittiFormatError(f"{path}: cannot read the label file ({reason}); check the path") from None
    labels = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (15, 16):
            raise KittiFormatError(f"{path}:{number}: {len(fields)} fields; a KITTI label line has 15 (16 with a score)")
        try:
            v = [float(x) for x in fields[1:]]
        except ValueError:
            raise KittiFormatError(f"{path}:{number}: a field after the type is not a number") from None
        labels.append(ObjectLabel(fields[0], v[0], int(v[1]), v[2], tuple(v[3:7]), tuple(v[7:10]), tuple(v[10:13]), v[13],
                                  v[14] if len(v) == 15 else None))
    return labels


def write_labels(path: str | Path, labels: list[ObjectLabel]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(label.to_line() + "\n" for label in labels))


# --- images -------------------------------------------------------------------------------------------------


def read_image(path: str | Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of a PNG or JPEG file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    _check_size(path, MAX_IMAGE_BYTES, "image")
    try:
        with warnings.catch_warnings():
            # above Pillow's pixel limit it only warns and decodes anyway (up to twice the limit): refuse it too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as image:
                return np.asarray(image.convert("RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise KittiFormatError(f"{path}: the image has more pixels than Pillow's safety limit (a decompression bomb or "
                               "a huge photo); resize it below 80 megapixels") from None
    except UnidentifiedImageError:
        raise KittiFormatError(f"{path}: not a PNG or JPEG image; export it again as PNG or JPEG") from None
    except (OSError, ValueError, SyntaxError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "truncated or corrupt"
        raise KittiFormatError(f"{path}: not a readable image ({reason}); export it again as PNG or JPEG") from None


def write_image(path: str | Path, image: np.ndarray) -> None:
    from PIL import Image

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path, compress_level=1)


# --- folders ------------------------------------------------------------------------------------------------


def frame_paths(root: str | Path, frame_id: str) -> dict[str, Path]:
    """``{velodyne, image_2, calib, label_2: path}`` of ``frame_id`` (``000123``) under a KITTI ``training/`` root."""
    root = Path(root)
    return {sub: root / sub / f"{frame_id}{ext}" for sub, ext in SUBFOLDERS.items()}


def list_frames(root: str | Path) -> list[str]:
    """Sorted frame ids that have a velodyne scan under ``root``."""
    return sorted(p.stem for p in (Path(root) / "velodyne").glob("*.bin"))


# --- frames -------------------------------------------------------------------------------------------------


class Frame(NamedTuple):
    """One frame as read from disk; ``points`` / ``image`` are None when that sensor is absent."""

    frame_id: str
    points: np.ndarray | None  # (P, 4) float32
    image: np.ndarray | None  # (H, W, 3) uint8
    calib: Calibration
    gt_boxes: np.ndarray  # (G, 7) velodyne boxes of the known classes
    gt_labels: np.ndarray  # (G,) class index into CLASSES


def load_frame(frame_id: str, velodyne: str | Path | None, image: str | Path | None, calib: str | Path,
               label: str | Path | None = None) -> Frame:
    """Read one frame; raises :class:`KittiFormatError` naming the bad file. Objects of other types than
    :data:`recipes.driving_interaction.config.CLASSES` (``Van``, ``DontCare``, ...) are left out. The image must fit
    the calibration (:func:`check_image_fits_calibration`)."""
    for what, path in (("calibration", calib), ("velodyne", velodyne), ("image", image)):
        if path is not None and not Path(path).is_file():
            optional = "" if what == "calibration" else ", or leave the path empty to go on without that sensor"
            raise KittiFormatError(f"{path}: no such {what} file; fix the path{optional}")
    calibration = read_calib(calib)
    points = read_velodyne(velodyne) if velodyne is not None else None
    picture = read_image(image) if image is not None else None
    if picture is not None:
        check_image_fits_calibration(calibration, picture.shape[:2], str(image), str(calib))
    frame = Frame(str(frame_id), points, picture, calibration, np.zeros((0, 7)), np.zeros(0, dtype=np.int64))
    return with_labels(frame, label) if label is not None and Path(label).is_file() else frame


def with_labels(frame: Frame, label: str | Path) -> Frame:
    """``frame`` with the boxes of the known classes of the label file ``label`` (velodyne coordinates)."""
    objects = [o for o in read_labels(label) if o.type in CLASSES]
    if not objects:
        return frame
    boxes = np.stack([o.velo_box(frame.calib) for o in objects])
    if not np.isfinite(boxes).all():
        raise KittiFormatError(f"{label}: a label holds a non-finite location or size; fix or drop the line")
    labels = np.array([CLASSES.index(o.type) for o in objects], dtype=np.int64)
    return frame._replace(gt_boxes=boxes, gt_labels=labels)


def split_ids(root: str | Path, split: str) -> list[str]:
    """Frame ids of ``split`` under a KITTI object folder ``root`` (holding ``training/``): ``ImageSets/<split>.txt``
    when it exists, else the sorted ids cut 75 / 12.5 / 12.5 %."""
    listed = Path(root) / "ImageSets" / f"{split}.txt"
    if listed.is_file():
        return [line.strip() for line in listed.read_text().splitlines() if line.strip()]
    frames = list_frames(Path(root) / "training")
    a, b = int(len(frames) * 0.75), int(len(frames) * 0.875)
    return {"train": frames[:a], "val": frames[a:b], "test": frames[b:]}[split]


def load_split(root: str | Path, split: str, limit: int | None = None) -> list[Frame]:
    """The frames of ``split`` (at most ``limit``) with their labels."""
    out = []
    for frame_id in split_ids(root, split)[: limit or None]:
        paths = frame_paths(Path(root) / "training", frame_id)
        out.append(load_frame(frame_id, paths["velodyne"], paths["image_2"], paths["calib"], paths["label_2"]))
    return out
