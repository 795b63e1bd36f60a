"""recipes.longseq_rec.tasks: the leave-last-out split by time, negatives the user never touched, and the seeds
that make samples and the training order repeatable."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from recipes.longseq_rec.data import RecDataModule
from recipes.longseq_rec.readers import read_movielens
from recipes.longseq_rec.tasks import movielens_task, taobao_task
from tests.recipes.longseq_rec.formats import TAOBAO_ROWS


def test_split_is_leave_last_out_by_time(ml_module, ml_folder):
    ratings = read_movielens(ml_folder).ratings
    vocab, seq = ml_module.vocab, ml_module.sequences
    for split in ("train", "val", "test"):
        samples = ml_module.samples[split]
        assert np.all(samples.label[0::2] == 1) and np.all(samples.label[1::2] == 0)  # positive, then its negative
        for row in range(0, len(samples), 2):
            user = int(vocab.user_raw(samples.user_row[row : row + 1] + 1)[0])
            own = ratings.filter(pl.col("user_id") == user).sort("timestamp", "item_id")
            expected_position = {"test": own.height - 1, "val": own.height - 2}.get(split)
            if expected_position is not None:
                assert samples.end[row] == expected_position
                assert vocab.item_raw(samples.target_item[row : row + 1])[0] == own["item_id"][expected_position]
            else:
                assert 1 <= samples.end[row] <= own.height - 3
            block = seq.offsets[samples.user_row[row]]
            history_times = seq.time[block : block + samples.end[row]]
            assert np.all(history_times <= samples.target_time[row])  # no future behaviour in a history
    assert len(ml_module.samples["test"]) == len(ml_module.samples["val"]) == 2 * 12


def test_negatives_are_never_in_the_users_history(ml_module):
    seq = ml_module.sequences
    for split, samples in ml_module.samples.items():
        for row in np.flatnonzero(samples.label == 0):
            user = samples.user_row[row]
            touched = seq.item[seq.offsets[user] : seq.offsets[user + 1]]
            assert samples.target_item[row] not in touched, split


def test_negative_sampling_and_train_order_are_seeded(ml_folder, ml_module):
    again = RecDataModule(data_path=str(ml_folder), max_users=12, max_history=8, batch_size=4, seed=3)
    np.testing.assert_array_equal(again.samples["train"].target_item, ml_module.samples["train"].target_item)
    first, second = next(iter(again.train_dataloader())), next(iter(ml_module.train_dataloader()))
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = RecDataModule(data_path=str(ml_folder), max_users=12, max_history=8, seed=4)
    assert not np.array_equal(other.samples["test"].target_item, ml_module.samples["test"].target_item)


def test_the_data_module_trains_on_the_task_of_its_source(ml_folder, ml_module):
    task = movielens_task(ml_folder, seed=3, max_users=12, settings={})
    assert task.vocab.users.equals(ml_module.vocab.users) and task.vocab.items.equals(ml_module.vocab.items)
    np.testing.assert_array_equal(task.sequences.item, ml_module.sequences.item)
    for split, samples in task.splits.items():
        np.testing.assert_array_equal(samples.target_item, ml_module.samples[split].target_item, err_msg=split)
        np.testing.assert_array_equal(samples.end, ml_module.samples[split].end, err_msg=split)


def test_taobao_task_rejects_unknown_behaviour_types(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSION_DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "UserBehavior.csv"
    path.write_text("\n".join(TAOBAO_ROWS) + "\n")
    with pytest.raises(ValueError, match=r"taobao_behaviors \['like'\] are not Taobao behaviour types; use a subset of"):
        taobao_task(path, ["pv", "like"], seed=0, max_users=None, user_buckets=7, settings={})


def write_user_behavior(path, rows: int, seed: int = 0) -> pl.DataFrame:
    """A UserBehavior-shaped CSV: long-tailed items (each with one category), timestamps within nine days."""
    rng = np.random.default_rng(seed)
    item = rng.zipf(1.3, rows) % 100_000 + 1
    frame = pl.DataFrame({
        "user_id": rng.integers(1, rows // 40 + 2, rows), "item_id": item, "category_id": item % 499 + 1,
        "behavior_type": rng.choice(np.array(["pv", "buy", "cart", "fav"]), rows, p=[0.85, 0.05, 0.05, 0.05]),
        "timestamp": rng.integers(1_511_500_000, 1_512_300_000, rows),
    })
    frame.write_csv(path, include_header=False)
    return frame


def test_taobao_log_streams_into_the_same_sequences_in_bounded_chunks(tmp_path):
    """A million-row log read in 1 MB blocks (each through the reader's polars lazy scan): the summary pass, then
    each block placed in memory-mapped arrays and the arrays sorted a block of users at a time, gives exactly the
    sequences of sorting the whole log in memory, while the arrays our code holds (numpy, traced) grow with the
    block and the user count, not the log (data_cards/taobao-user-behavior.md has the process's measured peak)."""
    import tracemalloc

    from recipes.longseq_rec.readers import iter_taobao_user_behavior
    from recipes.longseq_rec.tasks import _hashed_profile, _make_vocab, stream_sequences, summarise_taobao

    rows = 1_000_000
    path = tmp_path / "UserBehavior.csv"
    log = write_user_behavior(path, rows)
    blocks = list(iter_taobao_user_behavior(path, block_bytes=2**20))
    assert len(blocks) > 20 and sum(b.height for b in blocks) == rows
    assert blocks[1]["line"][0] == blocks[0].height + 1  # line numbers run on across blocks
    summary = summarise_taobao(iter_taobao_user_behavior(path, block_bytes=2**20))
    vocab = _make_vocab("taobao", summary.user_ids, _hashed_profile(7)(summary.user_ids), summary.items, {})
    tracemalloc.start()
    sequences = stream_sequences(iter_taobao_user_behavior(path, block_bytes=2**20), vocab, summary.counts,
                                 tmp_path / "seq", sort_rows=50_000)
    _, numpy_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert isinstance(sequences.item, np.memmap) and sequences.offsets[-1] == rows
    # O(block + users), not O(rows): a 1 MB block holds ~40k rows, ~70 bytes each in index arrays
    bound = 120 * 50_000 + 100 * summary.user_ids.size
    assert numpy_peak < bound < rows * 12, f"{numpy_peak / 2**20:.1f} MB traced, {rows * 12 / 2**20:.1f} MB of sequences"

    expected = log.with_columns(
        user=pl.Series(vocab.user_index(log["user_id"].to_numpy())), item=pl.Series(vocab.item_index(log["item_id"].to_numpy())),
    ).sort("user", "timestamp", "item")
    np.testing.assert_array_equal(np.asarray(sequences.item), expected["item"].to_numpy())
    np.testing.assert_array_equal(np.asarray(sequences.time), expected["timestamp"].to_numpy())
    counts = expected.group_by("user").len().sort("user")["len"].to_numpy()
    np.testing.assert_array_equal(np.diff(sequences.offsets), counts)
    # the item table: each item's category, as the log gives it
    categories = dict(zip(summary.items["item_id"].to_list(), summary.items["category"].to_list()))
    sample = log.sample(1_000, seed=1)
    assert all(categories[i] == str(c) for i, c in zip(sample["item_id"].to_list(), sample["category_id"].to_list()))


def test_taobao_blocks_report_bad_lines_by_their_line_in_the_file(tmp_path):
    from recipes.longseq_rec.readers import TaobaoFormatError, iter_taobao_user_behavior

    path = tmp_path / "UserBehavior.csv"
    good = "1,2,3,pv,1511500000\n"
    path.write_text(good * 300 + "1,2,x,pv,1511500000\n" + good * 10)
    with pytest.raises(TaobaoFormatError, match=r"line 301: '1,2,x,pv,1511500000'"):
        list(iter_taobao_user_behavior(path, block_bytes=1000))
    kept = list(iter_taobao_user_behavior(path, block_bytes=1000, on_bad_rows="drop"))
    assert sum(b.height for b in kept) == 310 and kept[-1]["line"][-1] == 311
