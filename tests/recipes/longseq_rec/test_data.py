"""recipes.longseq_rec.data: the data module on each source, its argument checks, loading deferred to
``prepare_data``/``setup`` while the sizes LightningCLI links stay readable right after construction, the raw views
(scoring frame, a run's data module rebuilt from its vocabulary), and the data sets registered on import."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from recipes.longseq_rec import data as data_module
from recipes.longseq_rec.data import RecDataModule
from recipes.longseq_rec.encoding import encode_scoring_frame
from recipes.runtime.datasets import DatasetFetchError, get_dataset
from tests.recipes.longseq_rec.formats import BATCH_DTYPES, TAOBAO_ROWS, movielens_content, write_atomic

LIFELONG_TINY = dict(dataset="lifelong-synthetic", lifelong_users=10, lifelong_history=40, lifelong_items=40,
                     lifelong_cates=4, lifelong_themes=2, lifelong_interests=2, lifelong_relevant=2,
                     lifelong_targets_per_user=2, max_history=40)


def test_taobao_data_module(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSION_DATA_DIR", str(tmp_path / "data"))  # the streamed sequences are cached there
    path = tmp_path / "UserBehavior.csv"
    path.write_text("\n".join(TAOBAO_ROWS) + "\n")
    module = RecDataModule(dataset="taobao", data_path=str(path), max_history=5, batch_size=4, user_hash_buckets=7)
    assert module.num_users == 5 and module.num_items == 11 and module.profile_cardinalities == [8]
    # users 1-3 have three behaviours (a val and a test target), user 4 four (one train target too)
    assert {name: len(s) for name, s in module.samples.items()} == {"train": 2, "val": 8, "test": 8}
    batch = next(iter(module.test_dataloader()))
    assert batch["profile"].shape == (4, 1) and 1 <= int(batch["profile"].min()) and int(batch["profile"].max()) <= 7
    only_views = RecDataModule(dataset="taobao", data_path=str(path), taobao_behaviors=["pv"])
    assert only_views.num_items == 7
    two_users = RecDataModule(dataset="taobao", data_path=str(path), max_users=2, seed=1)
    assert two_users.num_users == 3 and two_users.vocab.users["user_id"].is_in([1, 2, 3, 4]).all()
    with pytest.raises(ValueError, match="needs data_path"):
        RecDataModule(dataset="taobao")


def test_lifelong_data_module_generates_from_its_arguments():
    module = RecDataModule(**LIFELONG_TINY, max_users=5)
    assert module.num_users == 6 and len(module.samples["train"]) + len(module.samples["val"]) + len(module.samples["test"]) == 10
    batch = next(iter(module.train_dataloader()))
    assert batch["hist_item"].shape == (6, 40) and bool(batch["hist_mask"].all())
    positives = batch["label"] == 1
    assert torch.equal(batch["relevant"].sum(1) == 2, positives) and not batch["relevant"][~positives].any()


def test_lifelong_data_module_on_a_saved_folder(lifelong, tmp_path):
    folder = lifelong.save(tmp_path / "lifelong")
    module = RecDataModule(dataset="lifelong-synthetic", data_path=str(folder), max_history=60, batch_size=8, seed=1)
    assert module.num_items == 49 and module.num_cates == 5 and module.profile_cardinalities == [1001]
    assert {name: len(s) for name, s in module.samples.items()} == {"train": 30, "val": 3, "test": 3}
    users = {name: set(s.user_row.tolist()) for name, s in module.samples.items()}
    assert not (users["train"] & users["test"]) and not (users["val"] & users["test"])  # split by user
    samples = module.samples["train"]
    batch = module.batch_builder("train")(np.arange(len(samples)))
    for row in range(len(samples)):
        user, target = int(samples.user_row[row]), row % 3
        assert module.vocab.item_raw(batch["target_item"][row : row + 1].numpy())[0] == lifelong.target_item[user, target]
        np.testing.assert_array_equal(batch["relevant"][row].numpy(), lifelong.relevant_mask(user, target))
    frame = module.scoring_frame("test")
    encoded = encode_scoring_frame(module.vocab, frame, 60, module.num_time_buckets)
    expected = module.batch_builder("test")(np.arange(frame.height))
    assert encoded.valid_rows == list(range(frame.height))
    assert all(torch.equal(encoded.batch[k], expected[k]) for k in BATCH_DTYPES if k != "relevant")
    # A shorter window shifts the planted positions and drops those it cannot see.
    short = RecDataModule(dataset="lifelong-synthetic", data_path=str(folder), max_history=25, seed=1)
    batch = short.batch_builder("train")(np.arange(len(samples)))
    for row in range(len(samples)):
        user, target = int(samples.user_row[row]), row % 3
        np.testing.assert_array_equal(batch["relevant"][row].numpy(), lifelong.relevant_mask(user, target)[-25:])


def test_data_module_arguments_are_checked_and_parse_for_the_cli(ml_folder):
    with pytest.raises(ValueError, match="unknown dataset 'ml'"):
        RecDataModule(dataset="ml")
    with pytest.raises(ValueError, match="num_time_buckets must be >= 2"):
        RecDataModule(data_path=str(ml_folder), num_time_buckets=1)
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser()
    parser.add_class_arguments(RecDataModule, "data")
    config = parser.parse_args(["--data.dataset", "taobao", "--data.data_path", "x.csv", "--data.max_users", "5",
                                "--data.taobao_behaviors", "[pv, buy]"])
    assert config.data.dataset == "taobao" and config.data.max_users == 5 and config.data.taobao_behaviors == ["pv", "buy"]


def test_construction_loads_nothing_and_the_first_size_read_loads_once(tmp_path, monkeypatch):
    """LightningCLI links num_* into the model right after building the data module, before the Trainer calls
    prepare_data/setup: a size read must load on the spot, and the Trainer's calls must not load again."""
    missing = RecDataModule(data_path=str(tmp_path / "nowhere"))  # nothing is read until prepare_data/setup
    with pytest.raises(FileNotFoundError, match="no MovieLens files"):
        missing.prepare_data()
    module = RecDataModule(**LIFELONG_TINY, max_users=5)
    assert module._task is None
    builds = []
    real = data_module.lifelong_task
    monkeypatch.setattr(data_module, "lifelong_task", lambda *a, **k: builds.append(1) or real(*a, **k))
    assert (module.num_users, module.num_items, module.num_cates) == (6, 41, 5) and len(builds) == 1
    assert module.num_time_buckets == 16 and module.profile_cardinalities == [1001]
    task = module.task
    module.prepare_data()
    module.setup("fit")
    module.setup("test")
    assert module.task is task and len(builds) == 1


