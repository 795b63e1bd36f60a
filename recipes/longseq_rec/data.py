"""Data for the long-sequence recommendation recipe: MovieLens-100K, a lifelong synthetic generator, the Taobao
UserBehavior log, the DIN/DARE click task built from them, and the raw scoring schema.

The task (as in DIN and DARE): each user's interactions in time order; every interaction after the first is a
positive target whose history is everything before it, and it is paired with a negative — an item the user
never touched, sampled with the data module's seed — that shares the history and the time. Per user, the last
interaction is the test target, the one before it the validation target, the rest are training targets
(leave-last-out by time; users are not cut at one global date). The lifelong data set instead has one history
per user and several targets at its end, and is split by user.

A batch is a dict of tensors (B samples, L = ``max_history``, P profile fields; index 0 = padding/unknown)::

    user (B,) long              profile (B, P) long
    target_item (B,) long       target_cate (B,) long
    hist_item (B, L) long       hist_cate (B, L) long       hist_time (B, L) long
    hist_mask (B, L) bool       label (B,) float            relevant (B, L) bool

Histories are chronological, most recent last, left-padded. ``hist_time`` is the gap between the target and the
behaviour, ``1 + floor(log2(1 + gap_hours))`` clipped to ``num_time_buckets - 1``. ``relevant`` marks the planted
behaviours a positive lifelong target depends on (all False elsewhere).
"""
from __future__ import annotations

import inspect
import io
import json
import math
import re
import shutil
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import lightning.pytorch as lp
import numpy as np
import polars as pl
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset

from recipes.runtime.datasets import (
    DatasetFetchError,
    DatasetSpec,
    fetch_dataset,
    pip_extract,
    progress,
    register_dataset,
    replace_dir,
    try_url,
)

__all__ = [
    "ML100K_COUNTS",
    "ML100K_URL",
    "DATASET_NAMES",
    "MovieLensFrames",
    "read_atomic_file",
    "read_movielens",
    "read_movielens_atomic",
    "read_movielens_grouplens",
    "write_movielens_atomic",
    "check_movielens_100k",
    "fetch_movielens_100k",
    "TaobaoFormatError",
    "read_taobao_user_behavior",
    "fetch_taobao",
    "LifelongData",
    "generate_lifelong",
    "LIFELONG_DEFAULTS",
    "fetch_lifelong",
    "time_bucket",
    "RecVocab",
    "EncodedRows",
    "encode_scoring_frame",
    "export_scoring_frame",
    "RecDataModule",
]

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_COUNTS = {"ratings": 100_000, "users": 943, "items": 1_682}
RECBOLE_WHEEL = ("recbole", "1.2.1", "recbole/dataset_example/ml-100k/")
# u.item's 19 genre flags, in the order of GroupLens' u.genre.
GROUPLENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
# MovieLens-1M's age groups, applied to ML-100K's exact ages.
AGE_EDGES = (18, 25, 35, 45, 50, 56)
AGE_LABELS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
TAOBAO_COLUMNS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
TAOBAO_BEHAVIORS = ("pv", "buy", "cart", "fav")
DATASET_NAMES = ("movielens-100k", "lifelong-synthetic", "taobao")
SCORING_SCHEMA = (
    "user_id (int), target_item (int), history_items (list of int, oldest first); optional "
    "history_timestamps (list of int, same length), target_timestamp (int), label (ignored)"
)


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


def _movielens_folder(folder: Path) -> Path:
    """The folder that holds the files: ``folder`` itself or its ``ml-100k`` subfolder (an unzipped download)."""
    if not any(folder.glob("*.inter")) and not (folder / "u.data").is_file() and (folder / "ml-100k").is_dir():
        return folder / "ml-100k"
    return folder


def read_movielens(folder: str | Path) -> MovieLensFrames:
    """Read ML-100K from ``folder`` in either layout (RecBole atomic files or GroupLens ``u.*`` files)."""
    folder = _movielens_folder(Path(folder))
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
        return _movielens_folder(Path(path))
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
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Taobao UserBehavior file at {path}; see data_cards/taobao-user-behavior.md")
    # Every field is read as text so a bad value is reported with its line instead of failing the scan;
    # the sixth column catches lines with too many fields.
    raw = pl.scan_csv(
        path, has_header=False, separator=",", quote_char=None, infer_schema=False,
        schema={**{name: pl.Utf8 for name in TAOBAO_COLUMNS}, "extra": pl.Utf8},
        truncate_ragged_lines=True, missing_columns="insert",
    ).with_row_index("line", offset=1)
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
    typed = typed.filter(~blank)
    if validate:
        found = typed.filter(bad).select(
            "line", pl.concat_str([pl.col(c) for c in TAOBAO_COLUMNS], separator=",", ignore_nulls=True).alias("text"),
            "extra",
        )
        count = found.select(pl.len()).collect(engine="streaming").item()
        if count:
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
    return typed.filter(~bad).select(
        "line",
        *[pl.col(f"_{name}").alias(name) for name in ("user_id", "item_id", "category_id")],
        pl.col("_behavior").alias("behavior_type"),
        pl.col("_timestamp").alias("timestamp"),
    )


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


# ----------------------------------------------------------------------------------------------------------
# Lifelong synthetic data
# ----------------------------------------------------------------------------------------------------------
@dataclass
class LifelongData:
    """Output of :func:`generate_lifelong`. Raw ids start at 1 (items, categories, users = row + 1).

    ``hist_item``         (U, H) int32 item ids, chronological (position 0 is the oldest)
    ``hist_timestamp``    (U, H) int64 seconds, increasing along each row
    ``target_item``       (U, T) int64 the T candidate items shown after the history
    ``target_timestamp``  (U,) int64 when they were shown (after the last behaviour)
    ``label``             (U, T) int8 1 when the history holds the target's theme
    ``planted_positions`` (U, T, k) int64 history positions planted for each target: for a positive the k
                          relevant behaviours (same category and theme as the target), for a negative k decoys
                          (same category, other themes)
    ``item_cate``         (num_items + 1,) category id of each item id (index 0 unused)
    ``item_theme``        (num_items + 1,) hidden theme (0..num_themes-1) of each item id, within its category
    ``user_interests``    (U, I) the categories each user's background behaviours come from
    ``params``            the generator's arguments
    """

    hist_item: np.ndarray
    hist_timestamp: np.ndarray
    target_item: np.ndarray
    target_timestamp: np.ndarray
    label: np.ndarray
    planted_positions: np.ndarray
    item_cate: np.ndarray
    item_theme: np.ndarray
    user_interests: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return int(self.hist_item.shape[0])

    @property
    def history_length(self) -> int:
        return int(self.hist_item.shape[1])

    def relevant_mask(self, user_row: int, target: int) -> np.ndarray:
        """``(H,)`` bool: the behaviours the search stage should find for target ``target`` of user row
        ``user_row`` (the planted ones when the target is positive, none when negative)."""
        mask = np.zeros(self.history_length, dtype=bool)
        if self.label[user_row, target]:
            mask[self.planted_positions[user_row, target]] = True
        return mask

    def head(self, num_users: int) -> "LifelongData":
        """The first ``num_users`` users (the item tables are kept whole)."""
        per_user = {name: getattr(self, name)[:num_users] for name in self._ARRAYS if name not in ("item_cate", "item_theme")}
        return LifelongData(**per_user, item_cate=self.item_cate, item_theme=self.item_theme, params=dict(self.params))

    _ARRAYS = ("hist_item", "hist_timestamp", "target_item", "target_timestamp", "label", "planted_positions",
               "item_cate", "item_theme", "user_interests")

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "lifelong.npz", **{name: getattr(self, name) for name in self._ARRAYS})
        (folder / "params.json").write_text(json.dumps(self.params, indent=2, sort_keys=True))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "LifelongData":
        folder = Path(folder)
        if not (folder / "lifelong.npz").is_file():
            raise FileNotFoundError(f"{folder}: no lifelong.npz (write one with fusion data fetch lifelong-synthetic)")
        with np.load(folder / "lifelong.npz") as arrays:
            values = {name: arrays[name] for name in cls._ARRAYS}
        params = json.loads((folder / "params.json").read_text()) if (folder / "params.json").is_file() else {}
        return cls(**values, params=params)


