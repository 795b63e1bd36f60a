"""Ids to tensors for the recommendation recipe: the vocabulary a run is trained with (:class:`RecVocab`), the
time-gap buckets, the batch builder that turns (history, target) samples into batches, and the raw scoring schema
in both directions (:func:`encode_scoring_frame` reads it, :func:`raw_scoring_frame` writes a split in it).

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

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
import torch
from torch.utils.data import Dataset

__all__ = [
    "SCORING_SCHEMA",
    "time_bucket",
    "RecVocab",
    "Sequences",
    "Samples",
    "BatchBuilder",
    "built_batch",
    "EncodedRows",
    "TIMESTAMP_RANGE",
    "encode_scoring_frame",
    "raw_scoring_frame",
]

SCORING_SCHEMA = (
    "target_item (int); user_id (int) and history_items (list of int, oldest first), each scored without when "
    "missing; optional history_timestamps (list of int Unix seconds, same length), target_timestamp (int Unix "
    "seconds), label (passed through)"
)


# ----------------------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------------------
def time_bucket(gap_seconds: np.ndarray, num_time_buckets: int) -> np.ndarray:
    """``1 + floor(log2(1 + gap_hours))`` clipped to ``num_time_buckets - 1`` (negative gaps count as 0);
    bucket 0 is left for padding."""
    gap_hours = np.maximum(np.asarray(gap_seconds, dtype=np.float64), 0.0) / 3600.0
    bucket = 1 + np.floor(np.log2(1.0 + gap_hours))
    return np.minimum(bucket, num_time_buckets - 1).astype(np.int64)


@dataclass
class RecVocab:
    """Raw id → index maps the model was trained with; index 0 is padding/unknown everywhere.

    ``users``: user_id (raw, sorted), user_index (1..), one Int64 column per profile field (its index).
    ``items``: item_id (raw, sorted), item_index (1..), cate_index, category (label), title (may be null).
    ``categories[i - 1]`` is the label of category index i; ``profile_labels[field][i - 1]`` likewise.
    ``settings``: the data module's arguments, so a run's data module can be rebuilt from its vocabulary
    (``RecDataModule.from_vocab``).
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


# ----------------------------------------------------------------------------------------------------------
# Samples and batches
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Sequences:
    """All users' behaviours, user blocks concatenated (block r holds user index r + 1), chronological."""

    item: np.ndarray  # (N,) item index
    time: np.ndarray  # (N,) timestamp, seconds
    offsets: np.ndarray  # (U + 1,)
    # (num_items,) hidden group of each item index (lifelong: its (category, theme)); when set, the behaviours
    # relevant to a target are those of its group, else the samples' ``relevant`` positions
    item_group: np.ndarray | None = None


@dataclass
class Samples:
    """One row per (history, target) sample; the history is positions [0, end) of the user's block."""

    user_row: np.ndarray  # (S,)
    end: np.ndarray  # (S,)
    target_item: np.ndarray  # (S,) item index
    target_time: np.ndarray  # (S,)
    label: np.ndarray  # (S,) float32
    relevant: np.ndarray  # (S, k) positions in the block, -1 = none; k may be 0

    def __len__(self) -> int:
        return int(self.user_row.size)

    def take(self, index: np.ndarray) -> "Samples":
        return Samples(self.user_row[index], self.end[index], self.target_item[index], self.target_time[index],
                       self.label[index], self.relevant[index])


class BatchBuilder(Dataset):
    """The samples of one split as a dataset that builds whole batches: ``builder(indices)`` (or the DataLoader's
    ``builder.__getitems__(indices)``) gathers the batch dict of those samples at once, vectorised; runs in
    DataLoader workers. ``builder[i]`` is one sample (the batch of ``[i]`` without its batch dimension). Its loaders
    take :func:`built_batch` as ``collate_fn``, since the batch is already built."""

    def __init__(self, sequences: Sequences, vocab: RecVocab, samples: Samples, max_history: int,
                 num_time_buckets: int) -> None:
        self.sequences, self.vocab, self.samples = sequences, vocab, samples
        self.max_history, self.num_time_buckets = max_history, num_time_buckets

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self([index]).items()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return self(indices)

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
        if seq.item_group is not None:
            relevant = mask & (seq.item_group[hist_item] == seq.item_group[s.target_item[index]][:, None])
        elif s.relevant.shape[1]:
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


