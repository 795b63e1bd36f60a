"""Opening a dashboard page headlessly with ``streamlit.testing.v1.AppTest`` over a given runs folder."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

HOME = Path(__file__).resolve().parents[2] / "apps" / "Home.py"


def open_page(monkeypatch: pytest.MonkeyPatch, root: Path, page: str, timeout: float) -> AppTest:
    """Run the app on runs folder ``root``, switch to ``page`` (e.g. ``pages/2_Medical.py``) and check that
    neither page raised."""
    monkeypatch.setenv("FUSION_RUNS_DIR", str(root))
    at = AppTest.from_file(str(HOME), default_timeout=timeout).run()
    at.switch_page(page).run()
    assert not at.exception, "\n".join(e.value for e in at.exception)
    return at
