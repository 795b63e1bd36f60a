"""Driving `fusion app` in a real browser: Debian chromium (headless) against a running server, with screenshots.

Shared by the page tests: :func:`serve_app` starts ``fusion app --headless`` over a runs folder, the ``browser`` and
``fusion_app`` fixtures (``tests/apps/conftest.py``) wrap these helpers. Screenshots land in
``test-artifacts/screenshots/`` at the repository root (git-ignored) so a person can look at what the pages render.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
START_TIMEOUT_S = 90
RENDER_TIMEOUT_S = 180
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,1000",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fusion_command() -> list[str]:
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


@contextlib.contextmanager
def serve_app(runs_dir: Path, log: Path) -> Iterator[str]:
    """``fusion app --headless`` on a free port over ``runs_dir``; yields the base URL and always stops the server."""
    port = free_port()
    with log.open("w") as out:
        # its own session: `fusion app` starts streamlit as a child, and the whole group is stopped at the end
        server = subprocess.Popen(
            [*fusion_command(), "app", "--headless", "--port", str(port), "--runs-dir", str(runs_dir)],
            cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
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


@contextlib.contextmanager
def open_browser(profile: Path) -> Iterator[object]:
    """A headless Debian chromium driven by selenium (skips the test when chromium is not installed)."""
    if not CHROMIUM.is_file() or not CHROMEDRIVER.is_file():
        pytest.skip(f"needs Debian chromium and chromedriver at {CHROMIUM} and {CHROMEDRIVER} (`make system-deps`)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    from selenium.common.exceptions import WebDriverException

    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    except WebDriverException:  # chromium's start-up can lose a race on a loaded machine; a second start is fair
        time.sleep(2)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(RENDER_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_text(driver, texts: list[str]) -> str:
    """Wait until the page body shows every one of ``texts`` and the script has finished running; returns the text."""
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


def screenshot(driver, name: str, height: int) -> Path:
    """Screenshot of the whole app: the window is made as tall as ``height`` first (Streamlit scrolls inside it)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.set_window_size(1400, height)
    time.sleep(1.5)
    path = SCREENSHOTS / name
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    assert path.stat().st_size > 10_000, f"{path} is almost empty"
    return path


def assert_no_exception(driver) -> None:
    from selenium.webdriver.common.by import By

    shown = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"], [data-testid="stAlertContentError"]')
    assert not shown, "the page shows an error:\n" + "\n".join(e.text for e in shown)
