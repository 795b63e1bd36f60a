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


def test_taobao_task_rejects_unknown_behaviour_types(tmp_path):
    path = tmp_path / "UserBehavior.csv"
    path.write_text("\n".join(TAOBAO_ROWS) + "\n")
    with pytest.raises(ValueError, match=r"taobao_behaviors \['like'\] are not Taobao behaviour types; use a subset of"):
        taobao_task(path, ["pv", "like"], seed=0, max_users=None, user_buckets=7, settings={})
