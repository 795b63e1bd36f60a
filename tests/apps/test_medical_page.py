"""The medical (MoRE) page against a tiny trained run: AppTest for behaviour, headless chromium for a screenshot."""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

from tests.apps.apptest import open_page as open_app_page
from tests.apps.browser import assert_no_exception, screenshot, serve_app, wait_for_text
from tests.recipes.medical_more.tiny import tiny_medical_env

PAGE = "pages/2_Medical.py"
TIMEOUT_S = 240

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def medical_run(tmp_path_factory: pytest.TempPathFactory):
    """The tiny run, with ``FUSION_DATA_DIR`` set while the page tests read its cohort."""
    with tiny_medical_env(tmp_path_factory.mktemp("medical-page")) as run:
        yield run


def open_page(monkeypatch: pytest.MonkeyPatch, root: Path) -> AppTest:
    return open_app_page(monkeypatch, root, PAGE, TIMEOUT_S)


def test_page_without_runs_says_how_to_train_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    at = open_page(monkeypatch, tmp_path)
    assert at.title[0].value == "Chest X-ray, ECG and report"
    assert "fusion train medical --config quick" in at.info[0].value


def test_page_scores_a_cohort_patient_and_removes_modalities(medical_run, monkeypatch: pytest.MonkeyPatch):
    at = open_page(monkeypatch, medical_run.path.parents[1])
    assert not at.error, [e.value for e in at.error]
    patients = at.selectbox(key="medical-patient").options
    at.selectbox(key="medical-patient").set_value(patients[1]).run()
    assert not at.exception

    table = next(d.value for d in at.dataframe if "finding" in d.value.columns)
    assert list(table["finding"]) == ["cardiomegaly", "effusion", "opacity", "normal"]
    assert {"without X-ray", "without ECG", "without Report"} <= set(table.columns)
    cards = {m.label.split(" (")[0]: float(m.value) for m in at.metric}
    assert cards["cardiomegaly"] == pytest.approx(table["probability"][0], abs=1e-3)

    # switching the ECG off gives exactly the "without ECG" probabilities
    without_ecg = list(table["without ECG"])
    at.checkbox(key="medical-use-ecg").uncheck().run()
    assert not at.exception
    after = next(d.value for d in at.dataframe if "finding" in d.value.columns)
    assert list(after["probability"]) == pytest.approx(without_ecg, abs=1e-6)
    assert "without ECG" not in after.columns
    assert any("No ECG used" in i.value for i in at.info)

    similar = next(d.value for d in at.dataframe if "similarity" in d.value.columns)
    assert len(similar) == 5 and list(similar["similarity"]) == sorted(similar["similarity"], reverse=True)


def _upload(at: AppTest, key: str, files) -> None:
    at.file_uploader(key=key).set_value(files)


def _fusion_temp_folders() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("fusion-medical-*")}


def test_uploads_are_saved_under_generated_names_and_scored_with_what_could_be_read(medical_run, monkeypatch, tmp_path):
    import numpy as np

    from recipes.medical_more.readers import load_ecg, write_ecg_wfdb
    from recipes.runtime.registry import get_recipe

    demo = pl.read_parquet(get_recipe("medical_more").demo_input(medical_run, tmp_path / "demo" / "demo.parquet"))
    xray = Path(demo["xray_path"][0]).read_bytes()
    record = write_ecg_wfdb(load_ecg(demo["ecg_path"][0], 50, 500), tmp_path / "rec" / "00001_lr", 50)
    nan = write_ecg_wfdb(np.full((12, 500), np.nan), tmp_path / "rec" / "nan", 50)
    before = _fusion_temp_folders()
    at = open_page(monkeypatch, medical_run.path.parents[1])
    at.radio(key="medical-source").set_value("Upload files").run()
    # a hostile client file name is never a path: nothing is written outside the page's temporary folder
    _upload(at, "medical-xray", ("../../escaped.png", xray, "image/png"))
    _upload(at, "medical-ecg", [("../../evil.hea", record.with_suffix(".hea").read_bytes(), "text/plain"),
                                ("00001_lr.dat", record.with_suffix(".dat").read_bytes(), "application/octet-stream")])
    at.text_area(key="medical-report").set_value("FINDINGS: The heart is enlarged. IMPRESSION: Cardiomegaly.").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Scored from: X-ray + ECG + Report" in c.value for c in at.caption)
    assert not list(tmp_path.parent.rglob("escaped.png")) and not list(tmp_path.parent.rglob("evil.hea"))
    assert _fusion_temp_folders() == before  # the temporary folder is removed after reading

    # an all-NaN ECG: scored from the X-ray and the report, and the page says why the ECG was left out
    _upload(at, "medical-ecg", [("nan.hea", nan.with_suffix(".hea").read_bytes(), "text/plain"),
                                ("nan.dat", nan.with_suffix(".dat").read_bytes(), "application/octet-stream")])
    at.run()
    assert not at.exception and not at.error
    assert any("scored without ecg_path" in w.value and "no finite sample" in w.value for w in at.warning)
    assert any("Scored from: X-ray + Report" in c.value for c in at.caption)

    # a file of a type no reader takes: a friendly message, no exception
    _upload(at, "medical-xray", ("scan.tif", b"II*\0", "image/tiff"))
    at.run()
    assert not at.exception
    assert any("'.tif' cannot be read" in e.value and ".png" in e.value for e in at.error)


@pytest.fixture
def medical_server(medical_run, tmp_path: Path):
    with serve_app(medical_run.path.parents[1], tmp_path / "fusion-app.log") as url:
        yield url


@pytest.mark.browser
def test_medical_page_renders_in_headless_chromium(medical_server: str, browser):
    browser.get(f"{medical_server}/Medical")
    wait_for_text(browser, ["Chest X-ray, ECG and report", "Finding probabilities", "What changes when a modality is removed",
                             "12-lead ECG", "Most similar cases in the cohort"])
    assert_no_exception(browser)
    screenshot(browser, "medical.png", 2300)
