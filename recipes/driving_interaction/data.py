"""Data of the driving recipe: the ``driving-scenes`` data set (generated KITTI-format scenes, or any KITTI object
folder), frames as detector examples with sensor faults, the DataModule, and the raw scoring schema.

Scoring input: one row per frame with ``frame_id`` and any of ``velodyne_path``, ``image_path``, ``calib_path``
(``label_path`` optional, for reference). A missing or null sensor path means that sensor is absent for the frame;
a missing calibration cannot be replaced and the row gets an error.

A sensor that is absent for a frame (a ``camera_failure`` or ``lidar_failure`` fault, a null path in the scoring
input) is ``<sensor>_present = False`` in the example; its data is then zeros and the model never reads it. So is a
camera whose image is blank (:func:`blank_image`: every pixel the same value, as in ``camera_blackout``): a dead or
covered camera shows nothing, so the frame is detected from its LiDAR alone, as an empty scan is from the camera
alone. A degraded sensor (``night``, ``lidar_beam_loss``, ``rain``) stays present.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from recipes.driving_interaction.letterbox import Letterbox
from recipes.driving_interaction.readers import (CalibrationMismatchError, Frame, KittiFormatError, check_image_fits_calibration, frame_paths,
                                                 list_frames, load_frame, load_split, read_image, read_velodyne,
                                                 split_ids, with_labels)
from recipes.driving_interaction.scenes import FAULTS, SceneConfig, apply_fault, generate_dataset
from recipes.runtime.datamodule import SPLITS, RecipeDataModule
from recipes.runtime.inputs import RowInputError, resolve_input_path
from recipes.runtime.datasets import DatasetSpec, data_home, fetch_dataset, progress, register_dataset, replace_dir

if TYPE_CHECKING:
    import polars as pl

    from recipes.runtime.runs import Run

__all__ = [
    "DATASET_NAME",
    "blank_image",
    "sensors_recorded",
    "DEFAULT_FRAMES",
    "frame_to_example",
    "collate_examples",
    "fetch_driving_scenes",
    "DrivingDataset",
    "DrivingDataModule",
    "scoring_frame",
    "frames_from_table",
    "read_scoring_row",
    "ScoringRow",
    "datamodule_of",
]

DATASET_NAME = "driving-scenes"
DEFAULT_FRAMES = 600
DEFAULT_SEED = 0
MAX_POINTS = 6000
#: the degradations the data set draws per training frame; a sensor that fails outright is the module's
#: ``modality_dropout`` (its ``present`` flag), so the model learns to skip the stream, not to read zeros (a
#: blacked-out image is blank, so it too becomes an absent camera: :func:`frame_to_example`)
TRAIN_FAULTS = ("camera_blackout", "night", "lidar_beam_loss", "rain")


def frame_seed(frame_id: str) -> int:
    """A seed that depends on the frame's id only (CRC32, the same in every process and on every machine)."""
    return zlib.crc32(str(frame_id).encode())


def blank_image(image: np.ndarray) -> bool:
    """Whether every pixel of ``image`` holds the same value (all black, all white, one grey): the frame of a dead or
    covered camera, which shows nothing."""
    return image.size == 0 or bool(image.min() == image.max())


def sensors_recorded(frame: Frame) -> dict[str, bool]:
    """``{"camera", "lidar"}``: whether the detector sees each of ``frame``'s sensors — a failed one is ``None``, and a
    blank image (:func:`blank_image`) is no camera either."""
    return {"camera": frame.image is not None and not blank_image(frame.image), "lidar": frame.points is not None}


