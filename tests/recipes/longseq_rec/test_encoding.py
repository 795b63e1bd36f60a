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


def scoring_rows(vocab: RecVocab) -> tuple[pl.DataFrame, list[str | None]]:
    known = vocab.item_raw(np.arange(1, 6)).tolist()
    rows = [
        # user_id, target_item, history_items, history_timestamps, expected error (substring) or None
        (1, known[0], "[%d, %d]" % (known[1], known[2]), "[100, 200]", None),
        (1, 99_999, str(known[1]), "100", "target_item 99999 is not in the training vocabulary; score only items seen in training or retrain"),
        (2, known[0], None, None, "history_items is empty or null"),
        (2, known[0], "[]", "[]", "history_items is empty or null"),
        (3, known[0], "[1, abc]", "[1, 2]", "history_items element 'abc' at position 1 is not an integer"),
        (3, known[0], str(known[1]), "[100, 200]", "history_timestamps has 2 values but history_items has 1"),
        (9_999, known[0], "[%d, 88888]" % known[3], None, None),  # unknown user, one unknown history item dropped
        (4, known[0], "[77777, 88888]", None, "none of the 2 history_items are in the training vocabulary (e.g. 77777)"),
        ("x", known[0], str(known[1]), None, "user_id 'x' is not an integer"),
        (5, "7.5", str(known[1]), None, "target_item '7.5' is not an integer"),
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
    assert len(encoded.errors) == frame.height
    for row, (error, want) in enumerate(zip(encoded.errors, expected)):
        if want is None:
            assert error is None, (row, error)
        else:
            assert error is not None and want in error, (row, error)
    assert encoded.valid_rows == [0, 6]
    batch = encoded.batch
    assert batch["hist_item"].shape == (2, 4)
    known = vocab.item_raw(np.arange(1, 6))
    assert batch["target_item"].tolist() == vocab.item_index(np.array([known[0], known[0]])).tolist()
    # row 0: two behaviours, 100 s and 200 s before... the target time defaults to the latest history time
    assert batch["hist_item"][0].tolist() == [0, 0, *vocab.item_index(known[1:3]).tolist()]
    assert batch["hist_time"][0].tolist() == [0, 0, 1, 1]
    # row 6: the unknown user gets index 0 and an all-zero profile; the unknown history item is dropped
    assert int(batch["user"][1]) == 0 and batch["profile"][1].tolist() == [0, 0, 0]
    assert batch["hist_mask"][1].tolist() == [False, False, False, True]
    assert batch["hist_time"][1].tolist() == [0, 0, 0, 0]  # no timestamps: time bucket "unknown"


def test_encode_typed_lists_sorts_by_time_and_truncates(ml_module):
    vocab = ml_module.vocab
    items = vocab.item_raw(np.arange(1, 7)).tolist()
    hour = 3_600
    frame = pl.DataFrame({
        "user_id": [1, 2, 3],
        "target_item": [items[0], items[0], items[1]],
        "history_items": [items[1:6], [items[2], None], [items[3]]],
        "history_timestamps": [[str(h * hour) for h in (5, 1, 4, 2, 3)], ["1", "2"], ["1", "x"]],
        "target_timestamp": [6 * hour, None, 10],
        "label": [1, 0, None],
    }, schema_overrides={"history_timestamps": pl.List(pl.Utf8)})
    encoded = encode_scoring_frame(vocab, frame, max_history=3, num_time_buckets=16)
    assert encoded.errors[0] is None
    assert encoded.errors[1] == "history_items has a null at position 1"
    assert "history_timestamps element 'x' at position 1 is not an integer" in encoded.errors[2]
    batch = encoded.batch
    # ordered by timestamp (1h, 2h, 3h, 4h, 5h) and the three most recent kept: 3h, 4h, 5h before 6h
    assert batch["hist_item"][0].tolist() == vocab.item_index(np.array([items[5], items[3], items[1]])).tolist()
    assert batch["hist_time"][0].tolist() == time_bucket(np.array([3, 2, 1]) * hour, 16).tolist()
    assert batch["label"].tolist() == [1.0]


def test_encode_missing_column_is_a_file_level_error(ml_module):
    frame = pl.DataFrame({"user_id": [1], "target_item": [2]})
    with pytest.raises(ValueError, match=r"no column 'history_items'; expected user_id \(int\), target_item \(int\)"):
        encode_scoring_frame(ml_module.vocab, frame, 4, 16)


def test_encode_survives_an_object_column_and_scalar_histories(ml_module):
    vocab = ml_module.vocab
    item = int(vocab.item_raw(np.array([1]))[0])
    frame = pl.DataFrame({"user_id": [1, 1], "target_item": [item, item], "history_items": [item, item]})
    encoded = encode_scoring_frame(vocab, frame, 4, 16)
    assert encoded.valid_rows == [] and all("history_items must be a list of integers, got int" in e for e in encoded.errors)
    assert encoded.batch["hist_item"].shape == (0, 4)
    mixed = pl.DataFrame({"user_id": [1, 1], "target_item": [item, item],
                          "history_items": pl.Series([[item], "oops"], dtype=pl.Object)})
    encoded = encode_scoring_frame(vocab, mixed, 4, 16)
    assert encoded.valid_rows == [0]
    assert encoded.errors[1] == "history_items element 'oops' at position 0 is not an integer"
