"""PillarEncoder: shapes, order and padding invariance, gradients, range handling, argument checks."""
from __future__ import annotations

import pytest
import torch

from fusion_core.encoders.points import PillarEncoder


def make(**kw):
    torch.manual_seed(0)
    options = dict(x_range=(0.0, 8.0), y_range=(-4.0, 4.0), grid_size=(4, 4), in_features=4, out_channels=8)
    options.update(kw)
    return PillarEncoder(**options)


def cloud(batch: int, n: int = 20) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch)
    points = torch.rand(batch, n, 4, generator=g)
    return points * torch.tensor([8.0, 8.0, 2.0, 1.0]) - torch.tensor([0.0, 4.0, 1.0, 0.0])


@pytest.mark.parametrize("batch", [1, 2])
def test_shapes_and_occupancy(batch):
    encoder = make()
    out = encoder(cloud(batch))
    assert out.bev.shape == (batch, 8, 4, 4) and out.occupancy.shape == (batch, 4, 4)
    # the last channel is log1p(count): it sums back to the number of points
    assert torch.expm1(out.bev[:, -1]).sum().round() == batch * 20
    assert torch.equal(out.occupancy, out.bev[:, -1] > 0)


def test_a_point_lands_in_its_pillar():
    encoder = make()
    points = torch.tensor([[[1.0, -3.0, 0.0, 0.5]]])  # x cell 0 (0-2 m), y cell 0 (-4..-2 m)
    occupancy = encoder(points).occupancy[0]
    assert occupancy[0, 0] and occupancy.sum() == 1


def test_order_and_padding_invariance():
    encoder = make().eval()
    points = cloud(2)
    reference = encoder(points).bev
    shuffled = points[:, torch.randperm(20)]
    torch.testing.assert_close(encoder(shuffled).bev, reference)
    padded = torch.cat([points, torch.full((2, 5, 4), float("nan"))], 1)
    mask = torch.cat([torch.ones(2, 20, dtype=torch.bool), torch.zeros(2, 5, dtype=torch.bool)], 1)
    out = encoder(padded, mask).bev
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, reference)
    huge = padded.nan_to_num(1e9)
    torch.testing.assert_close(encoder(huge, mask).bev, reference)


def test_out_of_range_points_and_empty_samples_give_zeros():
    encoder = make()
    outside = torch.tensor([[[20.0, 0.0, 0.0, 1.0], [-1.0, 0.0, 0.0, 1.0], [4.0, 9.0, 0.0, 1.0]]])
    assert encoder(outside).bev.abs().sum() == 0
    none = encoder(cloud(1), torch.zeros(1, 20, dtype=torch.bool))
    assert none.bev.abs().sum() == 0 and not none.occupancy.any()


def test_every_parameter_gets_a_gradient():
    encoder = make()
    encoder(cloud(2)).bev.sum().backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_seeded_regression():
    out = make()(cloud(1)).bev
    assert out.shape == (1, 8, 4, 4)
    torch.testing.assert_close(out.sum(), make()(cloud(1)).bev.sum())
    assert out[:, :-1].max() > 0


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(x_range=(5.0, 1.0)), "ranges must be increasing"),
        (dict(grid_size=(0, 4)), "grid_size"),
        (dict(in_features=2), "in_features"),
        (dict(out_channels=1), "out_channels"),
    ],
)
def test_bad_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        make(**kw)


def test_wrong_feature_count_is_rejected():
    with pytest.raises(ValueError, match="in_features=4"):
        make()(torch.zeros(1, 3, 5))