_LIFELONG_CHUNK = 256  # users generated per step; fixed so a seed gives the same data on every machine


def _avoid_pairs(cate: np.ndarray, theme: np.ndarray, forbidden_cate: np.ndarray, forbidden_theme: np.ndarray,
                 num_themes: int, rng: np.random.Generator) -> None:
    """Redraw, in place, the theme of every entry whose (category, theme) is one of its row's forbidden pairs.

    ``cate``/``theme``: (c, n); ``forbidden_*``: (c, T). Terminates because every category keeps a theme that
    is not forbidden (see the targets' "free" theme)."""
    def clashes(key: np.ndarray, forbidden: np.ndarray) -> np.ndarray:
        hit = np.zeros(key.shape, dtype=bool)
        for j in range(forbidden.shape[-1]):
            hit |= key == forbidden[..., j : j + 1]
        return hit

    forbidden = forbidden_cate * num_themes + forbidden_theme  # (c, T)
    rows, cols = np.nonzero(clashes(cate * num_themes + theme, forbidden))
    while rows.size:
        theme[rows, cols] = rng.integers(0, num_themes, size=rows.size)
        still = clashes((cate[rows, cols] * num_themes + theme[rows, cols])[:, None], forbidden[rows])[:, 0]
        rows, cols = rows[still], cols[still]


def generate_lifelong(
    num_users: int = 2_000,
    history_length: int = 10_000,
    num_items: int = 2_000,
    num_cates: int = 20,
    num_interests: int = 4,
    relevant_per_target: int = 3,
    seed: int = 0,
    *,
    num_themes: int = 10,
    targets_per_user: int = 8,
    recent_window: int = 200,
    distance_bias: float = 2.0,
    mean_gap_hours: float = 2.0,
    start_timestamp: int = 1_500_000_000,
    verbose: bool | None = None,
) -> LifelongData:
    """Lifelong behaviour histories whose targets depend on a few behaviours planted far back.

    The generative story (see data_cards/lifelong-synthetic.md):

    1. Items form a grid: ``num_cates`` categories × ``num_themes`` hidden themes × ``num_items / (num_cates ×
       num_themes)`` variants, then get shuffled ids. Only the category is visible; the theme is hidden.
    2. A user has ``num_interests`` categories with Dirichlet(1) weights. Each of the ``history_length``
       background behaviours picks an interest by weight and a uniform theme and variant in it; gaps between
       behaviours are exponential with mean ``mean_gap_hours``.
    3. After the history the user is shown ``targets_per_user`` items with distinct (category, theme) pairs,
       categories from the user's interests (one theme per interest is never a target's, so background and
       decoys always have a theme left); each is positive with probability 1/2. Background behaviours never
       fall in a target's pair.
    4. For each target, ``relevant_per_target`` history positions are planted: for a positive, items of the
       target's category *and* theme (a different variant where there is one) — the relevant behaviours; for a
       negative, decoys of the same category and other themes. Positions avoid the last ``recent_window``
       behaviours (at most half the history) and have density ∝ (1 − p/H₀)^``distance_bias`` over the older
       positions p < H₀, so they sit mostly in the distant past.

    So the label is exactly "does the history hold the target's theme", category counts carry no signal, and a
    model must find the planted behaviours to beat chance. Deterministic for a given seed.
    """
    total = num_cates * num_themes
    if num_items < total or num_items % total:
        suggestion = max(1, round(num_items / total)) * total
        raise ValueError(
            f"num_items ({num_items}) must be a multiple of num_cates × num_themes ({num_cates} × {num_themes} = "
            f"{total}); use e.g. num_items={suggestion}"
        )
    if not 1 <= num_interests <= num_cates:
        raise ValueError(f"num_interests must be in [1, num_cates={num_cates}], got {num_interests}")
    if num_themes < 2:
        raise ValueError(f"num_themes must be >= 2 (negatives need decoys of another theme), got {num_themes}")
    if not 1 <= targets_per_user <= num_interests * (num_themes - 1):
        raise ValueError(
            f"targets_per_user must be in [1, num_interests × (num_themes − 1) = {num_interests * (num_themes - 1)}] "
            f"(each interest keeps one theme no target uses), got {targets_per_user}"
        )
    if relevant_per_target < 1:
        raise ValueError(f"relevant_per_target must be >= 1, got {relevant_per_target}")
    planted = targets_per_user * relevant_per_target
    if history_length < 2 * planted:
        raise ValueError(
            f"history_length ({history_length}) must be at least 2 × targets_per_user × relevant_per_target = {2 * planted}"
        )
    if num_users < 1 or recent_window < 0 or mean_gap_hours <= 0:
        raise ValueError("num_users must be >= 1, recent_window >= 0 and mean_gap_hours > 0")

    params = dict(
        num_users=num_users, history_length=history_length, num_items=num_items, num_cates=num_cates,
        num_interests=num_interests, relevant_per_target=relevant_per_target, seed=seed, num_themes=num_themes,
        targets_per_user=targets_per_user, recent_window=recent_window, distance_bias=distance_bias,
        mean_gap_hours=mean_gap_hours, start_timestamp=start_timestamp,
    )
    variants = num_items // total
    users, length, themes, k = num_users, history_length, num_themes, relevant_per_target
    targets = targets_per_user
    global_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    item_of_grid = global_rng.permutation(num_items)  # grid cell → item id − 1
    grid = np.arange(num_items)
    item_cate = np.zeros(num_items + 1, dtype=np.int64)
    item_theme = np.zeros(num_items + 1, dtype=np.int64)
    item_cate[item_of_grid + 1] = grid // (themes * variants) + 1
    item_theme[item_of_grid + 1] = (grid // variants) % themes

    hist_item = np.empty((users, length), dtype=np.int32)
    hist_timestamp = np.empty((users, length), dtype=np.int64)
    target_item = np.empty((users, targets), dtype=np.int64)
    target_timestamp = np.empty(users, dtype=np.int64)
    label = np.empty((users, targets), dtype=np.int8)
    planted_positions = np.empty((users, targets, k), dtype=np.int64)
    user_interests = np.empty((users, num_interests), dtype=np.int64)

    old_region = length - min(recent_window, length // 2)
    position = np.arange(old_region)
    log_weight = distance_bias * np.log1p(-position / old_region)
    gap_mean = mean_gap_hours * 3600.0
    verbose = users * length >= 5_000_000 if verbose is None else verbose
    started = time.perf_counter()
    for chunk, first in enumerate(range(0, users, _LIFELONG_CHUNK)):
        last = min(first + _LIFELONG_CHUNK, users)
        c = last - first
        rows = np.arange(c)[:, None]
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, chunk)))
        interests = np.argsort(rng.random((c, num_cates)), axis=1)[:, :num_interests]  # (c, I) category − 1
        weights = rng.dirichlet(np.ones(num_interests), size=c)
        edges = np.cumsum(weights, axis=1)[:, :-1]
        pick = rng.random((c, length))
        which = np.zeros((c, length), dtype=np.int64)
        for i in range(num_interests - 1):
            which += pick > edges[:, i : i + 1]
        cate = interests[rows, which]  # (c, H)
        theme = rng.integers(0, themes, size=(c, length))
        variant = rng.integers(0, variants, size=(c, length))

        # Targets: distinct (interest, theme) pairs per user, never the interest's "free" theme, so every
        # category keeps a theme that background behaviours and decoys can fall back on.
        free = rng.integers(0, themes, size=(c, num_interests))
        pairs = np.argsort(rng.random((c, num_interests * (themes - 1))), axis=1)[:, :targets]
        t_interest, slot = pairs // (themes - 1), pairs % (themes - 1)
        t_cate = interests[rows, t_interest]  # (c, T)
        t_theme = slot + (slot >= free[rows, t_interest])
        t_variant = rng.integers(0, variants, size=(c, targets))
        t_label = (rng.random((c, targets)) < 0.5).astype(np.int8)
        _avoid_pairs(cate, theme, t_cate, t_theme, themes, rng)

        # Planted positions: weighted sampling without replacement (Gumbel top-m) over the older region.
        keys = log_weight[None, :] - np.log(-np.log(rng.random((c, old_region))))
        chosen = np.argpartition(-keys, planted - 1, axis=1)[:, :planted]
        chosen = rng.permuted(chosen, axis=1).reshape(c, targets, k)
        p_cate = np.repeat(t_cate[:, :, None], k, axis=2)
        positive = t_label[:, :, None].astype(bool)
        p_theme = np.where(positive, t_theme[:, :, None], rng.integers(0, themes, size=(c, targets, k)))
        decoy = ~np.broadcast_to(positive, p_theme.shape)
        if variants > 1:
            other_variant = (t_variant[:, :, None] + rng.integers(1, variants, size=(c, targets, k))) % variants
        else:
            other_variant = np.repeat(t_variant[:, :, None], k, axis=2)
        p_variant = np.where(positive, other_variant, rng.integers(0, variants, size=(c, targets, k)))
        # Decoys must not land in any target's pair (their own included).
        d_mask = decoy.reshape(c, -1)
        d_cate = np.where(d_mask, p_cate.reshape(c, -1), -1)  # category −1: relevant entries never clash
        d_theme = p_theme.reshape(c, -1).copy()
        _avoid_pairs(d_cate, d_theme, t_cate, t_theme, themes, rng)
        p_theme = np.where(d_mask, d_theme, p_theme.reshape(c, -1)).reshape(c, targets, k)
        flat_pos = chosen.reshape(c, -1)
        cate[rows, flat_pos] = p_cate.reshape(c, -1)
        theme[rows, flat_pos] = p_theme.reshape(c, -1)
        variant[rows, flat_pos] = p_variant.reshape(c, -1)

        hist_item[first:last] = item_of_grid[(cate * themes + theme) * variants + variant] + 1
        target_item[first:last] = item_of_grid[(t_cate * themes + t_theme) * variants + t_variant] + 1
        start = start_timestamp + rng.integers(0, 30 * 86_400, size=c)
        times = start[:, None] + np.cumsum(rng.exponential(gap_mean, size=(c, length)), axis=1).astype(np.int64)
        hist_timestamp[first:last] = times
        target_timestamp[first:last] = times[:, -1] + 1 + rng.exponential(gap_mean, size=c).astype(np.int64)
        label[first:last] = t_label
        planted_positions[first:last] = chosen
        user_interests[first:last] = interests + 1
        if verbose:
            progress(f"lifelong-synthetic: {last:,}/{users:,} users × {length:,} behaviours "
                     f"({time.perf_counter() - started:.1f} s)")
    return LifelongData(
        hist_item=hist_item, hist_timestamp=hist_timestamp, target_item=target_item,
        target_timestamp=target_timestamp, label=label, planted_positions=planted_positions,
        item_cate=item_cate, item_theme=item_theme, user_interests=user_interests, params=params,
    )


