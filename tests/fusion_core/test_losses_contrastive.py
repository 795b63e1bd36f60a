import math

import pytest
import torch
import torch.nn.functional as F

from fusion_core.losses import ContrastiveOutput, MultiAnchorInfoNCE, info_nce, retrieval_recall_at_k, retrieval_recall_ceiling


def _reference_info_nce(a, b, temperature):
    """CLIP's pseudo-code, written out with loops over rows."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        row = torch.stack([a[i] @ b[j] for j in range(n)]) / temperature
        col = torch.stack([a[j] @ b[i] for j in range(n)]) / temperature
        total = total - torch.log_softmax(row, 0)[i] - torch.log_softmax(col, 0)[i]
    return total / (2 * n)


def test_known_value_on_orthonormal_pairs():
    eye = torch.eye(3)
    # logits = I / T with T = 1: each row's CE is log(e + 2) - 1
    assert info_nce(eye, eye, temperature=1.0).item() == pytest.approx(math.log(math.e + 2) - 1, abs=1e-6)


def test_matches_reference_and_is_symmetric():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    loss = info_nce(a, b, temperature=0.1)
    assert loss.shape == ()
    torch.testing.assert_close(loss, _reference_info_nce(a, b, 0.1))
    torch.testing.assert_close(loss, info_nce(b, a, temperature=0.1))


def test_mask_drops_rows_and_columns_and_ignores_their_values():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(6, 4, generator=g, requires_grad=True)
    b = torch.randn(6, 4, generator=g)
    mask = torch.tensor([True, False, True, True, False, True])
    expected = info_nce(a.detach()[mask], b[mask], temperature=0.2)
    b_poisoned = b.clone()
    b_poisoned[~mask] = float("nan")
    loss = info_nce(a, b_poisoned, temperature=0.2, mask=mask)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.isfinite(a.grad).all()
    assert (a.grad[~mask] == 0).all() and (a.grad[mask] != 0).any()


@pytest.mark.parametrize("valid", [0, 1])
def test_fewer_than_two_valid_rows_gives_zero_with_grad_path(valid):
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(4, 3, requires_grad=True)
    temperature = torch.tensor(0.07, requires_grad=True)
    mask = torch.zeros(4, dtype=torch.bool)
    mask[:valid] = True
    loss = info_nce(a, b, temperature, mask=mask)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert (a.grad == 0).all() and (b.grad == 0).all() and temperature.grad == 0


def test_gradients_reach_inputs_and_tensor_temperature():
    a = torch.randn(4, 6, requires_grad=True)
    b = torch.randn(4, 6, requires_grad=True)
    temperature = torch.tensor(0.5, requires_grad=True)
    info_nce(a, b, temperature).backward()
    for t in (a, b, temperature):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_info_nce_argument_errors():
    with pytest.raises(ValueError, match="same shape"):
        info_nce(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(ValueError, match="mask has shape"):
        info_nce(torch.randn(4, 3), torch.randn(4, 3), mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        info_nce(torch.randn(4, 3), torch.randn(4, 3), temperature=0.0)


def test_multi_anchor_sums_pairs_with_shared_temperature():
    torch.manual_seed(0)
    loss_fn = MultiAnchorInfoNCE([("report", "xray"), ("report", "ecg")])
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    emb = {m: torch.randn(5, 8, requires_grad=True) for m in ("report", "xray", "ecg")}
    present = {"ecg": torch.tensor([True, True, False, True, False])}
    out = loss_fn(emb, present)
    assert isinstance(out, ContrastiveOutput)
    assert set(out.per_pair) == {"report-xray", "report-ecg"}
    torch.testing.assert_close(out.per_pair["report-xray"], info_nce(emb["report"], emb["xray"], 0.07))
    torch.testing.assert_close(
        out.per_pair["report-ecg"], info_nce(emb["report"], emb["ecg"], 0.07, mask=present["ecg"])
    )
    torch.testing.assert_close(out.loss, out.per_pair["report-xray"] + out.per_pair["report-ecg"])
    torch.testing.assert_close(out.logit_scale, torch.tensor(1 / 0.07))
    out.loss.backward()
    assert loss_fn.logit_scale.grad is not None and loss_fn.logit_scale.grad != 0
    assert all(e.grad is not None and torch.isfinite(e.grad).all() for e in emb.values())
    assert (emb["ecg"].grad[~present["ecg"]] == 0).all()


def test_logit_scale_is_clamped_and_fixed_temperature_is_a_buffer():
    loss_fn = MultiAnchorInfoNCE([("a", "b")], temperature=1e-4)
    emb = {"a": torch.randn(3, 4), "b": torch.randn(3, 4)}
    assert loss_fn(emb).logit_scale.item() == pytest.approx(100.0)
    fixed = MultiAnchorInfoNCE([("a", "b")], temperature=0.5, learnable=False)
    assert list(fixed.parameters()) == [] and "logit_scale" in fixed.state_dict()
    torch.testing.assert_close(fixed(emb).loss, info_nce(emb["a"], emb["b"], 0.5))


def test_multi_anchor_argument_errors():
    with pytest.raises(ValueError, match="pairs is empty"):
        MultiAnchorInfoNCE([])
    with pytest.raises(ValueError, match="two different modality names"):
        MultiAnchorInfoNCE([("a", "a")])
    with pytest.raises(ValueError, match="repeat a pair"):
        MultiAnchorInfoNCE([("a", "b"), ("a", "b")])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        MultiAnchorInfoNCE([("a", "b")], temperature=-1.0)
    with pytest.raises(ValueError, match=r"embeddings lacks \['ecg'\]"):
        MultiAnchorInfoNCE([("report", "ecg")])({"report": torch.randn(2, 3)})
    with pytest.raises(ValueError, match="different batch sizes"):
        MultiAnchorInfoNCE([("a", "b"), ("a", "c")])({"a": torch.randn(3, 4), "b": torch.randn(3, 4), "c": torch.randn(2, 4)})
    with pytest.raises(ValueError, match=r"present\['b'\] has shape \(2,\)"):
        MultiAnchorInfoNCE([("a", "b")])({"a": torch.randn(3, 4), "b": torch.randn(3, 4)}, {"b": torch.ones(2, dtype=torch.bool)})


def _brute_force_recall(query, gallery, ks):
    n = query.shape[0]
    sim = [[F.cosine_similarity(query[i], gallery[j], dim=0).item() for j in range(n)] for i in range(n)]
    hits = {k: 0 for k in ks}
    for i in range(n):
        order = sorted(range(n), key=lambda j: -sim[i][j])
        for k in ks:
            hits[k] += i in order[:k]
    return {k: hits[k] / n for k in ks}


def test_retrieval_recall_matches_brute_force():
    g = torch.Generator().manual_seed(3)
    query = torch.randn(8, 5, generator=g)
    gallery = query + 0.8 * torch.randn(8, 5, generator=g)
    recall = retrieval_recall_at_k(query, gallery, ks=(1, 2, 5, 10))
    assert recall == pytest.approx(_brute_force_recall(query, gallery, (1, 2, 5, 10)))
    assert recall[10] == 1.0
    assert retrieval_recall_at_k(query, 3.0 * query, ks=(1,)) == {1: 1.0}


def test_retrieval_ceiling_is_what_an_ideal_model_reaches_when_groups_tie():
    groups = [0, 0, 0, 1, 1, 2, 3, 3, 3, 3]
    ks = (1, 2, 5)
    ceiling = retrieval_recall_ceiling(groups, ks)
    # by hand: sizes 3, 2, 1, 4 → recall@1 = (3·1/3 + 2·1/2 + 1 + 4·1/4) / 10
    assert ceiling[1] == pytest.approx(0.4) and ceiling[5] == 1.0
    # an ideal model: each pair's embeddings are its group's vector; the gallery's order inside a group is random
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g)
    query = centres[torch.tensor(groups)]
    trials = [retrieval_recall_at_k(query, query + 1e-2 * torch.randn(query.shape, generator=g), ks) for _ in range(600)]
    for k in ks:
        assert sum(t[k] for t in trials) / len(trials) == pytest.approx(ceiling[k], abs=0.02)
    assert retrieval_recall_ceiling(range(7), (1,)) == {1: 1.0}
    with pytest.raises(ValueError, match="empty"):
        retrieval_recall_ceiling([])


def test_retrieval_recall_argument_errors():
    with pytest.raises(ValueError, match="same shape"):
        retrieval_recall_at_k(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="positive integers"):
        retrieval_recall_at_k(torch.randn(4, 3), torch.randn(4, 3), ks=(0,))


def test_info_nce_with_groups_matches_a_multi_positive_reference():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    groups = torch.tensor([0, 1, 0, 2, 1, 0])
    # distinct keys are the plain loss
    assert info_nce(a, b, 0.1, groups=torch.arange(6)) == pytest.approx(info_nce(a, b, 0.1).item(), rel=1e-6)
    # by hand: row i's target is uniform over the rows sharing its key, in both directions
    sim = (F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / 0.1).tolist()
    def direction(s):
        total = 0.0
        for i in range(6):
            positives = [j for j in range(6) if groups[j] == groups[i]]
            log_z = math.log(sum(math.exp(v) for v in s[i]))
            total += -sum(s[i][j] - log_z for j in positives) / len(positives)
        return total / 6
    reference = 0.5 * (direction(sim) + direction([list(r) for r in zip(*sim)]))
    assert info_nce(a, b, 0.1, groups=groups).item() == pytest.approx(reference, rel=1e-5)
    # a group's members are interchangeable: swapping two of them in b leaves the loss unchanged
    swapped = b[[2, 1, 0, 3, 4, 5]]
    assert info_nce(a, swapped, 0.1, groups=groups).item() == pytest.approx(info_nce(a, b, 0.1, groups=groups).item(), rel=1e-5)
    # masking drops the absent rows' keys with them
    mask = torch.tensor([True, True, False, True, True, True])
    keep = mask.nonzero().squeeze(1)
    assert info_nce(a, b, 0.1, mask=mask, groups=groups).item() == pytest.approx(
        info_nce(a[keep], b[keep], 0.1, groups=groups[keep]).item(), rel=1e-6)
    loss = MultiAnchorInfoNCE([("r", "x")], temperature=0.1, learnable=False)({"r": a, "x": b}, groups=groups)
    assert loss.loss.item() == pytest.approx(reference, rel=1e-5)
    # per pair: a pair without keys keeps the plain loss
    both = MultiAnchorInfoNCE([("r", "x"), ("r", "e")], temperature=0.1, learnable=False)
    out = both({"r": a, "x": b, "e": b}, groups={"r-x": groups})
    assert out.per_pair["r-x"].item() == pytest.approx(reference, rel=1e-5)
    assert out.per_pair["r-e"].item() == pytest.approx(info_nce(a, b, 0.1).item(), rel=1e-6)
    with pytest.raises(ValueError, match="not among"):
        both({"r": a, "x": b, "e": b}, groups={"x-r": groups})
    with pytest.raises(ValueError, match="groups must be"):
        info_nce(a, b, groups=torch.zeros(5, dtype=torch.long))
