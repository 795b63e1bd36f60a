"""The data root, the `warnings` column and the never-NaN rule of `fusion score`, on a toy recipe that reads files.

Each row names a text file holding a multiplier for the toy's score. A missing or unreadable file leaves the row
scored without it and says so in `warnings`; a path that escapes the data root (``..``, absolute, symlink) is a
per-row error that names the column and quotes nothing of the file; a multiplier of ``nan`` makes the score NaN,
which the runtime turns into an error.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import polars as pl
import pytest

from recipes.runtime.inputs import RowInputError, current_data_root, data_root, resolve_input_path
from recipes.runtime.score import score_file
from tests.recipes.runtime import toy_recipe

SECRET = "top-secret-content-0123"


@dataclass
class FileToy(toy_recipe.ToyRecipe):
    def score_frame(self, predictor, frame: pl.DataFrame) -> pl.DataFrame:
        base = super().score_frame(predictor, frame.drop("weight_path"))
        scores, warnings, errors = [], [], []
        for score, error, value in zip(base["score"], base["error"], frame["weight_path"]):
            warning = None
            if value is not None and error is None:
                try:
                    path = resolve_input_path(value, "weight_path")
                except RowInputError as problem:
                    score, error = None, str(problem)
                else:
                    try:
                        score = score * float(path.read_text())
                    except (OSError, ValueError) as problem:
                        warning = f"weight_path: {path.name} could not be read ({type(problem).__name__}); scored without it"
            scores.append(score)
            warnings.append(warning)
            errors.append(error)
        return pl.DataFrame({"score": scores, "warnings": warnings, "error": errors},
                            schema={"score": pl.Float64, "warnings": pl.Utf8, "error": pl.Utf8})


@pytest.fixture(scope="module")
def file_toy(trained_run):
    return FileToy(**{f: getattr(toy_recipe.TOY, f) for f in toy_recipe.TOY.__dataclass_fields__})


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """``root/`` holds the input and its files; ``outside/secret.txt`` lies next to it."""
    base = tmp_path_factory.mktemp("layout")
    root, outside = base / "root", base / "outside"
    (root / "files").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (root / "files" / "half.txt").write_text("0.5")
    (root / "files" / "bad.txt").write_text("not a number")
    (root / "files" / "nan.txt").write_text("nan")
    (root / "files" / "link.txt").symlink_to(outside / "secret.txt")
    (root / "files" / "inner_link.txt").symlink_to(root / "files" / "half.txt")
    paths = [
        "files/half.txt",                     # 0 relative to the root: read
        str(root / "files" / "half.txt"),     # 1 absolute inside the root: read
        None,                                 # 2 no file: scored without it, no warning
        "files/missing.txt",                  # 3 missing: warning
        "files/bad.txt",                      # 4 unparsable: warning
        "../outside/secret.txt",              # 5 traversal: error
        str(outside / "secret.txt"),          # 6 absolute outside: error
        "files/link.txt",                     # 7 symlink out: error
        "files/inner_link.txt",               # 8 symlink inside: read
        "files/nan.txt",                      # 9 NaN multiplier: error, never a NaN score
        "files",                              # 10 a folder: warning
    ]
    frame = toy_recipe.make_frame(len(paths)).with_columns(weight_path=pl.Series(paths, dtype=pl.Utf8))
    frame.write_parquet(root / "input.parquet")
    return root, outside


@pytest.fixture(scope="module")
def scored(file_toy, trained_run, layout):
    root, _ = layout
    out = score_file(file_toy, trained_run, root / "input.parquet", root.parent / "out.parquet", chunk_size=4, progress=False)
    plain = score_file(toy_recipe.TOY, trained_run, root / "input.parquet", root.parent / "plain.parquet", progress=False)
    return pl.read_parquet(out), pl.read_parquet(plain)


def test_output_has_a_warnings_column_before_error(scored):
    out, plain = scored
    assert out.columns == ["row", "id", "score", "positive", "warnings", "error"]
    assert out.schema["warnings"] == pl.Utf8
    assert plain["warnings"].null_count() == plain.height  # a recipe that returns no warnings column gets nulls


def test_files_inside_the_root_are_read_relative_or_absolute_or_through_inner_symlinks(scored):
    out, plain = scored
    for row in (0, 1, 8):
        assert out["score"][row] == pytest.approx(0.5 * plain["score"][row])
        assert out["error"][row] is None and out["warnings"][row] is None
    assert out["score"][2] == plain["score"][2] and out["warnings"][2] is None


def test_an_unreadable_file_scores_without_it_and_warns(scored):
    out, plain = scored
    for row, name in ((3, "missing.txt"), (4, "bad.txt"), (10, "files")):
        assert out["score"][row] == plain["score"][row]
        assert out["error"][row] is None
        assert out["warnings"][row].startswith(f"weight_path: {name} could not be read")


def test_paths_escaping_the_root_are_row_errors_that_quote_no_content(scored, layout):
    out, _ = scored
    root, _ = layout
    for row in (5, 6, 7):
        assert out["score"][row] is None
        error = out["error"][row]
        assert error.startswith("weight_path: ") and "lies outside the data root" in error and "--data-root" in error
        assert str(root.resolve()) in error and SECRET not in error


def test_a_nan_score_becomes_an_error(scored):
    out, _ = scored
    assert out["score"][9] is None and out["positive"][9] is None
    assert "non-finite score" in out["error"][9]
    assert out["score"].drop_nulls().is_finite().all()


def test_a_wider_data_root_admits_the_outside_file(file_toy, trained_run, layout, scored, tmp_path):
    root, outside = layout
    (outside / "secret.txt").write_text("2.0")
    try:
        out = pl.read_parquet(score_file(file_toy, trained_run, root / "input.parquet", tmp_path / "o.parquet",
                                         progress=False, data_root=root.parent))
    finally:
        (outside / "secret.txt").write_text(SECRET)
    assert out["error"][6] is None  # the absolute path now lies inside
    assert out["score"][6] == pytest.approx(2.0 * scored[1]["score"][6])
    assert "outside the data root" in out["error"][5]  # "../outside" from the wider root still climbs out of it
    # relative paths are read from the data root, so rows 0 and 7 now name files that are not there
    assert out["warnings"][0].startswith("weight_path: half.txt could not be read")
    assert out["warnings"][7].startswith("weight_path: link.txt could not be read")


def test_resolve_input_path_checks_types_and_lifts_outside_a_job(tmp_path):
    assert current_data_root() is None
    assert str(resolve_input_path("../x.png", "xray_path")) == os.path.join("..", "x.png")
    for value, needle in ((3, "got int"), ("", "empty path"), ("a\x00b", "NUL byte"), ([1], "got list")):
        with pytest.raises(RowInputError, match=needle) as info:
            resolve_input_path(value, "xray_path")
        assert str(info.value).startswith("xray_path: ")
    with data_root(tmp_path) as root:
        assert current_data_root() == root == tmp_path.resolve()
        assert resolve_input_path("a/b.png", "c") == tmp_path.resolve() / "a" / "b.png"
        with pytest.raises(RowInputError, match="outside the data root"):
            resolve_input_path("/etc/passwd", "c")
    assert current_data_root() is None
    with pytest.raises(NotADirectoryError):
        with data_root(tmp_path / "nope"):
            pass
