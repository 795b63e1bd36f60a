import pytest
import torch

from fusion_core.encoders import FieldEmbedding


def make_table() -> FieldEmbedding:
    torch.manual_seed(0)
    return FieldEmbedding({"item": (10, 4), "cate": (5, 2), "time": (7, 2)})


@pytest.mark.parametrize("shape", [(1,), (2,), (2, 3)])
def test_parts_are_concatenated_in_order(shape):
    table = make_table()
    ids = {"item": torch.randint(0, 10, shape), "cate": torch.randint(0, 5, shape), "time": torch.randint(0, 7, shape)}
    out = table(ids)
    assert out.shape == (*shape, 8)
    assert table.dim == 8
    assert table.slices == {"item": slice(0, 4), "cate": slice(4, 6), "time": slice(6, 8)}
    for name, part in table.slices.items():
        torch.testing.assert_close(out[..., part], table.tables[name](ids[name]))


def test_padding_id_embeds_to_zeros_and_gets_no_gradient():
    table = make_table()
    out = table({"item": torch.tensor([0, 3]), "cate": torch.tensor([0, 1]), "time": torch.tensor([0, 2])})
    assert torch.equal(out[0], torch.zeros(8))
    out.sum().backward()
    for embedding in table.tables.values():
        assert torch.equal(embedding.weight.grad[0], torch.zeros(embedding.embedding_dim))
        assert embedding.weight.grad.abs().sum() > 0


def test_absent_field_is_zero_whatever_its_ids():
    table = make_table()
    item = torch.tensor([[1, 2, 3], [4, 5, 6]])
    keep = torch.tensor([[True, False, True], [False, False, True]])
    garbage = torch.tensor([[1, 10**6, 3], [-7, 99, 6]])  # out of range where not kept
    ids = {"item": garbage, "cate": torch.ones_like(item), "time": torch.ones_like(item)}
    out = table(ids, present={"item": keep})
    reference = table({"item": item, "cate": torch.ones_like(item), "time": torch.ones_like(item)})
    item_part = table.slices["item"]
    assert torch.equal(out[..., item_part][~keep], torch.zeros(int((~keep).sum()), 4))
    torch.testing.assert_close(out[..., item_part][keep], reference[..., item_part][keep])
    torch.testing.assert_close(out[..., 4:], reference[..., 4:])


def test_present_broadcasts_per_sample():
    table = make_table()
    ids = {"item": torch.randint(1, 10, (2, 3)), "cate": torch.randint(1, 5, (2, 3)), "time": torch.randint(1, 7, (2, 3))}
    sample_on = torch.tensor([True, False])[:, None]  # (B, 1) → (B, L)
    out = table(ids, present={"time": sample_on})
    assert torch.equal(out[1, :, 6:], torch.zeros(3, 2))
    assert out[0, :, 6:].abs().sum() > 0


def test_missing_field_contributes_zeros():
    table = make_table()
    out = table({"item": torch.tensor([1, 2]), "cate": torch.tensor([1, 2])})
    assert out.shape == (2, 8)
    assert torch.equal(out[:, 6:], torch.zeros(2, 2))


@pytest.mark.parametrize(
    "fields, match",
    [({}, "at least one field"), ({"item": (1, 4)}, "at least 2"), ({"item": (5, 0)}, "positive")],
)
def test_bad_construction_raises(fields, match):
    with pytest.raises(ValueError, match=match):
        FieldEmbedding(fields)


def test_bad_ids_raise():
    table = make_table()
    with pytest.raises(ValueError, match="not built for"):
        table({"user": torch.tensor([1])})
    with pytest.raises(ValueError, match="every field must have shape"):
        table({"item": torch.tensor([1, 2]), "cate": torch.tensor([1])})


@pytest.mark.parametrize("via", ["lookup", "table"])
def test_dot_is_the_query_times_the_embeddings_without_building_them(via):
    torch.manual_seed(0)
    table = make_table()
    ids = {"item": torch.randint(0, 10, (3, 7)), "cate": torch.randint(0, 5, (3, 7)), "time": torch.randint(0, 7, (3, 7))}
    query = torch.randn(3, table.dim)
    expected = (table(ids) * query[:, None, :]).sum(-1)  # (B, L)
    torch.testing.assert_close(table.dot(query, ids, via=via), expected)
    with pytest.raises(ValueError, match="lacks fields"):
        table.dot(query, {"item": ids["item"]}, via=via)
    with pytest.raises(ValueError, match="via must be"):
        table.dot(query, ids, via="gather")
