"""The home and recommendation pages of `fusion app` in headless chromium, with screenshots
(``test-artifacts/screenshots/home.png``, ``recommendation.png``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.apps.browser import assert_no_exception, screenshot, serve_app, wait_for_text

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def app_server(tiny_rec_run, tiny_twin_run, copy_run, tmp_path: Path):
    """``fusion app`` over a runs root holding the tiny DARE and TWIN runs; yields the base URL."""
    runs_dir = tmp_path / "runs"
    copy_run(tiny_rec_run, runs_dir)
    copy_run(tiny_twin_run, runs_dir)
    with serve_app(runs_dir, tmp_path / "fusion-app.log") as url:
        yield url


def test_dashboards_render_in_headless_chromium(app_server: str, browser, tiny_rec_run, tiny_twin_run):
    dare, twin = tiny_rec_run.run_id, tiny_twin_run.run_id

    browser.get(app_server)
    body = wait_for_text(browser, ["fusion-suite runs", "2 runs", f"Newest: {twin}", "Metrics across runs"])
    assert "longseq_rec" in body
    assert_no_exception(browser)
    screenshot(browser, "home.png", 1200)

    browser.get(f"{app_server}/Recommendation")
    body = wait_for_text(browser, ["Long-sequence recommendation", "Click probability", "Retrieved behaviours",
                                    "Explanation", "Score a Parquet file"])
    assert twin in body  # the newest run is shown, compared with its DARE counterpart
    assert "DARE" in body and "TWIN" in body
    assert_no_exception(browser)
    screenshot(browser, "recommendation.png", 2700)
