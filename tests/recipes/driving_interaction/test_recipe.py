"""The recipe end to end: training into a run, scoring with malformed frames, the explain report, the configs."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recipes.driving_interaction.config import DrivingConfig
from recipes.driving_interaction.data import datamodule_of, frames_from_table, scoring_frame
from recipes.driving_interaction.explain import detection_shapley
from recipes.driving_interaction.recipe import RECIPE as DRIVING
from recipes.runtime.registry import get_recipe
from recipes.runtime.score import DEFAULT_CHUNK_SIZE, score_file
from recipes.runtime.train import parse_config


def test_registered_under_both_names():
    assert get_recipe("driving") is DRIVING and get_recipe("driving_interaction") is DRIVING
    assert DRIVING.datasets == ("driving-scenes",)


def test_training_writes_a_run_with_detection_metrics(tiny_driving_run):
    metrics = tiny_driving_run.metrics
    for key in ("test/map", "test/nds", "test/ate", "test/ase", "test/aoe", "train_seconds"):
        assert key in metrics and np.isfinite(metrics[key])
    for sensor in ("camera", "lidar"):  # the robustness table
        assert 0 <= metrics[f"test/map@without_{sensor}"] <= 1 and np.isfinite(metrics[f"test/nds@without_{sensor}"])
    assert 0 <= metrics["test/map"] <= 1 and 0 <= metrics["test/nds"] <= 1
    assert tiny_driving_run.model_path.is_file()
    module = tiny_driving_run.load_module()
    assert module.config.variant == "interaction" and module.config.grid_size == (8, 8)
    # the data's camera input size reached the model's config through the recipe's links
    assert module.config.image_size == (24, 80) == tuple(tiny_driving_run.config["data"]["image_size"])


def test_scoring_keeps_every_row_and_names_bad_files(tiny_driving_run, tmp_path):
    demo = DRIVING.demo_input(tiny_driving_run, tmp_path / "demo.parquet")
    frame = pl.read_parquet(demo)
    assert frame.columns[:4] == ["frame_id", "velodyne_path", "image_path", "calib_path"] and frame.height >= 1
    good = frame.row(0, named=True)
    truncated = tmp_path / "000900.bin"
    truncated.write_bytes((tmp_path / good["velodyne_path"]).read_bytes()[:-6])
    bad_calib = tmp_path / "000901.txt"
    bad_calib.write_text("P2: 1 2 3\n")
    rows = [
        good,
        {**good, "frame_id": "truncated", "velodyne_path": str(truncated)},
        {**good, "frame_id": "bad-calib", "calib_path": str(bad_calib)},
        {**good, "frame_id": "camera-only", "velodyne_path": None},
        {**good, "frame_id": "no-calib", "calib_path": None},
        {**good, "frame_id": "no-image-file", "image_path": str(tmp_path / "missing.png")},
    ]
    table = pl.DataFrame(rows, schema=frame.schema)
    table.write_parquet(tmp_path / "in.parquet")
    out = pl.read_parquet(score_file("driving", tiny_driving_run, tmp_path / "in.parquet", tmp_path / "out.parquet",
                                     chunk_size=4, progress=False))
    assert out.height == len(rows) and out["row"].to_list() == list(range(len(rows)))
    assert out["frame_id"].to_list() == [r["frame_id"] for r in rows]
    errors, warnings = out["error"].to_list(), out["warnings"].to_list()
    assert errors[0] is None and errors[3] is None  # a camera-only frame is scored without the LiDAR
    assert warnings[0] is None and warnings[3] is None
    assert 0 <= out["score"][0] <= 1 and 0 <= out["score"][3] <= 1
    # an unreadable sensor file costs the row that sensor, with a warning naming the column, the file and the fix
    assert errors[1] is None and warnings[1].startswith("velodyne_path: ") and "000900.bin" in warnings[1]
    assert "truncated" in warnings[1] and "scored without this sensor" in warnings[1]
    assert errors[5] is None and "image_path: " in warnings[5] and "missing.png: no such image file" in warnings[5]
    assert "000901.txt" in errors[2] and "P2 has 3 numbers" in errors[2] and errors[2].startswith("calib_path: ")
    assert "calib_path" in errors[4]
    assert out["score"][2] is None and out["score"][4] is None


def test_shapley_values_add_up(tiny_driving_run):
    module = DRIVING.load_predictor(tiny_driving_run)
    module.config.min_score = 0.0  # an untrained-size model: keep every query so there is something to explain
    table = scoring_frame(datamodule_of(tiny_driving_run).root(), "test", limit=1).drop("label_path")
    (frame,) = frames_from_table(table)
    (detections,) = module.detect_frames([frame])
    assert len(detections.scores)
    values = detection_shapley(module, frame, detections)
    np.testing.assert_allclose(values["camera"] + values["lidar"], values["full"] - values["base"], atol=1e-9)
    np.testing.assert_allclose(values["full"], detections.scores, atol=1e-6)
    assert not values["base"].any()  # no sensor, no detection: the two sensors share each whole score
    failed = frame._replace(points=None)  # a failed LiDAR contributes nothing; the camera gets each whole score
    (camera_only,) = module.detect_frames([failed])
    values = detection_shapley(module, failed, camera_only)
    assert not values["lidar"].any()
    np.testing.assert_allclose(values["camera"], camera_only.scores, atol=1e-6)


def test_explain_writes_a_report_with_plots(tiny_driving_run, tmp_path):
    out = DRIVING.explain(tiny_driving_run, None, tmp_path / "report.html", max_examples=1)
    html = out.read_text()
    assert "data:image/png;base64" in html and "Frame 000014" in html  # the first of the 2 test frames of 16
    assert "Shapley" in html or "No detection above the score threshold" in html


@pytest.mark.parametrize("name", ["quick", "full"])
def test_shipped_configs_match_the_entry_points(name):
    config = parse_config("driving", [name])
    model = DrivingConfig(**config["model"]["config"])  # every key a field of the one config
    assert model.variant == "interaction"
    assert set(config["data"]) >= {"image_size", "x_range", "y_range"}
    DRIVING.datamodule_class(**config["data"])


def test_full_config_holds_only_what_differs_from_quick():
    assert [p.name for p in DRIVING.config_chain("full")] == ["quick.yaml", "full.yaml"]
    quick, full = parse_config("driving", ["quick"]), parse_config("driving", ["full"])
    assert full["model"]["config"]["dim"] == 64 and quick["model"]["config"]["dim"] == 32
    assert full["data"]["limit_frames"] is None and quick["data"]["limit_frames"] is None
    assert full["trainer"]["max_epochs"] == 40 and quick["trainer"]["max_epochs"] == 6
    assert full["data"]["image_size"] == quick["data"]["image_size"]


def test_a_frame_scores_the_same_wherever_it_sits(tiny_driving_run, tmp_path):
    """Each frame is scored alone with its point subsample seeded by its id: chunk sizes 1, 7 and the default give
    byte-identical output files, and a frame repeated between others scores the same everywhere."""
    demo = pl.read_parquet(DRIVING.demo_input(tiny_driving_run, tmp_path / "demo.parquet"))
    first = demo.head(1)
    broken = first.with_columns(pl.lit("broken").alias("frame_id"), pl.lit("missing.bin").alias("velodyne_path"))
    # the same frame at many positions, between others and next to a row that fails (its chunk falls back to rows)
    table = pl.concat([first, demo, broken, first, demo, first, demo, broken, first, demo, first])
    table.write_parquet(tmp_path / "in.parquet")
    outputs = []
    for chunk_size in (1, 7, DEFAULT_CHUNK_SIZE):
        out = score_file("driving", tiny_driving_run, tmp_path / "in.parquet", tmp_path / f"out-{chunk_size}.parquet",
                         chunk_size=chunk_size, progress=False)
        outputs.append(pl.read_parquet(out))
    for other in outputs[1:]:
        assert other.equals(outputs[0])
        assert other["score"].to_numpy().tobytes() == outputs[0]["score"].to_numpy().tobytes()
    scores = outputs[0]["score"].to_list()
    repeated = {scores[i] for i, fid in enumerate(outputs[0]["frame_id"].to_list()) if fid == first["frame_id"][0]}
    assert len(repeated) == 1 and None not in repeated
    assert outputs[0].filter(pl.col("frame_id") == "broken")["error"].str.contains("missing.bin").all()


def test_point_subsample_depends_on_the_frame_id_only(tiny_driving_run):
    from recipes.driving_interaction.data import frame_seed, frame_to_example

    frame = frames_from_table(scoring_frame(datamodule_of(tiny_driving_run).root(), "test", limit=1))[0]
    assert frame.points is not None and len(frame.points) > 50
    a = frame_to_example(frame, (24, 80), (0.0, 48.0), (-24.0, 24.0), max_points=50)
    b = frame_to_example(frame, (24, 80), (0.0, 48.0), (-24.0, 24.0), max_points=50)
    other = frame_to_example(frame._replace(frame_id="another-id"), (24, 80), (0.0, 48.0), (-24.0, 24.0), max_points=50)
    assert frame_seed(frame.frame_id) == frame_seed(str(frame.frame_id))
    assert np.array_equal(a["points"].numpy(), b["points"].numpy())
    assert not np.array_equal(a["points"].numpy(), other["points"].numpy())  # the id, not a constant, picks them
