"""The ADReSS challenge layout (Luz et al., 2020), read as it is distributed::

    train/Full_wave_enhanced_audio/{cc,cd}/S001.wav     cc = control, cd = dementia
    train/transcription/{cc,cd}/S001.cha                CHAT transcripts
    train/cc_meta_data.txt, train/cd_meta_data.txt      "ID ; age; gender; mmse" (or one train/meta_data.txt)
    test/Full_wave_enhanced_audio/S160.wav
    test/transcription/S160.cha
    test/meta_data.txt                                  "ID ; age; gender"
    test/test_results.txt                               "ID; Label; mmse" (the label file released after the challenge)

The embedded cohort is written in the same layout, one folder per domain (``source/``, ``target/``), so one
reader serves both (:func:`load_cohort_frame`).
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from recipes.dementia_speech.readers.chat import read_chat

__all__ = ["load_adress", "load_cohort_frame", "read_meta", "ADRESS_COLUMNS", "LABELS"]

LABELS = {"cc": 0, "cd": 1}
ADRESS_COLUMNS = ("speaker_id", "split", "label", "age", "gender", "mmse", "wav_path", "cha_path", "transcript",
                  "transcript_source")
_TEST_LABEL_FILES = ("test/test_results.txt", "test/meta_data_test.txt", "meta_data_test.txt", "test_results.txt")


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _gender(value: str) -> str | None:
    value = value.strip().lower()
    return {"0": "male", "1": "female", "m": "male", "f": "female", "male": "male", "female": "female"}.get(value)


def read_meta(path: Path) -> dict[str, dict]:
    """``{speaker: {age, gender, mmse, label}}`` from a semicolon-separated ADReSS metadata file (header row;
    columns found by name, any order; ``NA`` → None)."""
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if not lines:
        return {}
    header = [h.strip().lower() for h in lines[0].split(";")]
    if "id" not in header:
        raise ValueError(f"{path}: the first line must be a header naming an ID column (e.g. 'ID ; age; gender; mmse'); got {lines[0]!r}")
    out: dict[str, dict] = {}
    for line in lines[1:]:
        cells = dict(zip(header, (c.strip() for c in line.split(";"))))
        speaker = cells.get("id", "")
        if not speaker:
            continue
        row: dict = {}
        if "age" in cells:
            row["age"] = _number(cells["age"])
        if "gender" in cells:
            row["gender"] = _gender(cells["gender"])
        if "mmse" in cells:
            row["mmse"] = _number(cells["mmse"])
        if "label" in cells:
            label = cells["label"].lower()
            row["label"] = LABELS.get(label, int(label) if label in ("0", "1") else None)
        out[speaker] = row
    return out


def _merge_meta(root: Path, split: str) -> dict[str, dict]:
    meta: dict[str, dict] = {}
    for name in (f"{split}/meta_data.txt", f"{split}/cc_meta_data.txt", f"{split}/cd_meta_data.txt"):
        if (root / name).is_file():
            for speaker, row in read_meta(root / name).items():
                meta.setdefault(speaker, {}).update({k: v for k, v in row.items() if v is not None})
    if split == "test":
        for name in _TEST_LABEL_FILES:
            if (root / name).is_file():
                for speaker, row in read_meta(root / name).items():
                    meta.setdefault(speaker, {}).update({k: v for k, v in row.items() if v is not None})
    return meta


def load_adress(root: str | Path, splits: tuple[str, ...] = ("train", "test")) -> pl.DataFrame:
    """One row per recording of an ADReSS-layout folder: :data:`ADRESS_COLUMNS`.

    ``label`` is 0 (control) / 1 (dementia) from the ``cc``/``cd`` folder in train and from the label file in
    test (null when there is none); ``transcript`` is the participant's cleaned CHAT text (null without a
    ``.cha``; ``transcript_source`` is then null too and the recipe transcribes the audio).
    """
    root = Path(root)
    rows: list[dict] = []
    for split in splits:
        audio_dir = root / split / "Full_wave_enhanced_audio"
        if not audio_dir.is_dir():
            continue
        meta = _merge_meta(root, split)
        for wav in sorted(audio_dir.rglob("*.wav")):
            group = wav.parent.name if wav.parent != audio_dir else None
            speaker = wav.stem
            cha = root / split / "transcription" / (f"{group}/" if group else "") / f"{speaker}.cha"
            info = meta.get(speaker, {})
            label = LABELS.get(group) if group in LABELS else info.get("label")
            transcript = read_chat(cha).text if cha.is_file() else None
            rows.append({
                "speaker_id": speaker, "split": split, "label": label, "age": info.get("age"),
                "gender": info.get("gender"), "mmse": info.get("mmse"), "wav_path": str(wav),
                "cha_path": str(cha) if cha.is_file() else None, "transcript": transcript,
                "transcript_source": "manual" if transcript is not None else None,
            })
    if not rows:
        raise FileNotFoundError(
            f"{root}: no recordings found; expected the ADReSS layout "
            f"{{train,test}}/Full_wave_enhanced_audio/[cc|cd/]*.wav (see data_cards/adress.md)"
        )
    schema = {"speaker_id": pl.Utf8, "split": pl.Utf8, "label": pl.Int64, "age": pl.Float64, "gender": pl.Utf8,
              "mmse": pl.Float64, "wav_path": pl.Utf8, "cha_path": pl.Utf8, "transcript": pl.Utf8,
              "transcript_source": pl.Utf8}
    return pl.DataFrame(rows, schema=schema)


def load_cohort_frame(root: str | Path) -> pl.DataFrame:
    """All rows of a cohort folder (``source/`` rows get ``domain`` 0, ``target/`` rows 1) or of an ADReSS folder
    (all ``domain`` 0)."""
    root = Path(root)
    if (root / "source").is_dir():
        frames = [load_adress(root / "source").with_columns(pl.lit(0).alias("domain"))]
        if (root / "target").is_dir():
            frames.append(load_adress(root / "target").with_columns(pl.lit(1).alias("domain")))
        return pl.concat(frames)
    return load_adress(root).with_columns(pl.lit(0).alias("domain"))