# The configuration `fusion data fetch lifelong-synthetic` writes to the cache.
LIFELONG_DEFAULTS: dict[str, Any] = {
    name: parameter.default for name, parameter in inspect.signature(generate_lifelong).parameters.items()
    if name != "verbose"
}


def fetch_lifelong(path: Path | None, dest: Path) -> Path:
    """A saved lifelong data set: the local folder ``path``, the cache, or a fresh one generated with the
    default parameters into the cache."""
    if path is not None:
        data = LifelongData.load(path)
        progress(f"lifelong-synthetic: {path} holds {data.num_users:,} users × {data.history_length:,} behaviours")
        return Path(path)
    params_file = dest / "params.json"
    if (dest / "lifelong.npz").is_file() and params_file.is_file() and json.loads(params_file.read_text()) == LIFELONG_DEFAULTS:
        progress(f"lifelong-synthetic: using the cache {dest}")
        return dest
    data = generate_lifelong(verbose=True)
    staging = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    data.save(staging)
    return replace_dir(staging, dest)


# ----------------------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------------------
def time_bucket(gap_seconds: np.ndarray, num_time_buckets: int) -> np.ndarray:
    """``1 + floor(log2(1 + gap_hours))`` clipped to ``num_time_buckets - 1`` (negative gaps count as 0);
    bucket 0 is left for padding."""
    gap_hours = np.maximum(np.asarray(gap_seconds, dtype=np.float64), 0.0) / 3600.0
    bucket = 1 + np.floor(np.log2(1.0 + gap_hours))
    return np.minimum(bucket, num_time_buckets - 1).astype(np.int64)


