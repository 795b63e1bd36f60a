"""A deterministic road-scene generator that writes KITTI object format: ray-cast LiDAR and a pinhole camera.

Every frame is a straight road along the velodyne x axis (lanes 3.5 m wide, kerbs at |y| = 7 m, pavements
beyond) with cars and trucks in the lanes, pedestrians, cyclists and roadside clutter (poles, bins, bushes)
on and near the pavements. Objects are boxes; both sensors are ray-cast against the same boxes and the ground
plane, so they agree on geometry and occlusion.

The sensors are complementary by construction:

* LiDAR (``num_beams`` beams between ``beam_low_deg`` and ``beam_high_deg``, ``azimuth_step_deg`` apart over the
  camera's field of view) gives exact range and shape but sparse returns far away, and clutter has the size and
  reflectance of a pedestrian, so geometry alone confuses the two; cars and large vans overlap in size.
* The camera gives each class a distinct appearance (palette and vertical pattern: windows on cars, a white cargo
  box on trucks, dark legs on pedestrians, a wheel band on cyclists, uniform grey-green clutter) but no range.

Objects far away or hidden behind others are hard for both. :func:`apply_fault` degrades a frame's sensors
after the fact (night, camera blackout, LiDAR beam loss, rain, a failed sensor), so the same scenes serve every
benchmark condition.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from recipes.driving_interaction.boxes import box_corners_3d, ray_box_hits
from recipes.driving_interaction.readers import (
    Calibration,
    ObjectLabel,
    frame_paths,
    velo_yaw_to_rotation_y,
    write_calib,
    write_image,
    write_labels,
    write_velodyne,
)

__all__ = [
    "CLUTTER",
    "FAULTS",
    "LIDAR_HEIGHT",
    "SceneConfig",
    "Scene",
    "RenderedFrame",
    "default_calibration",
    "sample_scene",
    "cast_lidar",
    "render_camera",
    "render_frame",
    "apply_fault",
    "generate_dataset",
    "beam_index",
]

CLUTTER = "Clutter"
FAULTS = ("clean", "camera_blackout", "night", "lidar_beam_loss", "rain", "camera_failure", "lidar_failure")
LIDAR_HEIGHT = 1.73  # the velodyne origin above the road, as in KITTI
GROUND_Z = -LIDAR_HEIGHT
KERB_Y = 7.0

# length, width, height ranges (uniform) per kind; clutter is sized like a pedestrian on purpose
_SIZES = {
    "Car": ((3.6, 5.0), (1.6, 1.9), (1.4, 1.7)),
    "Truck": ((4.8, 8.5), (2.0, 2.5), (2.0, 3.2)),
    "Pedestrian": ((0.5, 0.9), (0.5, 0.8), (1.55, 1.9)),
    "Cyclist": ((1.5, 1.9), (0.5, 0.7), (1.55, 1.85)),
    CLUTTER: ((0.4, 0.9), (0.4, 0.9), (1.3, 1.9)),
}
# LiDAR reflectance (mean, spread) per kind: pedestrians and clutter overlap
_REFLECTANCE = {"Car": (0.55, 0.2), "Truck": (0.6, 0.2), "Pedestrian": (0.25, 0.08), "Cyclist": (0.35, 0.1),
                CLUTTER: (0.27, 0.1)}
# camera palette: (colour of the lower part, colour of the upper part, height fraction where it changes)
_PALETTE = {
    "Car": ((40, 70, 170), (25, 30, 45), 0.62),  # blue body, dark windows
    "Truck": ((230, 140, 20), (235, 235, 235), 0.35),  # orange cab/chassis, white cargo box
    "Pedestrian": ((35, 35, 50), (200, 40, 60), 0.5),  # dark legs, red top
    "Cyclist": ((15, 15, 15), (40, 190, 80), 0.35),  # black wheels, green rider
    CLUTTER: ((110, 120, 100), (110, 120, 100), 0.5),  # uniform grey-green
}


@dataclass(frozen=True)
class SceneConfig:
    """Sensor and layout knobs of the generator (all lengths in metres, angles in degrees)."""

    num_beams: int = 32
    beam_low_deg: float = -20.0
    beam_high_deg: float = 2.0
    azimuth_step_deg: float = 0.4
    max_range: float = 70.0
    range_noise: float = 0.02
    dropout: float = 0.05
    image_height: int = 96
    image_width: int = 320
    horizontal_fov_deg: float = 90.0
    x_range: tuple[float, float] = (4.0, 46.0)
    max_lateral: float = 20.0

    def __post_init__(self) -> None:
        if self.num_beams < 2 or self.beam_high_deg <= self.beam_low_deg:
            raise ValueError(f"need num_beams >= 2 and beam_high_deg > beam_low_deg; got {self.num_beams}, "
                             f"{self.beam_low_deg}..{self.beam_high_deg}")
        if self.azimuth_step_deg <= 0 or self.max_range <= 0 or not 0 <= self.dropout < 1 or self.range_noise < 0:
            raise ValueError("need azimuth_step_deg > 0, max_range > 0, 0 <= dropout < 1 and range_noise >= 0")
        if self.image_height < 8 or self.image_width < 8:
            raise ValueError(f"image must be at least 8×8 pixels; got {self.image_height}×{self.image_width}")

    @property
    def beam_angles(self) -> np.ndarray:
        return np.deg2rad(np.linspace(self.beam_low_deg, self.beam_high_deg, self.num_beams))


class Scene(NamedTuple):
    """Objects of one frame: ``boxes (N, 7)`` velodyne boxes, ``kinds`` (a class or ``Clutter``), per-object
    ``reflectance (N,)`` and ``shade (N,)`` (a brightness factor of the object's paint)."""

    boxes: np.ndarray
    kinds: list[str]
    reflectance: np.ndarray
    shade: np.ndarray


class RenderedFrame(NamedTuple):
    """Sensor data and labels of one frame."""

    points: np.ndarray  # (P, 4) float32 x, y, z, reflectance
    image: np.ndarray  # (H, W, 3) uint8
    calib: Calibration
    labels: list[ObjectLabel]
    scene: Scene


def default_calibration(config: SceneConfig = SceneConfig()) -> Calibration:
    """KITTI-like extrinsics (camera 0.27 m ahead of and 0.08 m below the LiDAR) and a pinhole ``P2`` with the
    configured field of view."""
    focal = config.image_width / 2 / np.tan(np.deg2rad(config.horizontal_fov_deg) / 2)
    # the principal point sits above the image centre so the road, not the sky, fills most of the frame
    P2 = np.array([[focal, 0, config.image_width / 2, 0], [0, focal, config.image_height * 0.3, 0], [0, 0, 1, 0]])
    Tr = np.array([[0, -1, 0, 0], [0, 0, -1, -0.08], [1, 0, 0, -0.27]], dtype=np.float64)
    return Calibration(P2, np.eye(3), Tr)


def sample_scene(rng: np.random.Generator, config: SceneConfig = SceneConfig()) -> Scene:
    """Place vehicles in lanes (either direction), people and clutter on the pavements, a few crossing."""
    x_low, x_high = config.x_range
    counts = {"Car": rng.integers(2, 7), "Truck": rng.integers(0, 3), "Pedestrian": rng.integers(1, 5),
              "Cyclist": rng.integers(0, 3), CLUTTER: rng.integers(2, 7)}
    boxes, kinds = [], []
    for kind, count in counts.items():
        for _ in range(int(count)):
            for _attempt in range(20):
                length, width, height = (rng.uniform(*r) for r in _SIZES[kind])
                x = rng.uniform(x_low, x_high)
                if kind in ("Car", "Truck"):
                    lane = rng.choice([-5.25, -1.75, 1.75, 5.25])
                    y = lane + rng.normal(0, 0.25)
                    yaw = (0.0 if lane > 0 else np.pi) + rng.normal(0, 0.08)
                elif kind == "Cyclist":
                    y = rng.choice([-1, 1]) * rng.uniform(6.0, 7.5)
                    yaw = (0.0 if y > 0 else np.pi) + rng.normal(0, 0.15)
                else:
                    crossing = kind == "Pedestrian" and rng.random() < 0.2
                    y = rng.uniform(-6, 6) if crossing else rng.choice([-1, 1]) * rng.uniform(KERB_Y + 0.5, KERB_Y + 6)
                    yaw = rng.uniform(-np.pi, np.pi)
                if abs(y) > config.max_lateral or abs(y) > x + 2:  # keep inside the camera's view cone
                    continue
                box = np.array([x, y, GROUND_Z + height / 2, length, width, height, yaw])
                radius = np.hypot(length, width) / 2
                if all(np.hypot(*(box[:2] - b[:2])) > radius + np.hypot(b[3], b[4]) / 2 + 0.3 for b in boxes):
                    boxes.append(box)
                    kinds.append(kind)
                    break
    boxes_array = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    reflectance = np.array([np.clip(rng.normal(*_REFLECTANCE[k]), 0.05, 0.95) for k in kinds])
    shade = rng.uniform(0.75, 1.15, size=len(kinds))
    return Scene(boxes_array, kinds, reflectance, shade)


def _culled_hits(origin: np.ndarray, directions: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ray_box_hits` computed for each box only on the rays inside its angular window (azimuth and
    elevation bounds of its corners seen from ``origin``); ``(R, N)`` like that function."""
    t_all = np.full((len(directions), len(boxes)), np.inf)
    axes = np.zeros((len(directions), len(boxes)), dtype=np.int64)
    if not len(boxes):
        return t_all, axes
    ray_az = np.arctan2(directions[:, 1], directions[:, 0])
    ray_el = np.arctan2(directions[:, 2], np.hypot(directions[:, 0], directions[:, 1]))
    corners = box_corners_3d(boxes) - origin[None, None]  # (N, 8, 3)
    for n in range(len(boxes)):
        c = corners[n]
        if (c[:, 0] <= 0.2).any():  # the box reaches beside or behind the sensor: test every ray
            rays = np.arange(len(directions))
        else:
            az = np.arctan2(c[:, 1], c[:, 0])
            el = np.arctan2(c[:, 2], np.hypot(c[:, 0], c[:, 1]))
            pad = 1e-3
            rays = np.nonzero((ray_az >= az.min() - pad) & (ray_az <= az.max() + pad)
                              & (ray_el >= el.min() - pad) & (ray_el <= el.max() + pad))[0]
        if len(rays):
            t, axis = ray_box_hits(origin, directions[rays], boxes[n : n + 1])
            t_all[rays, n] = t[:, 0]
            axes[rays, n] = axis[:, 0]
    return t_all, axes


def _first_hits(origin: np.ndarray, directions: np.ndarray, boxes: np.ndarray):
    """Nearest box hit per ray: ``t (R,)`` (inf = none), ``index (R,)``, ``axis (R,)``, ground ``t (R,)``
    and the ``(R, N)`` distances to every box."""
    t_boxes, axes = _culled_hits(origin, directions, boxes)
    rows = np.arange(len(directions))
    if t_boxes.shape[1]:
        index = t_boxes.argmin(1)
        t_box = t_boxes[rows, index]
        axis = axes[rows, index]
    else:
        index = np.zeros(len(directions), dtype=np.int64)
        t_box = np.full(len(directions), np.inf)
        axis = index
    down = directions[:, 2] < -1e-9
    t_ground = np.where(down, (GROUND_Z - origin[2]) / np.where(down, directions[:, 2], -1.0), np.inf)
    return t_box, index, axis, t_ground, t_boxes


def cast_lidar(scene: Scene, rng: np.random.Generator, config: SceneConfig = SceneConfig()) -> np.ndarray:
    """``(P, 4)`` float32 returns of a spinning LiDAR at the origin over the camera's field of view."""
    half_fov = config.horizontal_fov_deg / 2 + 5
    azimuth = np.deg2rad(np.arange(-half_fov, half_fov + 1e-9, config.azimuth_step_deg))
    elevation = config.beam_angles
    el, az = np.meshgrid(elevation, azimuth, indexing="ij")  # (beams, azimuths)
    directions = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
    origin = np.zeros(3)
    t_box, index, _, t_ground, _ = _first_hits(origin, directions, scene.boxes)
    t = np.minimum(t_box, t_ground)
    keep = np.isfinite(t) & (t <= config.max_range) & (rng.random(len(t)) >= config.dropout)
    t_noisy = t + rng.normal(0, config.range_noise, size=len(t))
    points = directions * t_noisy[:, None]
    on_box = t_box <= t_ground
    hit_xyz = directions * np.minimum(t, 1e3)[:, None]
    # road paint (lane lines, kerbs) reflects more than asphalt
    lane_paint = (np.abs(np.abs(hit_xyz[:, 1]) - 3.5) < 0.08) | (np.abs(np.abs(hit_xyz[:, 1]) - KERB_Y) < 0.12)
    ground_reflect = np.where(lane_paint, 0.6, 0.15)
    box_reflect = scene.reflectance[index] if len(scene.reflectance) else np.zeros(len(t))
    reflect = np.where(on_box, box_reflect, ground_reflect) + rng.normal(0, 0.03, size=len(t))
    out = np.concatenate([points, np.clip(reflect, 0, 1)[:, None]], axis=1)[keep]
    return out.astype(np.float32)


def _palette_colour(kind: str, height_fraction: np.ndarray) -> np.ndarray:
    low, high, split = _PALETTE[kind]
    return np.where((height_fraction < split)[:, None], np.asarray(low, float), np.asarray(high, float))


def render_camera(scene: Scene, calib: Calibration, rng: np.random.Generator,
                  config: SceneConfig = SceneConfig()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(H, W, 3)`` uint8 image, the ``(H, W)`` index of the object seen at each pixel (-1 = none) and
    ``(N,)`` counts of the pixels each object would cover with nothing in front of it."""
    H, W = config.image_height, config.image_width
    v, u = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    P2 = calib.P2
    ray_cam = np.stack([(u - P2[0, 2]) / P2[0, 0], (v - P2[1, 2]) / P2[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    rect_to_velo = np.linalg.inv(calib.velo_to_rect)
    directions = ray_cam @ rect_to_velo[:3, :3].T
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    origin = rect_to_velo[:3, 3]
    t_box, index, axis, t_ground, t_all = _first_hits(origin, directions, scene.boxes)
    on_box = np.isfinite(t_box) & (t_box <= t_ground)
    hit = origin[None] + directions * np.minimum(np.minimum(t_box, t_ground), 1e3)[:, None]  # sky rays stop at 1 km

    # sky, road, pavement, paint
    sky = np.array([150.0, 185.0, 225.0]) - 40 * np.clip(directions[:, 2:3] * 4, 0, 1)
    road = np.where((np.abs(hit[:, 1]) < KERB_Y)[:, None], np.array([85.0, 85.0, 90.0]), np.array([150.0, 145.0, 135.0]))
    dashes = (np.abs(np.abs(hit[:, 1]) - 3.5) < 0.1) & ((hit[:, 0] % 6.0) < 3.0)
    edges = np.abs(np.abs(hit[:, 1]) - KERB_Y) < 0.12
    road = np.where((dashes | edges)[:, None], 235.0, road)
    colour = np.where(np.isfinite(t_ground)[:, None], road, sky)
    if len(scene.kinds):
        boxes = scene.boxes
        bottom = boxes[index, 2] - boxes[index, 5] / 2
        fraction = np.clip((hit[:, 2] - bottom) / boxes[index, 5], 0, 1)
        paint = np.zeros((len(hit), 3))
        for k, kind in enumerate(dict.fromkeys(scene.kinds)):
            rows = np.array([scene.kinds[i] == kind for i in range(len(scene.kinds))])[index]
            paint[rows] = _palette_colour(kind, fraction[rows])
        face_light = np.array([0.7, 0.85, 1.0])[axis]
        paint = paint * (face_light * scene.shade[index])[:, None]
        colour = np.where(on_box[:, None], paint, colour)
    # haze with distance keeps far objects low-contrast
    distance = np.where(on_box, t_box, np.where(np.isfinite(t_ground), t_ground, 200.0))
    haze = np.clip(distance / 120.0, 0, 0.6)[:, None]
    colour = colour * (1 - haze) + np.array([170.0, 180.0, 190.0]) * haze
    colour = colour + rng.normal(0, 3.0, size=colour.shape)
    image = np.clip(colour, 0, 255).astype(np.uint8).reshape(H, W, 3)
    seen = np.where(on_box, index, -1).reshape(H, W)
    unoccluded = np.isfinite(t_all).sum(0) if t_all.shape[1] else np.zeros(0, dtype=np.int64)
    return image, seen, unoccluded


def _labels(scene: Scene, calib: Calibration, points: np.ndarray, seen: np.ndarray, unoccluded: np.ndarray,
            config: SceneConfig) -> tuple[list[ObjectLabel], np.ndarray]:
    """KITTI labels of the classed objects a sensor sees (clutter and unseen objects get none), and which of
    the scene's objects they are."""
    from recipes.driving_interaction.boxes import points_in_boxes

    H, W = config.image_height, config.image_width
    inside = points_in_boxes(points[:, :3], scene.boxes, margin=0.1).sum(0) if len(points) else np.zeros(len(scene.kinds))
    visible_pixels = np.bincount(seen[seen >= 0], minlength=len(scene.kinds))
    labels, kept = [], []
    for i, kind in enumerate(scene.kinds):
        if kind == CLUTTER or (inside[i] == 0 and visible_pixels[i] == 0):
            continue
        box = scene.boxes[i]
        corners = box_corners_3d(box[None])[0]
        pixels, depth = calib.project_velo(corners)
        if (depth <= 0.1).any():
            continue
        x1, y1 = pixels.min(0)
        x2, y2 = pixels.max(0)
        cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, W - 1), min(y2, H - 1)
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        truncated = 1 - (cx2 - cx1) * (cy2 - cy1) / max((x2 - x1) * (y2 - y1), 1e-6)
        visible = visible_pixels[i] / max(unoccluded[i], 1)
        occluded = 0 if visible > 0.8 else 1 if visible > 0.4 else 2 if visible_pixels[i] > 0 else 3
        h, w, l = box[5], box[4], box[3]
        bottom_cam = calib.velo_to_cam(np.array([[box[0], box[1], box[2] - h / 2]]))[0]
        rotation_y = velo_yaw_to_rotation_y(box[6])
        alpha = float(((rotation_y - np.arctan2(bottom_cam[0], bottom_cam[2])) + np.pi) % (2 * np.pi) - np.pi)
        labels.append(ObjectLabel(kind, float(np.clip(truncated, 0, 1)), int(occluded), alpha,
                                  (float(cx1), float(cy1), float(cx2), float(cy2)), (float(h), float(w), float(l)),
                                  tuple(float(c) for c in bottom_cam), float(rotation_y)))
        kept.append(i)
    return labels, np.asarray(kept, dtype=np.int64)


def render_frame(seed: int, index: int, config: SceneConfig = SceneConfig()) -> RenderedFrame:
    """Frame ``index`` of the data set with ``seed``: the same arguments always give the same bytes."""
    rng = np.random.default_rng([seed, index])
    scene = sample_scene(rng, config)
    calib = default_calibration(config)
    points = cast_lidar(scene, rng, config)
    image, seen, unoccluded = render_camera(scene, calib, rng, config)
    labels, _ = _labels(scene, calib, points, seen, unoccluded, config)
    return RenderedFrame(points, image, calib, labels, scene)


def beam_index(points: np.ndarray, config: SceneConfig = SceneConfig()) -> np.ndarray:
    """The beam each return came from, recovered from its elevation (KITTI scans carry no ring number)."""
    elevation = np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1]))
    angles = config.beam_angles
    return np.abs(elevation[:, None] - angles[None, :]).argmin(1)


def apply_fault(points: np.ndarray | None, image: np.ndarray | None, fault: str, seed: int = 0,
                config: SceneConfig = SceneConfig()) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Degrade one frame's sensors. ``fault`` is one of :data:`FAULTS`:

    ``camera_blackout`` an all-black image; ``night`` the image at 12 % brightness with sensor noise;
    ``lidar_beam_loss`` half of the beams (a random half per frame) return nothing; ``rain`` range jitter, lost
    returns, near-field clutter points and a washed-out, streaked image; ``camera_failure`` / ``lidar_failure``
    the sensor is missing (None).
    """
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; choose one of {list(FAULTS)}")
    rng = np.random.default_rng([seed, FAULTS.index(fault)])
    if fault == "camera_blackout" and image is not None:
        image = np.zeros_like(image)
    elif fault == "night" and image is not None:
        dark = image.astype(np.float64) * 0.12 + rng.normal(0, 4.0, size=image.shape)
        image = np.clip(dark, 0, 255).astype(np.uint8)
    elif fault == "lidar_beam_loss" and points is not None:
        lost = rng.permutation(config.num_beams)[: config.num_beams // 2]
        points = points[~np.isin(beam_index(points, config), lost)]
    elif fault == "rain":
        if points is not None:
            kept = points[rng.random(len(points)) >= 0.2].copy()
            kept[:, :3] *= (1 + rng.normal(0, 0.01, size=(len(kept), 1))).astype(np.float32)
            kept[:, 3] *= 0.6
            count = len(points) // 20
            splash = np.stack([rng.uniform(0.5, 6, count), rng.uniform(-4, 4, count), rng.uniform(-1.7, 0.5, count),
                               rng.uniform(0, 0.1, count)], 1).astype(np.float32)
            points = np.concatenate([kept, splash])
        if image is not None:
            wet = image.astype(np.float64) * 0.7 + 50 + rng.normal(0, 6, size=image.shape)
            streaks = rng.random(image.shape[:2]) < 0.01
            wet[np.roll(streaks, 1, 0) | streaks] += 60
            image = np.clip(wet, 0, 255).astype(np.uint8)
    elif fault == "camera_failure":
        image = None
    elif fault == "lidar_failure":
        points = None
    return points, image


def generate_dataset(dest: str | Path, num_frames: int = 600, seed: int = 0, config: SceneConfig = SceneConfig(),
                     splits: tuple[float, float] = (0.75, 0.125), verbose: bool = True) -> Path:
    """Write ``num_frames`` frames under ``dest/training/{velodyne,image_2,calib,label_2}`` plus
    ``dest/ImageSets/{train,val,test}.txt`` (contiguous id ranges) and ``dest/params.json``."""
    dest = Path(dest)
    root = dest / "training"
    started = time.perf_counter()
    for index in range(num_frames):
        frame = render_frame(seed, index, config)
        paths = frame_paths(root, f"{index:06d}")
        write_velodyne(paths["velodyne"], frame.points)
        write_image(paths["image_2"], frame.image)
        write_calib(paths["calib"], frame.calib)
        write_labels(paths["label_2"], frame.labels)
        if verbose and ((index + 1) % 100 == 0 or index + 1 == num_frames):
            print(f"[driving-scenes] {index + 1}/{num_frames} frames ({time.perf_counter() - started:.1f} s)", flush=True)
    train_end = int(round(num_frames * splits[0]))
    val_end = train_end + int(round(num_frames * splits[1]))
    sets = dest / "ImageSets"
    sets.mkdir(parents=True, exist_ok=True)
    for name, ids in (("train", range(0, train_end)), ("val", range(train_end, val_end)), ("test", range(val_end, num_frames))):
        (sets / f"{name}.txt").write_text("".join(f"{i:06d}\n" for i in ids))
    params = {"num_frames": num_frames, "seed": seed, "splits": list(splits), "config": asdict(config)}
    (dest / "params.json").write_text(json.dumps(params, indent=2))
    return dest
