import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from recipes.longseq_rec.config import RecConfig
from recipes.longseq_rec.model import DIN, FEATURE_GROUPS, MODEL_NAMES, TwoStageModel, build_model

NUM_ITEMS, NUM_CATES, NUM_TIME, PROFILE = 40, 6, 8, (3, 5)


def config(**overrides) -> RecConfig:
    sizes = dict(
        num_items=NUM_ITEMS, num_cates=NUM_CATES, num_time_buckets=NUM_TIME, profile_cardinalities=PROFILE,
        num_users=10, user_dim=4, attention_dim=8, representation_dim=16, profile_dim=4, top_k=4, din_window=5,
        mlp_hidden=(16,),
    )
    sizes.update(overrides)
    return RecConfig(**sizes)


def make_batch(batch: int, length: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    lengths[0] = length - 3
    mask = torch.arange(length)[None, :] >= (length - lengths)[:, None]  # left-padded
    def ids(high, shape):
        return torch.where(mask, torch.randint(1, high, shape, generator=g), 0) if shape == mask.shape else torch.randint(1, high, shape, generator=g)
    return {
        "user": torch.randint(1, 10, (batch,), generator=g),
        "profile": torch.stack([torch.randint(1, c, (batch,), generator=g) for c in PROFILE], dim=1),
        "target_item": torch.randint(1, NUM_ITEMS, (batch,), generator=g),
        "target_cate": torch.randint(1, NUM_CATES, (batch,), generator=g),
        "hist_item": ids(NUM_ITEMS, (batch, length)),
        "hist_cate": ids(NUM_CATES, (batch, length)),
        "hist_time": ids(NUM_TIME, (batch, length)),
        "hist_mask": mask,
        "label": torch.randint(0, 2, (batch,), generator=g).float(),
    }


def built(name: str, **overrides):
    torch.manual_seed(0)
    return build_model(config(model=name, **overrides)).eval()


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("batch", [1, 2])
def test_output_shapes(name, batch):
    out = built(name)(make_batch(batch))
    k = 5 if name == "din" else 4
    assert out.logit.shape == (batch,)
    assert out.retrieved.shape == out.weights.shape == (batch, k)
    assert out.retrieved.dtype == torch.long
    filled = out.retrieved >= 0
    torch.testing.assert_close(out.weights.sum(dim=1), torch.ones(batch))
    assert torch.equal(out.weights[~filled], torch.zeros(int((~filled).sum())))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_parameter_gets_a_gradient(name):
    model = built(name).train()
    batch = make_batch(4, length=10, seed=1)
    out = model(batch)
    torch.nn.functional.binary_cross_entropy_with_logits(out.logit, batch["label"]).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("scaled", [True, False])
@pytest.mark.parametrize("name", ["twin", "dare"])
def test_retrieved_is_the_brute_force_top_k_of_attention_embeddings(name, scaled):
    model = built(name, top_k=3, per_part_scaling=scaled)
    batch = make_batch(2, length=12, seed=2)
    out = model(batch)
    table = model.attention_table
    now = NUM_TIME  # the target's own time bucket
    semantic = table.part_dim("item") + table.part_dim("cate")
    item_scale, time_scale = (semantic**-0.5, table.part_dim("time") ** -0.5) if scaled else (1.0, 1.0)
    for b in range(2):
        scored = []
        for i in range(12):
            if batch["hist_mask"][b, i]:
                part = {f: table.tables[f].weight[batch[f"hist_{f}"][b, i]] for f in ("item", "cate", "time")}
                score = item_scale * (table.tables["item"].weight[batch["target_item"][b]] @ part["item"]
                                      + table.tables["cate"].weight[batch["target_cate"][b]] @ part["cate"])
                score = score + time_scale * (table.tables["time"].weight[now] @ part["time"])
                scored.append((float(score.detach()), i))
        scored.sort(key=lambda pair: -pair[0])
        assert out.retrieved[b].tolist() == [i for _, i in scored[:3]]
    assert torch.equal(model.search(batch).indices, out.retrieved)


def distinct_history_batch(batch: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    """Histories longer than the catalogue; a few behaviours padded, some rows with the time group's ids only."""
    g = torch.Generator().manual_seed(seed)
    out = make_batch(batch, length=length, seed=seed)
    out["hist_mask"] = torch.rand(batch, length, generator=g) > 0.1
    for field, high in (("item", NUM_ITEMS), ("cate", NUM_CATES), ("time", NUM_TIME)):
        out[f"hist_{field}"] = torch.where(out["hist_mask"], torch.randint(1, high, (batch, length), generator=g), 0)
    return out


@pytest.mark.parametrize("name", ["twin", "dare"])
@pytest.mark.parametrize("scaled", [True, False])
def test_both_search_paths_keep_the_same_top_k(name, scaled):
    """Scoring the whole attention table once and gathering by id ranks the history exactly as looking every
    behaviour up does. Repeated (item, category, time) triples tie exactly on both paths, so the comparison is of
    the kept scores and of the set of kept triples; their positions agree wherever the scores have no tie."""
    model = built(name, top_k=6, per_part_scaling=scaled)
    for p in model.attention_table.parameters():  # trained-looking scales, not the N(0, 0.01) start
        torch.nn.init.normal_(p)
    batch = distinct_history_batch(3, length=200, seed=11)
    present = {"time": torch.tensor([True, False, True])}
    lookup = model.search(batch, present, via="lookup")
    table = model.search(batch, present, via="table")
    torch.testing.assert_close(table.scores, lookup.scores, rtol=1e-5, atol=1e-6)
    assert torch.equal(table.valid, lookup.valid)
    for b in range(3):
        def kept(found):
            return sorted(tuple(int(batch[f"hist_{f}"][b, i]) for f in ("item", "cate", "time")) for i in found.indices[b])
        assert kept(table) == kept(lookup)
        scores = table.scores[b]
        untied = torch.cat([scores[:-1] - scores[1:] > 1e-4, torch.tensor([True])])
        assert torch.equal(table.indices[b][untied], lookup.indices[b][untied])


def test_auto_search_takes_the_table_path_when_the_catalogue_is_smaller_than_the_history():
    model = built("dare")
    assert model.search_via(NUM_ITEMS - 1) == "lookup" and model.search_via(NUM_ITEMS + 1) == "table"
    assert built("dare", search="lookup").search_via(10_000) == "lookup"
    batch = distinct_history_batch(2, length=3 * NUM_ITEMS, seed=12)
    torch.testing.assert_close(model(batch).logit, built("dare", search="lookup")(batch).logit)


@pytest.mark.parametrize("name", ["twin", "dare"])
def test_whole_history_interest_is_the_softmax_over_every_behaviour_on_both_paths(name):
    """The auxiliary pooling (the reference's whole-history attention): the table path (scores gathered by id,
    weights summed per id) equals a brute-force softmax over every looked-up behaviour, rows without history pool
    nothing, and unlike the top-k search every real behaviour's attention embedding gets a gradient."""
    model = built(name, aux_loss=True).train()
    for p in model.attention_table.parameters():
        torch.nn.init.normal_(p)
    batch = distinct_history_batch(3, length=200, seed=13)
    batch["hist_mask"][2] = False
    present = {"time": torch.tensor([True, False, True])}
    table = model.whole_history_interest(batch, present, via="table")
    lookup = model.whole_history_interest(batch, present, via="lookup")
    torch.testing.assert_close(table, lookup, rtol=1e-5, atol=1e-6)
    values = model.representation_table if name == "dare" else model.attention_table
    for b in range(2):
        real = batch["hist_mask"][b]
        ids = {f: batch[f"hist_{f}"][b, real] for f in ("item", "cate", "time")}
        if b == 1:  # time absent: no time part in the score nor in the values
            ids["time"] = torch.zeros_like(ids["time"])
        keys = model.attention_table(ids) * model.query_scale
        query = model.embed_target(model.attention_table, {k: v[b : b + 1] for k, v in batch.items()},
                                   {g: torch.tensor([g != "time" or b != 1]) for g in FEATURE_GROUPS})[0]
        weights = torch.softmax(keys @ query / model.temperature, dim=0)
        torch.testing.assert_close(table[b], weights @ values(ids), rtol=1e-4, atol=1e-6)
    assert torch.equal(table[2], torch.zeros_like(table[2]))
    logit = model.auxiliary_logit(batch, present)
    assert logit.shape == (3,)
    logit.sum().backward()
    item_grad = model.attention_table.tables["item"].weight.grad
    seen = torch.unique(batch["hist_item"][:2][batch["hist_mask"][:2]])
    assert bool((item_grad[seen].abs().sum(dim=1) > 0).all())  # every behaviour of the history, not only the top-4
    assert model.aux_head is not None and built(name).aux_head is None
    with pytest.raises(ValueError, match="aux_loss: true"):
        built(name).auxiliary_logit(batch)


def test_embeddings_start_small_with_zero_padding():
    model = built("dare")
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding):
            assert torch.equal(module.weight[0], torch.zeros(module.embedding_dim)), name
            assert 0.005 < float(module.weight[1:].detach().std()) < 0.02, name
    wide = built("dare", embedding_std=None)
    assert float(wide.attention_table.tables["item"].weight[1:].detach().std()) > 0.5


@pytest.mark.parametrize("norm", [True, False])
def test_prediction_head_trains_on_a_one_row_batch(norm):
    model = built("twin", head_norm=norm).train()
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()) == norm
    batch = make_batch(1, seed=13)
    out = model(batch)
    torch.nn.functional.binary_cross_entropy_with_logits(out.logit, batch["label"]).backward()
    assert torch.isfinite(out.logit).all()