def _hash_bucket(raw_ids: np.ndarray, buckets: int) -> np.ndarray:
    """1 + (MurmurHash3's 64-bit finaliser of the id) mod ``buckets``: a stable hashed user field."""
    x = np.asarray(raw_ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(33)
        x *= np.uint64(0xFF51AFD7ED558CCD)
        x ^= x >> np.uint64(33)
        x *= np.uint64(0xC4CEB9FE1A85EC53)
        x ^= x >> np.uint64(33)
    return (x % np.uint64(buckets)).astype(np.int64) + 1


@dataclass
class RecVocab:
    """Raw id → index maps the model was trained with; index 0 is padding/unknown everywhere.

    ``users``: user_id (raw, sorted), user_index (1..), one Int64 column per profile field (its index).
    ``items``: item_id (raw, sorted), item_index (1..), cate_index, category (label), title (may be null).
    ``categories[i - 1]`` is the label of category index i; ``profile_labels[field][i - 1]`` likewise.
    ``settings``: the data module's arguments, so :func:`export_scoring_frame` can rebuild it from a run.
    """

    dataset: str
    users: pl.DataFrame
    items: pl.DataFrame
    categories: list[str]
    profile_fields: list[str]
    profile_labels: dict[str, list[str]]
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._user_raw = self.users["user_id"].to_numpy().astype(np.int64)
        self._item_raw = self.items["item_id"].to_numpy().astype(np.int64)
        for name, raw, index in (("user", self._user_raw, self.users["user_index"]),
                                 ("item", self._item_raw, self.items["item_index"])):
            if np.any(np.diff(raw) <= 0) or not np.array_equal(index.to_numpy(), np.arange(1, raw.size + 1)):
                raise ValueError(f"RecVocab: {name}s must be sorted by raw id with indices 1..n")
        self._item_cate = np.zeros(self.num_items, dtype=np.int64)
        self._item_cate[1:] = self.items["cate_index"].to_numpy()
        self._profile = np.zeros((self.num_users, len(self.profile_fields)), dtype=np.int64)
        for column, name in enumerate(self.profile_fields):
            self._profile[1:, column] = self.users[name].to_numpy()

    @property
    def num_users(self) -> int:
        """Size of the user table, padding included."""
        return self.users.height + 1

    @property
    def num_items(self) -> int:
        return self.items.height + 1

    @property
    def num_cates(self) -> int:
        return len(self.categories) + 1

    @property
    def profile_cardinalities(self) -> list[int]:
        return [len(self.profile_labels[name]) + 1 for name in self.profile_fields]

    @staticmethod
    def _lookup(sorted_raw: np.ndarray, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.int64)
        if sorted_raw.size == 0:
            return np.zeros(raw.shape, dtype=np.int64)
        where = np.clip(np.searchsorted(sorted_raw, raw), 0, sorted_raw.size - 1)
        return np.where(sorted_raw[where] == raw, where + 1, 0).astype(np.int64)

    def user_index(self, raw_ids: np.ndarray) -> np.ndarray:
        """Index of each raw user id, 0 where unknown."""
        return self._lookup(self._user_raw, raw_ids)

    def item_index(self, raw_ids: np.ndarray) -> np.ndarray:
        """Index of each raw item id, 0 where unknown."""
        return self._lookup(self._item_raw, raw_ids)

    def item_cate(self, item_index: np.ndarray) -> np.ndarray:
        """Category index of each item index (0 for padding)."""
        return self._item_cate[np.asarray(item_index, dtype=np.int64)]

    def profile(self, user_index: np.ndarray) -> np.ndarray:
        """``(n, P)`` profile field indices of each user index (all 0 for unknown users)."""
        return self._profile[np.asarray(user_index, dtype=np.int64)]

    def user_raw(self, user_index: np.ndarray) -> np.ndarray:
        return self._user_raw[np.asarray(user_index, dtype=np.int64) - 1]

    def item_raw(self, item_index: np.ndarray) -> np.ndarray:
        return self._item_raw[np.asarray(item_index, dtype=np.int64) - 1]

    def save(self, folder: str | Path) -> Path:
        """``users.parquet``, ``items.parquet`` and ``vocab.json`` in ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.users.write_parquet(folder / "users.parquet")
        self.items.write_parquet(folder / "items.parquet")
        meta = {
            "format": 1, "dataset": self.dataset, "categories": self.categories,
            "profile_fields": self.profile_fields, "profile_labels": self.profile_labels, "settings": self.settings,
        }
        (folder / "vocab.json").write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "RecVocab":
        folder = Path(folder)
        if not (folder / "vocab.json").is_file():
            raise FileNotFoundError(f"{folder}: no vocab.json; a RecVocab folder holds vocab.json, users.parquet, items.parquet")
        meta = json.loads((folder / "vocab.json").read_text())
        return cls(
            dataset=meta["dataset"], users=pl.read_parquet(folder / "users.parquet"),
            items=pl.read_parquet(folder / "items.parquet"), categories=list(meta["categories"]),
            profile_fields=list(meta["profile_fields"]),
            profile_labels={k: list(v) for k, v in meta["profile_labels"].items()}, settings=dict(meta["settings"]),
        )


def _sorted_labels(labels: list[str]) -> list[str]:
    """Numeric labels in numeric order, others alphabetically."""
    return sorted(labels, key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s))


def _make_vocab(dataset: str, user_ids: np.ndarray, profile: dict[str, tuple[np.ndarray, list[str]]],
                items: pl.DataFrame, settings: dict[str, Any]) -> RecVocab:
    """``user_ids`` sorted raw ids; ``profile[field] = (index per user, labels)``; ``items`` has item_id,
    category (Utf8) and title."""
    users = pl.DataFrame({"user_id": user_ids.astype(np.int64), "user_index": np.arange(1, user_ids.size + 1)})
    users = users.with_columns([pl.Series(name, values.astype(np.int64)) for name, (values, _) in profile.items()])
    items = items.sort("item_id")
    categories = _sorted_labels(items["category"].unique().to_list())
    cate_of = {label: i + 1 for i, label in enumerate(categories)}
    items = items.select(
        pl.col("item_id").cast(pl.Int64),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("item_index"),
        pl.col("category").replace_strict(cate_of, return_dtype=pl.Int64).alias("cate_index"),
        pl.col("category").cast(pl.Utf8),
        pl.col("title").cast(pl.Utf8),
    )
    return RecVocab(
        dataset=dataset, users=users, items=items, categories=categories, profile_fields=list(profile),
        profile_labels={name: list(labels) for name, (_, labels) in profile.items()}, settings=settings,
    )


# ----------------------------------------------------------------------------------------------------------
# Task construction and batches
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _Sequences:
    """All users' behaviours, user blocks concatenated (block r holds user index r + 1), chronological."""

    item: np.ndarray  # (N,) item index
    time: np.ndarray  # (N,) timestamp, seconds
    offsets: np.ndarray  # (U + 1,)


@dataclass
class _Samples:
    """One row per (history, target) sample; the history is positions [0, end) of the user's block."""

    user_row: np.ndarray  # (S,)
    end: np.ndarray  # (S,)
    target_item: np.ndarray  # (S,) item index
    target_time: np.ndarray  # (S,)
    label: np.ndarray  # (S,) float32
    relevant: np.ndarray  # (S, k) positions in the block, -1 = none; k may be 0

    def __len__(self) -> int:
        return int(self.user_row.size)

    def take(self, index: np.ndarray) -> "_Samples":
        return _Samples(self.user_row[index], self.end[index], self.target_item[index], self.target_time[index],
                        self.label[index], self.relevant[index])


class _BatchBuilder:
    """Turns sample indices into the batch dict (vectorised gathers; runs in DataLoader workers)."""

    def __init__(self, sequences: _Sequences, vocab: RecVocab, samples: _Samples, max_history: int,
                 num_time_buckets: int) -> None:
        self.sequences, self.vocab, self.samples = sequences, vocab, samples
        self.max_history, self.num_time_buckets = max_history, num_time_buckets

    def window(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(flat (B, L), mask (B, L), start (B,))``: positions in the flat sequence arrays of the last L
        behaviours before each sample's target, left-padded; ``start`` is the block position of column 0."""
        s = self.samples
        end = s.end[index]
        start = end - self.max_history
        position = start[:, None] + np.arange(self.max_history)[None, :]  # (B, L) position in the user's block
        mask = position >= 0
        flat = self.sequences.offsets[s.user_row[index]][:, None] + np.maximum(position, 0)
        return flat, mask, start

    def __call__(self, index: list[int] | np.ndarray) -> dict[str, torch.Tensor]:
        index = np.asarray(index, dtype=np.int64)
        s, seq = self.samples, self.sequences
        flat, mask, start = self.window(index)
        hist_item = np.where(mask, seq.item[flat], 0).astype(np.int64)
        target_time = s.target_time[index]
        hist_time = np.where(mask, time_bucket(target_time[:, None] - seq.time[flat], self.num_time_buckets), 0)
        relevant = np.zeros(mask.shape, dtype=bool)
        if s.relevant.shape[1]:
            column = s.relevant[index] - start[:, None]  # (B, k)
            ok = (s.relevant[index] >= 0) & (column >= 0) & (column < self.max_history)
            rows = np.broadcast_to(np.arange(index.size)[:, None], column.shape)
            relevant[rows[ok], column[ok]] = True
        user = s.user_row[index] + 1
        target_item = s.target_item[index]
        return _to_batch(
            user=user, profile=self.vocab.profile(user), target_item=target_item,
            target_cate=self.vocab.item_cate(target_item), hist_item=hist_item,
            hist_cate=self.vocab.item_cate(hist_item), hist_time=hist_time, hist_mask=mask,
            label=s.label[index], relevant=relevant,
        )


def _to_batch(**arrays: np.ndarray) -> dict[str, torch.Tensor]:
    batch = {}
    for name, value in arrays.items():
        if name in ("hist_mask", "relevant"):
            batch[name] = torch.from_numpy(np.ascontiguousarray(value, dtype=bool))
        elif name == "label":
            batch[name] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        else:
            batch[name] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.int64))
    return batch


