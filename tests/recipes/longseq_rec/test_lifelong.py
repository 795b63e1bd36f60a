"""recipes.longseq_rec.lifelong: the generator (determinism, shapes, where the relevant behaviours are planted,
argument checks), saving and loading, and the registered fetch that writes the default configuration once."""
from __future__ import annotations

import numpy as np
import pytest

from recipes.longseq_rec import lifelong as lifelong_module
from recipes.longseq_rec.lifelong import LIFELONG_DEFAULTS, LifelongData, generate_lifelong
from recipes.runtime.datasets import fetch_dataset


def test_generator_is_deterministic(lifelong):
    again = generate_lifelong(num_users=12, history_length=60, num_items=48, num_cates=4, num_interests=2,
                              relevant_per_target=2, seed=5, num_themes=3, targets_per_user=3, recent_window=10)
    for name in LifelongData._ARRAYS:
        np.testing.assert_array_equal(getattr(again, name), getattr(lifelong, name), err_msg=name)
    other = generate_lifelong(num_users=12, history_length=60, num_items=48, num_cates=4, num_interests=2,
                              relevant_per_target=2, seed=6, num_themes=3, targets_per_user=3, recent_window=10)
    assert not np.array_equal(other.hist_item, lifelong.hist_item)


def test_generator_shapes_and_time(lifelong):
    assert lifelong.hist_item.shape == (12, 60) and lifelong.hist_timestamp.shape == (12, 60)
    assert lifelong.target_item.shape == lifelong.label.shape == (12, 3)
    assert lifelong.planted_positions.shape == (12, 3, 2)
    assert lifelong.hist_item.min() >= 1 and lifelong.hist_item.max() <= 48
    assert np.all(np.diff(lifelong.hist_timestamp, axis=1) >= 0)
    assert np.all(lifelong.target_timestamp > lifelong.hist_timestamp[:, -1])
    assert set(np.unique(lifelong.label)) == {0, 1}


def test_relevant_behaviours_are_exactly_where_planted(lifelong):
    cate, theme = lifelong.item_cate, lifelong.item_theme
    for user in range(lifelong.num_users):
        hist_cate, hist_theme = cate[lifelong.hist_item[user]], theme[lifelong.hist_item[user]]
        # history categories come from the user's interests only
        assert set(hist_cate) <= set(lifelong.user_interests[user])
        planted_all = lifelong.planted_positions[user].reshape(-1)
        assert len(set(planted_all)) == planted_all.size and planted_all.max() < 60 - 10  # outside the recent window
        for target in range(3):
            item = lifelong.target_item[user, target]
            same_theme = np.flatnonzero((hist_cate == cate[item]) & (hist_theme == theme[item]))
            planted = lifelong.planted_positions[user, target]
            assert np.all(hist_cate[planted] == cate[item])  # relevant and decoys share the category
            if lifelong.label[user, target]:
                assert sorted(same_theme) == sorted(planted)
                np.testing.assert_array_equal(np.flatnonzero(lifelong.relevant_mask(user, target)), np.sort(planted))
            else:
                assert same_theme.size == 0 and not lifelong.relevant_mask(user, target).any()


def test_generator_plants_far_back_and_checks_arguments():
    data = generate_lifelong(num_users=64, history_length=1_000, num_items=200, num_cates=10, num_interests=3,
                             relevant_per_target=3, seed=0, num_themes=4, targets_per_user=2)
    assert np.median(data.planted_positions) < 400  # density ∝ (1 − p/H₀)²: mostly the distant past
    with pytest.raises(ValueError, match="multiple of num_cates × num_themes.*num_items=200"):
        generate_lifelong(num_items=190, num_cates=10, num_themes=4)
    with pytest.raises(ValueError, match="targets_per_user must be in \\[1, num_interests × \\(num_themes − 1\\) = 4\\]"):
        generate_lifelong(num_items=40, num_cates=4, num_themes=2, targets_per_user=5)
    with pytest.raises(ValueError, match="history_length \\(10\\) must be at least"):
        generate_lifelong(num_users=2, history_length=10, num_items=40, num_cates=4, num_themes=2, targets_per_user=2)


