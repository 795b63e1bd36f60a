"""Malformed, hostile and odd inputs through ``fusion score`` for the dementia (speech) recipe, each with its exact
outcome; and scores that do not depend on row order (the recogniser and the VAD start fresh for every recording).

One tiny trained run (:mod:`tests.recipes.dementia_speech.tiny`, acoustic markers and spectrogram transformer) scores a
table of rows built from one good held-out speaker (a WAV recording and its CHAT transcript). Every case states what
must come out: ``score`` (a finite score, no error, and warnings that start with the given texts, in order) or
``error`` (no score, an error containing the given texts: the column and the fix). Across all of them: the row count
and order are kept, no score is NaN, no message quotes a byte of a file, and no file outside the data root is opened
(an audit hook records every file the scoring job opens; a file outside the root holds a secret that must never show).
"""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.reliability.cases import SECRET, Case, assert_confined, assert_no_leak, fill, ids, record_opens

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs Debian espeak-ng (make system-deps)"),
]

COLUMNS = ("speaker_id", "wav_path", "cha_path", "transcript")
TEXT = "the boy (.) is &uh taking a cookie and the water is (..) overflowing"
ALONE = "scored without wav_path"  # the start of the warning of a row scored from its transcript alone
SHORT = "wav_path: the recording is"  # ... shorter than every training recording


