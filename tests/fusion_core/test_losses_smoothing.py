import math

import pytest
import torch
import torch.nn.functional as F

from fusion_core.losses import binary_label_smoothing_bce


def test_binary_hand_values():
    assert binary_label_smoothing_bce(torch.zeros(3), torch.tensor([0.0, 1.0, 1.0]), 0.3).item() == pytest.approx(
        math.log(2)
    )
    sigmoid_2 = 1 / (1 + math.exp(-2))
    # target 1, s = 0.2 → 0.9
    expected = -(0.9 * math.log(sigmoid_2) + 0.1 * math.log(1 - sigmoid_2))
    loss = binary_label_smoothing_bce(torch.tensor([2.0]), torch.tensor([True]), smoothing=0.2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # target 0, s = 0.2 → 0.1
    expected_negative = -(0.1 * math.log(sigmoid_2) + 0.9 * math.log(1 - sigmoid_2))
    loss = binary_label_smoothing_bce(torch.tensor([2.0]), torch.tensor([0]), smoothing=0.2)
    assert loss.item() == pytest.approx(expected_negative, rel=1e-6)


def test_binary_without_smoothing_is_plain_bce_and_minimum_is_at_smoothed_target():
    g = torch.Generator().manual_seed(1)
    logit, target = torch.randn(6, generator=g), torch.randint(0, 2, (6,), generator=g).float()
    torch.testing.assert_close(
        binary_label_smoothing_bce(logit, target, 0.0, "none"),
        F.binary_cross_entropy_with_logits(logit, target, reduction="none"),
    )
    logit = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([logit], lr=5.0)
    for _ in range(200):
        optimizer.zero_grad()
        binary_label_smoothing_bce(logit, torch.ones(1), 0.2).backward()
        optimizer.step()
    assert torch.sigmoid(logit).item() == pytest.approx(0.9, abs=1e-3)


def test_argument_errors():
    with pytest.raises(ValueError, match=r"smoothing must be in \[0, 1\)"):
        binary_label_smoothing_bce(torch.randn(2), torch.ones(2), smoothing=1.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        binary_label_smoothing_bce(torch.randn(2), torch.ones(2), reduction="avg")
    with pytest.raises(ValueError, match="same shape"):
        binary_label_smoothing_bce(torch.randn(2), torch.ones(3))
