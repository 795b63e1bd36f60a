"""``fusion score``: stream a Parquet file through a recipe's scorer in chunks, resumably and in shards.

Chunk ``k`` covers input rows ``[k·C, (k+1)·C)``. Each finished chunk is written atomically to
``<output>.parts/part-<k:06d>.parquet``, so a killed job restarts where it stopped, and ``shard=(i, n)`` lets
``n`` processes split the chunks into contiguous ranges. Whichever process finds every chunk done merges the
parts into ``<output>`` (atomically) and removes the parts folder. The merged file holds one row per input row, in
input order: ``row`` (Int64, input row index), the recipe's ``passthrough`` columns, ``score`` (Float64, null when
the row could not be scored), the recipe's ``extra_outputs`` (e.g. one probability per finding, null where the
row could not be scored), ``warnings`` (Utf8: what a scored row was scored without, e.g. a modality whose file
could not be read; null when nothing) and ``error`` (Utf8, null when it could). It has the same bytes however the
job ran. A score is never NaN: a non-finite score becomes an ``error``.

Every file path an input row names is confined to the data root (``data_root``, by default the input file's
folder): see :mod:`recipes.runtime.inputs`.

``engine="ray"`` (or a :class:`recipes.runtime.score_ray.RayEngine`) scores the chunks as Ray tasks, each writing
its part file with the same :func:`write_chunk`; everything else (manifest, resume, merge) is this module's.
Paths may be given as ``file://`` URLs.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.runtime.chunks import extra_outputs, part_path, score_chunk, score_part, write_chunk

if TYPE_CHECKING:
    import polars as pl

    from recipes.runtime.recipe import Recipe
    from recipes.runtime.runs import Run
    from recipes.runtime.score_ray import RayEngine

__all__ = ["score_file", "score_chunk", "score_part", "write_chunk", "ScoreInputError", "parse_shard", "DEFAULT_CHUNK_SIZE", "OUTPUT_COLUMNS"]

DEFAULT_CHUNK_SIZE = 10_000
OUTPUT_COLUMNS = ("row", "score", "warnings", "error")
_MANIFEST = "manifest.json"


class ScoreInputError(ValueError):
    """The input file cannot be scored at all (missing, unreadable, not Parquet, required columns missing)."""


def parse_shard(spec: str) -> tuple[int, int]:
    """``"1/4"`` → ``(1, 4)``: shard 1 of 4, counting from 0."""
    index, sep, count = spec.partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit():
        raise ValueError(f"bad shard {spec!r}: write it as i/n with 0 <= i < n, e.g. --shard 0/4")
    shard = (int(index), int(count))
    _check_shard(shard)
    return shard


def _check_shard(shard: tuple[int, int]) -> None:
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"bad shard {index}/{count}: need 0 <= i < n, e.g. --shard 0/4")


def _parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def _inspect_input(recipe: "Recipe", path: Path) -> tuple[int, list[str]]:
    """(row count, column names) of the input, or a :class:`ScoreInputError` that says what to fix."""
    import pyarrow.parquet as pq

    if not path.exists():
        raise ScoreInputError(f"{path}: no such file; pass the Parquet file to score with --input")
    if not path.is_file():
        raise ScoreInputError(f"{path}: not a file; pass one Parquet file with --input")
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, ValueError) as error:
        raise ScoreInputError(
            f"{path}: not a readable Parquet file ({error}); convert it first, e.g. "
            f"polars.read_csv('{path.name}').write_parquet('{path.stem}.parquet')"
        ) from None
    columns = list(parquet.schema_arrow.names)
    missing = [c for c in recipe.score_columns if c not in columns]
    if missing:
        raise ScoreInputError(
            f"{path}: missing column(s) {missing} that recipe {recipe.name} needs; expected columns "
            f"{list(recipe.score_columns)}, found {columns}"
        )
    return parquet.metadata.num_rows, columns


def _output_schema(input_path: Path, passthrough: list[str], extras: dict[str, "pl.DataType"]):
    """The merged file's Arrow schema; passthrough types as polars reads them from the input."""
    import polars as pl
    import pyarrow as pa

    empty = pl.scan_parquet(input_path).select(passthrough).head(0).collect()
    frame = pl.DataFrame(
        {"row": pl.Series([], dtype=pl.Int64), **{c: empty[c] for c in passthrough},
         "score": pl.Series([], dtype=pl.Float64), **{c: pl.Series([], dtype=t) for c, t in extras.items()},
         "warnings": pl.Series([], dtype=pl.Utf8), "error": pl.Series([], dtype=pl.Utf8)}
    )
    return pa.schema([field.remove_metadata() for field in frame.to_arrow().schema])


