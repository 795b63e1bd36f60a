"""Malformed, hostile and odd inputs through ``fusion score`` for the driving recipe, each with its exact outcome.

One tiny trained run scores a table of rows built from one good generated frame. Every case states what must come
out: ``score`` (a finite score, no error, and exactly the warnings named) or ``error`` (no score, an error naming the
column and the fix). Across all of them: the row count and order are kept, no score is NaN, no message quotes a byte
of a file, and nothing outside the data root is read (a file outside it holds a secret that must never show up).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recipes.driving_interaction.recipe import RECIPE as DRIVING
from recipes.driving_interaction.readers import Calibration, read_calib, write_calib
from recipes.runtime.score import score_file
from tests.recipes.driving_interaction.tiny import tiny_driving_env
from tests.reliability.cases import SECRET, Case, assert_confined, assert_no_leak, fill, ids, png_header, record_opens

COLUMNS = ("frame_id", "velodyne_path", "image_path", "calib_path", "label_path")


def _calib_text(calib: Calibration, **replace: str) -> str:
    def row(name: str, matrix) -> str:
        return replace.get(name, f"{name}: " + " ".join(f"{v:.12e}" for v in np.asarray(matrix).reshape(-1)))

    return "\n".join([row("P2", calib.P2), row("R0_rect", calib.R0_rect), row("Tr_velo_to_cam", calib.Tr_velo_to_cam)]) + "\n"


def _build_files(root: Path, good: dict) -> dict[str, str]:
    """Every malformed file under ``root/bad/`` (and a secret outside ``root``); returns name → path relative to root."""
    from PIL import Image

    bad = root / "bad"
    bad.mkdir()
    velodyne, image, calib_file = (root / good[c] for c in ("velodyne_path", "image_path", "calib_path"))
    calib = read_calib(calib_file)
    points = np.fromfile(velodyne, dtype="<f4").reshape(-1, 4)
    picture = np.asarray(Image.open(image).convert("RGB"))
    files: dict[str, bytes | str] = {
        "truncated.bin": velodyne.read_bytes()[:-6],
        "empty.bin": b"",
        "nan.bin": np.where(np.arange(points.size).reshape(points.shape) == 5, np.nan, points).astype("<f4").tobytes(),
        "inf.bin": np.where(np.arange(points.size).reshape(points.shape) == 9, np.inf, points).astype("<f4").tobytes(),
        "far.bin": np.concatenate([points, [[1e30, -1e30, 1e30, 1.0]]]).astype("<f4").tobytes(),
        "text.bin": "not a scan at all\n",
        "corrupt.png": bytes(range(256)) * 4,
        "empty.png": b"",
        "truncated.png": image.read_bytes()[: image.stat().st_size // 2],
        "text.jpg": "hello, I am text\n",
        "bomb.png": png_header(20_000, 20_000, color_type=2),  # Pillow refuses it
        "bomb_100mp.png": png_header(10_000, 10_000, color_type=2),  # Pillow only warns and would decode 300 MB
        "calib_empty.txt": "",
        "calib_short.txt": "P2: 1 2 3\nR0_rect: 1 0 0 0 1 0 0 0 1\nTr_velo_to_cam: 1 0 0 0 0 1 0 0 0 0 1 0\n",
        "calib_nan.txt": _calib_text(calib, P2="P2: nan 0 160 0 0 240 28.8 0 0 0 1 0"),
        "calib_inf.txt": _calib_text(calib, Tr_velo_to_cam="Tr_velo_to_cam: 0 -1 0 0 0 0 -1 inf 1 0 0 0"),
        "calib_zero.txt": _calib_text(calib, P2="P2: " + " ".join(["0"] * 12), R0_rect="R0_rect: " + " ".join(["0"] * 9),
                                      Tr_velo_to_cam="Tr_velo_to_cam: " + " ".join(["0"] * 12)),
        "calib_r0_zero.txt": _calib_text(calib, R0_rect="R0_rect: " + " ".join(["0"] * 9)),
        "calib_no_focal.txt": _calib_text(calib, P2="P2: 0 0 160 0 0 0 28.8 0 0 0 1 0"),
        "calib_overflow.txt": _calib_text(calib, P2="P2: 1e300 0 160 0 0 1e300 28.8 0 0 0 1 0"),
        "calib_secret.txt": _calib_text(calib, P2=f"P2: 1 0 {SECRET} 0"),
        "calib_binary.txt": b"\xff\xfe\x00\x81" * 64,
        "calib_other_camera.txt": _calib_text(calib, P2="P2: 700 0 900 0 0 700 600 0 0 0 1 0"),
        "label_bad.txt": "Car 0 0 this line is broken\n",
        "label_nan.txt": "Car 0.00 0 0.00 0 0 10 10 1.5 1.6 4.0 nan 1.7 12.0 0.0\n",
        "label_binary.txt": b"\x00\xff" * 100,
    }
    for name, content in files.items():
        target = bad / name
        target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    # a JPEG, grayscale and RGBA PNGs and a GIF of the same picture; a wider image with a calibration that fits it
    Image.fromarray(picture).save(bad / "frame.jpg", quality=90)
    Image.fromarray(picture).convert("L").save(bad / "grey.png")
    Image.fromarray(picture).convert("RGBA").save(bad / "rgba.png")
    Image.fromarray(picture).save(bad / "frame.gif")
    height, width = picture.shape[:2]
    Image.fromarray(picture).resize((width * 2, height * 2)).save(bad / "double.png")
    wide = np.concatenate([picture, picture[:, : width // 2]], axis=1)  # 1.5× wider, same height
    Image.fromarray(wide).save(bad / "wide.png")
    P2 = calib.P2.copy()
    P2[0, 2] += width / 4  # the principal point in the middle of the wider image
    write_calib(bad / "calib_wide.txt", Calibration(P2, calib.R0_rect, calib.Tr_velo_to_cam))
    # too large: sparse files (no disk used)
    for name in ("huge.bin", "huge.png", "calib_huge.txt"):
        with open(bad / name, "wb") as handle:
            handle.truncate(65 * 2**20 if name != "calib_huge.txt" else 2 * 2**20)
    (bad / "a_folder").mkdir()
    # a secret outside the data root, reached by ../, an absolute path and a symlink; a symlink that stays inside
    outside = root.parent / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(f"P2: {SECRET}\n")
    (outside / "scan.bin").write_bytes(velodyne.read_bytes())
    os.symlink(outside / "secret.txt", bad / "link_out.txt")
    os.symlink(calib_file, bad / "link_in.txt")
    return {"outside_secret": str(outside / "secret.txt"), "outside_scan": str(outside / "scan.bin")}


def _cases() -> list[Case]:
    """The cases; ``{good_calib}``, ``{outside_secret}`` and ``{outside_scan}`` are filled in with absolute paths."""
    b = "bad/"
    return [
        Case("good frame", {}, "score"),
        Case("camera only", {"velodyne_path": None}, "score"),
        Case("lidar only", {"image_path": None}, "score"),
        Case("blank velodyne path means no LiDAR", {"velodyne_path": "   "}, "score"),
        Case("absolute path inside the root", {"calib_path": "{good_calib}"}, "score"),
        Case("symlink staying inside the root", {"calib_path": b + "link_in.txt"}, "score"),
        Case("JPEG image", {"image_path": b + "frame.jpg"}, "score"),
        Case("greyscale PNG", {"image_path": b + "grey.png"}, "score"),
        Case("RGBA PNG", {"image_path": b + "rgba.png"}, "score"),
        Case("wider image, its own calibration: letterboxed", {"image_path": b + "wide.png", "calib_path": b + "calib_wide.txt"},
             "score", ("image_path",)),
        Case("far-away points (1e30) are cropped", {"velodyne_path": b + "far.bin"}, "score"),
        Case("no calibration", {"calib_path": None}, "error", ("calib_path", "fill in calib_path")),
        Case("empty calibration path", {"calib_path": ""}, "error", ("calib_path", "fill in calib_path")),
        Case("no sensor", {"velodyne_path": None, "image_path": None}, "error", ("velodyne_path", "image_path")),
        Case("calibration missing", {"calib_path": b + "nope.txt"}, "error", ("calib_path", "no such calibration file")),
        Case("calibration is a folder", {"calib_path": b + "a_folder"}, "error", ("calib_path", "no such calibration file")),
        Case("calibration empty", {"calib_path": b + "calib_empty.txt"}, "error", ("calib_path", "missing calibration entries")),
        Case("calibration short entry", {"calib_path": b + "calib_short.txt"}, "error", ("calib_path", "P2 has 3 numbers")),
        Case("calibration NaN", {"calib_path": b + "calib_nan.txt"}, "error", ("calib_path", "P2 holds NaN or infinite")),
        Case("calibration inf", {"calib_path": b + "calib_inf.txt"}, "error", ("calib_path", "Tr_velo_to_cam holds NaN or infinite")),
        Case("calibration all zeros", {"calib_path": b + "calib_zero.txt"}, "error", ("calib_path", "singular")),
        Case("calibration zero R0_rect", {"calib_path": b + "calib_r0_zero.txt"}, "error", ("calib_path", "singular")),
        Case("calibration without focal length", {"calib_path": b + "calib_no_focal.txt"}, "error", ("calib_path", "not a pinhole")),
        Case("calibration implausibly large", {"calib_path": b + "calib_overflow.txt"}, "error", ("calib_path", "P2 holds implausibly large")),
        Case("calibration with text", {"calib_path": b + "calib_secret.txt"}, "error", ("calib_path", "not a number")),
        Case("calibration binary", {"calib_path": b + "calib_binary.txt"}, "error", ("calib_path", "not UTF-8")),
        Case("calibration huge", {"calib_path": b + "calib_huge.txt"}, "error", ("calib_path", "too large")),
        Case("calibration of another camera", {"calib_path": b + "calib_other_camera.txt"}, "error",
             ("image_path", "principal point", "do not crop")),
        Case("image resized away from its calibration", {"image_path": b + "double.png"}, "error",
             ("image_path", "principal point")),
        Case("velodyne truncated", {"velodyne_path": b + "truncated.bin"}, "score", ("velodyne_path",)),
        Case("velodyne empty", {"velodyne_path": b + "empty.bin"}, "score", ("velodyne_path",)),
        Case("velodyne NaN", {"velodyne_path": b + "nan.bin"}, "score", ("velodyne_path",)),
        Case("velodyne inf", {"velodyne_path": b + "inf.bin"}, "score", ("velodyne_path",)),
        Case("velodyne text", {"velodyne_path": b + "text.bin"}, "score", ("velodyne_path",)),
        Case("velodyne huge", {"velodyne_path": b + "huge.bin"}, "score", ("velodyne_path",)),
        Case("velodyne missing", {"velodyne_path": b + "nope.bin"}, "score", ("velodyne_path",)),
        Case("velodyne is a folder", {"velodyne_path": b + "a_folder"}, "score", ("velodyne_path",)),
        Case("velodyne truncated, no camera", {"velodyne_path": b + "truncated.bin", "image_path": None}, "error",
             ("velodyne_path", "truncated", "no sensor of the row could be read")),
        Case("image corrupt", {"image_path": b + "corrupt.png"}, "score", ("image_path",)),
        Case("image empty", {"image_path": b + "empty.png"}, "score", ("image_path",)),
        Case("image truncated", {"image_path": b + "truncated.png"}, "score", ("image_path",)),
        Case("image is text", {"image_path": b + "text.jpg"}, "score", ("image_path",)),
        Case("image GIF", {"image_path": b + "frame.gif"}, "score", ("image_path",)),
        Case("image decompression bomb", {"image_path": b + "bomb.png"}, "score", ("image_path",)),
        Case("image of 100 megapixels", {"image_path": b + "bomb_100mp.png"}, "score", ("image_path",)),
        Case("image huge file", {"image_path": b + "huge.png"}, "score", ("image_path",)),
        Case("both sensors corrupt", {"image_path": b + "corrupt.png", "velodyne_path": b + "empty.bin"}, "error",
             ("velodyne_path", "image_path", "cannot be scored")),
        Case("label malformed", {"label_path": b + "label_bad.txt"}, "score", ("label_path",)),
        Case("label NaN", {"label_path": b + "label_nan.txt"}, "score", ("label_path",)),
        Case("label binary", {"label_path": b + "label_binary.txt"}, "score", ("label_path",)),
        Case("label missing", {"label_path": b + "nope.txt"}, "score"),
        Case("calibration ../ outside the root", {"calib_path": "../outside/secret.txt"}, "error",
             ("calib_path", "outside the data root")),
        Case("calibration absolute outside the root", {"calib_path": "{outside_secret}"}, "error",
             ("calib_path", "outside the data root")),
        Case("calibration /etc/passwd", {"calib_path": "/etc/passwd"}, "error", ("calib_path", "outside the data root")),
        Case("velodyne outside the root", {"velodyne_path": "{outside_scan}"}, "error",
             ("velodyne_path", "outside the data root")),
        Case("image ../../", {"image_path": "bad/../../outside/secret.txt"}, "error", ("image_path", "outside the data root")),
        Case("label outside the root", {"label_path": "{outside_secret}"}, "error", ("label_path", "outside the data root")),
        Case("symlink pointing outside", {"calib_path": b + "link_out.txt"}, "error", ("calib_path", "outside the data root")),
        Case("NUL byte in a path", {"velodyne_path": "bad/x\x00.bin"}, "error", ("velodyne_path", "NUL")),
        Case("null frame id", {"frame_id": None}, "score"),
        Case("10 000-character frame id", {"frame_id": "x" * 10_000}, "score"),
    ]


CASES = _cases()


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """``(input rows, scored output, {column: output of a table whose column has the wrong type}, files the job opened,
    data root)``: every case scored in one ``fusion score`` job over the data root."""
    base = tmp_path_factory.mktemp("driving-reliability")
    with tiny_driving_env(base / "train") as run:
        root = base / "root"
        root.mkdir()
        demo = pl.read_parquet(DRIVING.demo_input(run, root / "demo.parquet"))
        good = demo.row(0, named=True)
        places = {**_build_files(root, good), "good_calib": str(root / good["calib_path"])}
        cases = CASES
        rows = [{**good, "frame_id": f"case-{i}", **fill(case.changes, places)} for i, case in enumerate(cases)]
        pl.DataFrame(rows, schema={c: pl.Utf8 for c in COLUMNS}).write_parquet(root / "input.parquet")
        with record_opens() as opened:
            out = pl.read_parquet(score_file("driving", run, root / "input.parquet", base / "out.parquet", chunk_size=16,
                                             progress=False))
        typed = {}
        for column, values in (("calib_path", pl.Series([7], dtype=pl.Int64)), ("velodyne_path", pl.Series([1.5])),
                               ("image_path", pl.Series([["a.png"]]))):
            table = pl.DataFrame([good]).with_columns(values.alias(column))
            table.write_parquet(root / f"typed-{column}.parquet")
            typed[column] = pl.read_parquet(score_file("driving", run, root / f"typed-{column}.parquet",
                                                       base / f"typed-{column}.out.parquet", progress=False))
        yield rows, out, typed, opened, root


def test_there_are_at_least_40_malformed_inputs():
    assert sum(case.malformed for case in CASES) + 3 >= 40  # + the three wrong-typed columns


def test_rows_keep_their_count_and_order_and_no_score_is_nan(scored):
    rows, out, *_ = scored
    assert out.height == len(rows) == len(CASES)
    assert out["row"].to_list() == list(range(len(rows)))
    assert out["frame_id"].to_list() == [row["frame_id"] for row in rows]
    scores, errors = out["score"].to_list(), out["error"].to_list()
    assert all(s is None or (math.isfinite(s) and 0 <= s <= 1) for s in scores)
    assert all((s is None) != (e is None) for s, e in zip(scores, errors))


def test_nothing_outside_the_root_is_opened_and_nothing_leaks_into_a_message(scored):
    _, out, typed, opened, root = scored
    assert_confined(opened, root, root.parent / "outside")
    assert_no_leak([t for frame in (out, *typed.values()) for column in ("error", "warnings") for t in frame[column]],
                   extra=("this line is broken",))


@pytest.mark.parametrize("index", range(len(CASES)), ids=ids(CASES))
def test_each_case_has_its_exact_outcome(scored, index):
    case, row = CASES[index], scored[1].row(index, named=True)
    if case.outcome == "score":
        assert row["error"] is None, row["error"]
        assert row["score"] is not None and 0 <= row["score"] <= 1
        if not case.expect:
            assert row["warnings"] is None, row["warnings"]
        else:  # one warning per column named, each saying what the row was scored without or how it was changed
            warnings = row["warnings"]
            assert [column for column in case.expect if warnings.startswith(f"{column}: ") or f"; {column}: " in warnings] \
                == list(case.expect), warnings
            consequences = warnings.count("scored without") + warnings.count("letterboxed")
            assert consequences == len(case.expect) == len(warnings.split("; ")), warnings  # '; ' only between
    else:
        assert row["score"] is None and row["warnings"] is None, row
        for text in case.expect:
            assert text in row["error"], row["error"]


@pytest.mark.parametrize("column", ["calib_path", "velodyne_path", "image_path"])
def test_a_path_column_of_the_wrong_type_is_an_error_naming_it(scored, column):
    _, _, typed, *_ = scored
    row = typed[column].row(0, named=True)
    assert row["score"] is None
    assert row["error"].startswith(f"{column}: expected a file path (text)") and f"store {column} as a string" in row["error"]