class _IndexDataset(Dataset):
    """Sample i is just i; the collate function (a :class:`_BatchBuilder`) builds the whole batch at once."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        return index


def _sample_negatives(user_row: np.ndarray, touched: np.ndarray, num_real_items: int,
                      rng: np.random.Generator) -> np.ndarray:
    """One item index per entry of ``user_row`` that the user never touched; ``touched`` holds the sorted keys
    ``user_row * (num_real_items + 1) + item_index`` of every interaction."""
    stride = num_real_items + 1
    negatives = rng.integers(1, stride, size=user_row.size)
    pending = np.arange(user_row.size)
    for _ in range(1000):
        keys = user_row[pending] * stride + negatives[pending]
        where = np.clip(np.searchsorted(touched, keys), 0, max(touched.size - 1, 0))
        clash = touched[where] == keys if touched.size else np.zeros(keys.size, dtype=bool)
        pending = pending[clash]
        if pending.size == 0:
            return negatives
        negatives[pending] = rng.integers(1, stride, size=pending.size)
    raise ValueError("could not sample negatives: some users touched (almost) every item")


def _pair_with_negatives(samples: _Samples, negatives: np.ndarray) -> _Samples:
    """Each positive followed by its negative (same user, history and time, label 0)."""
    def twice(a: np.ndarray) -> np.ndarray:
        return np.repeat(a, 2, axis=0)

    items = np.stack([samples.target_item, negatives], axis=1).reshape(-1)
    labels = np.tile(np.array([1.0, 0.0], dtype=np.float32), len(samples))
    return _Samples(twice(samples.user_row), twice(samples.end), items, twice(samples.target_time), labels,
                    np.full((2 * len(samples), 0), -1, dtype=np.int64))


class _Task(NamedTuple):
    vocab: RecVocab
    sequences: _Sequences
    splits: dict[str, _Samples]


def _interaction_task(dataset: str, log: pl.DataFrame, items: pl.DataFrame,
                      profile_of: Any, seed: int, max_users: int | None, settings: dict[str, Any]) -> _Task:
    """The DIN/DARE task from an interaction log (user_id, item_id, timestamp) and an item table (item_id,
    category, title). ``profile_of(user_ids) -> {field: (indices, labels)}``."""
    if max_users is not None:
        all_users = np.sort(log["user_id"].unique().to_numpy())
        if max_users < all_users.size:
            chosen = np.sort(np.random.default_rng([seed, 0]).choice(all_users, size=max_users, replace=False))
            log = log.join(pl.DataFrame({"user_id": chosen}), on="user_id", how="semi")
    log = log.join(items.select("item_id"), on="item_id", how="semi")
    user_ids = np.sort(log["user_id"].unique().to_numpy())
    vocab = _make_vocab(dataset, user_ids, profile_of(user_ids), items, settings)
    user = vocab.user_index(log["user_id"].to_numpy())
    item = vocab.item_index(log["item_id"].to_numpy())
    stamp = log["timestamp"].to_numpy().astype(np.int64)
    order = np.lexsort((item, stamp, user))  # by user, then time, then item id for ties
    user, item, stamp = user[order], item[order], stamp[order]
    counts = np.bincount(user, minlength=vocab.num_users)[1:]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    sequences = _Sequences(item=item, time=stamp, offsets=offsets)

    user_row = user - 1
    position = np.arange(user.size) - offsets[user_row]
    length = counts[user_row]
    keep = position >= 1
    positives = _Samples(user_row[keep], position[keep], item[keep], stamp[keep],
                         np.ones(int(keep.sum()), dtype=np.float32), np.zeros((int(keep.sum()), 0), dtype=np.int64))
    split_of = np.where(position == length - 1, 2, np.where(position == length - 2, 1, 0))[keep]
    touched = np.unique(user_row.astype(np.int64) * vocab.num_items + item)
    negatives = _sample_negatives(positives.user_row, touched, vocab.num_items - 1, np.random.default_rng([seed, 1]))
    paired = _pair_with_negatives(positives, negatives)
    split_of = np.repeat(split_of, 2)
    splits = {name: paired.take(np.flatnonzero(split_of == code)) for code, name in enumerate(("train", "val", "test"))}
    return _Task(vocab, sequences, splits)


def _movielens_task(folder: Path, seed: int, max_users: int | None, settings: dict[str, Any]) -> _Task:
    frames = read_movielens(folder)
    items = frames.items.select(
        "item_id", pl.col("genres").list.first().fill_null("unknown").alias("category"), "title",
    )
    users = frames.users.sort("user_id")

    def profile_of(user_ids: np.ndarray) -> dict[str, tuple[np.ndarray, list[str]]]:
        table = pl.DataFrame({"user_id": user_ids}).join(users, on="user_id", how="left", maintain_order="left")
        fields: dict[str, tuple[np.ndarray, list[str]]] = {}
        for name in ("gender", "occupation"):
            labels = sorted(users[name].drop_nulls().unique().to_list())
            position = {label: i + 1 for i, label in enumerate(labels)}
            fields[name] = (np.array([position.get(v, 0) for v in table[name].to_list()], dtype=np.int64), labels)
        age = table["age"].fill_null(-1).to_numpy()
        age_bucket = np.where(age < 0, 0, 1 + np.searchsorted(AGE_EDGES, age, side="right"))
        fields["age"] = (age_bucket.astype(np.int64), list(AGE_LABELS))
        return {name: fields[name] for name in ("gender", "age", "occupation")}

    log = frames.ratings.select("user_id", "item_id", "timestamp")
    return _interaction_task("movielens-100k", log, items, profile_of, seed, max_users, settings)


def _hashed_profile(buckets: int):
    def profile_of(user_ids: np.ndarray) -> dict[str, tuple[np.ndarray, list[str]]]:
        return {"user_bucket": (_hash_bucket(user_ids, buckets), [str(i) for i in range(buckets)])}

    return profile_of


def _taobao_task(path: Path, behaviors: list[str] | None, seed: int, max_users: int | None,
                 user_buckets: int, settings: dict[str, Any]) -> _Task:
    scan = read_taobao_user_behavior(path)
    if behaviors:
        unknown = sorted(set(behaviors) - set(TAOBAO_BEHAVIORS))
        if unknown:
            raise ValueError(f"taobao_behaviors {unknown} are not Taobao behaviour types; use a subset of {list(TAOBAO_BEHAVIORS)}")
        scan = scan.filter(pl.col("behavior_type").cast(pl.Utf8).is_in(behaviors))
    if max_users is not None:
        all_users = np.sort(scan.select(pl.col("user_id").unique()).collect(engine="streaming")["user_id"].to_numpy())
        if max_users < all_users.size:
            chosen = np.sort(np.random.default_rng([seed, 0]).choice(all_users, size=max_users, replace=False))
            scan = scan.join(pl.LazyFrame({"user_id": chosen}), on="user_id", how="semi")
    log = scan.select("user_id", "item_id", "category_id", "timestamp").collect(engine="streaming")
    # An item's category is the one it is logged with most often (ties: the smallest id).
    items = (
        log.group_by("item_id", "category_id").len()
        .sort(["item_id", "len", "category_id"], descending=[False, True, False])
        .group_by("item_id", maintain_order=True).first()
        .select("item_id", pl.col("category_id").cast(pl.Utf8).alias("category"), pl.lit(None, pl.Utf8).alias("title"))
    )
    return _interaction_task("taobao", log.select("user_id", "item_id", "timestamp"), items,
                             _hashed_profile(user_buckets), seed, None, settings)


def _lifelong_task(data: LifelongData, seed: int, user_buckets: int, settings: dict[str, Any]) -> _Task:
    users, length = data.hist_item.shape
    targets, k = data.planted_positions.shape[1:]
    num_items = data.item_cate.size - 1
    user_ids = np.arange(1, users + 1)
    items = pl.DataFrame({
        "item_id": np.arange(1, num_items + 1),
        "category": data.item_cate[1:].astype(str),
        "title": pl.Series([None] * num_items, dtype=pl.Utf8),
    })
    vocab = _make_vocab("lifelong-synthetic", user_ids, _hashed_profile(user_buckets)(user_ids), items, settings)
    # Raw item ids 1..N are already their own indices.
    sequences = _Sequences(item=data.hist_item.reshape(-1), time=data.hist_timestamp.reshape(-1),
                           offsets=np.arange(users + 1, dtype=np.int64) * length)
    label = data.label.reshape(-1).astype(np.float32)
    relevant = np.where(label[:, None] > 0, data.planted_positions.reshape(-1, k), -1)
    samples = _Samples(
        user_row=np.repeat(np.arange(users), targets), end=np.full(users * targets, length, dtype=np.int64),
        target_item=data.target_item.reshape(-1), target_time=np.repeat(data.target_timestamp, targets),
        label=label, relevant=relevant.astype(np.int64),
    )
    # Split by user: 80 / 10 / 10 of a seeded permutation (at least one user each for val and test).
    held = max(1, round(0.1 * users)) if users >= 3 else 0
    order = np.random.default_rng([seed, 2]).permutation(users)
    split_of_user = np.zeros(users, dtype=np.int64)
    split_of_user[order[users - 2 * held : users - held]] = 1
    split_of_user[order[users - held :]] = 2
    split_of = np.repeat(split_of_user, targets)
    splits = {name: samples.take(np.flatnonzero(split_of == code)) for code, name in enumerate(("train", "val", "test"))}
    return _Task(vocab, sequences, splits)


# ----------------------------------------------------------------------------------------------------------
# Raw scoring frames
# ----------------------------------------------------------------------------------------------------------
class EncodedRows(NamedTuple):
    """``batch`` holds the valid rows only, in order; ``valid_rows[i]`` is the frame row of batch row i;
    ``errors[r]`` is None for a valid row r and the reason otherwise (``len(errors) == len(frame)``)."""

    batch: dict[str, torch.Tensor]
    valid_rows: list[int]
    errors: list[str | None]


def _as_int(value: Any) -> int | None:
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if math.isfinite(value) and float(value).is_integer() else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _int_cells(series: pl.Series, name: str) -> tuple[np.ndarray, list[str | None]]:
    """Integer values of a scalar column (0 where bad) and a problem text per row."""
    values = np.zeros(series.len(), dtype=np.int64)
    problems: list[str | None] = [None] * series.len()
    if series.dtype.is_integer():
        values[:] = series.fill_null(0).to_numpy()
        for row in np.flatnonzero(series.is_null().to_numpy()):
            problems[row] = f"{name} is missing (null)"
        return values, problems
    for row, value in enumerate(series.to_list()):
        parsed = _as_int(value)
        if value is None:
            problems[row] = f"{name} is missing (null)"
        elif parsed is None:
            problems[row] = f"{name} {value!r} is not an integer"
        else:
            values[row] = parsed
    return values, problems


_LIST_SPLIT = re.compile(r"[\s,;]+")


def _as_int_list(value: Any, name: str) -> list[int] | str | None:
    """A cell as a list of ints, a problem text, or None for a null cell."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        value = [token for token in _LIST_SPLIT.split(text) if token]
    elif isinstance(value, (pl.Series, np.ndarray, tuple)):
        value = list(value)
    if not isinstance(value, list):
        return f"{name} must be a list of integers, got {type(value).__name__} {value!r:.40}"
    parsed = []
    for position, element in enumerate(value):
        number = _as_int(element)
        if number is None:
            return f"{name} element {element!r:.40} at position {position} is not an integer"
        parsed.append(number)
    return parsed


