"""Malformed, hostile and odd inputs through ``fusion score`` for the medical (MoRE) recipe, each with its exact outcome.

One tiny trained run (:mod:`tests.recipes.medical_more.tiny`) scores a table of rows built from one good held-out
patient (a PNG radiograph, a WFDB ECG and the report). Every case states what must come out: ``score`` (a finite
score, no error, and warnings naming exactly the columns the row was scored without, in order) or ``error`` (no
score, an error containing the given texts: the column and the fix). Across all of them: the row count and order are
kept, no score is NaN, no message quotes a byte of a file, and no file outside the data root is opened (an audit hook
records every file the scoring job opens; a file outside the root holds a secret that must never show up).
"""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recipes.medical_more.cohort import LEADS
from recipes.medical_more.readers import load_ecg, write_ecg_dicom, write_ecg_wfdb, write_xray_dicom, write_xray_png
from recipes.medical_more.recipe import RECIPE as MEDICAL
from recipes.runtime.score import score_file
from tests.recipes.medical_more.tiny import tiny_medical_env
from tests.reliability.cases import SECRET, Case, assert_confined, assert_no_leak, fill, ids, png_header, record_opens

COLUMNS = ("patient_id", "xray_path", "ecg_path", "report_text")


def _build_files(root: Path, good: dict) -> dict[str, str]:
    """Every malformed file under ``root/bad/`` (and a secret outside ``root``); returns the outside files' paths."""
    import pydicom
    import wfdb
    from PIL import Image
    from pydicom.data import get_testdata_file

    bad = root / "bad"
    bad.mkdir()
    xray_file = Path(good["xray_path"])
    ecg_base = Path(good["ecg_path"])
    image = np.asarray(Image.open(xray_file), dtype=np.float32) / 255.0
    signal = load_ecg(ecg_base, 50, 500)  # (12, 500) mV at the tiny run's 50 Hz
    dicom_xray = write_xray_dicom(image, bad / "xray.dcm", bits_stored=12)
    write_xray_dicom(0.3 + 0.4 * image, bad / "mono1_15bit.dcm", bits_stored=15, monochrome1=True, window=(16383.5, 32000.0))
    files: dict[str, bytes | str] = {
        "corrupt.png": bytes(range(256)) * 4,
        "empty.png": b"",
        "truncated.png": xray_file.read_bytes()[: xray_file.stat().st_size // 2],
        "text.jpg": f"hello, I am text {SECRET}\n",
        "bomb.png": png_header(20_000, 20_000),
        "corrupt.dcm": b"\0" * 128 + b"DICM" + bytes(range(256)) * 8,
        "empty.dcm": b"",
        "truncated.dcm": dicom_xray.read_bytes()[: dicom_xray.stat().st_size - 200],
        "scan.tif": b"II*\0" + b"\0" * 64,
        "ecg_corrupt.dcm": b"\0" * 128 + b"DICM" + b"\xff" * 300,
    }
    for name, content in files.items():
        target = bad / name
        target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    Image.fromarray((image * 255).astype(np.uint8)).convert("RGB").save(bad / "rgb.jpg", quality=92)
    write_xray_png(np.concatenate([image, image[:, : image.shape[1] // 2]], axis=1), bad / "wide.png")
    with open(bad / "huge.png", "wb") as handle:  # sparse: no disk used
        handle.truncate(65 * 2**20)
    (bad / "a_folder").mkdir()
    # a DICOM without pixel data
    ds = pydicom.dcmread(dicom_xray)
    del ds.PixelData
    ds.save_as(bad / "no_pixels.dcm")

    # ECGs: DICOM with vendor labels, pydicom's real recording, gaps, NaN, bad rates, units, lengths, broken records
    vendor = ("Lead I (Einthoven)", "Lead II", "Lead III", "Lead aVR (Goldberger)", "Lead aVL (Goldberger)",
              "Lead aVF (Goldberger)", *(f"Lead V{k} (Chest)" for k in range(1, 7)))
    write_ecg_dicom(signal, bad / "vendor.dcm", 50, labels=vendor)
    shutil.copy(get_testdata_file("waveform_ecg.dcm"), bad / "real_ecg.dcm")
    gaps = signal.astype(np.float64).copy()
    gaps[:, ::50] = np.nan  # 2% of the samples dropped
    write_ecg_wfdb(gaps, bad / "gaps", 50)
    write_ecg_wfdb(np.full(signal.shape, np.nan), bad / "all_nan", 50)
    one_lead = signal.astype(np.float64).copy()
    one_lead[7] = np.nan
    write_ecg_wfdb(one_lead, bad / "nan_lead", 50)
    holes = signal.astype(np.float64).copy()
    holes[:, : holes.shape[1] // 2] = np.nan
    write_ecg_wfdb(holes, bad / "half_nan", 50)
    write_ecg_dicom(signal, bad / "rate_037.dcm", 0.37)
    write_ecg_dicom(signal, bad / "rate_0.dcm", 0.0)
    slow = write_ecg_wfdb(signal, bad / "slow", 50)
    header = slow.with_suffix(".hea")
    header.write_text(header.read_text().replace(" 50 ", " 0.37 ", 1))
    wfdb.wrsamp("microvolts", fs=50, units=["mV"] * 12, sig_name=list(LEADS), p_signal=signal.T.astype(np.float64) * 1000,
                fmt=["32"] * 12, adc_gain=[1.0] * 12, baseline=[0] * 12, write_dir=str(bad))
    write_ecg_wfdb(signal[:, :20], bad / "short", 50)
    write_ecg_wfdb(signal[:6], bad / "limb_only", 50, leads=LEADS[:6])
    write_ecg_dicom(signal[:6], bad / "limb_only.dcm", 50, leads=LEADS[:6])
    no_dat = write_ecg_wfdb(signal, bad / "no_dat", 50)
    no_dat.with_suffix(".dat").unlink()
    cut = write_ecg_wfdb(signal, bad / "cut", 50)
    data = cut.with_suffix(".dat")
    data.write_bytes(data.read_bytes()[:100])
    (bad / "empty_header.hea").write_text("")
    (bad / "binary_header.hea").write_bytes(b"\x00\xff\xfe" * 40 + SECRET.encode())
    (bad / "text_header.hea").write_text(f"{SECRET} is not a header\n")

    # outside the data root: a secret, a radiograph, a whole WFDB record; reached by ../, absolute paths and symlinks
    outside = root.parent / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(f"{SECRET}\n")
    shutil.copy(xray_file, outside / "xray.png")
    outside_record = write_ecg_wfdb(signal, outside / "record", 50)
    os.symlink(outside / "xray.png", bad / "link_out.png")
    os.symlink(xray_file, bad / "link_in.png")
    (bad / "linked_header").mkdir()
    os.symlink(outside_record.with_suffix(".hea"), bad / "linked_header" / "record.hea")
    shutil.copy(outside_record.with_suffix(".dat"), bad / "linked_header" / "record.dat")
    # a header inside the root whose signal file climbs out of it
    escape = write_ecg_wfdb(signal, bad / "escape", 50)
    text = escape.with_suffix(".hea").read_text()
    escape.with_suffix(".hea").write_text(text.replace("escape.dat", "../../outside/record.dat"))
    return {"secret": str(outside / "secret.txt"), "xray": str(outside / "xray.png"), "record": str(outside_record),
            "outside": str(outside)}


def _cases() -> list[Case]:
    b = "bad/"
    no_ecg_report = {"ecg_path": None, "report_text": None}
    return [
        # well-formed controls
        Case("good patient", {}, "score"),
        Case("X-ray only", no_ecg_report, "score"),
        Case("ECG only", {"xray_path": None, "report_text": None}, "score"),
        Case("report only", {"xray_path": None, "ecg_path": None}, "score"),
        Case("relative path inside the root", {"xray_path": "{good_relative}"}, "score"),
        Case("symlink staying inside the root", {"xray_path": b + "link_in.png"}, "score"),
        Case("DICOM radiograph", {"xray_path": b + "xray.dcm"}, "score"),
        Case("15-bit MONOCHROME1 with a full-range window", {"xray_path": b + "mono1_15bit.dcm"}, "score"),
        Case("RGB JPEG", {"xray_path": b + "rgb.jpg"}, "score"),
        Case("non-square radiograph is padded", {"xray_path": b + "wide.png"}, "score"),
        Case("DICOM ECG with vendor lead labels", {"ecg_path": b + "vendor.dcm"}, "score"),
        Case("pydicom's real 12-lead ECG (1000 Hz)", {"ecg_path": b + "real_ecg.dcm"}, "score"),
        Case("ECG with 2% of samples missing", {"ecg_path": b + "gaps"}, "score"),
        Case("1 MB report", {"report_text": "The heart is enlarged. " * 45_000}, "score"),
        Case("blank report means no report", {"report_text": "   "}, "score"),
        # X-ray files that cannot be read: scored from the ECG and report, with a warning
        Case("X-ray corrupt", {"xray_path": b + "corrupt.png"}, "score", ("xray_path",)),
        Case("X-ray empty", {"xray_path": b + "empty.png"}, "score", ("xray_path",)),
        Case("X-ray truncated", {"xray_path": b + "truncated.png"}, "score", ("xray_path",)),
        Case("X-ray is text", {"xray_path": b + "text.jpg"}, "score", ("xray_path",)),
        Case("X-ray decompression bomb", {"xray_path": b + "bomb.png"}, "score", ("xray_path",)),
        Case("X-ray huge file", {"xray_path": b + "huge.png"}, "score", ("xray_path",)),
        Case("X-ray DICOM corrupt", {"xray_path": b + "corrupt.dcm"}, "score", ("xray_path",)),
        Case("X-ray DICOM empty", {"xray_path": b + "empty.dcm"}, "score", ("xray_path",)),
        Case("X-ray DICOM truncated", {"xray_path": b + "truncated.dcm"}, "score", ("xray_path",)),
        Case("X-ray DICOM without pixels", {"xray_path": b + "no_pixels.dcm"}, "score", ("xray_path",)),
        Case("X-ray TIFF", {"xray_path": b + "scan.tif"}, "score", ("xray_path",)),
        Case("X-ray missing", {"xray_path": b + "nope.png"}, "score", ("xray_path",)),
        Case("X-ray is a folder", {"xray_path": b + "a_folder"}, "score", ("xray_path",)),
        Case("X-ray empty path", {"xray_path": ""}, "score", ("xray_path",)),
        # ECGs that cannot be used: scored from the X-ray and report, with a warning
        Case("ECG all NaN", {"ecg_path": b + "all_nan"}, "score", ("ecg_path",)),
        Case("ECG one lead NaN", {"ecg_path": b + "nan_lead"}, "score", ("ecg_path",)),
        Case("ECG half NaN", {"ecg_path": b + "half_nan"}, "score", ("ecg_path",)),
        Case("ECG at 0.37 Hz (DICOM)", {"ecg_path": b + "rate_037.dcm"}, "score", ("ecg_path",)),
        Case("ECG at 0 Hz (DICOM)", {"ecg_path": b + "rate_0.dcm"}, "score", ("ecg_path",)),
        Case("ECG at 0.37 Hz (WFDB)", {"ecg_path": b + "slow"}, "score", ("ecg_path",)),
        Case("ECG in µV labelled mV", {"ecg_path": b + "microvolts"}, "score", ("ecg_path",)),
        Case("ECG 0.4 s long", {"ecg_path": b + "short"}, "score", ("ecg_path",)),
        Case("ECG limb leads only (WFDB)", {"ecg_path": b + "limb_only"}, "score", ("ecg_path",)),
        Case("ECG limb leads only (DICOM)", {"ecg_path": b + "limb_only.dcm"}, "score", ("ecg_path",)),
        Case("ECG without its .dat", {"ecg_path": b + "no_dat"}, "score", ("ecg_path",)),
        Case("ECG .dat truncated", {"ecg_path": b + "cut"}, "score", ("ecg_path",)),
        Case("ECG header empty", {"ecg_path": b + "empty_header"}, "score", ("ecg_path",)),
        Case("ECG header binary", {"ecg_path": b + "binary_header"}, "score", ("ecg_path",)),
        Case("ECG header text", {"ecg_path": b + "text_header"}, "score", ("ecg_path",)),
        Case("ECG DICOM corrupt", {"ecg_path": b + "ecg_corrupt.dcm"}, "score", ("ecg_path",)),
        Case("ECG missing", {"ecg_path": b + "nope"}, "score", ("ecg_path",)),
        Case("ECG is a folder", {"ecg_path": b + "a_folder"}, "score", ("ecg_path",)),
        Case("X-ray and ECG both broken, report left", {"xray_path": b + "corrupt.png", "ecg_path": b + "all_nan"},
             "score", ("xray_path", "ecg_path")),
        # rows that cannot be scored at all
        Case("nothing", {"xray_path": None, "ecg_path": None, "report_text": None}, "error", ("no modality",)),
        Case("all NaN ECG alone", {"xray_path": None, "ecg_path": b + "all_nan", "report_text": None}, "error",
             ("ecg_path", "hold no finite sample", "export the recording again")),
        Case("ECG at 0.37 Hz alone", {"xray_path": None, "ecg_path": b + "rate_037.dcm", "report_text": None}, "error",
             ("ecg_path", "implausible sampling rate 0.37 Hz", "fix the sampling frequency")),
        Case("corrupt X-ray alone", {"xray_path": b + "corrupt.png", **no_ecg_report}, "error",
             ("xray_path", "not a readable PNG/JPG", "re-export")),
        Case("both broken, no report", {"xray_path": b + "empty.dcm", "ecg_path": b + "short", "report_text": None},
             "error", ("xray_path", "empty", "ecg_path", "export the full 10 s")),
        # paths out of the data root: refused without opening anything
        Case("X-ray ../ outside the root", {"xray_path": "../outside/xray.png", **no_ecg_report}, "error",
             ("xray_path", "outside the data root")),
        Case("X-ray absolute path outside the root", {"xray_path": "{xray}", **no_ecg_report}, "error",
             ("xray_path", "outside the data root")),
        Case("X-ray /etc/passwd", {"xray_path": "/etc/passwd", **no_ecg_report}, "error", ("xray_path", "outside the data root")),
        Case("X-ray bad/../../", {"xray_path": "bad/../../outside/secret.txt", **no_ecg_report}, "error",
             ("xray_path", "outside the data root")),
        Case("X-ray symlink pointing outside", {"xray_path": b + "link_out.png", **no_ecg_report}, "error",
             ("xray_path", "outside the data root")),
        Case("ECG absolute record outside the root", {"ecg_path": "{record}", "xray_path": None, "report_text": None},
             "error", ("ecg_path", "outside the data root")),
        Case("ECG header symlinked out of the root", {"ecg_path": b + "linked_header/record", "xray_path": None,
                                                      "report_text": None}, "error", ("ecg_path", "outside the data root")),
        Case("ECG header naming a .dat outside the root", {"ecg_path": b + "escape", "xray_path": None, "report_text": None},
             "error", ("ecg_path", "not a readable WFDB header", "check the .hea file")),
        Case("ECG ../ outside, X-ray fine", {"ecg_path": "../outside/record"}, "score", ("ecg_path",)),
        Case("NUL byte in a path", {"ecg_path": "bad/x\x00.dat", "xray_path": None, "report_text": None}, "error",
             ("ecg_path", "NUL")),
        Case("null patient id", {"patient_id": None}, "score"),
        Case("10 000-character patient id", {"patient_id": "x" * 10_000}, "score"),
    ]


CASES = _cases()


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """``(cases, output, typed outputs, opened files, root)``: every case scored in one ``fusion score`` job over
    ``root``, and tables whose columns have the wrong type."""
    base = tmp_path_factory.mktemp("medical-reliability")
    with tiny_medical_env(base / "train") as run:
        root = base / "root"
        root.mkdir()
        demo = pl.read_parquet(MEDICAL.demo_input(run, root / "demo.parquet"))
        good = {c: demo[c][0] for c in COLUMNS}
        outside = {**_build_files(root, good), "good_relative": os.path.relpath(good["xray_path"], root)}
        cases = CASES
        rows = [{**good, "patient_id": f"case-{i}", **fill(case.changes, outside)} for i, case in enumerate(cases)]
        pl.DataFrame(rows, schema={c: pl.Utf8 for c in COLUMNS}).write_parquet(root / "input.parquet")
        typed_columns = {"xray_path": pl.Series([7], dtype=pl.Int64), "ecg_path": pl.Series([1.5]),
                         "report_text": pl.Series([42], dtype=pl.Int64)}
        for column, values in typed_columns.items():
            only = {c: None for c in ("xray_path", "ecg_path", "report_text")}
            table = pl.DataFrame([{**good, **only}], schema={c: pl.Utf8 for c in COLUMNS}).with_columns(values.alias(column))
            table.write_parquet(root / f"typed-{column}.parquet")
        with record_opens() as opened:
            out = pl.read_parquet(score_file("medical", run, root / "input.parquet", base / "out.parquet", chunk_size=16,
                                             progress=False))
            typed = {c: pl.read_parquet(score_file("medical", run, root / f"typed-{c}.parquet", base / f"typed-{c}.out.parquet",
                                                   progress=False)) for c in typed_columns}
        yield cases, out, typed, opened, root, Path(outside["outside"])


def test_there_are_at_least_40_malformed_inputs():
    assert sum(case.malformed for case in CASES) + 3 >= 40  # + the three wrong-typed columns


def test_rows_keep_their_count_and_order_and_no_score_is_nan(scored):
    cases, out, *_ = scored
    assert out.height == len(cases)
    assert out["row"].to_list() == list(range(len(cases)))
    ids = out["patient_id"].to_list()
    assert [i for i in ids if i is not None and len(i) < 100] == [f"case-{i}" for i in range(len(cases))
                                                                 if cases[i].name not in ("null patient id", "10 000-character patient id")]
    scores = out["score"].to_list()
    assert all(s is None or (math.isfinite(s) and 0 <= s <= 1) for s in scores)
    assert all((s is None) != (e is None) for s, e in zip(scores, out["error"].to_list()))
    for column in [c for c in out.columns if c.startswith("p_")]:
        assert all(v is None or math.isfinite(v) for v in out[column].to_list())


def test_no_file_outside_the_root_is_opened_and_nothing_leaks_into_a_message(scored):
    _, out, typed, opened, root, outside = scored
    assert_confined(opened, root, outside)
    assert_no_leak([t for frame in (out, *typed.values()) for column in ("error", "warnings") for t in frame[column]])


@pytest.mark.parametrize("index", range(len(CASES)), ids=ids(CASES))
def test_each_case_has_its_exact_outcome(scored, index):
    cases, out, *_ = scored
    case, row = cases[index], out.row(index, named=True)
    if case.outcome == "score":
        assert row["error"] is None, (case.name, row["error"])
        assert row["score"] is not None and 0 <= row["score"] <= 1, case.name
        parts = row["warnings"].split("; ") if row["warnings"] else []
        named = tuple(part.removeprefix("scored without ").split(":", 1)[0] for part in parts)
        assert named == case.expect, (case.name, row["warnings"])
        assert all(part.startswith("scored without ") and "; " not in part for part in parts)
        used = set(row["modalities"].split("+"))
        for column, modality in (("xray_path", "xray"), ("ecg_path", "ecg")):
            assert (modality in used) == (column not in case.expect and {**cases[0].changes, **case.changes}.get(
                column, "given") is not None), (case.name, row["modalities"])
    else:
        assert row["score"] is None and row["warnings"] is None and row["modalities"] is None, (case.name, row)
        for text in case.expect:
            assert text in row["error"], (case.name, row["error"])


@pytest.mark.parametrize("column, expected", [
    ("xray_path", "xray_path: expected a file path (text), got int; store xray_path as a string column"),
    ("ecg_path", "ecg_path: expected a file path (text), got float; store ecg_path as a string column"),
    ("report_text", "report_text: expected the report as text, got int; store report_text as a string column "
                    "(FINDINGS / IMPRESSION text)"),
])
def test_a_column_of_the_wrong_type_is_an_error_naming_it(scored, column, expected):
    _, _, typed, *_ = scored
    row = typed[column].row(0, named=True)
    assert row["score"] is None and row["error"] == expected
