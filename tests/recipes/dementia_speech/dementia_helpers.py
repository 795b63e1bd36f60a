"""Small writers shared by the dementia tests."""
from __future__ import annotations

import numpy as np


def tone(seconds: float = 1.0, rate: int = 16_000, freq: float = 220.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def cha(words: str) -> str:
    return f"@Begin\n@Participants:\tPAR Participant\n*INV:\tdescribe the picture .\n*PAR:\t{words}\n@End\n"