def test_lifelong_save_load_round_trips(lifelong, tmp_path):
    folder = lifelong.save(tmp_path / "lifelong")
    loaded = LifelongData.load(folder)
    for name in LifelongData._ARRAYS:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(lifelong, name), err_msg=name)
    assert loaded.params == lifelong.params
    head = loaded.head(5)
    assert head.num_users == 5 and head.hist_item.shape == (5, 60) and head.item_cate.size == lifelong.item_cate.size
    with pytest.raises(FileNotFoundError, match="fusion data fetch lifelong-synthetic"):
        LifelongData.load(tmp_path / "elsewhere")


def test_lifelong_fetch_generates_once_into_the_cache(lifelong, tmp_path, monkeypatch):
    """The registered fetch writes the default configuration to the cache and reuses it while it matches."""
    monkeypatch.setenv("FUSION_DATA_DIR", str(tmp_path))
    defaults = LIFELONG_DEFAULTS
    assert defaults["history_length"] == 10_000 and "verbose" not in defaults
    calls = []

    def small_generator(**kwargs):
        calls.append(kwargs)
        return LifelongData(**{name: getattr(lifelong, name) for name in LifelongData._ARRAYS}, params=dict(defaults))

    monkeypatch.setattr(lifelong_module, "generate_lifelong", small_generator)
    folder = fetch_dataset("lifelong-synthetic")
    assert folder == tmp_path / "lifelong-synthetic" and len(calls) == 1
    assert fetch_dataset("lifelong-synthetic") == folder and len(calls) == 1  # cache hit
    np.testing.assert_array_equal(LifelongData.load(folder).hist_item, lifelong.hist_item)
    (folder / "params.json").write_text('{"seed": 99}')  # another configuration: generate the defaults again
    fetch_dataset("lifelong-synthetic")
    assert len(calls) == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["lifelong-synthetic"]
    assert fetch_dataset("lifelong-synthetic", path=folder) == folder


