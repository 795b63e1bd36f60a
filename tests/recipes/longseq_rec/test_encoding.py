"""recipes.longseq_rec.encoding: time buckets, batches (shapes, dtypes, padding), the vocabulary round trip, and
the raw scoring schema both ways — a split written with ``raw_scoring_frame`` encodes back to the same batches,
and every bad row of a scoring frame gets its own error."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from recipes.longseq_rec.encoding import RecVocab, encode_scoring_frame, raw_scoring_frame, time_bucket
from tests.recipes.longseq_rec.formats import BATCH_DTYPES, GENRE_SETS, OCCUPATIONS


def test_time_buckets():
    hours = np.array([0, 0.5, 1, 3, 7, 100, 1e9, -5]) * 3600
    np.testing.assert_array_equal(time_bucket(hours, 16), [1, 1, 2, 3, 4, 7, 15, 1])
    assert time_bucket(np.array([1e9]), 4)[0] == 3


def test_batch_shapes_dtypes_and_padding(ml_module):
    assert (ml_module.num_users, ml_module.num_items, ml_module.num_cates) == (13, 1683, len(GENRE_SETS) + 1)
    assert ml_module.profile_cardinalities == [3, 8, len(OCCUPATIONS) + 1]
    batch = next(iter(ml_module.val_dataloader()))
    assert set(batch) == set(BATCH_DTYPES)
    for name, dtype in BATCH_DTYPES.items():
        assert batch[name].dtype == dtype, name
        assert batch[name].shape[0] == 4
    assert batch["hist_item"].shape == batch["hist_mask"].shape == batch["relevant"].shape == (4, 8)
    assert batch["profile"].shape == (4, 3) and bool((batch["profile"] > 0).all())
    mask = batch["hist_mask"]
    for name in ("hist_item", "hist_cate", "hist_time"):
        assert bool((batch[name][~mask] == 0).all()) and bool((batch[name][mask] > 0).all()), name
    assert int(batch["hist_time"].max()) < ml_module.num_time_buckets
    assert not batch["relevant"].any()
    # left padding: once a row starts, it stays real up to the last column
    assert bool((mask.int().diff(dim=1) >= 0).all())

    short = ml_module.batch_builder("train")(np.array([0]))  # the first train sample has a one-item history
    assert ml_module.samples["train"].end[0] == 1
    assert short["hist_mask"][0].tolist() == [False] * 7 + [True]


def test_vocab_round_trip(ml_module, tmp_path):
    vocab = ml_module.vocab
    loaded = RecVocab.load(vocab.save(tmp_path / "vocab"))
    assert loaded.users.equals(vocab.users) and loaded.items.equals(vocab.items)
    assert loaded.categories == vocab.categories and loaded.profile_labels == vocab.profile_labels
    assert loaded.settings == vocab.settings and loaded.profile_cardinalities == vocab.profile_cardinalities
    raw = np.array([5, 1_682, 99_999, 1])
    np.testing.assert_array_equal(loaded.item_index(raw), vocab.item_index(raw))
    assert loaded.item_index(np.array([99_999]))[0] == 0 and loaded.item_cate(np.array([0]))[0] == 0
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        RecVocab.load(tmp_path / "elsewhere")


def test_exported_test_split_encodes_to_the_test_batches(ml_module):
    frame = raw_scoring_frame(ml_module.batch_builder("test"))
    assert frame.columns == ["user_id", "target_item", "history_items", "history_timestamps", "target_timestamp", "label"]
    assert frame.height == len(ml_module.samples["test"]) and frame["label"].to_list()[:2] == [1, 0]
    encoded = encode_scoring_frame(ml_module.vocab, frame, 8, ml_module.num_time_buckets)
    assert encoded.errors == [None] * frame.height and encoded.valid_rows == list(range(frame.height))
    expected = ml_module.batch_builder("test")(np.arange(frame.height))
    for name in BATCH_DTYPES:
        assert torch.equal(encoded.batch[name], expected[name]), name


def scoring_rows(vocab: RecVocab) -> tuple[pl.DataFrame, list[tuple[str | None, str | None]]]:
    known = vocab.item_raw(np.arange(1, 6)).tolist()
    u = [0, *vocab.user_raw(np.arange(1, 6)).tolist()]  # u[i]: a user in the vocabulary
    rows = [
        # user_id, target_item, history_items, history_timestamps, expected (error, warning) substrings or None
        (u[1], known[0], "[%d, %d]" % (known[1], known[2]), "[100, 200]", (None, None)),
        (u[1], 99_999, str(known[1]), "100",
         ("target_item 99999 is not in the training vocabulary; score only items seen in training or retrain", None)),
        (u[2], known[0], None, None, (None, "history_items is empty or null: scored from the target and the user alone")),
        (u[2], known[0], "[]", "[]", (None, "history_items is empty or null")),
        (u[3], known[0], "[1, abc]", "[1, 2]",
         (None, "history_items element 'abc' at position 1 is not an integer: scored without the history")),
        (u[3], known[0], str(known[1]), "[100, 200]",
         (None, "history_timestamps has 2 values but history_items has 1: time gaps unknown")),
        (9_999, known[0], "[%d, 88888]" % known[3], None,
         (None, "user_id 9999 is not in the training vocabulary: scored without the user profile; 1 of the 2 "
                "history_items are not in the training vocabulary and were left out")),
        (u[4], known[0], "[77777, 88888]", None,
         (None, "none of the 2 history_items are in the training vocabulary (e.g. 77777): scored without the history")),
        ("x", known[0], str(known[1]), None, (None, "user_id 'x' is not an integer: scored without the user profile")),
        (u[5], "7.5", str(known[1]), None, ("target_item '7.5' is not an integer; every row needs the integer id", None)),
    ]
    frame = pl.DataFrame(
        {
            "user_id": [str(r[0]) for r in rows],
            "target_item": [str(r[1]) for r in rows],
            "history_items": [r[2] for r in rows],
            "history_timestamps": [r[3] for r in rows],
        },
        schema={"user_id": pl.Utf8, "target_item": pl.Utf8, "history_items": pl.Utf8, "history_timestamps": pl.Utf8},
    )
    return frame, [r[4] for r in rows]


def test_encode_reports_each_bad_row_and_keeps_alignment(ml_module):
    vocab = ml_module.vocab
    frame, expected = scoring_rows(vocab)
    encoded = encode_scoring_frame(vocab, frame, max_history=4, num_time_buckets=16)
    assert len(encoded.errors) == len(encoded.warnings) == frame.height
    for row, (error, warning, (want_error, want_warning)) in enumerate(zip(encoded.errors, encoded.warnings, expected)):
        for got, want in ((error, want_error), (warning, want_warning)):
            if want is None:
                assert got is None, (row, got)
            else:
                assert got is not None and want in got, (row, got)
    assert encoded.valid_rows == [0, 2, 3, 4, 5, 6, 7, 8]
    batch = encoded.batch
    assert batch["hist_item"].shape == (8, 4)
    known = vocab.item_raw(np.arange(1, 6))
    assert batch["target_item"].tolist() == vocab.item_index(np.array([known[0]] * 8)).tolist()
    # row 0: two behaviours, 100 s and 200 s before... the target time defaults to the latest history time
    assert batch["hist_item"][0].tolist() == [0, 0, *vocab.item_index(known[1:3]).tolist()]
    assert batch["hist_time"][0].tolist() == [0, 0, 1, 1]
    # rows 2, 3, 4 and 7 (batch rows 1, 2, 3, 6) score without their history; row 5 keeps its item, time unknown
    for b in (1, 2, 3, 6):
        assert not batch["hist_mask"][b].any()
    assert batch["hist_mask"][4].tolist() == [False, False, False, True] and batch["hist_time"][4].sum() == 0
    # row 6: the unknown user gets index 0 and an all-zero profile; the unknown history item is dropped
    assert int(batch["user"][5]) == 0 and batch["profile"][5].tolist() == [0, 0, 0]
    assert batch["hist_mask"][5].tolist() == [False, False, False, True]
    assert batch["hist_time"][5].tolist() == [0, 0, 0, 0]  # no timestamps: time bucket "unknown"
    assert int(batch["user"][7]) == 0  # row 8: user 'x'


def test_encode_typed_lists_sorts_by_time_and_truncates(ml_module):
    vocab = ml_module.vocab
    items = vocab.item_raw(np.arange(1, 7)).tolist()
    hour = 3_600
    frame = pl.DataFrame({
        "user_id": vocab.user_raw(np.arange(1, 4)).tolist(),
        "target_item": [items[0], items[0], items[1]],
        "history_items": [items[1:6], [items[2], None], [items[3]]],
        "history_timestamps": [[str(h * hour) for h in (5, 1, 4, 2, 3)], ["1", "2"], ["1", "x"]],
        "target_timestamp": [6 * hour, None, 10],
        "label": [1, 0, None],
    }, schema_overrides={"history_timestamps": pl.List(pl.Utf8)})
    encoded = encode_scoring_frame(vocab, frame, max_history=3, num_time_buckets=16)
    assert encoded.errors == [None, None, None] and encoded.warnings[0] is None
    assert encoded.warnings[1].startswith("history_items has a null at position 1: scored without the history")
    assert "history_timestamps element 'x' at position 1 is not an integer: time gaps unknown" in encoded.warnings[2]
    batch = encoded.batch
    # ordered by timestamp (1h, 2h, 3h, 4h, 5h) and the three most recent kept: 3h, 4h, 5h before 6h
    assert batch["hist_item"][0].tolist() == vocab.item_index(np.array([items[5], items[3], items[1]])).tolist()
    assert batch["hist_time"][0].tolist() == time_bucket(np.array([3, 2, 1]) * hour, 16).tolist()
    assert batch["label"].tolist() == [1.0, 0.0, 0.0]


def test_encode_missing_column_is_a_file_level_error(ml_module):
    frame = pl.DataFrame({"user_id": [1], "history_items": [[2]]})
    with pytest.raises(ValueError, match=r"no column 'target_item'; expected target_item \(int\); user_id"):
        encode_scoring_frame(ml_module.vocab, frame, 4, 16)


def test_encode_without_user_or_history_columns_scores_from_the_target(ml_module):
    item = int(ml_module.vocab.item_raw(np.array([1]))[0])
    encoded = encode_scoring_frame(ml_module.vocab, pl.DataFrame({"target_item": [item]}), 4, 16)
    assert encoded.valid_rows == [0] and encoded.errors == [None]
    assert encoded.warnings[0] == ("user_id is missing (null): scored without the user profile (give the user's integer "
                                   "id to use it); history_items is empty or null: scored from the target and the user "
                                   "alone (add the user's past items, oldest first, for a better score)")
    assert not encoded.batch["hist_mask"].any() and int(encoded.batch["user"][0]) == 0


def test_encode_survives_an_object_column_and_scalar_histories(ml_module):
    vocab = ml_module.vocab
    item = int(vocab.item_raw(np.array([1]))[0])
    frame = pl.DataFrame({"user_id": [1, 1], "target_item": [item, item], "history_items": [item, item]})
    encoded = encode_scoring_frame(vocab, frame, 4, 16)
    assert encoded.valid_rows == [0, 1]
    assert all("history_items must be a list of integers, got int" in w for w in encoded.warnings)
    assert encoded.batch["hist_item"].shape == (2, 4) and not encoded.batch["hist_mask"].any()
    user = int(vocab.user_raw(np.array([1]))[0])
    mixed = pl.DataFrame({"user_id": [user, user], "target_item": [item, item],
                          "history_items": pl.Series([[item], "oops"], dtype=pl.Object)})
    encoded = encode_scoring_frame(vocab, mixed, 4, 16)
    assert encoded.valid_rows == [0, 1] and encoded.warnings[0] is None
    assert encoded.warnings[1].startswith("history_items element 'oops' at position 0 is not an integer")