def frame_to_example(frame: Frame, image_size: tuple[int, int], x_range: tuple[float, float],
                     y_range: tuple[float, float], max_points: int = MAX_POINTS,
                     seed: int | None = None) -> dict[str, torch.Tensor]:
    """Tensors of one frame: points cropped to the BEV range (at most ``max_points``, a seeded subsample), the
    image letterboxed into ``image_size`` (:class:`recipes.driving_interaction.letterbox.Letterbox`: scaled without
    distortion, black borders) with the projection mapped to match, presence flags and ground truth.

    The subsample's ``seed`` defaults to one derived from the frame's id (:func:`frame_seed`), so a frame gives the
    same tensors wherever it sits in a batch or a scoring chunk. A blank image (:func:`blank_image`) is no camera."""
    seed = frame_seed(frame.frame_id) if seed is None else seed
    H, W = image_size
    letterbox = Letterbox.fit(frame.image.shape[:2] if frame.image is not None else (H, W), (H, W))
    projection = letterbox.matrix @ frame.calib.to_matrix()
    points = np.zeros((0, 4), dtype=np.float32) if frame.points is None else frame.points
    inside = ((points[:, 0] >= x_range[0]) & (points[:, 0] < x_range[1]) & (points[:, 1] >= y_range[0])
              & (points[:, 1] < y_range[1]))
    points = points[inside]
    if len(points) > max_points:
        keep = np.random.default_rng(seed).choice(len(points), max_points, replace=False)
        points = points[np.sort(keep)]
    camera_works = sensors_recorded(frame)["camera"]
    if camera_works:
        image = torch.from_numpy(np.ascontiguousarray(letterbox.apply(frame.image))).permute(2, 0, 1).float() / 255.0
    else:
        image = torch.zeros(3, H, W)
    return {
        "points": torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),
        "image": image,
        "projection": torch.tensor(projection, dtype=torch.float32),
        "lidar_present": torch.tensor(frame.points is not None),
        "camera_present": torch.tensor(camera_works),
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



class DrivingDataset(Dataset):
    """Frames as detector examples; ``fault`` degrades every frame, ``fault_prob`` a random share of them with a
    random training fault, drawn afresh each epoch from ``(seed, epoch, frame)``. The module sets :attr:`epoch` at
    the start of every training epoch; it lives in shared memory, so persistent loader workers see it too."""

    def __init__(self, frames: list[Frame], image_size: tuple[int, int], x_range: tuple[float, float],
                 y_range: tuple[float, float], fault: str = "clean", fault_prob: float = 0.0, seed: int = 0) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose one of {list(FAULTS)}")
        self.frames, self.image_size, self.x_range, self.y_range = frames, tuple(image_size), tuple(x_range), tuple(y_range)
        self.fault, self.fault_prob, self.seed = fault, fault_prob, seed
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch.fill_(int(value))

    def __len__(self) -> int:
        return len(self.frames)

    def fault_of(self, index: int) -> str:
        """The fault frame ``index`` gets in the current epoch."""
        if self.fault == "clean" and self.fault_prob > 0:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            if rng.random() < self.fault_prob:
                return TRAIN_FAULTS[rng.integers(len(TRAIN_FAULTS))]
        return self.fault

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        frame = self.frames[index]
        fault = self.fault_of(index)
        if fault != "clean":
            points, image = apply_fault(frame.points, frame.image, fault, seed=self.seed * 100_003 + index)
            frame = frame._replace(points=points, image=image)
        return frame_to_example(frame, self.image_size, self.x_range, self.y_range, seed=index)


