"""Malformed, hostile and odd inputs through ``fusion score`` for the recommendation recipe, each with its exact outcome.

The tiny trained DARE run (``tests/conftest.py``) scores rows built from one good row of its vocabulary. Every case
states what must come out: ``score`` (a finite score in (0, 1), no error, and exactly the warnings named, in order)
or ``error`` (no score, no warnings, an error with the texts named: the column and the fix). Rows are grouped by their
column types into a few Parquet files (a Parquet column has one type); in each file the row count and order are kept
and the passthrough columns come back unchanged. The recipe reads no file a row names (it names none), so the data
root plays no part here.
"""
from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_series_equal

from recipes.longseq_rec.encoding import RecVocab
from recipes.longseq_rec.recipe import RECIPE as REC
from recipes.longseq_rec.recipe import VOCAB_DIR
from recipes.runtime.score import ScoreInputError, score_file
from tests.reliability.cases import Case

DAY = 86_400
NOW = 1_600_000_000  # a plausible Unix time for the good row's target
UNKNOWN = 10**9  # an id no vocabulary of the tiny run holds
# a case's changes map a column to ``(value, polars dtype)``, or to DROP, which removes the column
DROP = object()


def good_row(vocab: RecVocab) -> dict:
    items = vocab.item_raw(np.arange(1, 7)).tolist()
    return {
        "user_id": (int(vocab.user_raw(np.array([1]))[0]), pl.Int64),
        "target_item": (items[0], pl.Int64),
        "history_items": (items[1:6], pl.List(pl.Int64)),
        "history_timestamps": ([NOW - d * DAY for d in (50, 40, 30, 20, 10)], pl.List(pl.Int64)),
        "target_timestamp": (NOW, pl.Int64),
        "label": (1, pl.Int64),
    }


