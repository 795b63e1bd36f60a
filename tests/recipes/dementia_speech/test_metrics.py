"""Classification and calibration metrics on hand-made cases."""
from __future__ import annotations

import math

import pytest
import torch

from recipes.dementia_speech.metrics import adaptive_ece, binary_nll, brier_score, classification_metrics, reliability_curve


def test_hand_computed_values():
    prob = torch.tensor([0.9, 0.9, 0.1, 0.1])
    label = torch.tensor([1, 0, 0, 0])
    m = classification_metrics(prob, label)
    assert m["acc"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(1.0)
    assert m["f1"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["auroc"] == pytest.approx(5 / 6, abs=1e-6)  # 2.5 of 3 positive-negative pairs ordered right
    # bins {0.1, 0.1} (observed 0) and {0.9, 0.9} (observed 0.5): ½·0.1 + ½·0.4
    assert m["ece"] == pytest.approx(0.25, abs=1e-6)
    # 4 samples, 4 equal-mass bins of one: (0.1 + 0.1 + 0.9 + 0.1) / 4 with the tie kept in input order
    assert m["adaptive_ece"] == pytest.approx(0.3, abs=1e-6)
    assert m["brier"] == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4, abs=1e-6)
    assert m["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.1) + 2 * math.log(0.9)) / 4, abs=1e-6)


def test_perfectly_calibrated_and_confident_predictions():
    label = torch.tensor([1, 0, 1, 0, 1, 0])
    m = classification_metrics(label.float(), label)
    assert m["acc"] == 1 and m["ece"] == pytest.approx(0) and m["brier"] == pytest.approx(0)
    assert m["adaptive_ece"] == pytest.approx(0)
    half = torch.full((6,), 0.5)
    assert classification_metrics(half, label)["ece"] == pytest.approx(0)  # 0.5 predicted, half observed
    assert brier_score(half, label) == pytest.approx(0.25)
    assert binary_nll(half, label) == pytest.approx(math.log(2))


def test_overconfidence_has_larger_ece_than_honest_uncertainty():
    label = torch.tensor([1, 0] * 10)
    overconfident = torch.full((20,), 0.99)  # right half the time, 99% sure
    honest = torch.full((20,), 0.5)
    assert classification_metrics(overconfident, label)["ece"] > 0.4
    assert classification_metrics(honest, label)["ece"] < 1e-6


def test_reliability_curve_bins():
    curve = reliability_curve(torch.tensor([0.05, 0.15, 0.95, 0.97]), torch.tensor([0, 1, 1, 1]), n_bins=10)
    assert curve.count.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert curve.observed[9] == 1 and curve.mean_predicted[9] == pytest.approx(0.96)
    assert torch.isnan(curve.observed[3])


def test_single_class_gives_nan_auroc_and_bad_shapes_raise():
    assert math.isnan(classification_metrics(torch.tensor([0.2, 0.7]), torch.tensor([1, 1]))["auroc"])
    with pytest.raises(ValueError, match="non-empty"):
        classification_metrics(torch.tensor([]), torch.tensor([]))
    with pytest.raises(ValueError):
        adaptive_ece(torch.tensor([]), torch.tensor([]))
