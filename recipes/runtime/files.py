"""Atomic cache writes: a killed process never leaves a half-written file where a later one would read it.

numpy only, so data-set fetchers (``fusion data``) can use them without importing torch or Lightning.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

__all__ = ["atomic_save", "atomic_write_text"]


def atomic_save(array: np.ndarray, file: str | Path) -> Path:
    """``np.save`` to a temporary name beside ``file``, then rename: readers never see a partial array."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{uuid.uuid4().hex[:8]}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, file)
    return file


def atomic_write_text(file: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary name beside ``file``, then rename."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, file)
    return file