def cases(vocab: RecVocab) -> list[Case]:
    items = vocab.item_raw(np.arange(1, 7)).tolist()
    known_user = int(vocab.user_raw(np.array([2]))[0])
    i64 = pl.Int64
    return [
        Case("good row"),
        Case("no timestamps at all", {"history_timestamps": DROP, "target_timestamp": DROP}),
        Case("user id given as an integral float", {"user_id": (float(known_user), pl.Float64)}),
        Case("ids given as numeric strings", {"user_id": (str(known_user), pl.Utf8), "target_item": (str(items[0]), pl.Utf8)}),
        Case("history as a bracketed string", {"history_items": (str(items[1:4]), pl.Utf8), "history_timestamps": DROP}),
        Case("history as a space-separated string", {"history_items": (" ".join(map(str, items[1:4])), pl.Utf8),
                                                     "history_timestamps": DROP}),
        Case("history of numeric strings", {"history_items": ([str(i) for i in items[1:6]], pl.List(pl.Utf8))}),
        Case("history far longer than max_history", {"history_items": (items[1:6] * 1_000, pl.List(i64)),
                                                      "history_timestamps": DROP}),
        Case("history timestamps null", {"history_timestamps": (None, pl.List(i64))}),
        Case("target timestamp null", {"target_timestamp": (None, i64)}),
        Case("target timestamp before the history", {"target_timestamp": (NOW - 100 * DAY, i64)}),
        Case("label that is not a number", {"label": ("yes", pl.Utf8)}),
        # the user: scored without the profile
        Case("user id null", {"user_id": (None, i64)}, expect=("user_id is missing (null): scored without the user profile",)),
        Case("user id unknown", {"user_id": (UNKNOWN, i64)},
             expect=(f"user_id {UNKNOWN} is not in the training vocabulary: scored without the user profile",)),
        Case("user id negative", {"user_id": (-5, i64)}, expect=("user_id -5 is not in the training vocabulary",)),
        Case("user id at the int64 limit", {"user_id": (2**63 - 1, i64)},
             expect=(f"user_id {2**63 - 1} is not in the training vocabulary",)),
        Case("user id beyond int64 (UInt64)", {"user_id": (2**64 - 1, pl.UInt64)},
             expect=("user_id 18446744073709551615… is outside the 64-bit integer range: scored without the user profile",)),
        Case("user id beyond int64 (string)", {"user_id": ("9" * 30, pl.Utf8)},
             expect=("user_id 999999999999999999999999… is outside the 64-bit integer range",)),
        Case("user id not a number", {"user_id": ("alice", pl.Utf8)},
             expect=("user_id 'alice' is not an integer: scored without the user profile (give the user's integer id",)),
        Case("user id fractional", {"user_id": (3.5, pl.Float64)}, expect=("user_id 3.5 is not an integer",)),
        Case("user id NaN", {"user_id": (math.nan, pl.Float64)}, expect=("user_id nan is not an integer",)),
        Case("user id boolean", {"user_id": (True, pl.Boolean)}, expect=("user_id True is not an integer",)),
        # the target: the one thing a row cannot be scored without
        Case("target null", {"target_item": (None, i64)}, "error",
             ("target_item is missing (null); every row needs the integer id of the item to score",)),
        Case("target unknown", {"target_item": (UNKNOWN, i64)}, "error",
             (f"target_item {UNKNOWN} is not in the training vocabulary; score only items seen in training or retrain",)),
        Case("target 0 (the padding id)", {"target_item": (0, i64)}, "error", ("target_item 0 is not in the training vocabulary",)),
        Case("target negative", {"target_item": (-3, i64)}, "error", ("target_item -3 is not in the training vocabulary",)),
        Case("target not a number", {"target_item": ("🎬 film", pl.Utf8)}, "error",
             ("target_item '🎬 film' is not an integer; every row needs the integer id",)),
        Case("target fractional", {"target_item": (1.5, pl.Float64)}, "error", ("target_item 1.5 is not an integer",)),
        Case("target NaN", {"target_item": (math.nan, pl.Float64)}, "error", ("target_item nan is not an integer",)),
        Case("target infinite", {"target_item": (math.inf, pl.Float64)}, "error", ("target_item inf is not an integer",)),
        Case("target beyond int64 (UInt64)", {"target_item": (2**64 - 1, pl.UInt64)}, "error",
             ("target_item 18446744073709551615… is outside the 64-bit integer range; every row needs",)),
        Case("target beyond int64 (float 1e30)", {"target_item": (1e30, pl.Float64)}, "error",
             ("target_item 100000000000000001988462… is outside the 64-bit integer range",)),
        Case("every column null", {"user_id": (None, i64), "target_item": (None, i64), "history_items": (None, pl.List(i64)),
                                   "history_timestamps": (None, pl.List(i64)), "target_timestamp": (None, i64)}, "error",
             ("target_item is missing (null)",)),
        # the history: scored without it (or without what is unknown in it)
        Case("history null", {"history_items": (None, pl.List(i64)), "history_timestamps": DROP},
             expect=("history_items is empty or null: scored from the target and the user alone",)),
        Case("history empty", {"history_items": ([], pl.List(i64)), "history_timestamps": ([], pl.List(i64))},
             expect=("history_items is empty or null",)),
        Case("history with a null element", {"history_items": ([items[1], None, items[2]], pl.List(i64)),
                                              "history_timestamps": DROP},
             expect=("history_items has a null at position 1: scored without the history (give a list of integer item ids",)),
        Case("history all unknown", {"history_items": ([UNKNOWN, UNKNOWN + 1], pl.List(i64)), "history_timestamps": DROP},
             expect=(f"none of the 2 history_items are in the training vocabulary (e.g. {UNKNOWN}): scored without the history",)),
        Case("history partly unknown", {"history_items": ([items[1], UNKNOWN, items[2]], pl.List(i64)),
                                         "history_timestamps": DROP},
             expect=("1 of the 3 history_items are not in the training vocabulary and were left out",)),
        Case("history of negative ids", {"history_items": ([-1, -2], pl.List(i64)), "history_timestamps": DROP},
             expect=("none of the 2 history_items are in the training vocabulary (e.g. -1)",)),
        Case("history element beyond int64", {"history_items": ([items[1], 2**64 - 1], pl.List(pl.UInt64)),
                                              "history_timestamps": DROP},
             expect=("history_items element 18446744073709551615… at position 1 is outside the 64-bit integer range",)),
        Case("history string with a word", {"history_items": (f"[{items[1]}, {items[2]}, x]", pl.Utf8), "history_timestamps": DROP},
             expect=("history_items element 'x' at position 2 is not an integer: scored without the history",)),
        Case("history a scalar, not a list", {"history_items": (items[1], i64), "history_timestamps": DROP},
             expect=(f"history_items must be a list of integers, got int {items[1]}",)),
        Case("history of fractional floats", {"history_items": ([float(items[1]), 2.5], pl.List(pl.Float64)),
                                              "history_timestamps": DROP},
             expect=("history_items element 2.5 at position 1 is not an integer",)),
        Case("history of NaN floats", {"history_items": ([math.nan], pl.List(pl.Float64)), "history_timestamps": DROP},
             expect=("history_items element nan at position 0 is not an integer",)),
        # timestamps: scored with time gaps unknown
        Case("timestamps of another length", {"history_timestamps": ([NOW - DAY, NOW - 2 * DAY], pl.List(i64))},
             expect=("history_timestamps has 2 values but history_items has 5: time gaps unknown",)),
        Case("timestamps negative", {"history_timestamps": ([-(2**62)] * 5, pl.List(i64))},
             expect=("history_timestamps holds values outside 1970–2100 in Unix seconds: time gaps unknown",)),
        Case("timestamps in milliseconds", {"history_timestamps": ([1000 * (NOW - d * DAY) for d in range(5)], pl.List(i64)),
                                            "target_timestamp": (1000 * NOW, i64)},
             expect=("history_timestamps holds values outside 1970–2100", "target_timestamp 1600000000000 is not a Unix time "
                     "in seconds between 1970 and 2100: time gaps unknown (give seconds since 1970, not milliseconds)")),
        Case("timestamps with a word", {"history_timestamps": (["1", "x", "3", "4", "5"], pl.List(pl.Utf8))},
             expect=("history_timestamps element 'x' at position 1 is not an integer: time gaps unknown",)),
        Case("target timestamp -2^62", {"target_timestamp": (-(2**62), i64)},
             expect=("target_timestamp -4611686018427387904 is not a Unix time in seconds between 1970 and 2100: time gaps "
                     "measured from the latest history timestamp instead",)),
        Case("target timestamp NaN", {"target_timestamp": (math.nan, pl.Float64)},
             expect=("target_timestamp nan is not an integer: time gaps measured from the latest history timestamp instead",)),
        Case("target timestamp a word", {"target_timestamp": ("noon", pl.Utf8)}, expect=("target_timestamp 'noon' is not an integer",)),
        # several things missing at once
        Case("no user and no history", {"user_id": (None, i64), "history_items": (None, pl.List(i64)),
                                         "history_timestamps": DROP},
             expect=("user_id is missing (null)", "history_items is empty or null")),
        Case("unknown user, unknown history, absurd time", {"user_id": (UNKNOWN, i64),
                                                            "history_items": ([UNKNOWN], pl.List(i64)),
                                                            "history_timestamps": DROP, "target_timestamp": (-1, i64)},
             expect=("target_timestamp -1 is not a Unix time", f"user_id {UNKNOWN} is not in the training vocabulary",
                     "none of the 1 history_items are in the training vocabulary")),
    ]


