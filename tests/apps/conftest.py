from __future__ import annotations

from pathlib import Path

import pytest

from tests.apps.browser import open_browser


@pytest.fixture
def browser(tmp_path: Path):
    """A headless chromium (selenium WebDriver) for one test."""
    with open_browser(tmp_path / "chromium-profile") as driver:
        yield driver
