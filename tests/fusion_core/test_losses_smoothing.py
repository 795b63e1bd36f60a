import math

import pytest
import torch
import torch.nn.functional as F

from fusion_core.losses import binary_label_smoothing_bce, label_smoothing_cross_entropy


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_torch_cross_entropy(smoothing, reduction):
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(5, 4, generator=g), torch.randint(0, 4, (5,), generator=g)
    expected = F.cross_entropy(logits, target, label_smoothing=smoothing, reduction=reduction)
    torch.testing.assert_close(label_smoothing_cross_entropy(logits, target, smoothing, reduction), expected)


def test_cross_entropy_hand_value_and_gradient():
    logits = torch.zeros(1, 2, requires_grad=True)
    loss = label_smoothing_cross_entropy(logits, torch.tensor([0]), smoothing=0.2)
    assert loss.item() == pytest.approx(math.log(2))  # uniform prediction: log C for any target
    loss.backward()
    # ∂/∂logits = softmax - smoothed target = [0.5 - 0.9, 0.5 - 0.1]
    torch.testing.assert_close(logits.grad, torch.tensor([[-0.4, 0.4]]))


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
        label_smoothing_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), smoothing=1.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        binary_label_smoothing_bce(torch.randn(2), torch.ones(2), reduction="avg")
    with pytest.raises(ValueError, match=r"logits must be \(B, C\)"):
        label_smoothing_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="integer class indices"):
        label_smoothing_cross_entropy(torch.randn(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="same shape"):
        binary_label_smoothing_bce(torch.randn(2), torch.ones(3))
