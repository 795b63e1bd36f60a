"""Readers of the real recommendation logs: MovieLens-100K (RecBole's atomic files and the original GroupLens
layout) and Alibaba's Taobao UserBehavior CSV, with the fetch functions ``fusion data fetch`` calls and their
integrity checks. Everything here returns polars frames in raw ids; :mod:`recipes.longseq_rec.tasks` turns them
into the click task.
"""
from __future__ import annotations

import io
import shutil
import uuid
import zipfile
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

import polars as pl

from recipes.runtime.datasets import DatasetFetchError, pip_extract, progress, replace_dir, try_url

__all__ = [
    "ML100K_COUNTS",
    "ML100K_URL",
    "GROUPLENS_GENRES",
    "MovieLensFrames",
    "read_atomic_file",
    "read_movielens",
    "read_movielens_atomic",
    "read_movielens_grouplens",
    "movielens_folder",
    "write_movielens_atomic",
    "check_movielens_100k",
    "fetch_movielens_100k",
    "TAOBAO_BEHAVIORS",
    "TaobaoFormatError",
    "read_taobao_user_behavior",
    "iter_taobao_user_behavior",
    "fetch_taobao",
]

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_COUNTS = {"ratings": 100_000, "users": 943, "items": 1_682}
RECBOLE_WHEEL = ("recbole", "1.2.1", "recbole/dataset_example/ml-100k/")
# u.item's 19 genre flags, in the order of GroupLens' u.genre.
GROUPLENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
TAOBAO_COLUMNS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
TAOBAO_BEHAVIORS = ("pv", "buy", "cart", "fav")


# ----------------------------------------------------------------------------------------------------------
# MovieLens-100K: RecBole atomic files and the original GroupLens layout
# ----------------------------------------------------------------------------------------------------------
class MovieLensFrames(NamedTuple):
    """ML-100K as three frames.

    ``ratings``: user_id, item_id (Int64), rating (Float64), timestamp (Int64, seconds)
    ``items``:   item_id (Int64), title (Utf8), release_year (Int64, null when unknown), genres (List[Utf8])
    ``users``:   user_id, age (Int64), gender, occupation, zip_code (Utf8)
    """

    ratings: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame


