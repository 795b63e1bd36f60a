"""The DIN/DARE click task built from each source: samples, splits and the vocabulary.

From an interaction log (MovieLens-100K, Taobao), as in DIN and DARE: each user's interactions in time order; every
interaction after the first is a positive target whose history is everything before it, and it is paired with a
negative — an item the user never touched, sampled with the data module's seed — that shares the history and the
time. Per user, the last interaction is the test target, the one before it the validation target, the rest are
training targets (leave-last-out by time; users are not cut at one global date). The lifelong data set instead has
one history per user and several targets at its end, and is split by user.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from recipes.longseq_rec.encoding import RecVocab, Samples, Sequences
from recipes.longseq_rec.lifelong import LifelongData
from recipes.longseq_rec.readers import TAOBAO_BEHAVIORS, read_movielens, read_taobao_user_behavior

__all__ = ["RecTask", "movielens_task", "taobao_task", "lifelong_task"]

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
    sequences = Sequences(item=item, time=stamp, offsets=offsets)

    user_row = user - 1
    position = np.arange(user.size) - offsets[user_row]
    length = counts[user_row]
    keep = position >= 1
    positives = Samples(user_row[keep], position[keep], item[keep], stamp[keep],
                         np.ones(int(keep.sum()), dtype=np.float32), np.zeros((int(keep.sum()), 0), dtype=np.int64))
    split_of = np.where(position == length - 1, 2, np.where(position == length - 2, 1, 0))[keep]
    touched = np.unique(user_row.astype(np.int64) * vocab.num_items + item)
    negatives = _sample_negatives(positives.user_row, touched, vocab.num_items - 1, np.random.default_rng([seed, 1]))
    paired = _pair_with_negatives(positives, negatives)
    split_of = np.repeat(split_of, 2)
    splits = {name: paired.take(np.flatnonzero(split_of == code)) for code, name in enumerate(("train", "val", "test"))}
    return RecTask(vocab, sequences, splits)


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


def taobao_task(path: Path, behaviors: list[str] | None, seed: int, max_users: int | None,
                user_buckets: int, settings: dict[str, Any]) -> RecTask:
    """The task from a UserBehavior CSV (``behaviors``: the types kept, None = all); the profile is a hashed
    user field of ``user_buckets`` buckets."""
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


def lifelong_task(data: LifelongData, seed: int, user_buckets: int, settings: dict[str, Any]) -> RecTask:
    """The task from lifelong data: every target of a user shares the whole history; split by user."""
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
    sequences = Sequences(item=data.hist_item.reshape(-1), time=data.hist_timestamp.reshape(-1),
                           offsets=np.arange(users + 1, dtype=np.int64) * length)
    label = data.label.reshape(-1).astype(np.float32)
    relevant = np.where(label[:, None] > 0, data.planted_positions.reshape(-1, k), -1)
    samples = Samples(
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
    return RecTask(vocab, sequences, splits)
