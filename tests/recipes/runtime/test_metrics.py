"""The runtime's torchmetrics: equal to reference implementations on known data, and exact when states are split
across processes (the reduction torchmetrics applies under DDP, reproduced by merging two metric states)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from recipes.runtime.metrics import (
    AdaptiveCalibrationError,
    BinaryNLL,
    GroupAUROC,
    adaptive_ece,
    binary_classification_metrics,
    group_auc,
)


def _data(n: int = 200, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    prob = torch.rand(n, generator=g)
    label = (torch.rand(n, generator=g) < prob).long()
    groups = torch.randint(0, 12, (n,), generator=g)
    return prob, label, groups


def test_adaptive_ece_by_hand():
    prob = torch.tensor([0.1, 0.2, 0.8, 0.9])
    label = torch.tensor([0, 1, 1, 1])
    # two equal-mass bins: {0.1, 0.2} with mean label 0.5, {0.8, 0.9} with mean label 1
    expected = 0.5 * abs(0.15 - 0.5) + 0.5 * abs(0.85 - 1.0)
    assert float(adaptive_ece(prob, label, n_bins=2)) == pytest.approx(expected)
    metric = AdaptiveCalibrationError(n_bins=2)
    metric.update(prob, label)
    assert float(metric.compute()) == pytest.approx(expected)


def test_nll_equals_scikit_learn():
    prob, label, _ = _data()
    metric = BinaryNLL()
    metric.update(prob[:70], label[:70])
    metric.update(prob[70:], label[70:])
    assert float(metric.compute()) == pytest.approx(log_loss(label.numpy(), prob.numpy()), rel=1e-5)


def test_group_auc_equals_weighted_scikit_learn_per_group():
    prob, label, groups = _data()
    total, weight = 0.0, 0
    for g in np.unique(groups.numpy()):
        chosen = groups.numpy() == g
        if len(set(label.numpy()[chosen])) < 2:
            continue
        total += roc_auc_score(label.numpy()[chosen], prob.numpy()[chosen]) * chosen.sum()
        weight += chosen.sum()
    assert float(group_auc(prob, label, groups)) == pytest.approx(total / weight, rel=1e-6)


@pytest.mark.parametrize("factory", [lambda: GroupAUROC(), lambda: AdaptiveCalibrationError(5), lambda: BinaryNLL()])
def test_states_split_across_processes_reduce_to_the_whole_split(factory):
    """What DDP does: each rank updates with its share, states are reduced (cat / sum), then compute."""
    prob, label, groups = _data(seed=3)
    whole, rank0, rank1 = factory(), factory(), factory()
    args = (lambda sl: (prob[sl], label[sl], groups[sl])) if isinstance(whole, GroupAUROC) else (lambda sl: (prob[sl], label[sl]))
    whole.update(*args(slice(None)))
    rank0.update(*args(slice(0, None, 2)))
    rank1.update(*args(slice(1, None, 2)))
    merged = factory()
    merged.merge_state(rank0)
    merged.merge_state(rank1)
    assert float(merged.compute()) == pytest.approx(float(whole.compute()), rel=1e-6)
    # a per-rank mean is not the same number, which is why metrics are reduced, not averaged
    if isinstance(whole, GroupAUROC):
        assert float(whole.compute()) != pytest.approx((float(rank0.compute()) + float(rank1.compute())) / 2, rel=1e-9)


def test_binary_classification_collection_matches_references():
    prob, label, _ = _data(500, seed=1)
    collection = binary_classification_metrics()
    collection.update(prob, label)
    values = {k: float(v) for k, v in collection.compute().items()}
    assert set(values) == {"acc", "precision", "recall", "f1", "auroc", "ece", "adaptive_ece", "brier", "nll"}
    assert values["auroc"] == pytest.approx(roc_auc_score(label.numpy(), prob.numpy()), rel=1e-5)
    assert values["brier"] == pytest.approx(float(((prob - label.float()) ** 2).mean()), rel=1e-5)
    assert values["nll"] == pytest.approx(log_loss(label.numpy(), prob.numpy()), rel=1e-5)
    assert values["acc"] == pytest.approx(float(((prob > 0.5).long() == label).float().mean()))


def test_bad_shapes_raise_with_the_shapes():
    with pytest.raises(ValueError, match=r"1-D of one length"):
        BinaryNLL().update(torch.rand(3), torch.ones(4))
    with pytest.raises(ValueError, match="groups must have the shape"):
        GroupAUROC().update(torch.rand(3), torch.ones(3), torch.ones(2))


def test_group_auc_counts_ties_as_half_and_skips_one_class_groups():
    scores = torch.tensor([0.5, 0.5, 0.2, 0.9, 0.1, 0.3, 0.3])
    labels = torch.tensor([1, 0, 0, 1, 0, 1, 1])
    groups = torch.tensor([7, 7, 7, 3, 3, 9, 9])  # group 9 has positives only: no AUC
    # group 7: pairs (0.5+, 0.5-) = ½, (0.5+, 0.2-) = 1 → 0.75; group 3: 1.0; weights 3 and 2
    assert float(group_auc(scores, labels, groups)) == pytest.approx((0.75 * 3 + 1.0 * 2) / 5)
    assert torch.isnan(group_auc(scores[5:], labels[5:], groups[5:]))
