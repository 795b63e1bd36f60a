"""The driving page: scene view, fault toggles and attribution with AppTest, and a screenshot in headless chromium."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.apps.browser import REPO, assert_no_exception, screenshot, serve_app, wait_for_text
from tests.recipes.driving_interaction.tiny import tiny_driving_env

PAGE = REPO / "apps" / "pages" / "4_Driving.py"


@pytest.fixture(scope="module")
def driving_env(tmp_path_factory):
    """A tiny driving run on tiny generated scenes; yields ``(run, runs root, data root)`` with the env vars set.
    ``min_score 0`` so the barely trained model still draws boxes."""
    root = tmp_path_factory.mktemp("driving-page")
    with tiny_driving_env(root, ("--model.config.min_score", "0.0")) as run:
        yield run, root / "runs", root / "data"


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

    at.toggle(key="driving-fault-camera_failure").set_value(False)
    at.toggle(key="driving-fault-lidar_failure").set_value(False)
    at.toggle(key="driving-fault-camera_blackout").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert (table["φ camera"].abs() < 1e-9).all()  # a black image shows nothing: it is no camera
    assert ((table["φ LiDAR"] - table["score"]).abs() < 1e-6).all()


def test_upload_mode_asks_for_the_calibration_and_a_sensor(driving_env):
    at = AppTest.from_file(str(PAGE), default_timeout=120).run()
    at.radio(key="driving-source").set_value("Upload a KITTI frame").run()
    assert not at.exception
    assert "Upload the calibration file" in at.info[0].value


def _upload(at: AppTest, key: str, name: str, content: bytes, mime: str) -> None:
    at.file_uploader(key=key).set_value((name, content, mime))


def test_a_jpeg_upload_is_scored_and_a_wrong_calibration_is_a_clear_error(driving_env):
    import io

    import numpy as np
    from PIL import Image

    from recipes.driving_interaction.data import datamodule_of, scoring_frame

    run, _, _ = driving_env
    row = scoring_frame(datamodule_of(run).root(), "test", limit=1).row(0, named=True)
    picture = Image.open(row["image_path"]).convert("RGB")
    jpeg = io.BytesIO()
    picture.save(jpeg, format="JPEG", quality=90)
    calib = open(row["calib_path"], "rb").read()

    at = AppTest.from_file(str(PAGE), default_timeout=120).run()
    at.radio(key="driving-source").set_value("Upload a KITTI frame").run()
    assert at.file_uploader(key="driving-image").allowed_type == [".png", ".jpg", ".jpeg"]
    _upload(at, "driving-calib", "../../calib.txt", calib, "text/plain")  # a hostile client name is never a path
    _upload(at, "driving-image", "street.JPG", jpeg.getvalue(), "image/jpeg")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Labelled objects"]) == 0 and "Detections" in metrics  # scored from the camera alone
    assert at.subheader[0].value == "Sensor faults"

    # the same photo turned portrait: its size cannot belong to this calibration, and the page says so
    portrait = io.BytesIO()
    Image.fromarray(np.asarray(picture).transpose(1, 0, 2)).save(portrait, format="JPEG")
    _upload(at, "driving-image", "portrait.jpg", portrait.getvalue(), "image/jpeg")
    at.run()
    assert not at.exception
    (error,) = at.error
    assert error.value.startswith("image_path: image_path.jpg: the image is 96×320 pixels") and "principal point" in error.value
    assert "/tmp" not in error.value


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