def frame_of(base: dict, case: Case) -> pl.DataFrame:
    columns = {}
    for name, spec in {**base, **case.changes}.items():
        if spec is DROP:
            continue
        value, dtype = spec if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], (pl.DataType, type)) \
            else (spec, None)
        columns[name] = pl.Series(name, [value], dtype=dtype)
    return pl.DataFrame(columns)


@pytest.fixture(scope="module")
def scored(tiny_rec_run, tmp_path_factory) -> list[tuple[Case, dict]]:
    """Every case scored through ``score_file``, grouped by column types; (case, output row) in case order."""
    vocab = RecVocab.load(tiny_rec_run.path / VOCAB_DIR)
    base, all_cases = good_row(vocab), cases(vocab)
    groups: dict[tuple, list[tuple[int, pl.DataFrame]]] = {}
    for index, case in enumerate(all_cases):
        frame = frame_of(base, case)
        groups.setdefault(tuple(frame.schema.items()), []).append((index, frame))
    folder = tmp_path_factory.mktemp("rec-reliability")
    results: list[tuple[Case, dict] | None] = [None] * len(all_cases)
    for g, members in enumerate(groups.values()):
        frame = pl.concat([f for _, f in members])
        frame.write_parquet(folder / f"group{g}.parquet")
        out = pl.read_parquet(score_file(REC, tiny_rec_run, folder / f"group{g}.parquet", folder / f"out{g}.parquet",
                                         chunk_size=3, progress=False))
        assert out.height == frame.height and out["row"].to_list() == list(range(frame.height))
        for column in ("user_id", "target_item", "label"):
            if column in frame.columns:
                assert_series_equal(out[column], frame[column])  # NaN equals NaN here
        for (index, _), row in zip(members, out.iter_rows(named=True)):
            results[index] = (all_cases[index], row)
    return results


