"""The DIN/DARE click task built from each source: samples, splits and the vocabulary.

From an interaction log (MovieLens-100K, Taobao), as in DIN and DARE: each user's interactions in time order; every
interaction after the first is a positive target whose history is everything before it, and it is paired with a
negative — an item the user never touched, sampled with the data module's seed — that shares the history and the
time. Per user, the last interaction is the test target, the one before it the validation target, the rest are
training targets (leave-last-out by time; users are not cut at one global date). The lifelong data set instead has
one history per user and several targets at its end, and is split by user.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from recipes.longseq_rec.encoding import RecVocab, Samples, Sequences
from recipes.longseq_rec.lifelong import LifelongData
from recipes.longseq_rec.readers import TAOBAO_BEHAVIORS, iter_taobao_user_behavior, read_movielens
from recipes.runtime.datasets import data_home

__all__ = ["RecTask", "TaobaoLog", "movielens_task", "taobao_task", "lifelong_task", "summarise_taobao", "stream_sequences"]

# MovieLens-1M's age groups, applied to ML-100K's exact ages.
AGE_EDGES = (18, 25, 35, 45, 50, 56)
AGE_LABELS = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")


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


def _pair_with_negatives(samples: Samples, negatives: np.ndarray) -> Samples:
    """Each positive followed by its negative (same user, history and time, label 0)."""
    def twice(a: np.ndarray) -> np.ndarray:
        return np.repeat(a, 2, axis=0)

    items = np.stack([samples.target_item, negatives], axis=1).reshape(-1)
    labels = np.tile(np.array([1.0, 0.0], dtype=np.float32), len(samples))
    return Samples(twice(samples.user_row), twice(samples.end), items, twice(samples.target_time), labels,
                   np.full((2 * len(samples), 0), -1, dtype=np.int64))


class RecTask(NamedTuple):
    """What a data module trains on: the vocabulary, every user's behaviours and the samples of each split."""

    vocab: RecVocab
    sequences: Sequences
    splits: dict[str, Samples]


def _interaction_task(dataset: str, log: pl.DataFrame, items: pl.DataFrame,
                      profile_of: Any, seed: int, max_users: int | None, settings: dict[str, Any]) -> RecTask:
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
    return _task_from_sequences(vocab, Sequences(item=item, time=stamp, offsets=offsets), seed)


def _task_from_sequences(vocab: RecVocab, sequences: Sequences, seed: int) -> RecTask:
    """Every behaviour after a user's first is a positive target (history: the behaviours before it), paired with a
    seeded negative the user never touched; split per user: last target test, the one before validation."""
    counts = np.diff(sequences.offsets)
    user_row = np.repeat(np.arange(counts.size), counts)
    position = np.arange(user_row.size) - sequences.offsets[user_row]
    length = counts[user_row]
    keep = position >= 1
    item = np.asarray(sequences.item)
    positives = Samples(user_row[keep], position[keep], item[keep].astype(np.int64), np.asarray(sequences.time)[keep],
                        np.ones(int(keep.sum()), dtype=np.float32), np.zeros((int(keep.sum()), 0), dtype=np.int64))
    split_of = np.where(position == length - 1, 2, np.where(position == length - 2, 1, 0))[keep]
    touched = np.unique(user_row.astype(np.int64) * vocab.num_items + item)
    negatives = _sample_negatives(positives.user_row, touched, vocab.num_items - 1, np.random.default_rng([seed, 1]))
    paired = _pair_with_negatives(positives, negatives)
    split_of = np.repeat(split_of, 2)
    splits = {name: paired.take(np.flatnonzero(split_of == code)) for code, name in enumerate(("train", "val", "test"))}
    return RecTask(vocab, sequences, splits)


class TaobaoLog(NamedTuple):
    """What one streaming pass over a UserBehavior log tells before its rows are placed: the users (raw ids, sorted)
    with their behaviour counts, and the items (``item_id``, ``category``: the one it is logged with most often)."""

    user_ids: np.ndarray  # (U,) int64
    counts: np.ndarray  # (U,) int64
    items: pl.DataFrame


