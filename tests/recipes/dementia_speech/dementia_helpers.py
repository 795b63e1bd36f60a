"""Small writers of recordings, CHAT files and an ADReSS-layout folder for the dementia recipe tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def tone(seconds: float = 1.0, rate: int = 16_000, freq: float = 220.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def speech(text: str, seconds: float = 1.0, rate: int = 16_000) -> np.ndarray:
    """``text`` spoken by espeak-ng at ``rate``, padded or cut to ``seconds`` — a recording the VAD hears speech in;
    a tone when espeak-ng is not installed."""
    import io
    import shutil
    import subprocess

    import soundfile as sf
    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        return tone(seconds, rate)
    wav = subprocess.run(["espeak-ng", "-v", "en-us", "-s", "170", "--stdout", text], capture_output=True, check=True).stdout
    audio, source_rate = sf.read(io.BytesIO(wav), dtype="float32")
    audio = resample_poly(audio, rate, source_rate).astype(np.float32)[: int(seconds * rate)]
    return np.pad(audio, (0, int(seconds * rate) - len(audio))) * 0.8 / max(float(np.abs(audio).max()), 1e-6)


def cha(words: str) -> str:
    return f"@Begin\n@Participants:\tPAR Participant\n*INV:\tdescribe the picture .\n*PAR:\t{words}\n@End\n"


def write_adress(root: Path) -> Path:
    """Two training speakers per class and two test speakers, in the ADReSS-IS2020 layout, written into ``root``."""
    import soundfile as sf

    for group, speakers in (("cc", ("S001", "S002")), ("cd", ("S003", "S004"))):
        for i, speaker in enumerate(speakers):
            wav = root / "train" / "Full_wave_enhanced_audio" / group / f"{speaker}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            sf.write(wav, speech("the boy is taking a cookie", 1.5), 16_000)
            text = root / "train" / "transcription" / group / f"{speaker}.cha"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text(cha("the boy [/] boy is &uh taking (..) a cookie ." if group == "cd" else "the boy is taking a cookie ."))
    (root / "train" / "cc_meta_data.txt").write_text("ID   ; age; gender; mmse\nS001 ; 64 ; 0 ; 29\nS002 ; 70 ; 1 ; NA\n")
    (root / "train" / "cd_meta_data.txt").write_text("ID   ; age; gender; mmse\nS003 ; 73 ; 1 ; 17\nS004 ; 68 ; 0 ; 21\n")
    test_audio = root / "test" / "Full_wave_enhanced_audio"
    test_audio.mkdir(parents=True)
    for speaker in ("S160", "S161"):
        sf.write(test_audio / f"{speaker}.wav", speech("a girl and a stool", 1.5), 16_000)
    (root / "test" / "transcription").mkdir(parents=True)
    (root / "test" / "transcription" / "S160.cha").write_text(cha("a girl (.) and a &um stool ."))
    (root / "test" / "meta_data.txt").write_text("ID   ; age; gender\nS160 ; 61 ; 1\nS161 ; 77 ; 0\n")
    (root / "test" / "test_results.txt").write_text("ID; Label; mmse\nS160; 0; 30\nS161; 1; 14\n")
    return root
