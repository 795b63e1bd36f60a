"""Small writers and the tiny trained run shared by the dementia recipe tests and the dementia dashboard tests."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

# ``fusion train dementia --config quick`` at toy size: 16-wide model, 16-px spectrograms, hashed-word text encoder
TINY_DEMENTIA_OVERRIDES: tuple[str, ...] = (
    "--config", "quick",
    "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false", "--trainer.logger=false",
    "--model.dim=16", "--model.num_heads=2", "--model.audio_depth=1",
    "--data.text_encoder=scratch", "--data.image_size=16", "--data.n_mels=32", "--data.max_text_tokens=32",
    "--data.batch_size=4", "--data.num_folds=2", "--data.max_seconds=20",
)


@contextmanager
def tiny_dementia_run(tmp_path_factory: pytest.TempPathFactory, extra: Sequence[str] = ()) -> Iterator:
    """Generate a 20-speaker espeak-ng cohort and train the tiny run on it (``extra`` overrides come last and win);
    yields the run with ``FUSION_DATA_DIR`` pointing at that cohort, and restores the variable on exit."""
    from recipes.dementia_speech.cohort import CohortSpec, generate_cohort
    from recipes.runtime.train import train

    home = tmp_path_factory.mktemp("data")
    generate_cohort(home / "dementia-cohort", CohortSpec(source_train=8, source_test=4, target_train=4, target_test=4))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FUSION_DATA_DIR", str(home))
        runs = tmp_path_factory.mktemp("runs")
        yield train("dementia", [*TINY_DEMENTIA_OVERRIDES, "--runs-dir", str(runs), *extra])


def tone(seconds: float = 1.0, rate: int = 16_000, freq: float = 220.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def cha(words: str) -> str:
    return f"@Begin\n@Participants:\tPAR Participant\n*INV:\tdescribe the picture .\n*PAR:\t{words}\n@End\n"


def write_adress(root: Path) -> Path:
    """Two training speakers per class and two test speakers, in the ADReSS-IS2020 layout, written into ``root``."""
    import soundfile as sf

    for group, speakers in (("cc", ("S001", "S002")), ("cd", ("S003", "S004"))):
        for i, speaker in enumerate(speakers):
            wav = root / "train" / "Full_wave_enhanced_audio" / group / f"{speaker}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            sf.write(wav, tone(1.0, freq=200 + 50 * i), 16_000)
            text = root / "train" / "transcription" / group / f"{speaker}.cha"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text(cha("the boy [/] boy is &uh taking (..) a cookie ." if group == "cd" else "the boy is taking a cookie ."))
    (root / "train" / "cc_meta_data.txt").write_text("ID   ; age; gender; mmse\nS001 ; 64 ; 0 ; 29\nS002 ; 70 ; 1 ; NA\n")
    (root / "train" / "cd_meta_data.txt").write_text("ID   ; age; gender; mmse\nS003 ; 73 ; 1 ; 17\nS004 ; 68 ; 0 ; 21\n")
    test_audio = root / "test" / "Full_wave_enhanced_audio"
    test_audio.mkdir(parents=True)
    for speaker in ("S160", "S161"):
        sf.write(test_audio / f"{speaker}.wav", tone(1.0), 16_000)
    (root / "test" / "transcription").mkdir(parents=True)
    (root / "test" / "transcription" / "S160.cha").write_text(cha("a girl (.) and a &um stool ."))
    (root / "test" / "meta_data.txt").write_text("ID   ; age; gender\nS160 ; 61 ; 1\nS161 ; 77 ; 0\n")
    (root / "test" / "test_results.txt").write_text("ID; Label; mmse\nS160; 0; 30\nS161; 1; 14\n")
    return root