def test_din_attends_to_the_most_recent_window():
    batch = make_batch(2, length=12, seed=3)
    out = built("din", din_window=5)(batch)
    expected = torch.where(batch["hist_mask"][:, -5:], torch.arange(7, 12), -1)
    assert torch.equal(out.retrieved, expected)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_masked_positions_are_never_retrieved(name):
    batch = make_batch(2, length=12, seed=4)
    batch["hist_mask"][1] = False
    batch["hist_mask"][1, [0, 5]] = True  # fewer real behaviours than k
    out = built(name)(batch)
    for b in range(2):
        kept = out.retrieved[b][out.retrieved[b] >= 0]
        assert batch["hist_mask"][b, kept].all()
    assert (out.retrieved[1] >= 0).sum() <= 2


GARBAGE = {
    "target": {"target_item": 10**6, "target_cate": -3},
    "history": {"hist_item": 10**6, "hist_cate": -2, "hist_time": 999, "hist_mask": "flip"},
    "profile": {"profile": 10**5, "user": -1},
    "time": {"hist_time": 10**4},
}


def with_garbage(batch, group, rows):
    out = {k: v.clone() for k, v in batch.items()}
    for key, value in GARBAGE[group].items():
        if value == "flip":
            out[key][rows] = ~out[key][rows]
        else:
            out[key][rows] = value
    return out


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("group", FEATURE_GROUPS)
def test_absent_group_never_reaches_the_output_through_its_values(name, group):
    model = built(name)
    batch = make_batch(2, length=12, seed=5)
    present = {group: torch.tensor([False, True])}
    reference = model(batch, present)
    garbled = model(with_garbage(batch, group, rows=0), present)
    torch.testing.assert_close(garbled.logit, reference.logit)
    torch.testing.assert_close(garbled.weights, reference.weights)
    assert torch.equal(garbled.retrieved, reference.retrieved)
    full = model(batch)
    torch.testing.assert_close(reference.logit[1], full.logit[1])  # the other sample is untouched
    assert not torch.allclose(reference.logit[0], full.logit[0])  # and the group did matter


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_absent_history_means_no_interest(name):
    model = built(name)
    batch = make_batch(2, seed=6)
    out = model(batch, {"history": torch.tensor([False, False])})
    assert (out.retrieved == -1).all() and torch.equal(out.weights, torch.zeros_like(out.weights))
    empty = dict(batch, hist_mask=torch.zeros_like(batch["hist_mask"]))
    torch.testing.assert_close(model(empty).logit, out.logit)