def _list_cells(series: pl.Series, name: str) -> tuple[np.ndarray, np.ndarray, list[str | None], np.ndarray]:
    """``(flat values, length per row, problem per row, null per row)`` for a list-of-int column; a row
    with a problem or a null cell has length 0."""
    n = series.len()
    problems: list[str | None] = [None] * n
    dtype = series.dtype
    if isinstance(dtype, pl.List) and dtype.inner.is_integer():
        null = series.is_null().to_numpy()
        lengths = series.list.len().fill_null(0).to_numpy().astype(np.int64)
        flat_series = series.filter(pl.Series(lengths > 0)).explode()
        missing = flat_series.is_null().to_numpy()
        if missing.any():
            rows = np.repeat(np.arange(n), lengths)
            starts = np.concatenate([[0], np.cumsum(lengths)])
            for row in np.unique(rows[missing]):
                position = int(np.flatnonzero(missing[starts[row] : starts[row + 1]])[0])
                problems[row] = f"{name} has a null at position {position}"
            bad_rows = np.array([p is not None for p in problems])
            keep_flat = ~bad_rows[rows]
            flat = flat_series.fill_null(0).to_numpy().astype(np.int64)[keep_flat]
            lengths = np.where(bad_rows, 0, lengths)
            return flat, lengths, problems, null
        return flat_series.to_numpy().astype(np.int64), lengths, problems, null
    null = np.zeros(n, dtype=bool)
    lengths = np.zeros(n, dtype=np.int64)
    parts: list[list[int]] = []
    for row, value in enumerate(series.to_list()):
        parsed = _as_int_list(value, name)
        if parsed is None:
            null[row] = True
        elif isinstance(parsed, str):
            problems[row] = parsed
        else:
            lengths[row] = len(parsed)
            parts.append(parsed)
    flat = np.fromiter((v for part in parts for v in part), dtype=np.int64, count=int(lengths.sum()))
    return flat, lengths, problems, null


