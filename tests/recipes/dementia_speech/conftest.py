"""Fixtures: a tiny ADReSS-layout folder written by hand, and tiny WAV writers."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.recipes.dementia_speech.dementia_helpers import write_adress

sf = pytest.importorskip("soundfile")


@pytest.fixture
def adress_root(tmp_path: Path) -> Path:
    """Two training speakers per class and two test speakers, in the ADReSS-IS2020 layout."""
    return write_adress(tmp_path / "ADReSS")