class DrivingDataModule(RecipeDataModule):
    """Train / val / test splits of a KITTI-format folder (``dataset: driving-scenes`` generates one).

    ``path`` reads a KITTI object folder instead (the one holding ``training/``); ``num_frames`` sizes the generated
    data set; ``limit_frames`` caps every split (quick runs); ``image_size``, ``x_range`` and ``y_range`` are the
    camera input and the BEV extent, linked into the model's config; ``fault_prob`` trains with random sensor faults
    on that share of frames; ``eval_fault`` degrades the validation and test frames (benchmarks).
    """

    def __init__(self, dataset: str = DATASET_NAME, path: str | None = None, num_frames: int = DEFAULT_FRAMES,
                 limit_frames: int | None = None, batch_size: int = 8, image_size: tuple[int, int] = (96, 320),
                 x_range: tuple[float, float] = (0.0, 48.0), y_range: tuple[float, float] = (-24.0, 24.0),
                 fault_prob: float = 0.2, eval_fault: str = "clean", num_workers: int = 0, seed: int = DEFAULT_SEED) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if dataset != DATASET_NAME:
            raise ValueError(f"dataset = {dataset!r}; this recipe reads {DATASET_NAME!r} (pass a KITTI folder with path=...)")
        if eval_fault not in FAULTS:
            raise ValueError(f"eval_fault = {eval_fault!r}; choose one of {list(FAULTS)}")
        if not 0 <= fault_prob <= 1:
            raise ValueError(f"fault_prob must be in [0, 1]; got {fault_prob}")
        self.save_hyperparameters()
        # the link sources of config.DATA_GEOMETRY (LightningCLI reads them from the instantiated data module)
        self.image_size = tuple(int(v) for v in image_size)
        self.x_range = tuple(float(v) for v in x_range)
        self.y_range = tuple(float(v) for v in y_range)

    def root(self) -> Path:
        hp = self.hparams
        if hp.path is not None:
            return fetch_driving_scenes(Path(hp.path), data_home() / DATASET_NAME)
        if hp.num_frames == DEFAULT_FRAMES and hp.seed == DEFAULT_SEED:
            return fetch_dataset(DATASET_NAME)
        return fetch_driving_scenes(None, data_home() / f"{DATASET_NAME}-{hp.num_frames}-{hp.seed}", hp.num_frames, hp.seed)

    def prepare_data(self) -> None:
        self.root()

    def build_splits(self) -> dict[str, DrivingDataset]:
        hp, root = self.hparams, self.root()
        return {split: self._dataset(load_split(root, split, hp.limit_frames),
                                     "clean" if split == "train" else hp.eval_fault,
                                     hp.fault_prob if split == "train" else 0.0) for split in SPLITS}

    def _dataset(self, frames: list[Frame], fault: str, fault_prob: float) -> DrivingDataset:
        return DrivingDataset(frames, self.image_size, self.x_range, self.y_range, fault, fault_prob, self.seed)

    def dataset(self, split: str, fault: str | None = None) -> DrivingDataset:
        """The dataset of ``split``; with ``fault``, its frames all degraded by that fault (no random faults)."""
        dataset = super().dataset(split)
        assert isinstance(dataset, DrivingDataset)
        return dataset if fault is None else self._dataset(dataset.frames, fault, 0.0)

    def collate_fn(self):
        return collate_examples


def scoring_frame(root: Path, split: str = "test", limit: int | None = None) -> "pl.DataFrame":
    """The raw scoring schema for frames of a KITTI-format folder."""
    import polars as pl

    rows: dict[str, list[str]] = {"frame_id": [], "velodyne_path": [], "image_path": [], "calib_path": [], "label_path": []}
    for frame_id in split_ids(root, split)[: limit or None]:
        paths = frame_paths(root / "training", frame_id)
        rows["frame_id"].append(frame_id)
        rows["velodyne_path"].append(str(paths["velodyne"]))
        rows["image_path"].append(str(paths["image_2"]))
        rows["calib_path"].append(str(paths["calib"]))
        rows["label_path"].append(str(paths["label_2"]))
    return pl.DataFrame(rows, schema={k: pl.Utf8 for k in rows})


class ScoringRow(NamedTuple):
    """One row of the scoring schema as read: the frame (None when the row cannot be scored), the error that says
    why, and what the row is scored without (``warnings``, each naming the column, the file and the fix)."""

    frame: Frame | None
    error: str | None
    warnings: tuple[str, ...]


def _path_or_none(row: dict[str, Any], column: str) -> Path | None:
    """The row's ``column`` as a path under the data root (:func:`recipes.runtime.inputs.resolve_input_path`), None
    when the column is missing, null or blank."""
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return resolve_input_path(value, column)