def built_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``collate_fn`` of :class:`BatchBuilder` loaders: the batch :meth:`BatchBuilder.__getitems__` built."""
    return batch


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


# ----------------------------------------------------------------------------------------------------------
# Raw scoring frames
# ----------------------------------------------------------------------------------------------------------
class EncodedRows(NamedTuple):
    """``batch`` holds the rows that can be scored, in order; ``valid_rows[i]`` is the frame row of batch row i;
    ``errors[r]`` is None for a row that can be scored and the reason otherwise; ``warnings[r]`` says what a scored
    row was scored without (None when nothing). Both lists have one entry per frame row."""

    batch: dict[str, torch.Tensor]
    valid_rows: list[int]
    errors: list[str | None]
    warnings: list[str | None]


#: plausible Unix times in seconds: 1970-01-01 up to 2100-01-01 (a millisecond stamp of today is far above it)
TIMESTAMP_RANGE = (0, 4_102_444_800)
_INT64 = (-(2**63), 2**63 - 1)


def _parse_int(value: Any) -> int | None:
    """A cell as a Python int (any size), or None when it is not an integer."""
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


def _int_problem(value: Any, name: str) -> tuple[int, str | None]:
    """``(value as int64, None)`` or ``(0, why not)`` for one scalar cell (null included)."""
    if value is None:
        return 0, f"{name} is missing (null)"
    parsed = _parse_int(value)
    if parsed is None:
        return 0, f"{name} {value!r:.40} is not an integer"
    if not _INT64[0] <= parsed <= _INT64[1]:
        return 0, f"{name} {str(parsed)[:24]}… is outside the 64-bit integer range"
    return parsed, None


def _int_cells(series: pl.Series, name: str) -> tuple[np.ndarray, list[str | None]]:
    """Integer values of a scalar column (0 where bad) and a problem text per row (null cells included)."""
    values = np.zeros(series.len(), dtype=np.int64)
    problems: list[str | None] = [None] * series.len()
    if series.dtype.is_integer():  # UInt64 / Int128 values beyond int64 become null in the cast
        cast = series.cast(pl.Int64, strict=False)
        values[:] = cast.fill_null(0).to_numpy()
        null = series.is_null().to_numpy()
        for row in np.flatnonzero(cast.is_null().to_numpy()):
            problems[row] = (f"{name} is missing (null)" if null[row]
                             else f"{name} {str(series[int(row)])[:24]}… is outside the 64-bit integer range")
        return values, problems
    for row, value in enumerate(series.to_list()):
        values[row], problems[row] = _int_problem(value, name)
    return values, problems


_LIST_SPLIT = re.compile(r"[\s,;]+")


def _as_int_list(value: Any, name: str) -> list[int] | str | None:
    """A cell as a list of int64s, a problem text, or None for a null cell."""
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
        number, problem = _int_problem(element, f"{name} element")
        if problem is not None:
            if element is None:
                return f"{name} has a null at position {position}"
            return f"{problem} (position {position})" if "range" in problem else \
                f"{name} element {element!r:.40} at position {position} is not an integer"
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
        original = series.filter(pl.Series(lengths > 0)).explode()
        flat_series = original.cast(pl.Int64, strict=False)  # values beyond int64 become null
        missing = flat_series.is_null().to_numpy()
        if missing.any():
            was_null = original.is_null().to_numpy()
            rows = np.repeat(np.arange(n), lengths)
            starts = np.concatenate([[0], np.cumsum(lengths)])
            for row in np.unique(rows[missing]):
                position = int(np.flatnonzero(missing[starts[row] : starts[row + 1]])[0])
                if was_null[starts[row] + position]:
                    problems[row] = f"{name} has a null at position {position}"
                else:
                    problems[row] = f"{name} element {str(original[int(starts[row]) + position])[:24]}… at position " \
                                    f"{position} is outside the 64-bit integer range"
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


def _implausible(stamps: np.ndarray) -> np.ndarray:
    return (stamps < TIMESTAMP_RANGE[0]) | (stamps > TIMESTAMP_RANGE[1])


def encode_scoring_frame(vocab: RecVocab, frame: pl.DataFrame, max_history: int,
                         num_time_buckets: int) -> EncodedRows:
    """Encode a raw scoring frame into a batch for the rows that can be scored.

    Schema: ``target_item`` (int); ``user_id`` (int), ``history_items`` (list of int, oldest first),
    ``history_timestamps`` (list of int seconds, same length as history_items) and ``target_timestamp`` (int seconds)
    may be missing, as a column or in a row; ``label`` is copied into the batch when numeric and otherwise ignored.
    Lists may also arrive as strings (``"[1, 2, 3]"``) or lists of numeric strings.

    Only the target is required: a row gets an error text (never an exception) when its ``target_item`` is null, not an
    integer, outside 64 bits or not in the training vocabulary. Everything else falls back to what is there, with a
    ``warnings`` text naming the column, what was left out and how to fix it: a missing, unknown or malformed user id
    scores without the user's profile; a null, empty, malformed or wholly unknown history scores without the history
    (unknown history items alone are left out); timestamps that are malformed, of another length than the history or
    not plausible Unix seconds (1970–2100) are ignored (time bucket 0, "unknown"), and an implausible
    ``target_timestamp`` is replaced by the latest history timestamp. When timestamps are given the history is ordered
    by them; the last ``max_history`` known behaviours are kept; L is always ``max_history``.

    A frame without a ``target_item`` column raises ``ValueError`` naming the column and the expected schema.
    """
    if "target_item" not in frame.columns:
        raise ValueError(f"scoring input has no column 'target_item'; expected {SCORING_SCHEMA}")
    n = frame.height
    problems: list[list[str]] = [[] for _ in range(n)]
    notes: list[list[str]] = [[] for _ in range(n)]

    def column(name: str, dtype: pl.DataType) -> pl.Series:
        return frame[name] if name in frame.columns else pl.Series(name, [None] * n, dtype=dtype)

    target_raw, found = _int_cells(frame["target_item"], "target_item")
    for row, text in enumerate(found):
        if text is not None:
            problems[row].append(f"{text}; every row needs the integer id of the item to score")
    target_ok = np.array([p is None for p in found], dtype=bool)

    user_raw, found = _int_cells(column("user_id", pl.Int64), "user_id")
    user_ok = np.array([p is None for p in found], dtype=bool)
    for row, text in enumerate(found):
        if text is not None:
            notes[row].append(f"{text}: scored without the user profile (give the user's integer id to use it)")

    items_flat, items_len, found, items_null = _list_cells(column("history_items", pl.List(pl.Int64)), "history_items")
    items_ok = np.array([p is None for p in found], dtype=bool)
    for row, text in enumerate(found):
        if text is not None:
            notes[row].append(f"{text}: scored without the history (give a list of integer item ids, oldest first)")
    for row in np.flatnonzero(items_ok & (items_null | (items_len == 0))):
        notes[row].append("history_items is empty or null: scored from the target and the user alone (add the user's "
                          "past items, oldest first, for a better score)")

    has_times = np.zeros(n, dtype=bool)
    times_flat = np.zeros(items_flat.size, dtype=np.int64)
    item_rows = np.repeat(np.arange(n), items_len)
    item_starts = np.concatenate([[0], np.cumsum(items_len)])[:-1]
    if "history_timestamps" in frame.columns:
        ts_flat, ts_len, found, ts_null = _list_cells(frame["history_timestamps"], "history_timestamps")
        ts_ok = np.array([p is None for p in found], dtype=bool) & ~ts_null
        for row, text in enumerate(found):
            if text is not None and items_len[row]:
                notes[row].append(f"{text}: time gaps unknown (give integer Unix seconds, one per history item)")
        mismatch = ts_ok & items_ok & (items_len > 0) & (ts_len != items_len)
        for row in np.flatnonzero(mismatch):
            notes[row].append(f"history_timestamps has {ts_len[row]} values but history_items has {items_len[row]}: "
                              f"time gaps unknown (give one timestamp per history item)")
        ts_rows = np.repeat(np.arange(n), ts_len)
        absurd = np.bincount(ts_rows[_implausible(ts_flat)], minlength=n) > 0
        for row in np.flatnonzero(ts_ok & ~mismatch & absurd & (items_len > 0)):
            notes[row].append(f"history_timestamps holds values outside 1970–2100 in Unix seconds: time gaps unknown "
                              f"(give seconds since 1970, not milliseconds)")
        has_times = ts_ok & ~mismatch & ~absurd & items_ok
        # Align timestamps with the flat item array (rows without usable timestamps get zeros).
        ts_starts = np.concatenate([[0], np.cumsum(ts_len)])[:-1]
        usable = has_times[item_rows]
        offset_in_row = np.arange(items_flat.size) - item_starts[item_rows]
        times_flat[usable] = ts_flat[ts_starts[item_rows[usable]] + offset_in_row[usable]]
    target_time = np.zeros(n, dtype=np.int64)
    has_target_time = np.zeros(n, dtype=bool)
    if "target_timestamp" in frame.columns:
        values, found = _int_cells(frame["target_timestamp"], "target_timestamp")
        null = frame["target_timestamp"].is_null().to_numpy()
        def fallback(row: int) -> str:
            return ("time gaps measured from the latest history timestamp instead" if has_times[row]
                    else "time gaps unknown")

        for row, text in enumerate(found):
            if text is not None and not null[row]:
                notes[row].append(f"{text}: {fallback(row)} (give integer Unix seconds)")
        has_target_time = np.array([p is None for p in found], dtype=bool)
        absurd = has_target_time & _implausible(values)
        for row in np.flatnonzero(absurd):
            notes[row].append(f"target_timestamp {values[row]} is not a Unix time in seconds between 1970 and 2100: "
                              f"{fallback(row)} (give seconds since 1970, not milliseconds)")
        has_target_time &= ~absurd
        target_time = np.where(has_target_time, values, 0)

    target_index = vocab.item_index(target_raw)
    for row in np.flatnonzero(target_ok & (target_index == 0)):
        problems[row].append(
            f"target_item {target_raw[row]} is not in the training vocabulary; score only items seen in training or retrain"
        )
    user_index = np.where(user_ok, vocab.user_index(user_raw), 0)
    for row in np.flatnonzero(user_ok & (user_index == 0)):
        notes[row].append(f"user_id {user_raw[row]} is not in the training vocabulary: scored without the user profile")
    item_index = vocab.item_index(items_flat)
    known = item_index > 0
    known_count = np.bincount(item_rows[known], minlength=n)
    for row in np.flatnonzero(items_ok & (items_len > 0) & (known_count == 0)):
        notes[row].append(
            f"none of the {items_len[row]} history_items are in the training vocabulary (e.g. {items_flat[item_starts[row]]}): "
            f"scored without the history (retrain to include new items)"
        )
    for row in np.flatnonzero(items_ok & (known_count > 0) & (known_count < items_len)):
        notes[row].append(f"{items_len[row] - known_count[row]} of the {items_len[row]} history_items are not in the "
                          f"training vocabulary and were left out")
    errors = ["; ".join(p) if p else None for p in problems]
    warnings = [None if errors[row] or not notes[row] else "; ".join(notes[row]) for row in range(n)]
    valid = np.array([e is None for e in errors], dtype=bool)
    valid_rows = np.flatnonzero(valid)
    batch_row = np.cumsum(valid) - 1  # frame row → batch row for valid rows

    keep = valid[item_rows] & known & items_ok[item_rows]
    rows, items, times = item_rows[keep], item_index[keep], times_flat[keep]
    order = np.lexsort((np.where(has_times[rows], times, 0), rows))  # stable: rows without times keep their order
    rows, items, times = rows[order], items[order], times[order]
    count = np.bincount(rows, minlength=n)
    first = np.concatenate([[0], np.cumsum(count)])[:-1]
    from_end = count[rows] - 1 - (np.arange(rows.size) - first[rows])
    keep = from_end < max_history
    rows, items, times, column_of = rows[keep], items[keep], times[keep], max_history - 1 - from_end[keep]

    size = valid_rows.size
    hist_item = np.zeros((size, max_history), dtype=np.int64)
    hist_stamp = np.zeros((size, max_history), dtype=np.int64)
    hist_mask = np.zeros((size, max_history), dtype=bool)
    b = batch_row[rows]
    hist_item[b, column_of] = items
    hist_stamp[b, column_of] = times
    hist_mask[b, column_of] = True
    timed = has_times[valid_rows]
    latest = np.where(hist_mask, hist_stamp, np.iinfo(np.int64).min).max(axis=1, initial=np.iinfo(np.int64).min)
    now = np.where(has_target_time[valid_rows], target_time[valid_rows], np.where(timed, latest, 0))
    hist_time = np.where(hist_mask & timed[:, None], time_bucket(now[:, None] - hist_stamp, num_time_buckets), 0)

    label = np.zeros(size, dtype=np.float32)
    if "label" in frame.columns and (frame["label"].dtype.is_numeric() or frame["label"].dtype == pl.Boolean):
        label = frame["label"].cast(pl.Float32, strict=False).fill_null(0).fill_nan(0).to_numpy()[valid_rows]
    user = user_index[valid_rows]
    target_item = target_index[valid_rows]
    batch = _to_batch(
        user=user, profile=vocab.profile(user).reshape(size, len(vocab.profile_fields)), target_item=target_item,
        target_cate=vocab.item_cate(target_item), hist_item=hist_item, hist_cate=vocab.item_cate(hist_item),
        hist_time=hist_time, hist_mask=hist_mask, label=label, relevant=np.zeros((size, max_history), dtype=bool),
    )
    return EncodedRows(batch=batch, valid_rows=valid_rows.tolist(), errors=errors, warnings=warnings)


def _list_column(values: np.ndarray, lengths: np.ndarray) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values.astype(np.int64)))


def raw_scoring_frame(builder: BatchBuilder) -> pl.DataFrame:
    """The samples of ``builder`` in the raw scoring schema, plus ``label`` (Int64 0/1): one row per sample, the
    history being the ``max_history`` behaviours before the target, oldest first, in raw ids and timestamps.
    :func:`encode_scoring_frame` turns it back into ``builder``'s batches (``relevant`` aside)."""
    samples, vocab = builder.samples, builder.vocab
    index = np.arange(len(samples))
    flat, mask, _ = builder.window(index)
    lengths = mask.sum(axis=1)
    positions = flat[mask]  # row-major: each row's behaviours, oldest first
    history_items = vocab.item_raw(builder.sequences.item[positions])
    history_times = builder.sequences.time[positions]
    table = pa.table({
        "user_id": pa.array(vocab.user_raw(samples.user_row + 1)),
        "target_item": pa.array(vocab.item_raw(samples.target_item)),
        "history_items": _list_column(history_items, lengths),
        "history_timestamps": _list_column(history_times, lengths),
        "target_timestamp": pa.array(samples.target_time.astype(np.int64)),
        "label": pa.array(samples.label.astype(np.int64)),
    })
    return pl.from_arrow(table)
