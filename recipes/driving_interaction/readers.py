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

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from recipes.driving_interaction.config import CLASSES

__all__ = [
    "KittiFormatError",
    "Frame",
    "load_frame",
    "split_ids",
    "load_split",
    "Calibration",
    "ObjectLabel",
    "read_velodyne",
    "write_velodyne",
    "read_calib",
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


class KittiFormatError(ValueError):
    """A KITTI file that cannot be read; the message names the file and how to fix it."""


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


def read_velodyne(path: str | Path) -> np.ndarray:
    """``(N, 4)`` float32 points of a KITTI ``.bin`` file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise KittiFormatError(f"{path}: cannot read the velodyne file ({error.strerror}); check the path") from None
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
    """The ``P2``, ``R0_rect`` and ``Tr_velo_to_cam`` entries of a KITTI calibration file (others ignored)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise KittiFormatError(f"{path}: cannot read the calibration file ({error}); check the path") from None
    found: dict[str, np.ndarray] = {}
    for line in text.splitlines():
        key, sep, values = line.partition(":")
        key = key.strip()
        if not sep or key not in _CALIB_SHAPES:
            continue
        try:
            numbers = np.array([float(v) for v in values.split()], dtype=np.float64)
        except ValueError:
            raise KittiFormatError(f"{path}: entry {key} holds a value that is not a number: {values.strip()[:80]!r}") from None
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
    return Calibration(found["P2"], found["R0_rect"], found["Tr_velo_to_cam"])


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
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise KittiFormatError(f"{path}: cannot read the label file ({error}); check the path") from None
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
            raise KittiFormatError(f"{path}:{number}: a field after the type is not a number: {line[:80]!r}") from None
        labels.append(ObjectLabel(fields[0], v[0], int(v[1]), v[2], tuple(v[3:7]), tuple(v[7:10]), tuple(v[10:13]), v[13],
                                  v[14] if len(v) == 15 else None))
    return labels


def write_labels(path: str | Path, labels: list[ObjectLabel]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(label.to_line() + "\n" for label in labels))


# --- images -------------------------------------------------------------------------------------------------


def read_image(path: str | Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as error:
        raise KittiFormatError(f"{path}: not a readable image ({error}); export it again as PNG") from None


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
    :data:`recipes.driving_interaction.config.CLASSES` (``Van``, ``DontCare``, ...) are left out."""
    for what, path in (("calibration", calib), ("velodyne", velodyne), ("image", image)):
        if path is not None and not Path(path).is_file():
            optional = "" if what == "calibration" else ", or leave the path empty to go on without that sensor"
            raise KittiFormatError(f"{path}: no such {what} file; fix the path{optional}")
    calibration = read_calib(calib)
    points = read_velodyne(velodyne) if velodyne is not None else None
    picture = read_image(image) if image is not None else None
    boxes, labels = np.zeros((0, 7)), np.zeros(0, dtype=np.int64)
    if label is not None and Path(label).is_file():
        objects = [o for o in read_labels(label) if o.type in CLASSES]
        if objects:
            boxes = np.stack([o.velo_box(calibration) for o in objects])
            labels = np.array([CLASSES.index(o.type) for o in objects], dtype=np.int64)
    return Frame(str(frame_id), points, picture, calibration, boxes, labels)


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