def test_prepare_data_checks_a_movielens_copy_and_setup_reads_it(ml_folder, tmp_path):
    ratings, items, users = movielens_content()
    short = write_atomic(tmp_path / "short", ratings[:99_990], items, users)
    module = RecDataModule(data_path=str(short))
    with pytest.raises(DatasetFetchError, match=r"ratings 99,990 \(expected 100,000\)"):
        module.prepare_data()
    module = RecDataModule(data_path=str(ml_folder), max_users=12, max_history=8, seed=3)
    module.prepare_data()
    assert module._task is None
    module.setup("fit")
    assert module._task is not None and module.num_users == 13


def test_scoring_frame_and_a_data_module_rebuilt_from_the_vocabulary(ml_module):
    frame = ml_module.scoring_frame("test")
    assert frame.columns == ["user_id", "target_item", "history_items", "history_timestamps", "target_timestamp", "label"]
    assert frame.height == len(ml_module.samples["test"])
    rebuilt = RecDataModule.from_vocab(ml_module.vocab)  # from the settings saved in the vocabulary
    assert rebuilt.scoring_frame("test").equals(frame)
    with pytest.raises(ValueError, match=r"unknown split 'holdout'; choose one of \['train', 'val', 'test'\]"):
        ml_module.scoring_frame("holdout")


def test_importing_the_data_module_registers_the_three_data_sets():
    for name, card in (("movielens-100k", "movielens-100k"), ("lifelong-synthetic", "lifelong-synthetic"),
                       ("taobao", "taobao-user-behavior")):
        spec = get_dataset(name)
        assert spec.fetch.__module__.startswith("recipes.longseq_rec.") and spec.card == f"data_cards/{card}.md"


def test_user_timeline_lists_a_users_history_in_raw_ids(ml_module):
    user = int(ml_module.vocab.user_raw(np.array([1]))[0])
    timeline = ml_module.user_timeline(user)
    assert timeline.columns == ["item_id", "title", "category", "timestamp"]
    assert timeline.height == int(ml_module.sequences.offsets[1]) and timeline["timestamp"].is_sorted()
    with pytest.raises(ValueError, match="user_id 99999 is not in this data set"):
        ml_module.user_timeline(99_999)


def test_loaders_build_batches_of_the_seeded_order_and_keep_every_training_sample(ml_module, monkeypatch):
    """The base loaders over the split's BatchBuilder: each training batch is built at once from the sampled indices,
    the order is the same on every pass (seeded) and the last partial batch is kept; evaluation batches are the split
    in order; ``builder[i]`` is row i of a batch."""
    builder, size = ml_module.batch_builder("train"), len(ml_module.samples["train"])
    assert size % ml_module.batch_size != 0  # so a partial last batch exists
    asked: list[list[int]] = []
    monkeypatch.setattr(builder, "__getitems__", lambda indices: asked.append(list(indices)) or builder(indices),
                        raising=False)
    batches = list(ml_module.train_dataloader())
    assert [len(b["label"]) for b in batches] == [4] * (size // 4) + [size % 4]
    assert sorted(i for indices in asked for i in indices) == list(range(size))
    assert asked[0] != sorted(asked[0]) or asked[1] != sorted(asked[1])  # shuffled
    for indices, batch in zip(asked, batches):
        expected = builder(indices)
        assert all(torch.equal(batch[k], expected[k]) for k in BATCH_DTYPES)
    first = list(asked)
    asked.clear()
    list(ml_module.train_dataloader())
    assert asked == first
    test = list(ml_module.test_dataloader())
    whole = ml_module.batch_builder("test")(np.arange(len(ml_module.samples["test"])))
    assert all(torch.equal(torch.cat([b[k] for b in test]), whole[k]) for k in BATCH_DTYPES)
    one = ml_module.batch_builder("test")[5]
    assert all(torch.equal(one[k], whole[k][5]) for k in BATCH_DTYPES)