def encode_scoring_frame(vocab: RecVocab, frame: pl.DataFrame, max_history: int,
                         num_time_buckets: int) -> EncodedRows:
    """Encode a raw scoring frame into a batch for the rows that can be scored.

    Schema: ``user_id`` (int), ``target_item`` (int), ``history_items`` (list of int, oldest first);
    optional ``history_timestamps`` (list of int, same length as history_items) and ``target_timestamp`` (int);
    ``label`` is copied into the batch when numeric and otherwise ignored. Lists may also arrive as strings
    (``"[1, 2, 3]"``) or lists of numeric strings.

    A row gets an error text (never an exception) for: a non-integer or null id, an unknown target item, a
    null/empty history, a history that is not a list of integers, timestamps of another length or type, or a
    history none of whose items are known. Unknown history items are dropped when at least one item is known.
    An unknown user is not an error: user index 0 and profile 0. When timestamps are given the history is
    ordered by them; the target time is ``target_timestamp``, else the latest history timestamp; a row without
    history timestamps gets time bucket 0 ("unknown") for every behaviour. The last ``max_history`` known
    behaviours are kept; L is always ``max_history``.

    A missing required column raises ``ValueError`` naming the column and the expected schema.
    """
    for column in ("user_id", "target_item", "history_items"):
        if column not in frame.columns:
            raise ValueError(f"scoring input has no column {column!r}; expected {SCORING_SCHEMA}")
    n = frame.height
    problems: list[list[str]] = [[] for _ in range(n)]

    def collect(found: list[str | None]) -> None:
        for row, text in enumerate(found):
            if text is not None:
                problems[row].append(text)

    user_raw, found = _int_cells(frame["user_id"], "user_id")
    collect(found)
    target_raw, found = _int_cells(frame["target_item"], "target_item")
    collect(found)
    target_ok = np.array([p is None for p in found], dtype=bool)
    items_flat, items_len, found, items_null = _list_cells(frame["history_items"], "history_items")
    collect(found)
    items_ok = np.array([p is None for p in found], dtype=bool)
    for row in np.flatnonzero(items_ok & (items_null | (items_len == 0))):
        problems[row].append("history_items is empty or null; a row needs at least one past interaction")

    has_times = np.zeros(n, dtype=bool)
    times_flat = np.zeros(items_flat.size, dtype=np.int64)
    if "history_timestamps" in frame.columns:
        ts_flat, ts_len, found, ts_null = _list_cells(frame["history_timestamps"], "history_timestamps")
        collect(found)
        ts_ok = np.array([p is None for p in found], dtype=bool) & ~ts_null
        mismatch = ts_ok & items_ok & (ts_len != items_len)
        for row in np.flatnonzero(mismatch):
            problems[row].append(f"history_timestamps has {ts_len[row]} values but history_items has {items_len[row]}")
        has_times = ts_ok & ~mismatch & items_ok
        # Align timestamps with the flat item array (rows without usable timestamps get zeros).
        item_rows = np.repeat(np.arange(n), items_len)
        ts_starts = np.concatenate([[0], np.cumsum(ts_len)])[:-1]
        item_starts = np.concatenate([[0], np.cumsum(items_len)])[:-1]
        usable = has_times[item_rows]
        offset_in_row = np.arange(items_flat.size) - item_starts[item_rows]
        times_flat[usable] = ts_flat[ts_starts[item_rows[usable]] + offset_in_row[usable]]
    target_time = np.zeros(n, dtype=np.int64)
    has_target_time = np.zeros(n, dtype=bool)
    if "target_timestamp" in frame.columns:
        values, found = _int_cells(frame["target_timestamp"], "target_timestamp")
        null = frame["target_timestamp"].is_null().to_numpy()
        for row, text in enumerate(found):
            if text is not None and not null[row]:
                problems[row].append(text)
        has_target_time = np.array([p is None for p in found], dtype=bool)
        target_time = np.where(has_target_time, values, 0)

    target_index = vocab.item_index(target_raw)
    for row in np.flatnonzero(target_ok & (target_index == 0)):
        problems[row].append(
            f"target_item {target_raw[row]} is not in the training vocabulary; score only items seen in training or retrain"
        )
    item_rows = np.repeat(np.arange(n), items_len)
    item_index = vocab.item_index(items_flat)
    known = item_index > 0
    known_count = np.bincount(item_rows[known], minlength=n)
    item_starts = np.concatenate([[0], np.cumsum(items_len)])[:-1]
    for row in np.flatnonzero(items_ok & (items_len > 0) & (known_count == 0)):
        problems[row].append(
            f"none of the {items_len[row]} history_items are in the training vocabulary (e.g. {items_flat[item_starts[row]]}); "
            f"score only items seen in training or retrain"
        )
    errors = ["; ".join(p) if p else None for p in problems]
    valid = np.array([e is None for e in errors], dtype=bool)
    valid_rows = np.flatnonzero(valid)
    batch_row = np.cumsum(valid) - 1  # frame row → batch row for valid rows

    keep = valid[item_rows] & known
    rows, items, times = item_rows[keep], item_index[keep], times_flat[keep]
    order = np.lexsort((np.where(has_times[rows], times, 0), rows))  # stable: rows without times keep their order
    rows, items, times = rows[order], items[order], times[order]
    count = np.bincount(rows, minlength=n)
    first = np.concatenate([[0], np.cumsum(count)])[:-1]
    from_end = count[rows] - 1 - (np.arange(rows.size) - first[rows])
    keep = from_end < max_history
    rows, items, times, column = rows[keep], items[keep], times[keep], max_history - 1 - from_end[keep]

    size = valid_rows.size
    hist_item = np.zeros((size, max_history), dtype=np.int64)
    hist_stamp = np.zeros((size, max_history), dtype=np.int64)
    hist_mask = np.zeros((size, max_history), dtype=bool)
    b = batch_row[rows]
    hist_item[b, column] = items
    hist_stamp[b, column] = times
    hist_mask[b, column] = True
    timed = has_times[valid_rows]
    latest = np.where(hist_mask, hist_stamp, np.iinfo(np.int64).min).max(axis=1, initial=np.iinfo(np.int64).min)
    now = np.where(has_target_time[valid_rows], target_time[valid_rows], np.where(timed, latest, 0))
    hist_time = np.where(hist_mask & timed[:, None], time_bucket(now[:, None] - hist_stamp, num_time_buckets), 0)

    label = np.zeros(size, dtype=np.float32)
    if "label" in frame.columns and (frame["label"].dtype.is_numeric() or frame["label"].dtype == pl.Boolean):
        label = frame["label"].cast(pl.Float32, strict=False).fill_null(0).to_numpy()[valid_rows]
    user = vocab.user_index(user_raw[valid_rows])
    target_item = target_index[valid_rows]
    batch = _to_batch(
        user=user, profile=vocab.profile(user).reshape(size, len(vocab.profile_fields)), target_item=target_item,
        target_cate=vocab.item_cate(target_item), hist_item=hist_item, hist_cate=vocab.item_cate(hist_item),
        hist_time=hist_time, hist_mask=hist_mask, label=label, relevant=np.zeros((size, max_history), dtype=bool),
    )
    return EncodedRows(batch=batch, valid_rows=valid_rows.tolist(), errors=errors)


def _list_column(values: np.ndarray, lengths: np.ndarray) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values.astype(np.int64)))


def export_scoring_frame(source: "RecDataModule | RecVocab", split: str = "test") -> pl.DataFrame:
    """A split in the raw scoring schema, plus ``label`` (Int64 0/1): one row per sample, the history being the
    ``max_history`` behaviours before the target, oldest first, in raw ids and timestamps.

    ``source`` is a data module, or a run's :class:`RecVocab` (the module is rebuilt from ``vocab.settings``).
    """
    datamodule = source if isinstance(source, RecDataModule) else RecDataModule(**source.settings)
    if split not in datamodule.splits:
        raise ValueError(f"unknown split {split!r}; choose one of {list(datamodule.splits)}")
    samples = datamodule.splits[split]
    builder = datamodule.batch_builder(split)
    vocab = datamodule.vocab
    index = np.arange(len(samples))
    flat, mask, _ = builder.window(index)
    lengths = mask.sum(axis=1)
    positions = flat[mask]  # row-major: each row's behaviours, oldest first
    history_items = vocab.item_raw(datamodule.sequences.item[positions])
    history_times = datamodule.sequences.time[positions]
    table = pa.table({
        "user_id": pa.array(vocab.user_raw(samples.user_row + 1)),
        "target_item": pa.array(vocab.item_raw(samples.target_item)),
        "history_items": _list_column(history_items, lengths),
        "history_timestamps": _list_column(history_times, lengths),
        "target_timestamp": pa.array(samples.target_time.astype(np.int64)),
        "label": pa.array(samples.label.astype(np.int64)),
    })
    return pl.from_arrow(table)