def test_there_are_at_least_forty_malformed_inputs(tiny_rec_run):
    vocab = RecVocab.load(tiny_rec_run.path / VOCAB_DIR)
    assert sum(case.malformed for case in cases(vocab)) >= 40


def test_every_case_has_its_exact_outcome(scored):
    failures = []
    for case, row in scored:
        score, warnings, error = row["score"], row["warnings"], row["error"]
        if case.outcome == "score":
            ok = error is None and score is not None and math.isfinite(score) and 0.0 < score < 1.0
            parts = warnings.split("; ") if warnings else []
            ok = ok and len(parts) == len(case.expect) and all(want in part for want, part in zip(case.expect, parts))
        else:
            ok = score is None and warnings is None and error is not None and all(want in error for want in case.expect)
            ok = ok and "Error:" not in error  # a message, not an exception's repr
        if not ok:
            failures.append(f"{case.name}: score={score} warnings={warnings!r} error={error!r}")
    assert not failures, "\n".join(failures)


def test_a_row_without_user_or_history_scores_like_the_same_row_with_them_switched_off(scored):
    """The fallback is the model's own modality-absent path: no user means profile zeros, no history no interest."""
    by_name = {case.name: row for case, row in scored}
    assert by_name["user id null"]["score"] == pytest.approx(by_name["user id unknown"]["score"], abs=1e-6)
    assert by_name["history null"]["score"] == pytest.approx(by_name["history all unknown"]["score"], abs=1e-6)
    assert by_name["good row"]["score"] != by_name["history null"]["score"]


def test_files_without_the_user_or_history_columns_score_and_without_target_are_refused(tiny_rec_run, tmp_path):
    vocab = RecVocab.load(tiny_rec_run.path / VOCAB_DIR)
    items = vocab.item_raw(np.arange(1, 3)).tolist()
    pl.DataFrame({"target_item": items}).write_parquet(tmp_path / "targets.parquet")
    out = pl.read_parquet(score_file(REC, tiny_rec_run, tmp_path / "targets.parquet", tmp_path / "out.parquet", progress=False))
    assert out["error"].null_count() == 2 and all(0 < s < 1 for s in out["score"])
    assert all(w.startswith("user_id is missing (null)") and "history_items is empty or null" in w for w in out["warnings"])
    pl.DataFrame({"user_id": [1], "history_items": [[items[0]]]}).write_parquet(tmp_path / "no_target.parquet")
    with pytest.raises(ScoreInputError, match="target_item"):
        score_file(REC, tiny_rec_run, tmp_path / "no_target.parquet", tmp_path / "out2.parquet", progress=False)