def test_popularity_is_long_tailed_and_leaves_the_planted_structure_alone():
    uniform = generate_lifelong(num_users=64, history_length=1_000, num_items=400, num_cates=10, num_interests=3,
                                relevant_per_target=3, seed=0, num_themes=4, targets_per_user=2)
    zipf = generate_lifelong(num_users=64, history_length=1_000, num_items=400, num_cates=10, num_interests=3,
                             relevant_per_target=3, seed=0, num_themes=4, targets_per_user=2, popularity_exponent=1.0)

    def top_decile_share(data: LifelongData) -> float:
        counts = np.sort(np.bincount(data.hist_item.ravel(), minlength=401)[1:])[::-1]
        return counts[: len(counts) // 10].sum() / counts.sum()

    assert top_decile_share(zipf) > top_decile_share(uniform) + 0.1  # the most popular 10 % of items get far more
    assert zipf.params["popularity_exponent"] == 1.0 and "popularity_exponent" not in uniform.params
    for user in range(64):  # background behaviours still never fall in a target's (category, theme)
        pair = zipf.item_cate * 4 + zipf.item_theme
        for t in range(2):
            target_pair = pair[zipf.target_item[user, t]]
            in_pair = np.flatnonzero(pair[zipf.hist_item[user]] == target_pair)
            expected = np.sort(zipf.planted_positions[user, t]) if zipf.label[user, t] else np.array([], dtype=np.int64)
            np.testing.assert_array_equal(in_pair, expected)
    with pytest.raises(ValueError, match="popularity_exponent must be >= 0"):
        generate_lifelong(num_items=400, num_cates=10, num_themes=4, popularity_exponent=-1.0)


def test_interest_histories_come_from_liked_themes_and_clicks_follow_them_and_the_quality():
    data = generate_lifelong(num_users=256, history_length=400, num_items=400, num_cates=10, num_interests=3,
                             seed=0, num_themes=4, targets_per_user=6, structure="interests", themes_per_interest=2,
                             match_logit=4.0, quality_std=1.0, popularity_exponent=1.0)
    assert data.planted_positions.shape == (256, 6, 0) and data.params["structure"] == "interests"
    group = data.item_group
    liked = np.zeros((256, 6), dtype=bool)
    for user in range(256):
        pairs = set(group[data.hist_item[user]].tolist())
        assert len(pairs) <= 3 * 2 and set(data.item_cate[data.hist_item[user]]) <= set(data.user_interests[user])
        for t in range(6):
            item = data.target_item[user, t]
            assert data.item_cate[item] in data.user_interests[user]  # every target is of a liked category
            liked[user, t] = group[item] in pairs
            assert data.relevant_mask(user, t).sum() == np.sum(group[data.hist_item[user]] == group[item])
    # half the targets are of a liked theme (one with a tiny weight can be missing), half of a theme never seen
    assert liked.sum(axis=1).max() == 3 and liked.mean() > 0.45
    click = data.label.astype(bool)
    assert click[liked].mean() > 0.75 and click[~liked].mean() < 0.25  # σ(±2 + quality)
    quality = data.item_quality[data.target_item]
    assert quality[click & liked].mean() > quality[~click & liked].mean() + 0.3  # the quality moves clicks too
    assert data.item_quality[0] == 0 and abs(data.item_quality[1:].std() - 1.0) < 0.1
    with pytest.raises(ValueError, match="themes_per_interest must be in \\[1, num_themes − 1 = 3\\]"):
        generate_lifelong(num_items=400, num_cates=10, num_themes=4, structure="interests", themes_per_interest=4)
    with pytest.raises(ValueError, match="structure must be one of"):
        generate_lifelong(num_items=400, num_cates=10, num_themes=4, structure="themes")


@pytest.mark.parametrize("structure", ["planted", "interests"])
def test_a_search_that_knows_the_themes_recalls_every_relevant_behaviour(structure):
    """The label depends on the target's hidden (category, theme): an attention table whose item part is the
    one-hot of that pair (category and time parts zero) finds the relevant behaviours of every positive in its
    top-k (all planted ones; or k of a liked theme's many), through the recipe's data module, model search and
    recall metric."""
    import torch

    from recipes.longseq_rec.config import RecConfig
    from recipes.longseq_rec.data import RecDataModule
    from recipes.longseq_rec.metrics import search_recall
    from recipes.longseq_rec.model import build_model

    sizes = dict(lifelong_users=20, lifelong_history=300, lifelong_items=48, lifelong_cates=4, lifelong_themes=3,
                 lifelong_interests=2, lifelong_relevant=2, lifelong_targets_per_user=3, lifelong_popularity=1.0,
                 lifelong_structure=structure, lifelong_liked_themes=2)
    data = RecDataModule(dataset="lifelong-synthetic", max_history=300, batch_size=64, seed=1, **sizes)
    truth = generate_lifelong(num_users=20, history_length=300, num_items=48, num_cates=4, num_interests=2,
                              relevant_per_target=2, seed=1, num_themes=3, targets_per_user=3, popularity_exponent=1.0,
                              structure=structure, themes_per_interest=2)
    model = build_model(RecConfig(model="twin", num_items=data.num_items, num_cates=data.num_cates,
                                  representation_dim=48, top_k=2, search="table")).eval()
    raw = data.vocab.item_raw(np.arange(1, data.num_items))
    pair = torch.from_numpy((truth.item_cate[raw] - 1) * 3 + truth.item_theme[raw])  # item index − 1 → pair
    with torch.no_grad():
        for name in ("item", "cate", "time"):
            model.attention_table.tables[name].weight.zero_()
        model.attention_table.tables["item"].weight[1:, :12] = torch.nn.functional.one_hot(pair, 12).float()
    recalls = []
    for split in ("train", "test"):
        builder = data.batch_builder(split)
        batch = builder(np.arange(len(builder)))
        found = model.search(batch)
        recall, count = search_recall(torch.where(found.valid, found.indices, -1), batch["relevant"], batch["label"])
        assert count > 0
        recalls.append(recall)
    assert torch.equal(torch.cat(recalls), torch.ones(sum(r.numel() for r in recalls)))
