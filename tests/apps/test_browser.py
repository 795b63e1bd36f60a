"""`fusion app` in a real browser: Debian chromium (headless) against a running server, with screenshots.

The screenshots land in ``test-artifacts/screenshots/`` at the repository root (git-ignored) so a person can look
at what the dashboards render.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
START_TIMEOUT_S = 90
RENDER_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _fusion_command() -> list[str]:
    script = Path(sys.executable).parent / "fusion"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "recipes.cli"]


def _wait_healthy(port: int, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    url = f"http://127.0.0.1:{port}/_stcore/health"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"`fusion app` exited with {server.returncode} before answering:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"`fusion app` did not answer {url} within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def app_server(tiny_rec_run, tiny_twin_run, copy_run, tmp_path: Path):
    """``fusion app --headless`` on a free port over a runs root holding the tiny DARE and TWIN runs; yields the
    base URL."""
    port = _free_port()
    log = tmp_path / "fusion-app.log"
    runs_dir = tmp_path / "runs"
    copy_run(tiny_rec_run, runs_dir)
    copy_run(tiny_twin_run, runs_dir)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        # its own session: `fusion app` starts streamlit as a child, and the whole group is stopped at the end
        server = subprocess.Popen(
            [*_fusion_command(), "app", "--headless", "--port", str(port), "--runs-dir", str(runs_dir)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_healthy(port, server, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)


@pytest.fixture
def browser(tmp_path: Path):
    if not CHROMIUM.is_file() or not CHROMEDRIVER.is_file():
        pytest.skip(f"needs Debian chromium and chromedriver at {CHROMIUM} and {CHROMEDRIVER} (`make system-deps`)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(RENDER_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_for_text(driver, texts: list[str]) -> str:
    """Wait until the page body shows every one of ``texts`` and the script has finished running."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def rendered(d) -> bool:
        body = d.find_element(By.TAG_NAME, "body").text
        running = d.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
        return all(t in body for t in texts) and not any("Running" in w.text for w in running)

    try:
        WebDriverWait(driver, RENDER_TIMEOUT_S, poll_frequency=0.5).until(rendered)
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "body").text
        pytest.fail(f"the page never showed {texts} within {RENDER_TIMEOUT_S} s; it shows:\n{body[:3000]}")
    time.sleep(1.5)  # let charts and images finish painting before the screenshot
    return driver.find_element(By.TAG_NAME, "body").text


def _screenshot(driver, name: str, height: int) -> Path:
    """Screenshot of the whole app: the window is made as tall as ``height`` first (Streamlit scrolls inside it)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.set_window_size(1400, height)
    time.sleep(1.5)
    path = SCREENSHOTS / name
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    return path


def _assert_no_exception(driver) -> None:
    from selenium.webdriver.common.by import By

    shown = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"], [data-testid="stAlertContentError"]')
    assert not shown, "the page shows an error:\n" + "\n".join(e.text for e in shown)


def test_dashboards_render_in_headless_chromium(app_server: str, browser, tiny_rec_run, tiny_twin_run):
    dare, twin = tiny_rec_run.run_id, tiny_twin_run.run_id

    browser.get(app_server)
    body = _wait_for_text(browser, ["fusion-suite runs", "2 runs", f"Newest: {twin}", "Metrics across runs"])
    assert "longseq_rec" in body
    _assert_no_exception(browser)
    home = _screenshot(browser, "home.png", 1200)
    assert home.stat().st_size > 10_000

    browser.get(f"{app_server}/Recommendation")
    body = _wait_for_text(browser, ["Long-sequence recommendation", "Click probability", "Retrieved behaviours",
                                    "Explanation", "Score a Parquet file"])
    assert twin in body  # the newest run is shown, compared with its DARE counterpart
    assert "DARE" in body and "TWIN" in body
    _assert_no_exception(browser)
    page = _screenshot(browser, "recommendation.png", 2700)
    assert page.stat().st_size > 10_000