# ----------------------------------------------------------------------------------------------------------
# Lightning data module
# ----------------------------------------------------------------------------------------------------------
class RecDataModule(lp.LightningDataModule):
    """The DIN/DARE click task for ``movielens-100k``, ``lifelong-synthetic`` or ``taobao``.

    Everything is loaded and indexed in ``__init__`` so that ``num_users``, ``num_items``, ``num_cates``,
    ``num_time_buckets`` and ``profile_cardinalities`` (table sizes, padding index 0 included) exist when
    LightningCLI links them to the model. ``vocab`` is the :class:`RecVocab` to save with a run.

    ``data_path``: MovieLens folder (either layout; default: fetched into the cache), the lifelong folder
    written by ``fusion data fetch lifelong-synthetic`` (default: generated from the ``lifelong_*`` arguments),
    or the Taobao ``UserBehavior.csv`` (required). ``max_users`` keeps a seeded random subset of users (all
    catalogue items stay in the vocabulary for MovieLens). ``user_hash_buckets``: size of the hashed user field
    that is the profile of lifelong and Taobao users. ``taobao_behaviors``: behaviour types kept (None = all).
    """

    def __init__(
        self,
        dataset: str = "movielens-100k",
        data_path: str | None = None,
        max_history: int = 200,
        batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        max_users: int | None = None,
        num_time_buckets: int = 16,
        lifelong_users: int = 2_000,
        lifelong_history: int = 10_000,
        lifelong_items: int = 2_000,
        lifelong_cates: int = 20,
        lifelong_themes: int = 10,
        lifelong_interests: int = 4,
        lifelong_relevant: int = 3,
        lifelong_targets_per_user: int = 8,
        taobao_behaviors: list[str] | None = None,
        user_hash_buckets: int = 1_000,
    ) -> None:
        super().__init__()
        if dataset not in DATASET_NAMES:
            raise ValueError(f"unknown dataset {dataset!r}; choose one of {list(DATASET_NAMES)}")
        for name, value in (("max_history", max_history), ("batch_size", batch_size),
                            ("user_hash_buckets", user_hash_buckets)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_time_buckets < 2:
            raise ValueError(f"num_time_buckets must be >= 2 (bucket 0 is padding), got {num_time_buckets}")
        if num_workers < 0 or (max_users is not None and max_users < 1):
            raise ValueError("num_workers must be >= 0 and max_users None or >= 1")
        self.save_hyperparameters()
        # the arguments only: LightningCLI adds private entries (``_instantiator``) that are not arguments
        settings = {k: v for k, v in self.hparams.items() if not str(k).startswith("_")}
        started = time.perf_counter()
        if dataset == "movielens-100k":
            if data_path is not None:
                folder = fetch_movielens_100k(Path(data_path), Path(data_path))
            else:
                folder = fetch_dataset("movielens-100k")
            task = _movielens_task(folder, seed, max_users, settings)
        elif dataset == "taobao":
            if data_path is None:
                raise ValueError(
                    "dataset 'taobao' needs data_path: the UserBehavior.csv file "
                    "(--data.dataset taobao --data.data_path /path/UserBehavior.csv; see data_cards/taobao-user-behavior.md)"
                )
            task = _taobao_task(Path(data_path), taobao_behaviors, seed, max_users, user_hash_buckets, settings)
        else:
            if data_path is not None:
                data = LifelongData.load(data_path)
                if max_users is not None:
                    data = data.head(max_users)
            else:
                data = generate_lifelong(
                    num_users=min(lifelong_users, max_users or lifelong_users), history_length=lifelong_history,
                    num_items=lifelong_items, num_cates=lifelong_cates, num_interests=lifelong_interests,
                    relevant_per_target=lifelong_relevant, seed=seed, num_themes=lifelong_themes,
                    targets_per_user=lifelong_targets_per_user,
                )
            self.lifelong = data
            task = _lifelong_task(data, seed, user_hash_buckets, settings)
        self.vocab: RecVocab = task.vocab
        self.sequences: _Sequences = task.sequences
        self.splits: dict[str, _Samples] = task.splits
        self.num_users = self.vocab.num_users
        self.num_items = self.vocab.num_items
        self.num_cates = self.vocab.num_cates
        self.num_time_buckets = num_time_buckets
        self.profile_cardinalities = self.vocab.profile_cardinalities
        sizes = ", ".join(f"{name} {len(samples):,}" for name, samples in self.splits.items())
        progress(f"{dataset}: {self.num_users - 1:,} users, {self.num_items - 1:,} items, "
                 f"{self.num_cates - 1:,} categories; samples {sizes} ({time.perf_counter() - started:.1f} s)")

    def batch_builder(self, split: str) -> _BatchBuilder:
        """The collate function of ``split``: ``builder(list_of_sample_indices) -> batch dict``."""
        return _BatchBuilder(self.sequences, self.vocab, self.splits[split], self.hparams.max_history,
                             self.num_time_buckets)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.hparams.seed) if shuffle else None
        workers = self.hparams.num_workers
        return DataLoader(
            _IndexDataset(len(self.splits[split])), batch_size=self.hparams.batch_size, shuffle=shuffle,
            generator=generator, collate_fn=self.batch_builder(split), num_workers=workers,
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def user_timeline(self, user_id: int) -> pl.DataFrame:
        """One user's full history (raw ids): item_id, title, category, timestamp, oldest first."""
        index = int(self.vocab.user_index(np.array([user_id]))[0])
        if index == 0:
            raise ValueError(f"user_id {user_id} is not in this data set")
        lo, hi = self.sequences.offsets[index - 1], self.sequences.offsets[index]
        items = self.sequences.item[lo:hi].astype(np.int64)
        timeline = pl.DataFrame({"item_id": self.vocab.item_raw(items), "timestamp": self.sequences.time[lo:hi]})
        return timeline.join(self.vocab.items.select("item_id", "title", "category"), on="item_id",
                             how="left", maintain_order="left").select("item_id", "title", "category", "timestamp")


register_dataset(DatasetSpec(
    name="movielens-100k",
    description="MovieLens-100K ratings (GroupLens), 943 users × 1,682 movies; from the cache, GroupLens or RecBole's wheel",
    fetch=fetch_movielens_100k,
    card="data_cards/movielens-100k.md",
))
register_dataset(DatasetSpec(
    name="lifelong-synthetic",
    description="Synthetic lifelong histories (10,000 behaviours) with planted relevant behaviours; generated locally",
    fetch=fetch_lifelong,
    card="data_cards/lifelong-synthetic.md",
))
register_dataset(DatasetSpec(
    name="taobao",
    description="Taobao UserBehavior log (Alibaba Tianchi); not downloadable here — pass your copy with --path",
    fetch=fetch_taobao,
    card="data_cards/taobao-user-behavior.md",
))