def test_dare_attention_width_is_independent_of_the_representation_width():
    small = built("dare", attention_dim=8, representation_dim=32)
    large = built("dare", attention_dim=8, representation_dim=64)
    assert small.attention_table.dim == large.attention_table.dim == 8
    assert (small.representation_table.dim, large.representation_table.dim) == (32, 64)
    assert isinstance(small, TwoStageModel) and small.decoupled
    for model in (small, large):
        assert model(make_batch(2)).logit.shape == (2,)
    twin = built("twin", attention_dim=8, representation_dim=32)
    assert twin.representation_table is None and twin.attention_table.dim == 32
    assert isinstance(built("din"), DIN)


def test_seeded_numeric_regression():
    torch.manual_seed(0)
    model = build_model(config(model="dare")).eval()
    logit = model(make_batch(2, seed=7)).logit
    torch.testing.assert_close(logit, torch.tensor(REGRESSION), rtol=1e-4, atol=1e-5)


REGRESSION = [-0.20013250, -0.20028438]  # torch 2.13 CPU, seed 0 (N(0, 0.01) embeddings, BatchNorm head)


@pytest.mark.parametrize(
    "overrides, match",
    [({"attention_dim": 3}, "attention_dim"), ({"num_items": 1}, "num_items"), ({"top_k": 0}, "top_k"),
     ({"user_dim": 4, "num_users": 0}, "num_users"), ({"dropout": 1.0}, "dropout"), ({"model": "sim"}, "din"),
     ({"lr": 0.0}, "lr"), ({"search": "gather"}, "search"), ({"optimizer": "sgd"}, "optimizer"),
     ({"embedding_std": 0.0}, "embedding_std"), ({"model": "din", "aux_loss": True}, "aux_loss needs a search model")],
)
def test_bad_config_raises(overrides, match):
    with pytest.raises(ValueError, match=match):
        config(**overrides)