def summarise_taobao(chunks: Iterable[pl.DataFrame]) -> TaobaoLog:
    """Users, their counts and the item table of a log given as frames (user_id, item_id, category_id), one pass:
    memory grows with the number of users and (item, category) pairs, not of rows."""
    users: pl.DataFrame | None = None
    pairs: pl.DataFrame | None = None
    for chunk in chunks:
        counted = chunk.group_by("user_id").agg(pl.len().alias("count"))
        users = counted if users is None else pl.concat([users, counted]).group_by("user_id").agg(pl.col("count").sum())
        counted = chunk.group_by("item_id", "category_id").len()
        pairs = counted if pairs is None else pl.concat([pairs, counted]).group_by("item_id", "category_id").agg(pl.col("len").sum())
    if users is None:
        users = pl.DataFrame({"user_id": [], "count": []}, schema={"user_id": pl.Int64, "count": pl.UInt32})
        pairs = pl.DataFrame({"item_id": [], "category_id": [], "len": []},
                             schema={"item_id": pl.Int64, "category_id": pl.Int64, "len": pl.UInt32})
    users = users.sort("user_id")
    # An item's category is the one it is logged with most often (ties: the smallest id).
    items = (
        pairs.sort(["item_id", "len", "category_id"], descending=[False, True, False])
        .group_by("item_id", maintain_order=True).first()
        .select("item_id", pl.col("category_id").cast(pl.Utf8).alias("category"), pl.lit(None, pl.Utf8).alias("title"))
    )
    return TaobaoLog(users["user_id"].to_numpy().astype(np.int64), users["count"].to_numpy().astype(np.int64), items)


def stream_sequences(chunks: Iterable[pl.DataFrame], vocab: RecVocab, counts: np.ndarray, folder: Path,
                     sort_rows: int = 1_000_000) -> Sequences:
    """Every user's behaviours of a log given as frames (user_id, item_id, timestamp) as :class:`Sequences`, built
    without holding the log: ``item`` (int32) and ``time`` (int64) are memory-mapped files in ``folder``, filled one
    frame at a time, then sorted in place by (time, item id) one block of users (about ``sort_rows`` behaviours) at a
    time. ``counts`` are the behaviours per user index 1.. (:func:`summarise_taobao`). Memory: O(users + frame +
    sort_rows), whatever the size of the log."""
    folder.mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(offsets[-1])
    item = np.lib.format.open_memmap(folder / "item.npy", mode="w+", dtype=np.int32, shape=(max(total, 1),))[:total]
    time = np.lib.format.open_memmap(folder / "time.npy", mode="w+", dtype=np.int64, shape=(max(total, 1),))[:total]
    filled = offsets[:-1].copy()  # next free position of each user row
    for chunk in chunks:
        row = vocab.user_index(chunk["user_id"].to_numpy()) - 1
        order = np.argsort(row, kind="stable")
        row = row[order]
        first = np.searchsorted(row, row, side="left")  # rank of each behaviour among its user's in this frame
        position = filled[row] + (np.arange(row.size) - first)
        item[position] = vocab.item_index(chunk["item_id"].to_numpy()[order])
        time[position] = chunk["timestamp"].to_numpy()[order]
        np.add.at(filled, row, 1)
    if not np.array_equal(filled, offsets[1:]):
        raise ValueError("the log changed between the passes over it (per-user counts differ); read it again")
    start = 0
    while start < counts.size:  # sort each user's block by (time, item id), a block of users at a time
        stop = int(np.searchsorted(offsets, offsets[start] + max(sort_rows, 1), side="right")) - 1
        stop = min(max(stop, start + 1), counts.size)
        lo, hi = int(offsets[start]), int(offsets[stop])
        user = np.repeat(np.arange(stop - start), counts[start:stop])
        order = np.lexsort((item[lo:hi], time[lo:hi], user))
        item[lo:hi], time[lo:hi] = item[lo:hi][order], time[lo:hi][order]
        start = stop
    item.flush()
    time.flush()
    return Sequences(item=item, time=time, offsets=offsets)