def read_atomic_file(path: str | Path) -> pl.DataFrame:
    """Read one RecBole atomic file: tab separated, header fields ``name:type``.

    ``token`` → Utf8, ``float`` → Float64, ``token_seq`` → List[Utf8] (split on spaces), ``float_seq`` →
    List[Float64]. Column names lose their ``:type`` suffix. No quoting: titles keep their quote characters.
    """
    path = Path(path)
    with path.open("r", encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").rstrip("\r").split("\t")
    names, kinds = [], []
    for entry in header:
        name, _, kind = entry.partition(":")
        if kind not in ("token", "float", "token_seq", "float_seq"):
            raise ValueError(f"{path}: header field {entry!r} is not name:type with type token|float|token_seq|float_seq")
        names.append(name)
        kinds.append(kind)
    frame = pl.read_csv(
        path, separator="\t", has_header=True, new_columns=names, quote_char=None,
        schema_overrides={name: pl.Utf8 for name in names}, infer_schema=False,
        truncate_ragged_lines=False,
    )
    casts = []
    for name, kind in zip(names, kinds):
        column = pl.col(name)
        if kind == "float":
            casts.append(column.cast(pl.Float64))
        elif kind == "token_seq":
            casts.append(column.str.split(" "))
        elif kind == "float_seq":
            casts.append(column.str.split(" ").list.eval(pl.element().cast(pl.Float64)))
    return frame.with_columns(casts) if casts else frame


def _find_file(folder: Path, suffix: str) -> Path:
    preferred = folder / f"ml-100k{suffix}"
    if preferred.is_file():
        return preferred
    candidates = sorted(folder.glob(f"*{suffix}"))
    if len(candidates) != 1:
        raise FileNotFoundError(f"{folder}: expected one *{suffix} file, found {[p.name for p in candidates]}")
    return candidates[0]


def read_movielens_atomic(folder: str | Path) -> MovieLensFrames:
    """Read RecBole's atomic ML-100K files (``ml-100k.inter``, ``.item``, ``.user``) from ``folder``."""
    folder = Path(folder)
    inter = read_atomic_file(_find_file(folder, ".inter"))
    ratings = inter.select(
        pl.col("user_id").cast(pl.Int64), pl.col("item_id").cast(pl.Int64),
        pl.col("rating").cast(pl.Float64), pl.col("timestamp").cast(pl.Int64),
    )
    item = read_atomic_file(_find_file(folder, ".item"))
    items = item.select(
        pl.col("item_id").cast(pl.Int64),
        pl.col("movie_title").list.join(" ").alias("title"),
        pl.col("release_year").cast(pl.Int64, strict=False),  # RecBole writes "unkonwn" for item 267
        pl.col("class").alias("genres"),
    )
    user = read_atomic_file(_find_file(folder, ".user"))
    users = user.select(
        pl.col("user_id").cast(pl.Int64), pl.col("age").cast(pl.Int64),
        "gender", "occupation", "zip_code",
    )
    return MovieLensFrames(ratings, items, users)


def read_movielens_grouplens(folder: str | Path) -> MovieLensFrames:
    """Read the original GroupLens layout: ``u.data`` (tab separated), ``u.item`` and ``u.user`` (``|``
    separated, Latin-1). Titles lose their trailing ``(year)``, as in RecBole's conversion; the release year
    comes from the release date (the title's year when the date is missing); genres are the set flags in
    ``u.genre`` order."""
    folder = Path(folder)
    ratings = pl.read_csv(
        folder / "u.data", separator="\t", has_header=False, quote_char=None,
        new_columns=["user_id", "item_id", "rating", "timestamp"],
        schema_overrides={"user_id": pl.Int64, "item_id": pl.Int64, "rating": pl.Float64, "timestamp": pl.Int64},
    )
    item_text = (folder / "u.item").read_bytes().decode("latin-1").encode("utf-8")
    flag_names = [f"g{i}" for i in range(len(GROUPLENS_GENRES))]
    raw_items = pl.read_csv(
        io.BytesIO(item_text), separator="|", has_header=False, quote_char=None, infer_schema=False,
        new_columns=["item_id", "title", "release_date", "video_release_date", "url", *flag_names],
    )
    genres = pl.concat_list(
        [pl.when(pl.col(flag) == "1").then(pl.lit(name)) for flag, name in zip(flag_names, GROUPLENS_GENRES)]
    ).list.drop_nulls()
    title_year = pl.col("title").str.extract(r"\((\d{4})\)\s*$", 1).cast(pl.Int64)
    items = raw_items.select(
        pl.col("item_id").cast(pl.Int64),
        pl.col("title").str.replace(r"\s*\(\d{4}\)\s*$", "").alias("title"),
        pl.coalesce(pl.col("release_date").str.slice(-4).cast(pl.Int64, strict=False), title_year).alias("release_year"),
        pl.when(genres.list.len() > 0).then(genres).otherwise(pl.lit(["unknown"])).alias("genres"),
    )
    user_text = (folder / "u.user").read_bytes().decode("latin-1").encode("utf-8")
    users = pl.read_csv(
        io.BytesIO(user_text), separator="|", has_header=False, quote_char=None, infer_schema=False,
        new_columns=["user_id", "age", "gender", "occupation", "zip_code"],
    ).with_columns(pl.col("user_id").cast(pl.Int64), pl.col("age").cast(pl.Int64))
    return MovieLensFrames(ratings, items, users)


def movielens_folder(folder: Path) -> Path:
    """The folder that holds the files: ``folder`` itself or its ``ml-100k`` subfolder (an unzipped download)."""
    if not any(folder.glob("*.inter")) and not (folder / "u.data").is_file() and (folder / "ml-100k").is_dir():
        return folder / "ml-100k"
    return folder


def read_movielens(folder: str | Path) -> MovieLensFrames:
    """Read ML-100K from ``folder`` in either layout (RecBole atomic files or GroupLens ``u.*`` files)."""
    folder = movielens_folder(Path(folder))
    if any(folder.glob("*.inter")):
        return read_movielens_atomic(folder)
    if (folder / "u.data").is_file():
        return read_movielens_grouplens(folder)
    raise FileNotFoundError(
        f"{folder}: no MovieLens files; expected ml-100k.inter/.item/.user (RecBole atomic files) "
        f"or u.data/u.item/u.user (GroupLens layout)"
    )


def write_movielens_atomic(frames: MovieLensFrames, folder: str | Path) -> Path:
    """Write ``frames`` as RecBole atomic files ``ml-100k.inter/.item/.user`` (the cache's layout)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def write(frame: pl.DataFrame, header: list[str], name: str) -> None:
        with (folder / name).open("w", encoding="utf-8") as handle:
            handle.write("\t".join(header) + "\n")
            frame.write_csv(handle, separator="\t", include_header=False, quote_style="never")

    write(frames.ratings.select("user_id", "item_id", pl.col("rating").cast(pl.Int64), "timestamp"),
          ["user_id:token", "item_id:token", "rating:float", "timestamp:float"], "ml-100k.inter")
    write(frames.items.select("item_id", "title", "release_year", pl.col("genres").list.join(" ")),
          ["item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"], "ml-100k.item")
    write(frames.users.select("user_id", "age", "gender", "occupation", "zip_code"),
          ["user_id:token", "age:token", "gender:token", "occupation:token", "zip_code:token"], "ml-100k.user")
    return folder


def check_movielens_100k(frames: MovieLensFrames, source: str | Path) -> None:
    """Raise :class:`DatasetFetchError` unless ``frames`` hold all of ML-100K (100,000 ratings, 943 users,
    1,682 items): a cut download or a truncated file fails here instead of training on part of the data."""
    found = {
        "ratings": frames.ratings.height,
        "users": frames.users.height,
        "items": frames.items.height,
        "rating users": frames.ratings["user_id"].n_unique(),
        "rated items": frames.ratings["item_id"].n_unique(),
    }
    expected = {
        "ratings": ML100K_COUNTS["ratings"],
        "users": ML100K_COUNTS["users"],
        "items": ML100K_COUNTS["items"],
        "rating users": ML100K_COUNTS["users"],
        "rated items": ML100K_COUNTS["items"],
    }
    wrong = [f"{name} {found[name]:,} (expected {expected[name]:,})" for name in found if found[name] != expected[name]]
    if wrong:
        raise DatasetFetchError(
            f"MovieLens-100K in {source} is incomplete or truncated: {', '.join(wrong)}. "
            f"Delete it and fetch again (fusion data fetch movielens-100k --force), or pass a complete copy with --path."
        )


def _fetch_grouplens_zip(dest: Path) -> Path | None:
    """The official zip, converted to atomic files in ``dest``; None when it cannot be downloaded."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = dest.parent / f".{dest.name}.zip-{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    try:
        archive_path = try_url(ML100K_URL, scratch / "ml-100k.zip", timeout=15.0)
        if archive_path is None:
            return None
        unpacked = scratch / "unpacked"
        unpacked.mkdir()
        with zipfile.ZipFile(archive_path) as archive:
            for member in ("ml-100k/u.data", "ml-100k/u.item", "ml-100k/u.user"):
                (unpacked / Path(member).name).write_bytes(archive.read(member))
        frames = read_movielens_grouplens(unpacked)
        check_movielens_100k(frames, ML100K_URL)
        staging = scratch / "atomic"
        write_movielens_atomic(frames, staging)
        return replace_dir(staging, dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def fetch_movielens_100k(path: Path | None, dest: Path) -> Path:
    """ML-100K from, in order: the local ``path`` (either layout), the cache ``dest``, the official GroupLens
    zip, and the files RecBole's wheel ships (``pip download --no-deps recbole==1.2.1``, only
    ``recbole/dataset_example/ml-100k/`` extracted; recbole is never installed or imported). Checks the counts
    and returns the folder."""
    if path is not None:
        frames = read_movielens(path)
        check_movielens_100k(frames, path)
        progress(f"movielens-100k: local copy {path} is complete")
        return movielens_folder(Path(path))
    if dest.is_dir() and any(dest.glob("*.inter")):
        check_movielens_100k(read_movielens(dest), dest)
        progress(f"movielens-100k: using the cache {dest}")
        return dest
    folder = _fetch_grouplens_zip(dest)
    if folder is None:
        package, version, prefix = RECBOLE_WHEEL
        progress(f"movielens-100k: falling back to the copy inside the {package}=={version} wheel on PyPI")
        folder = pip_extract(package, version, prefix, dest)
    frames = read_movielens(folder)
    check_movielens_100k(frames, folder)
    progress(
        f"movielens-100k: {frames.ratings.height:,} ratings, {frames.users.height:,} users, "
        f"{frames.items.height:,} items"
    )
    return folder


# ----------------------------------------------------------------------------------------------------------
# Taobao UserBehavior
# ----------------------------------------------------------------------------------------------------------
class TaobaoFormatError(ValueError):
    """A UserBehavior CSV has malformed rows; the message names the file and the first bad lines."""


def _typed_taobao(raw: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.Expr]:
    """``raw`` (text columns, ``line``) typed, blank lines dropped, and the expression that marks a bad row."""
    ints = ("user_id", "item_id", "category_id", "timestamp")
    typed = raw.with_columns(
        *[pl.col(name).str.strip_chars().str.to_integer(strict=False).alias(f"_{name}") for name in ints],
        pl.col("behavior_type").str.strip_chars().cast(pl.Enum(TAOBAO_BEHAVIORS), strict=False).alias("_behavior"),
    )
    blank = pl.all_horizontal([pl.col(name).is_null() for name in (*TAOBAO_COLUMNS, "extra")])
    bad = (
        pl.any_horizontal([pl.col(f"_{name}").is_null() for name in ints])
        | pl.col("_behavior").is_null()
        | pl.col("extra").is_not_null()
    )
    return typed.filter(~blank), bad


def _scan_text(source: Any, first_line: int = 1) -> pl.LazyFrame:
    # Every field is read as text so a bad value is reported with its line instead of failing the scan;
    # the sixth column catches lines with too many fields.
    return pl.scan_csv(
        source, has_header=False, separator=",", quote_char=None, infer_schema=False,
        schema={**{name: pl.Utf8 for name in TAOBAO_COLUMNS}, "extra": pl.Utf8},
        truncate_ragged_lines=True, missing_columns="insert",
    ).with_row_index("line", offset=first_line)


def _check_bad_rows(path: Path, typed: pl.LazyFrame, bad: pl.Expr, on_bad_rows: str) -> None:
    found = typed.filter(bad).select(
        "line", pl.concat_str([pl.col(c) for c in TAOBAO_COLUMNS], separator=",", ignore_nulls=True).alias("text"),
        "extra",
    )
    count = found.select(pl.len()).collect(engine="streaming").item()
    if not count:
        return
    examples = found.head(5).collect(engine="streaming")
    lines = "; ".join(
        f"line {row['line']}: {row['text']!r}" + (" (more than 5 fields)" if row["extra"] is not None else "")
        for row in examples.iter_rows(named=True)
    )
    message = (
        f"{path}: {count:,} malformed row(s) — expected user_id,item_id,category_id,behavior_type,timestamp "
        f"with integer ids and timestamp and behavior_type in {'/'.join(TAOBAO_BEHAVIORS)}; first: {lines}"
    )
    if on_bad_rows == "raise":
        raise TaobaoFormatError(message + ". Fix or remove these lines, or read with on_bad_rows='drop'.")
    progress(f"taobao: dropping {message}")


def _good_rows(typed: pl.LazyFrame, bad: pl.Expr) -> pl.LazyFrame:
    return typed.filter(~bad).select(
        "line",
        *[pl.col(f"_{name}").alias(name) for name in ("user_id", "item_id", "category_id")],
        pl.col("_behavior").alias("behavior_type"),
        pl.col("_timestamp").alias("timestamp"),
    )


def read_taobao_user_behavior(
    path: str | Path, *, on_bad_rows: Literal["raise", "drop"] = "raise", validate: bool = True
) -> pl.LazyFrame:
    """Lazily scan Alibaba's UserBehavior CSV (``user_id,item_id,category_id,behavior_type,timestamp``, no
    header, behaviour one of pv/buy/cart/fav).

    Returns a LazyFrame with ``line`` (UInt32, 1-based line in the file), ``user_id``, ``item_id``,
    ``category_id``, ``timestamp`` (Int64) and ``behavior_type`` (Enum pv/buy/cart/fav). A bad row has a
    non-integer id or timestamp, an unknown behaviour, or the wrong number of fields; blank lines are skipped.
    ``validate`` runs one streaming pass first: with ``on_bad_rows="raise"`` a bad row raises
    :class:`TaobaoFormatError` naming the file and lines, with ``"drop"`` bad rows are reported and left out.
    For a file larger than memory use :func:`iter_taobao_user_behavior`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Taobao UserBehavior file at {path}; see data_cards/taobao-user-behavior.md")
    typed, bad = _typed_taobao(_scan_text(path))
    if validate:
        _check_bad_rows(path, typed, bad, on_bad_rows)
    return _good_rows(typed, bad)


def iter_taobao_user_behavior(
    path: str | Path, *, block_bytes: int = 64 * 2**20, on_bad_rows: Literal["raise", "drop"] = "raise"
) -> Iterator[pl.DataFrame]:
    """The rows of a UserBehavior CSV as DataFrames of about ``block_bytes`` of text each, with the columns,
    checks and line numbers of :func:`read_taobao_user_behavior`: the file is read a block at a time (cut at a line
    end) and each block goes through the same polars lazy scan, so memory stays O(block) however large the file.
    A bad row raises (or is dropped) when its block is reached."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Taobao UserBehavior file at {path}; see data_cards/taobao-user-behavior.md")
    if block_bytes < 1:
        raise ValueError(f"block_bytes must be positive, got {block_bytes}")
    first_line, carry = 1, b""
    with path.open("rb") as handle:
        while True:
            data = handle.read(block_bytes)
            text = carry + data
            if not text:
                return
            if data:  # cut at the last line end; the rest starts the next block
                cut = text.rfind(b"\n") + 1
                if cut == 0:
                    carry = text
                    continue
                text, carry = text[:cut], text[cut:]
            else:
                carry = b""
            typed, bad = _typed_taobao(_scan_text(io.BytesIO(text), first_line))
            _check_bad_rows(path, typed, bad, on_bad_rows)
            yield _good_rows(typed, bad).collect()
            first_line += text.count(b"\n") + (0 if text.endswith(b"\n") else 1)
            if not data:
                return


def fetch_taobao(path: Path | None, dest: Path) -> Path:
    """Taobao UserBehavior is not redistributable: it is only ever a local file the user points to."""
    if path is None:
        raise DatasetFetchError(
            "the Taobao UserBehavior data set cannot be downloaded by fusion-suite (Alibaba Tianchi licence). "
            "Download UserBehavior.csv from https://tianchi.aliyun.com/dataset/649 after accepting its terms, "
            "then: fusion data fetch taobao --path UserBehavior.csv (checks the file) and train with "
            "--data.dataset taobao --data.data_path UserBehavior.csv"
        )
    rows = read_taobao_user_behavior(path).select(pl.len()).collect(engine="streaming").item()
    progress(f"taobao: {path} has {rows:,} well-formed rows")
    return Path(path)
