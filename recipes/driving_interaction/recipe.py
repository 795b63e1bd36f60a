"""The ``driving_interaction`` recipe (alias ``driving``): camera-LiDAR 3D detection trained, scored and explained
by the runtime.

Scoring input: one row per frame, ``frame_id`` plus any of ``velodyne_path`` (KITTI ``.bin``), ``image_path``
(PNG) and ``calib_path`` (KITTI calib ``.txt``, required); ``label_path`` is passed through when present. A missing
column or a null path means the sensor is absent for that frame and the model runs without it.
The ``score`` column is the **highest detection confidence in the frame** (0.0 when nothing is detected): it
ranks frames by how sure the model is that something is there. The detections themselves (one row per box)
come from :func:`recipes.driving_interaction.explain.detections_table`; the dashboard and ``fusion explain`` show them.
"""
from __future__ import annotations

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
        from recipes.driving_interaction.data import frames_from_table

        loaded = frames_from_table(frame)
        scores: list[float | None] = [None] * frame.height
        errors: list[str | None] = [None] * frame.height
        good = [i for i, f in enumerate(loaded) if not isinstance(f, str)]
        for i, f in enumerate(loaded):
            if isinstance(f, str):
                errors[i] = f
        if good:
            detections = predictor.detect_frames([loaded[i] for i in good])
            for i, det in zip(good, detections):
                scores[i] = float(det.scores.max()) if len(det.scores) else 0.0
        return pl.DataFrame({"score": pl.Series(scores, dtype=pl.Float64), "error": pl.Series(errors, dtype=pl.Utf8)})

    def demo_input(self, run: "Run", path: Path) -> Path:
        from recipes.driving_interaction.data import datamodule_of, scoring_frame

        path.parent.mkdir(parents=True, exist_ok=True)
        scoring_frame(datamodule_of(run).root(), "test").write_parquet(path)
        return path

    # --- explaining -----------------------------------------------------------------------------------------
    def explain(self, run: "Run", input_path: Path | None, out_path: Path, *, max_examples: int = 4) -> Path:
        from recipes.driving_interaction.data import datamodule_of, scoring_frame
        from recipes.driving_interaction.explain import write_report

        if input_path is not None:
            table, source = pl.read_parquet(input_path), f"`{Path(input_path).name}`"
        else:
            table, source = scoring_frame(datamodule_of(run).root(), "test", limit=max_examples), "the run's test split"
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
    score_columns=("frame_id",),
    passthrough=("frame_id", "label_path"),
    datasets=("driving-scenes",),
    description=(
        "Camera-LiDAR 3D object detection with a representational interaction encoder and a predictive "
        "interaction decoder (DeepInteraction++), with LiDAR-only, camera-only and early-concatenation baselines."
    ),
)