def read_scoring_row(row: dict[str, Any], image_size: tuple[int, int] | None = None) -> ScoringRow:
    """Read one row of the scoring schema.

    The calibration is required (an error without it). A sensor file that cannot be read (missing, truncated,
    corrupt, empty, too large, a blank image) costs the row that sensor and adds a warning, as long as the other sensor is read;
    with neither, the row is an error naming both. A label file that cannot be read costs the row only its ground
    truth (labels are passed through, never scored). A path outside the data root, or a value that is not a path,
    is an error (:func:`recipes.runtime.inputs.resolve_input_path`). With ``image_size`` (the model's input), an
    image of another aspect ratio is letterboxed, with a warning."""
    try:
        paths = {column: _path_or_none(row, column) for column in ("calib_path", "velodyne_path", "image_path",
                                                                     "label_path")}
    except RowInputError as error:
        return ScoringRow(None, str(error), ())
    if paths["calib_path"] is None:
        return ScoringRow(None, "calib_path is empty: every frame needs its KITTI calibration file (P2, R0_rect, "
                                "Tr_velo_to_cam); fill in calib_path", ())
    if paths["velodyne_path"] is None and paths["image_path"] is None:
        return ScoringRow(None, "neither velodyne_path nor image_path is set: give at least one sensor file", ())
    frame_id = str(row.get("frame_id"))
    try:
        frame = load_frame(frame_id, None, None, paths["calib_path"])
    except KittiFormatError as error:
        return ScoringRow(None, f"calib_path: {error}", ())
    problems: list[str] = []
    for column, reader in (("velodyne_path", _read_points), ("image_path", _read_picture)):
        if paths[column] is None:
            continue
        try:
            frame = reader(frame, paths[column], paths["calib_path"])
        except CalibrationMismatchError as error:  # which of the two is wrong is unknown: nothing can be trusted
            return ScoringRow(None, f"{column}: {error}", ())
        except KittiFormatError as error:
            problems.append(f"{column}: {error}")
    if frame.points is None and frame.image is None:
        return ScoringRow(None, "; ".join(problems) + "; no sensor of the row could be read, so it cannot be scored", ())
    # '; ' separates warnings in the output column, so each warning is one clause list without it
    warnings = [f"{_one_warning(problem)}, so the row is scored without this sensor" for problem in problems]
    if paths["label_path"] is not None and paths["label_path"].is_file():
        try:
            frame = with_labels(frame, paths["label_path"])
        except KittiFormatError as error:
            warnings.append(f"label_path: {_one_warning(str(error))}, so the row is scored without its ground truth")
    if frame.image is not None and image_size is not None:
        letterbox = Letterbox.fit(frame.image.shape[:2], image_size)
        if not letterbox.is_identity_aspect:
            height, width = frame.image.shape[:2]
            warnings.append(f"image_path: {paths['image_path'].name} is {width}×{height}, another aspect ratio than "
                            f"the model's {image_size[1]}×{image_size[0]}, so it was letterboxed (scaled without distortion, "
                            "black borders) and objects look smaller than in training")
    return ScoringRow(frame, None, tuple(warnings))


def _one_warning(text: str) -> str:
    return text.replace("; ", ", ")


def _read_points(frame: Frame, path: Path, calib: Path) -> Frame:
    if not path.is_file():
        raise KittiFormatError(f"{path}: no such velodyne file; fix the path, or leave it empty to go on without "
                               "the LiDAR")
    points = read_velodyne(path)
    if not len(points):
        raise KittiFormatError(f"{path}: the scan holds no points; check that it is the frame's velodyne file")
    return frame._replace(points=points)


def _read_picture(frame: Frame, path: Path, calib: Path) -> Frame:
    if not path.is_file():
        raise KittiFormatError(f"{path}: no such image file; fix the path, or leave it empty to go on without the "
                               "camera")
    picture = read_image(path)
    check_image_fits_calibration(frame.calib, picture.shape[:2], str(path), str(calib))
    if blank_image(picture):
        raise KittiFormatError(f"{path}: every pixel of the image is {int(picture.flat[0])}, so the camera shows nothing "
                               "(dead, covered or not exposed); check the camera, or leave image_path empty to go on "
                               "without it")
    return frame._replace(image=picture)


def frames_from_table(frame: "pl.DataFrame", image_size: tuple[int, int] | None = None) -> list[Frame | str]:
    """Each row of the scoring schema read from disk, or an error text naming the column, the file and the fix
    (:func:`read_scoring_row`; its warnings are dropped here)."""
    rows = [read_scoring_row(row, image_size) for row in frame.iter_rows(named=True)]
    return [row.frame if row.frame is not None else str(row.error) for row in rows]


def datamodule_of(run: "Run") -> DrivingDataModule:
    """The data module a run was trained with (its ``data:`` config)."""
    data = {k: v for k, v in (run.config.get("data") or {}).items() if not str(k).startswith("_")}
    return DrivingDataModule(**data)
