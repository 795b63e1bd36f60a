"""The ``driving_interaction`` recipe (alias ``driving``): camera-LiDAR 3D detection trained, scored and explained
by the runtime.

Scoring input: one row per frame, ``frame_id`` plus any of ``velodyne_path`` (KITTI ``.bin``), ``image_path``
(PNG or JPEG) and ``calib_path`` (KITTI calib ``.txt``, required); ``label_path`` is passed through when present
(a label file that cannot be read only adds a warning). A missing column or a null path means the sensor is absent
for that frame and the model runs without it; so does a blank image (every pixel the same: a dead or covered
camera), with a ``warnings`` entry. Every path is resolved under the data root
(:func:`recipes.runtime.inputs.resolve_input_path`). An image of another aspect ratio than the model's input is
letterboxed, with a ``warnings`` entry; a calibration that does not fit the image, or is non-finite or singular, is
an ``error``. Each frame is scored alone, so its score depends on its row only.
The ``score`` column is the **highest detection confidence in the frame** (0.0 when nothing is detected): it
ranks frames by how sure the model is that something is there. The detections themselves (one row per box)
come from :func:`recipes.driving_interaction.explain.detections_table`; the dashboard and ``fusion explain`` show them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from recipes.driving_interaction.config import DATA_GEOMETRY
from recipes.runtime.recipe import Recipe

if TYPE_CHECKING:
    from recipes.driving_interaction.module import DrivingModule
    from recipes.runtime.runs import Run

__all__ = ["DrivingRecipe", "RECIPE"]


@dataclass
class DrivingRecipe(Recipe):
    """Camera-LiDAR 3D detection: ``interaction`` (DeepInteraction++-style) and the baselines ``lidar``,
    ``camera`` and ``concat`` (``--model.config.variant``). The data's camera input size and BEV extent are linked
    into the model's config (:data:`recipes.driving_interaction.config.DATA_GEOMETRY`)."""

    def card_notes(self, run: "Run") -> dict[str, str]:
        notes = super().card_notes(run)
        notes["Intended use"] = (
            "Research and demonstration of camera-LiDAR interaction for 3D detection on generated KITTI-format road "
            "scenes, and of how detections degrade under sensor faults. Not a driving function: it has never seen a "
            "real sensor and must not be used to make decisions about real traffic."
        )
        notes["Limitations"] = (
            "Trained on synthetic box-shaped objects with a flat road and one forward camera; real KITTI frames "
            "differ in appearance, point density and object shape, so transfer is not expected. " + notes["Limitations"]
        )
        return notes

    # --- scoring --------------------------------------------------------------------------------------------
    def score_frame(self, predictor: "DrivingModule", frame: pl.DataFrame) -> pl.DataFrame:
        from recipes.driving_interaction.data import read_scoring_row

        rows = [read_scoring_row(row, predictor.config.image_size) for row in frame.iter_rows(named=True)]
        scores: list[float | None] = [None] * frame.height
        errors = [row.error for row in rows]
        warnings = ["; ".join(row.warnings) or None for row in rows]
        good = [i for i, row in enumerate(rows) if row.frame is not None]
        if good:
            # one frame per forward pass: a batch's shape changes how its kernels round, and a score must not
            # depend on the rows beside it (chunk sizes 1, 7 and the default give the same bytes)
            detections = predictor.detect_frames([rows[i].frame for i in good], batch_size=1)
            for i, det in zip(good, detections):
                best = float(det.scores.max()) if len(det.scores) else 0.0
                if math.isfinite(best):
                    scores[i] = best
                else:
                    errors[i] = "the detector returned a non-finite confidence for this frame; check its sensor files"
        return pl.DataFrame({"score": pl.Series(scores, dtype=pl.Float64), "warnings": pl.Series(warnings, dtype=pl.Utf8),
                             "error": pl.Series(errors, dtype=pl.Utf8)})

    def demo_input(self, run: "Run", path: Path) -> Path:
        """The run's test frames in the scoring schema, their files copied next to ``path`` into ``<stem>_files/``
        and named relative to ``path``'s folder, the data root ``fusion score`` confines them to by default."""
        import shutil

        from recipes.driving_interaction.data import datamodule_of, scoring_frame

        files = path.parent / f"{path.stem}_files"
        table = scoring_frame(datamodule_of(run).root(), "test")
        columns = ("velodyne_path", "image_path", "calib_path", "label_path")
        copied: dict[str, list[str]] = {column: [] for column in columns}
        for row in table.iter_rows(named=True):
            for column in columns:
                source = Path(row[column])
                target = files / column.removesuffix("_path") / source.name
                if source.is_file():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)
                copied[column].append(str(target.relative_to(path.parent)))
        path.parent.mkdir(parents=True, exist_ok=True)
        table.with_columns(pl.Series(column, values, dtype=pl.Utf8) for column, values in copied.items()).write_parquet(path)
        return path

    # --- explaining -----------------------------------------------------------------------------------------
    def explain(self, run: "Run", input_path: Path | None, out_path: Path, *, max_examples: int = 4) -> Path:
        from recipes.driving_interaction.data import datamodule_of, scoring_frame
        from recipes.driving_interaction.explain import write_report
        from recipes.runtime.inputs import data_root

        if input_path is not None:
            # the input's paths are read as `fusion score` reads them: relative to, and confined to, its folder
            table, source, root = pl.read_parquet(input_path), f"`{Path(input_path).name}`", Path(input_path).resolve().parent
        else:
            table, source = scoring_frame(datamodule_of(run).root(), "test", limit=max_examples), "the run's test split"
            root = None
        with data_root(root):
            return write_report(self.load_predictor(run), run, table, source, out_path, title=self.name,
                                max_examples=max_examples)


RECIPE = DrivingRecipe(
    name="driving_interaction",
    configs_dir=Path(__file__).parent / "configs",
    module="recipes.driving_interaction.module:DrivingModule",
    datamodule="recipes.driving_interaction.data:DrivingDataModule",
    variant_field="variant",
    aliases=("driving",),
    links=tuple((f"data.{name}", f"model.config.{name}") for name in DATA_GEOMETRY),
    modality_columns={"camera": ("image_path",), "lidar": ("velodyne_path",)},
    score_columns=("frame_id",),
    passthrough=("frame_id", "label_path"),
    datasets=("driving-scenes",),
    description=(
        "Camera-LiDAR 3D object detection with a representational interaction encoder and a predictive "
        "interaction decoder (DeepInteraction++), with LiDAR-only, camera-only and early-concatenation baselines."
    ),
)