def _write_manifest(parts: Path, manifest: dict[str, Any]) -> None:
    """Record what the parts belong to; refuse to mix parts of a different job into this output."""
    file = parts / _MANIFEST
    if file.is_file():
        existing = json.loads(file.read_text())
        if existing != manifest:
            changed = sorted(k for k in manifest if existing.get(k) != manifest[k])
            raise ScoreInputError(
                f"{parts} holds finished chunks of a different job (differs in {changed}); rerun with the same "
                f"input, run and chunk size, or delete {parts} to start over"
            )
        return
    tmp = parts / f".{_MANIFEST}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(tmp, file)


def _local_path(value: str | Path) -> Path:
    """A path, or a ``file://`` URL as a path; any other URL scheme is refused with what to do instead."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    text = str(value)
    if "://" not in text:
        return Path(value)
    url = urlparse(text)
    if url.scheme == "file" and url.netloc in ("", "localhost"):
        return Path(url2pathname(url.path))
    raise ScoreInputError(f"{text}: only local paths and file:// URLs are supported; mount the storage (NFS, s3fs, "
                          "gcsfuse) at the same path on every node and pass that path")


MERGED_ROW_GROUP = 65_536  # rows per row group of the merged file, whatever the chunk size


def _merge(parts: Path, chunks: int, schema, output: Path) -> None:
    """Concatenate the parts in chunk order into ``output`` in row groups of :data:`MERGED_ROW_GROUP` rows with fixed
    writer options, so the bytes depend only on the rows — not on the chunk size, the engine or the shards. Holds at
    most one row group plus one part in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = output.with_name(f".{output.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd", write_statistics=True) as writer:
            pending: list[pa.Table] = []
            rows = 0
            for k in range(chunks):
                table = pq.read_table(part_path(parts, k)).select(schema.names).replace_schema_metadata(None).cast(schema)
                pending.append(table)
                rows += table.num_rows
                while rows >= MERGED_ROW_GROUP:
                    merged = pa.concat_tables(pending)
                    writer.write_table(merged.slice(0, MERGED_ROW_GROUP).combine_chunks(), row_group_size=MERGED_ROW_GROUP)
                    pending, rows = [merged.slice(MERGED_ROW_GROUP)], rows - MERGED_ROW_GROUP
            if rows or chunks == 0:
                rest = pa.concat_tables(pending) if pending else pa.Table.from_batches([], schema=schema)
                writer.write_table(rest.combine_chunks(), row_group_size=MERGED_ROW_GROUP)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def score_file(
    recipe: "Recipe | str",
    run: "Run | str | Path",
    input_path: str | Path,
    output_path: str | Path,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
    runs_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    engine: "str | RayEngine" = "local",
) -> Path:
    """Score ``input_path`` with ``run`` of ``recipe`` into ``output_path`` (see the module docstring).

    ``run`` is a :class:`Run`, a run folder, a run id or ``latest`` (looked up under ``runs_dir``).
    ``data_root`` is the folder every file the rows name must lie in (default: ``input_path``'s folder).
    ``engine`` is ``"local"`` (this process), ``"ray"`` (a :class:`~recipes.runtime.score_ray.RayEngine` with its
    defaults) or a configured ``RayEngine``.
    Returns ``output_path``; with ``shard`` it is written by whichever shard finishes last.
    """
    from recipes.runtime.recipe import Recipe
    from recipes.runtime.registry import get_recipe
    from recipes.runtime.runs import Run, resolve_run

    recipe = recipe if isinstance(recipe, Recipe) else get_recipe(recipe)
    run = run if isinstance(run, Run) else resolve_run(recipe.name, run, runs_dir)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    shard = shard or (0, 1)
    _check_shard(shard)
    if engine == "ray":
        from recipes.runtime.score_ray import RayEngine

        engine = RayEngine()
    elif isinstance(engine, str) and engine != "local":
        raise ValueError(f"unknown engine {engine!r}: use 'local' or 'ray'")
    input_path, output_path = _local_path(input_path), _local_path(output_path)
    if input_path.resolve() == output_path.resolve():
        raise ScoreInputError(f"{input_path}: the output would overwrite the input; pass another --output")

    num_rows, columns = _inspect_input(recipe, input_path)
    root = _local_path(data_root) if data_root is not None else input_path.resolve().parent
    if not root.is_dir():
        raise ScoreInputError(f"data root {root}: not a folder; pass --data-root with the folder that holds the files "
                              f"the input names")
    passthrough = [c for c in dict.fromkeys(recipe.passthrough) if c in columns and c not in OUTPUT_COLUMNS]
    schema = _output_schema(input_path, passthrough, extra_outputs(recipe))
    chunks = math.ceil(num_rows / chunk_size)
    first, last = shard[0] * chunks // shard[1], (shard[0] + 1) * chunks // shard[1]

    parts = _parts_dir(output_path)
    parts.mkdir(parents=True, exist_ok=True)
    stat = input_path.stat()
    _write_manifest(parts, {
        "recipe": recipe.name, "run": str(run.path.resolve()), "input": str(input_path.resolve()),
        "input_bytes": stat.st_size, "input_mtime_ns": stat.st_mtime_ns, "rows": num_rows, "chunk_size": chunk_size,
        "columns": schema.names, "data_root": str(root.resolve()),
    })
    for stale in parts.glob(".part-*.tmp"):  # left by a killed process; only this shard writes its chunks
        chunk = int(stale.name[len(".part-"):][:6])
        if first <= chunk < last:
            stale.unlink(missing_ok=True)

    todo = [k for k in range(first, last) if not part_path(parts, k).is_file()]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        label = f"scoring {input_path.name}" + (f" (shard {shard[0]}/{shard[1]})" if shard[1] > 1 else "")
        bar = tqdm(total=last - first, initial=last - first - len(todo), desc=label, unit="chunk", file=sys.stderr)
    try:
        if isinstance(engine, str):
            predictor = recipe.load_predictor(run) if todo else None
            for k in todo:
                write_chunk(recipe, predictor, input_path, k, chunk_size, passthrough, root, parts)
                if bar is not None:
                    bar.update(1)
        else:
            engine.score_chunks(recipe, run, input_path, todo, chunk_size, passthrough, root, parts,
                                on_chunk=None if bar is None else lambda: bar.update(1))
    finally:
        if bar is not None:
            bar.close()

    done = sum(part_path(parts, k).is_file() for k in range(chunks))
    if done < chunks:
        if progress:
            print(f"shard {shard[0]}/{shard[1]} done; {done}/{chunks} chunks finished — the last shard to finish writes "
                  f"{output_path}", file=sys.stderr)
        return output_path
    try:
        _merge(parts, chunks, schema, output_path)
    except FileNotFoundError:
        # another shard merged and removed the parts first; its output is the same file
        if not output_path.is_file():
            raise
    shutil.rmtree(parts, ignore_errors=True)
    if progress:
        print(f"wrote {output_path} ({num_rows} rows)", file=sys.stderr)
    return output_path
