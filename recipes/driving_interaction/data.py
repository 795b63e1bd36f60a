"""Data of the driving recipe: the ``driving-scenes`` data set (generated KITTI-format scenes), frames read from any
KITTI ``training/`` folder, batches for the detector, and the raw scoring schema.

Scoring input: one row per frame with ``frame_id`` and any of ``velodyne_path``, ``image_path``, ``calib_path``
(``label_path`` optional, for reference). A missing or null sensor path means that sensor is absent for the frame;
a missing calibration cannot be replaced and the row gets an error.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import lightning.pytorch as lp
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from recipes.driving_interaction.kitti import (
    Calibration,
    KittiFormatError,
    frame_paths,
    list_frames,
    read_calib,
    read_image,
    read_labels,
    read_velodyne,
)
from recipes.driving_interaction.scenes import CLASSES, FAULTS, SceneConfig, apply_fault, generate_dataset
if TYPE_CHECKING:
    import polars as pl

from recipes.runtime.datasets import DatasetSpec, data_home, fetch_dataset, progress, register_dataset, replace_dir

__all__ = [
    "DATASET_NAME",
    "DEFAULT_FRAMES",
    "SCORE_COLUMNS",
    "Frame",
    "load_frame",
    "frame_to_example",
    "collate_examples",
    "fetch_driving_scenes",
    "DrivingDataset",
    "DrivingDataModule",
    "scoring_frame",
]

DATASET_NAME = "driving-scenes"
DEFAULT_FRAMES = 600
DEFAULT_SEED = 0
SCORE_COLUMNS = ("frame_id",)
SENSOR_COLUMNS = ("velodyne_path", "image_path", "calib_path")
MAX_POINTS = 6000
TRAIN_FAULTS = ("camera_blackout", "night", "lidar_beam_loss", "rain", "camera_failure", "lidar_failure")


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
    """Read one frame; raises :class:`KittiFormatError` naming the bad file."""
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


def frame_to_example(frame: Frame, image_size: tuple[int, int], x_range: tuple[float, float],
                     y_range: tuple[float, float], max_points: int = MAX_POINTS, seed: int = 0) -> dict[str, torch.Tensor]:
    """Tensors of one frame: points cropped to the BEV range (at most ``max_points``, a seeded subsample), the
    image resized to ``image_size`` with the projection rescaled to match, presence flags and ground truth."""
    H, W = image_size
    scale = np.diag([1.0, 1.0, 1.0])
    if frame.image is not None:
        height, width = frame.image.shape[:2]
        scale = np.diag([W / width, H / height, 1.0])
    projection = scale @ frame.calib.to_matrix()
    points = np.zeros((0, 4), dtype=np.float32) if frame.points is None else frame.points
    inside = ((points[:, 0] >= x_range[0]) & (points[:, 0] < x_range[1]) & (points[:, 1] >= y_range[0])
              & (points[:, 1] < y_range[1]))
    points = points[inside]
    if len(points) > max_points:
        keep = np.random.default_rng(seed).choice(len(points), max_points, replace=False)
        points = points[np.sort(keep)]
    if frame.image is not None:
        picture = np.array(frame.image)  # a writable copy
        if picture.shape[:2] != (H, W):
            from PIL import Image

            picture = np.array(Image.fromarray(picture).resize((W, H), Image.BILINEAR))
        image = torch.from_numpy(np.ascontiguousarray(picture)).permute(2, 0, 1).float() / 255.0
    else:
        image = torch.zeros(3, H, W)
    return {
        "points": torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),
        "image": image,
        "projection": torch.tensor(projection, dtype=torch.float32),
        "lidar_present": torch.tensor(frame.points is not None),
        "camera_present": torch.tensor(frame.image is not None),
        "gt_boxes": torch.tensor(frame.gt_boxes, dtype=torch.float32).reshape(-1, 7),
        "gt_labels": torch.tensor(frame.gt_labels, dtype=torch.long),
    }


def collate_examples(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad points and ground truth to the batch's longest; see :mod:`recipes.driving_interaction.model`."""
    B = len(examples)
    P = max(1, max(len(e["points"]) for e in examples))
    G = max(1, max(len(e["gt_labels"]) for e in examples))
    points, point_mask = torch.zeros(B, P, 4), torch.zeros(B, P, dtype=torch.bool)
    gt_boxes, gt_labels, gt_mask = torch.zeros(B, G, 7), torch.zeros(B, G, dtype=torch.long), torch.zeros(B, G, dtype=torch.bool)
    for i, e in enumerate(examples):
        n, g = len(e["points"]), len(e["gt_labels"])
        points[i, :n], point_mask[i, :n] = e["points"], True
        gt_boxes[i, :g], gt_labels[i, :g], gt_mask[i, :g] = e["gt_boxes"], e["gt_labels"], True
    gt_boxes[..., 3:6] = torch.where(gt_mask[..., None], gt_boxes[..., 3:6], torch.ones(()))  # padding sizes stay > 0
    return {
        "points": points, "point_mask": point_mask,
        "image": torch.stack([e["image"] for e in examples]),
        "projection": torch.stack([e["projection"] for e in examples]),
        "lidar_present": torch.stack([e["lidar_present"] for e in examples]),
        "camera_present": torch.stack([e["camera_present"] for e in examples]),
        "gt_boxes": gt_boxes, "gt_labels": gt_labels, "gt_mask": gt_mask,
    }