def test_config_from_yaml_lists_keeps_tuples():
    """hparams.yaml and YAML give lists; the config holds tuples, so the model and its saved config agree."""
    cfg = config(profile_cardinalities=[3, 5], mlp_hidden=[16])
    assert cfg.profile_cardinalities == (3, 5) and cfg.mlp_hidden == (16,)


def planted(n: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    """Label 1 iff the target item occurs somewhere in the history (no profile signal)."""
    g = torch.Generator().manual_seed(seed)
    batch = make_batch(n, length=length, seed=seed)
    batch["hist_mask"] = torch.ones(n, length, dtype=torch.bool)
    for field, high in (("item", NUM_ITEMS), ("cate", NUM_CATES), ("time", NUM_TIME)):
        batch[f"hist_{field}"] = torch.randint(1, high, (n, length), generator=g)
    label = torch.rand(n, generator=g) < 0.5
    copied = batch["hist_item"].gather(1, torch.randint(0, length, (n, 1), generator=g)).squeeze(1)
    target = torch.randint(1, NUM_ITEMS, (n,), generator=g)
    while True:  # negatives: resample until the item is not in the history
        clash = ~label & (batch["hist_item"] == target[:, None]).any(dim=1)
        if not clash.any():
            break
        target = torch.where(clash, torch.randint(1, NUM_ITEMS, (n,), generator=g), target)
    batch["target_item"] = torch.where(label, copied, target)
    batch["label"] = label.float()
    return batch


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_tiny_model_learns_a_planted_signal(name):
    torch.manual_seed(0)
    model = build_model(config(model=name, top_k=4, din_window=16, user_dim=0))
    held_out = planted(128, 16, seed=1000)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    # a fresh batch each step: the model must learn the rule, not the examples; from N(0, 0.01) embeddings the
    # scores start flat, so it takes ~100 steps (50 sufficed from N(0, 1))
    for step in range(100):
        train = planted(64, 16, seed=step)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(train).logit, train["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        auc = binary_auroc(model(held_out).logit, held_out["label"].long())
    assert auc > 0.85, f"{name} reached AUC {auc:.3f}"