def taobao_task(path: Path, behaviors: list[str] | None, seed: int, max_users: int | None,
                user_buckets: int, settings: dict[str, Any], block_bytes: int = 64 * 2**20) -> RecTask:
    """The task from a UserBehavior CSV (``behaviors``: the types kept, None = all); the profile is a hashed
    user field of ``user_buckets`` buckets. The file is streamed in blocks of ``block_bytes``
    (:func:`~recipes.longseq_rec.readers.iter_taobao_user_behavior`): a pass for the users and items
    (:func:`summarise_taobao`; one more first with ``max_users``), a pass that places every behaviour in memory-mapped
    sequences cached under the data home (:func:`stream_sequences`). The log is never held whole; the samples (one
    per behaviour) are, so train on a ``max_users`` subset where they would not fit."""
    if behaviors:
        unknown = sorted(set(behaviors) - set(TAOBAO_BEHAVIORS))
        if unknown:
            raise ValueError(f"taobao_behaviors {unknown} are not Taobao behaviour types; use a subset of {list(TAOBAO_BEHAVIORS)}")
    chosen: pl.Series | None = None

    def chunks() -> Iterator[pl.DataFrame]:
        for chunk in iter_taobao_user_behavior(path, block_bytes=block_bytes):
            if behaviors:
                chunk = chunk.filter(pl.col("behavior_type").cast(pl.Utf8).is_in(behaviors))
            if chosen is not None:
                chunk = chunk.filter(pl.col("user_id").is_in(chosen.implode()))
            yield chunk

    if max_users is not None:
        all_users = np.unique(np.concatenate([c["user_id"].unique().to_numpy() for c in chunks()] or [np.zeros(0, np.int64)]))
        if max_users < all_users.size:
            chosen = pl.Series(np.sort(np.random.default_rng([seed, 0]).choice(all_users, size=max_users, replace=False)))
    log = summarise_taobao(chunks())
    vocab = _make_vocab("taobao", log.user_ids, _hashed_profile(user_buckets)(log.user_ids), log.items, settings)
    folder = data_home() / "taobao-sequences" / _file_key(path, behaviors, max_users, seed)
    sequences = stream_sequences(chunks(), vocab, log.counts, folder)
    return _task_from_sequences(vocab, sequences, seed)


def movielens_task(folder: Path, seed: int, max_users: int | None, settings: dict[str, Any]) -> RecTask:
    """The task from an ML-100K folder; the profile is gender, age group (MovieLens-1M's) and occupation."""
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


def _file_key(path: Path, *parts: Any) -> str:
    """A folder name for the memory-mapped sequences of ``path`` under these settings (changes with the file)."""
    import hashlib

    stat = Path(path).stat()
    text = repr((str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, parts))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def lifelong_task(data: LifelongData, seed: int, user_buckets: int, settings: dict[str, Any]) -> RecTask:
    """The task from lifelong data: every target of a user shares the whole history; split by user."""
    users, length = data.hist_item.shape
    targets = data.target_item.shape[1]
    num_items = data.item_cate.size - 1
    user_ids = np.arange(1, users + 1)
    items = pl.DataFrame({
        "item_id": np.arange(1, num_items + 1),
        "category": data.item_cate[1:].astype(str),
        "title": pl.Series([None] * num_items, dtype=pl.Utf8),
    })
    vocab = _make_vocab("lifelong-synthetic", user_ids, _hashed_profile(user_buckets)(user_ids), items, settings)
    # Raw item ids 1..N are already their own indices. A target's relevant behaviours are those of its hidden
    # (category, theme) (LifelongData.relevant_mask): the planted ones, or a liked theme's whole share of the history.
    sequences = Sequences(item=data.hist_item.reshape(-1), time=data.hist_timestamp.reshape(-1),
                           offsets=np.arange(users + 1, dtype=np.int64) * length, item_group=data.item_group)
    label = data.label.reshape(-1).astype(np.float32)
    samples = Samples(
        user_row=np.repeat(np.arange(users), targets), end=np.full(users * targets, length, dtype=np.int64),
        target_item=data.target_item.reshape(-1), target_time=np.repeat(data.target_timestamp, targets),
        label=label, relevant=np.full((users * targets, 0), -1, dtype=np.int64),
    )
    # Split by user: 80 / 10 / 10 of a seeded permutation (at least one user each for val and test).
    held = max(1, round(0.1 * users)) if users >= 3 else 0
    order = np.random.default_rng([seed, 2]).permutation(users)
    split_of_user = np.zeros(users, dtype=np.int64)
    split_of_user[order[users - 2 * held : users - held]] = 1
    split_of_user[order[users - held :]] = 2
    split_of = np.repeat(split_of_user, targets)
    splits = {name: samples.take(np.flatnonzero(split_of == code)) for code, name in enumerate(("train", "val", "test"))}
    return RecTask(vocab, sequences, splits)
