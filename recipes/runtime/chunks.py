"""One chunk of a scoring job: score its rows (falling back to one row at a time when the chunk fails as a whole)
and write its part file atomically. Both engines of :mod:`recipes.runtime.score` — the local one in its own process,
the Ray one (:mod:`recipes.runtime.score_ray`) in its workers — write their parts with :func:`write_chunk`, so a
part has the same bytes whichever engine wrote it. See :mod:`recipes.runtime.score` for the output's columns.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

    from recipes.runtime.recipe import Recipe

__all__ = ["score_chunk", "score_part", "write_chunk", "part_path", "extra_outputs"]


def part_path(parts: Path, chunk: int) -> Path:
    return parts / f"part-{chunk:06d}.parquet"


def extra_outputs(recipe: "Recipe") -> dict[str, "pl.DataType"]:
    """The recipe's extra output columns, name → polars dtype (declared as dtype names, e.g. ``"Float64"``)."""
    import polars as pl

    return {name: getattr(pl, dtype) for name, dtype in recipe.extra_outputs}


def _checked(result: Any, expected_rows: int, extras: dict[str, "pl.DataType"]) -> "pl.DataFrame":
    """The recipe's result as ``score`` Float64, its extra outputs, ``warnings`` and ``error`` Utf8, or ValueError when
    it broke the contract. An extra output or ``warnings`` column the recipe left out is null. A non-finite score
    becomes an error (with its extra outputs nulled): a NaN must never reach a user as a score."""
    import polars as pl

    if not isinstance(result, pl.DataFrame):
        raise ValueError(f"score_frame returned {type(result).__name__}, not a polars DataFrame")
    if result.height != expected_rows:
        raise ValueError(f"score_frame returned {result.height} rows for {expected_rows}")
    missing = [c for c in ("score", "error") if c not in result.columns]
    if missing:
        raise ValueError(f"score_frame returned no {missing} column(s)")
    result = result.select(
        pl.col("score").cast(pl.Float64),
        *[(pl.col(c) if c in result.columns else pl.lit(None)).cast(t).alias(c) for c, t in extras.items()],
        (pl.col("warnings") if "warnings" in result.columns else pl.lit(None)).cast(pl.Utf8).alias("warnings"),
        pl.col("error").cast(pl.Utf8),
    )
    bad = pl.col("score").is_not_null() & ~pl.col("score").is_finite()
    result = result.with_columns(
        pl.when(bad).then(pl.lit("the model produced a non-finite score (NaN or inf) for this row; check its inputs "
                                 "for non-finite or out-of-range values")).otherwise(pl.col("error")).alias("error"),
        *[pl.when(bad).then(None).otherwise(pl.col(c)).alias(c) for c in ("score", *extras)],
    )
    # a row must carry a score or a reason why not
    return result.with_columns(
        pl.when(pl.col("score").is_null() & pl.col("error").is_null())
        .then(pl.lit("the recipe returned neither a score nor an error for this row"))
        .otherwise(pl.col("error"))
        .alias("error")
    )


def _describe(error: BaseException) -> str:
    from recipes.runtime.inputs import RowInputError

    text = str(error).strip() or repr(error)
    return text if isinstance(error, RowInputError) else f"{type(error).__name__}: {text}"


def _result_schema(extras: dict[str, "pl.DataType"]) -> dict[str, "pl.DataType"]:
    import polars as pl

    return {"score": pl.Float64, **extras, "warnings": pl.Utf8, "error": pl.Utf8}


def score_chunk(recipe: "Recipe", predictor: Any, chunk: "pl.DataFrame") -> "pl.DataFrame":
    """``score``, the extra outputs and ``error`` for every row of ``chunk``. If the recipe fails on the whole chunk,
    each row is scored on its own, so one bad row costs only itself; a row that still fails gets the exception as
    its error."""
    import polars as pl

    extras = extra_outputs(recipe)
    try:
        return _checked(recipe.score_frame(predictor, chunk), chunk.height, extras)
    except Exception:  # noqa: BLE001 - any failure of the chunk falls back to rows; KeyboardInterrupt still stops
        pass
    rows = []
    for i in range(chunk.height):
        try:
            rows.append(_checked(recipe.score_frame(predictor, chunk.slice(i, 1)), 1, extras))
        except Exception as error:  # noqa: BLE001 - the row records what went wrong, the job goes on
            failed = {"score": [None], **{c: [None] for c in extras}, "warnings": [None], "error": [_describe(error)]}
            rows.append(pl.DataFrame(failed, schema=_result_schema(extras)))
    if not rows:
        return pl.DataFrame(schema=_result_schema(extras))
    return pl.concat(rows)


def score_part(recipe: "Recipe", predictor: Any, chunk: "pl.DataFrame", offset: int, passthrough: list[str]) -> "pl.DataFrame":
    """One part file's rows: ``row`` (the input row index, ``offset`` + position in the chunk — from the input,
    never from the order results come back in), the passthrough columns, then :func:`score_chunk`'s columns.
    Call it inside :func:`recipes.runtime.inputs.data_root` so the rows' paths are confined."""
    import polars as pl

    scored = score_chunk(recipe, predictor, chunk)
    rows = pl.DataFrame({"row": pl.int_range(offset, offset + chunk.height, dtype=pl.Int64, eager=True)})
    return rows.hstack([*chunk.select(passthrough).get_columns(), *scored.get_columns()])


def write_chunk(recipe: "Recipe", predictor: Any, input_path: Path, chunk: int, chunk_size: int, passthrough: list[str],
                data_root: Path, parts: Path) -> int:
    """Score chunk ``chunk`` of ``input_path`` (rows ``[chunk·chunk_size, (chunk+1)·chunk_size)``) inside
    ``data_root`` and write its part file atomically; returns its row count. Every engine writes its parts with
    this: the local one in this process, the Ray one in its workers."""
    import polars as pl

    from recipes.runtime.inputs import data_root as confined_to

    offset = chunk * chunk_size
    rows = pl.scan_parquet(input_path).slice(offset, chunk_size).collect()
    with confined_to(data_root):
        part = score_part(recipe, predictor, rows, offset, passthrough)
    _write_part(part, part_path(parts, chunk))
    return rows.height


def _write_part(frame: "pl.DataFrame", path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, path)
