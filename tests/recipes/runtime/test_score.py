"""`fusion score`: one row per input row in order, bad rows get errors, resume and shards give the same bytes."""
from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pytest
import torch

from tests.recipes.runtime import toy_recipe
from recipes.runtime.score import ScoreInputError, parse_shard, score_file

ROWS, CHUNK = 45, 8  # 6 chunks, the last one short


@pytest.fixture(scope="module")
def scoring_input(tmp_path_factory):
    """45 rows; f2 as text so a row can hold a non-number: row 3 'abc', row 7 missing, row 12 the sentinel."""
    frame = toy_recipe.make_frame(ROWS).with_columns(pl.col("f2").cast(pl.Utf8))
    frame = frame.with_columns(
        pl.when(pl.col("id") == "r3").then(pl.lit("abc")).when(pl.col("id") == "r7").then(None).otherwise(pl.col("f2")).alias("f2"),
        pl.when(pl.col("id") == "r12").then(toy_recipe.SENTINEL).otherwise(pl.col("f0")).alias("f0"),
        pl.lit(1).alias("unused"),
    )
    path = tmp_path_factory.mktemp("input") / "input.parquet"
    frame.write_parquet(path)
    return path


@pytest.fixture(scope="module")
def clean_output(trained_run, scoring_input, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "scores.parquet"
    return score_file(toy_recipe.TOY, trained_run, scoring_input, out, chunk_size=CHUNK, progress=False)


def test_one_row_per_input_row_in_order_with_errors_for_bad_rows(clean_output, scoring_input, trained_run):
    out = pl.read_parquet(clean_output)
    source = pl.read_parquet(scoring_input)
    assert out.columns == ["row", "id", "score", "positive", "warnings", "error"]
    assert out.schema == pl.Schema(
        {"row": pl.Int64, "id": pl.Utf8, "score": pl.Float64, "positive": pl.Boolean, "warnings": pl.Utf8, "error": pl.Utf8}
    )
    assert out["row"].to_list() == list(range(ROWS))
    assert out["id"].to_list() == source["id"].to_list()
    errors = dict(zip(out["row"].to_list(), out["error"].to_list()))
    assert errors.pop(3) == "f2 is not a number: abc"
    assert errors.pop(7) == "f2 is missing"
    assert errors.pop(12) == "ValueError: f0 = -999.0 is not allowed"  # its chunk fell back to row by row
    assert all(e is None for e in errors.values())
    bad = out.filter(pl.col("row").is_in([3, 7, 12]))
    assert bad["score"].null_count() == 3 and bad["positive"].null_count() == 3  # row 12 failed as a whole row
    assert out.drop_nulls("score").select((pl.col("score") > 0.5) == pl.col("positive")).to_series().all()
    good = out.filter(~pl.col("row").is_in([3, 7, 12]))
    x = torch.tensor(source.filter(~pl.col("id").is_in(["r3", "r7", "r12"])).select(pl.col(toy_recipe.FEATURES).cast(pl.Float64)).to_numpy(), dtype=torch.float32)
    with torch.no_grad():
        expected = torch.sigmoid(trained_run.load_module()(x)).double()
    assert torch.allclose(torch.tensor(good["score"].to_list(), dtype=torch.float64), expected, atol=1e-6)
    assert not (clean_output.parent / "scores.parquet.parts").exists()


@dataclass
class KilledOnce(toy_recipe.ToyRecipe):
    """Simulates a job killed while scoring its third chunk (single-row calls are the fallback of chunk 1)."""

    chunk_calls: int = 0

    def score_frame(self, predictor, frame):
        self.chunk_calls += frame.height > 1
        if self.chunk_calls == 3:
            raise KeyboardInterrupt
        return super().score_frame(predictor, frame)


def test_a_killed_job_resumes_to_the_same_bytes(trained_run, scoring_input, clean_output, tmp_path):
    out = tmp_path / "scores.parquet"
    killer = KilledOnce(**{f: getattr(toy_recipe.TOY, f) for f in ("name", "configs_dir", "links", "score_columns", "passthrough", "extra_outputs")})
    with pytest.raises(KeyboardInterrupt):
        score_file(killer, trained_run, scoring_input, out, chunk_size=CHUNK, progress=False)
    parts = tmp_path / "scores.parquet.parts"
    assert sorted(p.name for p in parts.glob("part-*")) == ["part-000000.parquet", "part-000001.parquet"]
    assert not out.exists()
    score_file(toy_recipe.TOY, trained_run, scoring_input, out, chunk_size=CHUNK, progress=False)
    assert out.read_bytes() == clean_output.read_bytes()
    assert not parts.exists()


def test_shards_together_equal_one_process(trained_run, scoring_input, clean_output, tmp_path):
    out = tmp_path / "scores.parquet"
    score_file(toy_recipe.TOY, trained_run, scoring_input, out, chunk_size=CHUNK, shard=(1, 2), progress=False)
    assert not out.exists()
    assert sorted(p.name for p in (tmp_path / "scores.parquet.parts").glob("part-*")) == [f"part-00000{k}.parquet" for k in (3, 4, 5)]
    score_file(toy_recipe.TOY, trained_run, scoring_input, out, chunk_size=CHUNK, shard=(0, 2), progress=False)
    assert out.read_bytes() == clean_output.read_bytes()


def test_a_recipe_that_breaks_the_contract_loses_no_rows(trained_run, scoring_input, tmp_path):
    @dataclass
    class DropsRows(toy_recipe.ToyRecipe):
        def score_frame(self, predictor, frame):
            return super().score_frame(predictor, frame).head(1) if frame.height > 1 else pl.DataFrame({"score": [None]}, schema={"score": pl.Float64})

    broken = DropsRows(**{f: getattr(toy_recipe.TOY, f) for f in ("name", "configs_dir", "score_columns", "passthrough")})
    out = pl.read_parquet(score_file(broken, trained_run, scoring_input, tmp_path / "o.parquet", chunk_size=CHUNK, progress=False))
    assert out.height == ROWS and out["score"].null_count() == ROWS
    assert set(out["error"].to_list()) == {"ValueError: score_frame returned no ['error'] column(s)"}


def test_empty_input_gives_an_empty_typed_output(trained_run, tmp_path):
    path = tmp_path / "empty.parquet"
    toy_recipe.make_frame(0).write_parquet(path)
    out = pl.read_parquet(score_file(toy_recipe.TOY, trained_run, path, tmp_path / "o.parquet", progress=False))
    assert out.height == 0 and out.columns == ["row", "id", "score", "positive", "warnings", "error"]


def test_file_level_problems_raise_score_input_error(trained_run, scoring_input, tmp_path):
    frame = toy_recipe.make_frame(4).drop("f3", "f1")
    missing = tmp_path / "missing_columns.parquet"
    frame.write_parquet(missing)
    with pytest.raises(ScoreInputError, match=r"missing_columns.parquet: missing column\(s\) \['f1', 'f3'\].*expected columns \['f0', 'f1', 'f2', 'f3'\]"):
        score_file(toy_recipe.TOY, trained_run, missing, tmp_path / "o.parquet", progress=False)
    text = tmp_path / "scores.csv"
    text.write_text("f0,f1\n1,2\n")
    with pytest.raises(ScoreInputError, match=r"scores.csv: not a readable Parquet file"):
        score_file(toy_recipe.TOY, trained_run, text, tmp_path / "o.parquet", progress=False)
    with pytest.raises(ScoreInputError, match=r"nowhere.parquet: no such file"):
        score_file(toy_recipe.TOY, trained_run, tmp_path / "nowhere.parquet", tmp_path / "o.parquet", progress=False)


def test_parts_of_another_job_are_not_mixed_in(trained_run, scoring_input, tmp_path):
    out = tmp_path / "scores.parquet"
    score_file(toy_recipe.TOY, trained_run, scoring_input, out, chunk_size=CHUNK, shard=(0, 3), progress=False)
    with pytest.raises(ScoreInputError, match=r"different job \(differs in \['chunk_size'\]\)"):
        score_file(toy_recipe.TOY, trained_run, scoring_input, out, chunk_size=CHUNK + 1, progress=False)


@pytest.mark.parametrize("spec", ["1", "2/2", "-1/2", "a/b", "0/0"])
def test_bad_shard_specs(spec):
    with pytest.raises(ValueError, match="bad shard"):
        parse_shard(spec)
    assert parse_shard("1/3") == (1, 3)
