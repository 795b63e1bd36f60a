"""The driving page: scene view, fault toggles and attribution with AppTest, and a screenshot in headless chromium."""
from __future__ import annotations

import os

import pytest
from streamlit.testing.v1 import AppTest

from tests.apps.browser import REPO, assert_no_exception, screenshot, serve_app, wait_for_text

PAGE = REPO / "apps" / "pages" / "4_Driving.py"
TINY = [
    "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
    "--model.dim", "8", "--model.num_heads", "2", "--model.grid_size", "[8, 8]", "--model.image_size", "[16, 48]",
    "--model.decoder_layers", "2", "--model.num_queries", "4", "--model.min_score", "0.0",
    "--data.num_frames", "8", "--data.limit_frames", "null", "--data.batch_size", "4", "--data.image_size", "[16, 48]",
]


@pytest.fixture(scope="module")
def driving_env(tmp_path_factory):
    """A tiny driving run on tiny generated scenes; yields ``(runs root, data root)`` with the env vars set."""
    from recipes.runtime.train import train

    root = tmp_path_factory.mktemp("driving-page")
    saved = {k: os.environ.get(k) for k in ("FUSION_DATA_DIR", "FUSION_RUNS_DIR")}
    os.environ["FUSION_DATA_DIR"] = str(root / "data")
    os.environ["FUSION_RUNS_DIR"] = str(root / "runs")
    try:
        run = train("driving", ["--config", "quick", *TINY])
        yield run, root / "runs", root / "data"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_page_without_runs_explains_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSION_RUNS_DIR", str(tmp_path))
    at = AppTest.from_file(str(PAGE), default_timeout=60).run()
    assert not at.exception
    assert "fusion train driving" in at.info[0].value


def test_scene_faults_and_attribution(driving_env):
    run, _, _ = driving_env
    at = AppTest.from_file(str(PAGE), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Camera-LiDAR 3D detection"
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Labelled objects"]) >= 1 and int(metrics["Detections (clean)"]) >= 1
    assert int(metrics["Detections"]) == int(metrics["Detections (clean)"])
    table = at.dataframe[0].value
    assert {"class", "score", "φ LiDAR", "φ camera"} <= set(table.columns)
    # with min_score 0 every query is kept: the Shapley values must add up to score - value with no sensor (0 here)
    assert ((table["φ LiDAR"] + table["φ camera"] - table["score"]).abs() < 1e-6).all()

    at.toggle(key="driving-fault-lidar_failure").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Detections (with faults)" in {m.label for m in at.metric}
    table = at.dataframe[0].value
    assert (table["φ LiDAR"].abs() < 1e-9).all()  # a failed LiDAR can contribute nothing

    at.toggle(key="driving-fault-camera_failure").set_value(True).run()
    assert "Both sensors are off" in at.warning[0].value


def test_upload_mode_asks_for_the_calibration_and_a_sensor(driving_env):
    at = AppTest.from_file(str(PAGE), default_timeout=120).run()
    at.radio(key="driving-source").set_value("Upload a KITTI frame").run()
    assert not at.exception
    assert "Upload the calibration file" in at.info[0].value


@pytest.mark.browser
@pytest.mark.slow
def test_driving_page_in_headless_chromium(driving_env, browser, tmp_path):
    _, runs_dir, _ = driving_env
    with serve_app(runs_dir, tmp_path / "fusion-app.log") as url:
        browser.get(f"{url}/Driving")
        body = wait_for_text(browser, ["Camera-LiDAR 3D detection", "Sensor faults", "Per-object attribution"])
        assert "Labelled objects" in body
        assert_no_exception(browser)
        screenshot(browser, "driving.png", 2000)