# --- the data set -----------------------------------------------------------------------------------------


def _generated_params(num_frames: int, seed: int) -> dict:
    return {"num_frames": num_frames, "seed": seed, "splits": [0.75, 0.125], "config": asdict(SceneConfig())}


def fetch_driving_scenes(path: Path | None, dest: Path, num_frames: int = DEFAULT_FRAMES, seed: int = DEFAULT_SEED) -> Path:
    """A KITTI-format folder: ``path`` (a KITTI object ``training/`` root's parent, or a folder made by this
    generator), the cache, or ``num_frames`` freshly generated scenes written into the cache."""
    if path is not None:
        root = Path(path)
        if not (root / "training" / "velodyne").is_dir():
            raise KittiFormatError(f"{root}: expected a KITTI object folder with training/velodyne, training/image_2, "
                                   "training/calib and training/label_2")
        progress(f"{DATASET_NAME}: using {root} ({len(list_frames(root / 'training'))} frames)")
        return root
    wanted = _generated_params(num_frames, seed)
    params = dest / "params.json"
    if params.is_file() and json.loads(params.read_text()) == json.loads(json.dumps(wanted)):
        progress(f"{DATASET_NAME}: using the cache {dest}")
        return dest
    progress(f"{DATASET_NAME}: generating {num_frames} KITTI-format scenes into {dest}")
    staging = dest.with_name(f".{dest.name}.staging")
    if staging.exists():
        import shutil

        shutil.rmtree(staging)
    generate_dataset(staging, num_frames=num_frames, seed=seed)
    return replace_dir(staging, dest)


register_dataset(DatasetSpec(
    name=DATASET_NAME,
    description="Generated road scenes in KITTI object format (ray-cast LiDAR, pinhole camera, 4 classes + clutter)",
    fetch=fetch_driving_scenes,
    card="data_cards/driving-scenes.md",
))


def _split_ids(root: Path, split: str) -> list[str]:
    listed = root / "ImageSets" / f"{split}.txt"
    if listed.is_file():
        return [line.strip() for line in listed.read_text().splitlines() if line.strip()]
    frames = list_frames(root / "training")
    a, b = int(len(frames) * 0.75), int(len(frames) * 0.875)
    return {"train": frames[:a], "val": frames[a:b], "test": frames[b:]}[split]


def load_split(root: Path, split: str, limit: int | None = None) -> list[Frame]:
    ids = _split_ids(root, split)[: limit or None]
    out = []
    for frame_id in ids:
        paths = frame_paths(root / "training", frame_id)
        out.append(load_frame(frame_id, paths["velodyne"], paths["image_2"], paths["calib"], paths["label_2"]))
    return out