def _build_files(root: Path, good_wav: Path, good_cha: Path) -> dict[str, str]:
    import soundfile as sf

    from tests.recipes.dementia_speech.dementia_helpers import speech, tone

    bad = root / "bad"
    bad.mkdir()
    audio, rate = sf.read(good_wav, dtype="float32")
    shutil.copy(good_wav, bad / "good.wav")
    shutil.copy(good_cha, bad / "good.cha")
    raw = good_wav.read_bytes()
    files: dict[str, bytes | str] = {
        "corrupt.wav": bytes(range(256)) * 8,
        "empty.wav": b"",
        "header_only.wav": raw[:44],
        "truncated.wav": raw[: len(raw) // 2],
        "text.wav": f"hello, I am text {SECRET}\n",
        "binary.cha": b"\x00\xff\xfe" * 40 + SECRET.encode(),
        "no_par.cha": f"@Begin\n*INV:\t{SECRET} .\n@End\n",
    }
    for name, content in files.items():
        (bad / name).write_bytes(content) if isinstance(content, bytes) else (bad / name).write_text(content)
    for name, value in (("nan", np.nan), ("inf", np.inf), ("big", 1e30)):
        poisoned = audio.copy()
        poisoned[1000] = value
        sf.write(bad / f"{name}.wav", poisoned, rate, subtype="FLOAT")
    sf.write(bad / "over_one.wav", audio * 1.5 / np.abs(audio).max(), rate, subtype="FLOAT")
    sf.write(bad / "float.wav", audio, rate, subtype="FLOAT")
    sf.write(bad / "pcm24.wav", audio, rate, subtype="PCM_24")
    sf.write(bad / "good.flac", audio, rate, format="FLAC")
    sf.write(bad / "excerpt.wav", audio[: 8 * rate], rate)  # 8 s: for the row-order test, which decodes 11 times
    sf.write(bad / "excerpt.flac", audio[2 * rate: 10 * rate], rate, format="FLAC")
    sf.write(bad / "stereo.wav", np.stack([audio, audio], axis=1), rate)
    sf.write(bad / "rate44k.wav", audio, 44_100)  # the same samples declared at another rate: resampled
    sf.write(bad / "rate2k.wav", audio[:8000], 2_000)
    sf.write(bad / "no_samples.wav", np.zeros(0, np.float32), 16_000)
    sf.write(bad / "silent.wav", np.zeros(3 * 16_000, np.float32), 16_000)
    sf.write(bad / "noise.wav", (np.random.default_rng(0).standard_normal(5 * 16_000) * 0.05).astype(np.float32), 16_000)
    sf.write(bad / "tone.wav", tone(3.0), 16_000)
    sf.write(bad / "short.wav", speech("the boy", 0.3), 16_000)
    sf.write(bad / "clip_1s.wav", speech("the boy is on a stool", 1.4), 16_000)
    sf.write(bad / "clipped.wav", np.clip(tone(2.0, amplitude=4.0), -1, 1), 16_000)
    sf.write(bad / "long.wav", np.tile(audio, 8), rate)  # minutes long: only max_seconds are read
    with open(bad / "huge.wav", "wb") as handle:  # sparse: no disk used
        handle.truncate(2 * 2**30)
    with open(bad / "huge.cha", "wb") as handle:
        handle.truncate(64 * 2**20)
    (bad / "a_folder").mkdir()

    outside = root.parent / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(f"{SECRET}\n")
    shutil.copy(good_wav, outside / "good.wav")
    shutil.copy(good_cha, outside / "good.cha")
    os.symlink(outside / "good.wav", bad / "link_out.wav")
    os.symlink(bad / "good.wav", bad / "link_in.wav")
    os.symlink(outside / "good.cha", bad / "link_out.cha")
    return {"outside_wav": str(outside / "good.wav"), "outside": str(outside)}


def _cases() -> list[Case]:
    b = "bad/"
    audio_only = {"transcript": None, "cha_path": None}
    return [
        # well-formed controls
        Case("good recording and transcript", {}, "score"),
        Case("good recording and its CHAT file", {"transcript": None, "cha_path": b + "good.cha"}, "score"),
        Case("transcript alone", {"wav_path": None}, "score", (ALONE,)),
        Case("CHAT file alone", {"wav_path": None, "transcript": None, "cha_path": b + "good.cha"}, "score", (ALONE,)),
        Case("symlink staying inside the root", {"wav_path": b + "link_in.wav"}, "score"),
        Case("32-bit float WAV", {"wav_path": b + "float.wav"}, "score"),
        Case("24-bit WAV", {"wav_path": b + "pcm24.wav"}, "score"),
        Case("FLAC", {"wav_path": b + "good.flac"}, "score"),
        Case("stereo", {"wav_path": b + "stereo.wav"}, "score"),
        # the same samples declared at 44.1 kHz last 9 s, half a file 13 s: shorter than every training recording
        Case("44.1 kHz", {"wav_path": b + "rate44k.wav"}, "score", (SHORT,)),
        Case("truncated WAV: what is there is read", {"wav_path": b + "truncated.wav"}, "score", (SHORT,)),
        Case("minutes long: cut at max_seconds", {"wav_path": b + "long.wav"}, "score"),
        Case("1.4 s clip, shorter than training", {"wav_path": b + "clip_1s.wav"}, "score", ("wav_path: the recording is 1.4 s long",)),
        Case("1 MB transcript", {"transcript": "the boy is taking a cookie " * 40_000}, "score"),
        Case("null speaker id", {"speaker_id": None}, "score"),
        # recordings that cannot be used, the transcript is there: scored from the text, with a warning
        Case("corrupt WAV + transcript", {"wav_path": b + "corrupt.wav"}, "score", (ALONE,)),
        Case("NaN WAV + transcript", {"wav_path": b + "nan.wav"}, "score", (ALONE,)),
        Case("missing WAV + transcript", {"wav_path": b + "nope.wav"}, "score", (ALONE,)),
        Case("WAV ../ outside the root + transcript", {"wav_path": "../outside/good.wav"}, "score", (ALONE,)),
        Case("CHAT file outside the root, recording fine", {"transcript": None, "cha_path": "../outside/good.cha"},
             "score", ("scored without cha_path",)),
        # recordings that cannot be used and no transcript: errors naming the column and the fix
        Case("corrupt WAV", {"wav_path": b + "corrupt.wav", **audio_only}, "error", ("wav_path", "not a readable audio file", "sox")),
        Case("empty file", {"wav_path": b + "empty.wav", **audio_only}, "error", ("wav_path", "not a readable audio file")),
        Case("header only", {"wav_path": b + "header_only.wav", **audio_only}, "error", ("wav_path", "empty (0 samples)")),
        Case("WAV with no samples", {"wav_path": b + "no_samples.wav", **audio_only}, "error", ("wav_path", "empty (0 samples)")),
        Case("text file named .wav", {"wav_path": b + "text.wav", **audio_only}, "error", ("wav_path", "not a readable audio file")),
        Case("NaN sample", {"wav_path": b + "nan.wav", **audio_only}, "error", ("wav_path", "not finite", "export the recording again")),
        Case("inf sample", {"wav_path": b + "inf.wav", **audio_only}, "error", ("wav_path", "not finite")),
        Case("1e30 sample", {"wav_path": b + "big.wav", **audio_only}, "error", ("wav_path", "outside the [-1, 1]", "normalise")),
        Case("float WAV peaking at 1.5", {"wav_path": b + "over_one.wav", **audio_only}, "error", ("wav_path", "outside the [-1, 1]")),
        Case("all zeros", {"wav_path": b + "silent.wav", **audio_only}, "error", ("wav_path", "silent")),
        Case("background noise, no speech", {"wav_path": b + "noise.wav", **audio_only}, "error", ("wav_path", "no speech detected")),
        Case("a pure tone, no speech", {"wav_path": b + "tone.wav", **audio_only}, "error", ("wav_path", "no speech detected")),
        Case("no speech, even with a transcript", {"wav_path": b + "noise.wav"}, "error", ("wav_path", "no speech detected")),
        Case("0.3 s", {"wav_path": b + "short.wav", **audio_only}, "error", ("wav_path", "only 0.30 s")),
        Case("clipped", {"wav_path": b + "clipped.wav", **audio_only}, "error", ("wav_path", "lower input gain")),
        Case("2 kHz sampling rate", {"wav_path": b + "rate2k.wav", **audio_only}, "error", ("wav_path", "2000 Hz", "resample")),
        Case("2 GB file that is not audio", {"wav_path": b + "huge.wav", **audio_only}, "error", ("wav_path", "not a readable audio file")),
        Case("a folder", {"wav_path": b + "a_folder", **audio_only}, "error", ("wav_path", "no such audio file")),
        Case("missing file", {"wav_path": b + "nope.wav", **audio_only}, "error", ("wav_path", "no such audio file")),
        Case("empty path", {"wav_path": "", **audio_only}, "error", ("wav_path", "empty path")),
        Case("nothing at all", {"wav_path": None, **audio_only}, "error", ("wav_path, transcript and cha_path are all empty",)),
        Case("binary CHAT file alone", {"wav_path": None, "transcript": None, "cha_path": b + "binary.cha"}, "error",
             ("cha_path", "no *PAR: lines")),
        Case("CHAT file without participant lines", {"wav_path": None, "transcript": None, "cha_path": b + "no_par.cha"},
             "error", ("cha_path", "no *PAR: lines")),
        Case("64 MB CHAT file", {"wav_path": None, "transcript": None, "cha_path": b + "huge.cha"}, "error",
             ("cha_path", "far more than a CHAT transcript")),
        Case("missing CHAT file", {"wav_path": None, "transcript": None, "cha_path": b + "nope.cha"}, "error",
             ("cha_path", "no such CHAT file")),
        # paths out of the data root: refused without opening anything
        Case("WAV ../ outside the root", {"wav_path": "../outside/good.wav", **audio_only}, "error", ("wav_path", "outside the data root")),
        Case("WAV absolute path outside the root", {"wav_path": "{outside_wav}", **audio_only}, "error", ("wav_path", "outside the data root")),
        Case("/etc/passwd", {"wav_path": "/etc/passwd", **audio_only}, "error", ("wav_path", "outside the data root")),
        Case("bad/../../ climbing out", {"wav_path": "bad/../../outside/secret.txt", **audio_only}, "error",
             ("wav_path", "outside the data root")),
        Case("symlink pointing outside", {"wav_path": b + "link_out.wav", **audio_only}, "error", ("wav_path", "outside the data root")),
        Case("CHAT symlink pointing outside", {"wav_path": None, "transcript": None, "cha_path": b + "link_out.cha"},
             "error", ("cha_path", "outside the data root")),
        Case("CHAT /etc/passwd", {"wav_path": None, "transcript": None, "cha_path": "/etc/passwd"}, "error",
             ("cha_path", "outside the data root")),
        Case("NUL byte in a path", {"wav_path": "bad/x\x00.wav", **audio_only}, "error", ("wav_path", "NUL")),
    ]


CASES = _cases()


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """``(cases, output, typed outputs, opened files, root, outside, run)``: every case scored in one job over ``root``,
    and tables whose columns have the wrong type."""
    from recipes.runtime.registry import get_recipe
    from recipes.runtime.score import score_file
    from tests.recipes.dementia_speech.tiny import tiny_dementia_run

    recipe = get_recipe("dementia")
    base = tmp_path_factory.mktemp("dementia-reliability")
    with tiny_dementia_run(tmp_path_factory, ("--data.acoustic", "both")) as run:
        root = base / "root"
        root.mkdir()
        from recipes.dementia_speech.recipe import held_out_rows

        demo = held_out_rows(run)
        outside = _build_files(root, Path(demo["wav_path"][0]), Path(demo["cha_path"][0]))
        good = {"speaker_id": "good", "wav_path": "bad/good.wav", "cha_path": None, "transcript": TEXT}
        cases = CASES
        rows = [{**good, "speaker_id": f"case-{i}", **fill(case.changes, outside)} for i, case in enumerate(cases)]
        pl.DataFrame(rows, schema={c: pl.Utf8 for c in COLUMNS}).write_parquet(root / "input.parquet")
        typed_columns = {"wav_path": pl.Series([7], dtype=pl.Int64), "transcript": pl.Series([42], dtype=pl.Int64),
                         "cha_path": pl.Series([1.5])}
        for column, values in typed_columns.items():
            only = {"wav_path": None, "transcript": None, "cha_path": None}
            table = pl.DataFrame([{**good, **only}], schema={c: pl.Utf8 for c in COLUMNS}).with_columns(values.alias(column))
            table.write_parquet(root / f"typed-{column}.parquet")
        with record_opens() as opened:
            out = pl.read_parquet(score_file(recipe, run, root / "input.parquet", base / "out.parquet", chunk_size=16,
                                             progress=False))
            typed = {c: pl.read_parquet(score_file(recipe, run, root / f"typed-{c}.parquet", base / f"typed-{c}.out.parquet",
                                                   progress=False)) for c in typed_columns}
        yield cases, out, typed, opened, root, Path(outside["outside"]), run


def test_there_are_at_least_40_malformed_inputs():
    assert sum(case.malformed for case in CASES) + 3 >= 40  # + the three wrong-typed columns


def test_rows_keep_their_count_and_order_and_no_score_is_nan(scored):
    cases, out, *_ = scored
    assert out.height == len(cases) and out["row"].to_list() == list(range(len(cases)))
    assert [i for i in out["speaker_id"].to_list() if i is not None] == [
        f"case-{i}" for i, case in enumerate(cases) if case.name != "null speaker id"]
    scores = out["score"].to_list()
    assert all(s is None or (math.isfinite(s) and 0 <= s <= 1) for s in scores)
    assert all((s is None) != (e is None) for s, e in zip(scores, out["error"].to_list()))


def test_no_file_outside_the_root_is_opened_and_nothing_leaks_into_a_message(scored):
    _, out, typed, opened, root, outside, _ = scored
    assert_confined(opened, root, outside)
    assert_no_leak([t for frame in (out, *typed.values()) for column in ("error", "warnings") for t in frame[column]])


@pytest.mark.parametrize("index", range(len(CASES)), ids=ids(CASES))
def test_each_case_has_its_exact_outcome(scored, index):
    case, row = CASES[index], scored[1].row(index, named=True)
    if case.outcome == "score":
        assert row["error"] is None, (case.name, row["error"])
        assert row["score"] is not None and 0 <= row["score"] <= 1, case.name
        parts = row["warnings"].split("; ") if row["warnings"] else []
        assert len(parts) == len(case.expect), (case.name, row["warnings"])
        for part, text in zip(parts, case.expect):
            assert part.startswith(text), (case.name, row["warnings"])
    else:
        assert row["score"] is None and row["warnings"] is None, (case.name, row)
        for text in case.expect:
            assert text in row["error"], (case.name, row["error"])


def test_a_row_without_its_recording_scores_as_the_text_alone(scored):
    cases, out, *_ = scored
    by_name = {case.name: out.row(i, named=True) for i, case in enumerate(cases)}
    text_alone = by_name["transcript alone"]["score"]
    for name in ("corrupt WAV + transcript", "NaN WAV + transcript", "missing WAV + transcript"):
        assert by_name[name]["score"] == text_alone, name
    assert by_name["good recording and transcript"]["score"] != text_alone  # the recording counts when it is there
    assert by_name["symlink staying inside the root"]["score"] == by_name["good recording and transcript"]["score"]


@pytest.mark.parametrize("column, expected", [
    ("wav_path", "wav_path: expected a file path (text), got int; store wav_path as a string column"),
    ("transcript", "transcript: expected text, got int; store transcript as a string column"),
    ("cha_path", "cha_path: expected a file path (text), got float; store cha_path as a string column"),
])
def test_a_column_of_the_wrong_type_is_an_error_naming_it(scored, column, expected):
    _, _, typed, *_ = scored
    row = typed[column].row(0, named=True)
    assert row["score"] is None and row["error"] == expected


def test_scores_and_transcripts_do_not_depend_on_row_order(scored, tmp_path):
    """Recognised transcripts (no transcript given) and scores of the same recordings, scored in two orders and one
    at a time, are identical to the byte."""
    from recipes.runtime.registry import get_recipe
    from recipes.runtime.score import score_file

    *_, root, _, run = scored
    recipe = get_recipe("dementia")
    names = ["excerpt.wav", "clip_1s.wav", "excerpt.flac"]
    forward = pl.DataFrame({"speaker_id": names, "wav_path": [f"bad/{n}" for n in names]})
    orders = {"forward": forward, "backward": forward.reverse(),
              "repeated": pl.concat([forward.slice(1, 1), forward, forward.slice(1, 1)])}
    results = {}
    for label, frame in orders.items():
        frame.write_parquet(root / f"order-{label}.parquet")
        chunk = 1 if label == "repeated" else 16
        scored_file = score_file(recipe, run, root / f"order-{label}.parquet", tmp_path / f"{label}.parquet",
                                 chunk_size=chunk, progress=False)
        results[label] = pl.read_parquet(scored_file).drop("row")
    assert results["forward"]["transcript_source"].to_list() == ["asr"] * 3
    canonical = results["forward"].sort("speaker_id")
    for label in ("backward", "repeated"):
        assert results[label].unique(maintain_order=True).sort("speaker_id").equals(canonical), label
    canonical.write_parquet(tmp_path / "a.parquet")
    results["backward"].sort("speaker_id").write_parquet(tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