class DrivingDataset(Dataset):
    """Frames as detector examples; ``fault`` degrades every frame, ``fault_prob`` a random share of them with a
    random training fault (seeded per epoch and frame)."""

    def __init__(self, frames: list[Frame], image_size, x_range, y_range, fault: str = "clean", fault_prob: float = 0.0,
                 seed: int = 0) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose one of {list(FAULTS)}")
        self.frames, self.image_size, self.x_range, self.y_range = frames, tuple(image_size), tuple(x_range), tuple(y_range)
        self.fault, self.fault_prob, self.seed, self.epoch = fault, fault_prob, seed, 0

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        frame = self.frames[index]
        fault = self.fault
        if fault == "clean" and self.fault_prob > 0:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if rng.random() < self.fault_prob:
                fault = TRAIN_FAULTS[rng.integers(len(TRAIN_FAULTS))]
        if fault != "clean":
            points, image = apply_fault(frame.points, frame.image, fault, seed=self.seed * 100_003 + index)
            frame = frame._replace(points=points, image=image)
        return frame_to_example(frame, self.image_size, self.x_range, self.y_range, seed=index)


class DrivingDataModule(lp.LightningDataModule):
    """Train / val / test splits of a KITTI-format folder (``dataset: driving-scenes`` generates one).

    ``num_frames`` sizes the generated data set; ``limit_frames`` caps every split (quick runs);
    ``fault_prob`` trains with random sensor faults on that share of frames; ``eval_fault`` degrades the
    validation and test frames (benchmarks).
    """

    def __init__(self, dataset: str = DATASET_NAME, path: str | None = None, num_frames: int = DEFAULT_FRAMES,
                 limit_frames: int | None = None, batch_size: int = 8, image_size: tuple[int, int] = (96, 320),
                 x_range: tuple[float, float] = (0.0, 48.0), y_range: tuple[float, float] = (-24.0, 24.0),
                 fault_prob: float = 0.2, eval_fault: str = "clean", num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        if dataset != DATASET_NAME:
            raise ValueError(f"dataset = {dataset!r}; this recipe reads {DATASET_NAME!r} (pass a KITTI folder with path=...)")
        if eval_fault not in FAULTS:
            raise ValueError(f"eval_fault = {eval_fault!r}; choose one of {list(FAULTS)}")
        if batch_size < 1 or not 0 <= fault_prob <= 1:
            raise ValueError(f"need batch_size >= 1 and 0 <= fault_prob <= 1; got {batch_size}, {fault_prob}")
        self.save_hyperparameters()
        self.splits: dict[str, list[Frame]] = {}

    @property
    def class_names(self) -> list[str]:
        return list(CLASSES)

    def root(self) -> Path:
        hp = self.hparams
        if hp.path is not None:
            return fetch_driving_scenes(Path(hp.path), data_home() / DATASET_NAME)
        if hp.num_frames == DEFAULT_FRAMES and hp.seed == DEFAULT_SEED:
            return fetch_dataset(DATASET_NAME)
        return fetch_driving_scenes(None, data_home() / f"{DATASET_NAME}-{hp.num_frames}-{hp.seed}", hp.num_frames, hp.seed)

    def prepare_data(self) -> None:
        self.root()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        root = self.root()
        for split in ("train", "val", "test"):
            self.splits[split] = load_split(root, split, self.hparams.limit_frames)

    def dataset(self, split: str, fault: str | None = None) -> DrivingDataset:
        self.setup()
        hp = self.hparams
        fault = fault or (hp.eval_fault if split != "train" else "clean")
        return DrivingDataset(self.splits[split], hp.image_size, hp.x_range, hp.y_range, fault,
                              hp.fault_prob if split == "train" else 0.0, hp.seed)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.dataset(split), batch_size=self.hparams.batch_size, shuffle=shuffle,
                          collate_fn=collate_examples, num_workers=self.hparams.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)


def scoring_frame(root: Path, split: str = "test", limit: int | None = None) -> "pl.DataFrame":
    """The raw scoring schema for frames of a KITTI-format folder."""
    import polars as pl

    ids = _split_ids(root, split)[: limit or None]
    rows = {"frame_id": [], "velodyne_path": [], "image_path": [], "calib_path": [], "label_path": []}
    for frame_id in ids:
        paths = frame_paths(root / "training", frame_id)
        rows["frame_id"].append(frame_id)
        rows["velodyne_path"].append(str(paths["velodyne"]))
        rows["image_path"].append(str(paths["image_2"]))
        rows["calib_path"].append(str(paths["calib"]))
        rows["label_path"].append(str(paths["label_2"]))
    return pl.DataFrame(rows, schema={k: pl.Utf8 for k in rows})
