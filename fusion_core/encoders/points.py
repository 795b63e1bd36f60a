"""Point clouds to a bird's-eye-view feature map: the pillar encoder of PointPillars (Lang et al., CVPR 2019).

The ground plane ``[x_min, x_max) × [y_min, y_max)`` is cut into ``grid_x × grid_y`` vertical pillars. Every
point is decorated with its offsets from its pillar's centre and from the mean height of its pillar's points,
passed through a shared linear layer, and max-pooled per pillar (PointPillars' simplified PointNet), so the
output does not depend on point order or on how many points are padding.

Letters: B batch, P points (padded), F point features (x, y, z, reflectance, …), C channels, X/Y grid cells.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["PillarEncoder", "PillarOutput"]


class PillarOutput(NamedTuple):
    bev: Tensor  # (B, C, X, Y): row i covers x in [x_min + i·dx, …), column j covers y in [y_min + j·dy, …)
    occupancy: Tensor  # (B, X, Y) bool: the pillar holds at least one real point


class PillarEncoder(nn.Module):
    """``forward(points (B, P, F), point_mask (B, P) | None) -> PillarOutput``.

    ``point_mask`` is True for real points; padded points, points outside the grid and samples without any point
    leave the map at zero. Channel ``C-1`` of ``bev`` is ``log1p`` of the pillar's point count.
    """

    def __init__(
        self,
        *,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        grid_size: tuple[int, int],
        in_features: int = 4,
        out_channels: int = 32,
    ) -> None:
        super().__init__()
        if x_range[1] <= x_range[0] or y_range[1] <= y_range[0]:
            raise ValueError(f"ranges must be increasing (min, max); got x_range={x_range}, y_range={y_range}")
        if len(grid_size) != 2 or min(grid_size) < 1:
            raise ValueError(f"grid_size must be two positive cell counts (grid_x, grid_y); got {grid_size}")
        if in_features < 3:
            raise ValueError(f"in_features must be >= 3 (x, y, z first); got {in_features}")
        if out_channels < 2:
            raise ValueError(f"out_channels must be >= 2 (one is the point count); got {out_channels}")
        self.x_range, self.y_range = (float(x_range[0]), float(x_range[1])), (float(y_range[0]), float(y_range[1]))
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.cell = ((self.x_range[1] - self.x_range[0]) / self.grid_size[0],
                     (self.y_range[1] - self.y_range[0]) / self.grid_size[1])
        self.in_features = in_features
        # raw features + (dx, dy) from the pillar centre + dz from the pillar's mean height
        self.point_net = nn.Sequential(nn.Linear(in_features + 3, out_channels - 1), nn.LayerNorm(out_channels - 1), nn.ReLU())

    def forward(self, points: Tensor, point_mask: Tensor | None = None) -> PillarOutput:
        B, P, F = points.shape
        if F != self.in_features:
            raise ValueError(f"points have {F} features; this encoder was built for in_features={self.in_features}")
        X, Y = self.grid_size
        mask = torch.ones(B, P, dtype=torch.bool, device=points.device) if point_mask is None else point_mask.bool()
        points = torch.where(mask[..., None], points, torch.zeros((), dtype=points.dtype, device=points.device))
        ix = torch.floor((points[..., 0] - self.x_range[0]) / self.cell[0]).long()
        iy = torch.floor((points[..., 1] - self.y_range[0]) / self.cell[1]).long()
        valid = mask & (ix >= 0) & (ix < X) & (iy >= 0) & (iy < Y)  # (B, P)
        # one flat index per (sample, pillar); invalid points go to a dump slot that is dropped afterwards
        flat = torch.where(valid, torch.arange(B, device=points.device)[:, None] * X * Y + ix * Y + iy,
                           torch.full_like(ix, B * X * Y))  # (B, P)
        flat = flat.reshape(-1)
        weight = valid.reshape(-1).to(points.dtype)
        count = torch.zeros(B * X * Y + 1, dtype=points.dtype, device=points.device).index_add_(0, flat, weight)
        z_sum = torch.zeros_like(count).index_add_(0, flat, points[..., 2].reshape(-1) * weight)
        z_mean = (z_sum / count.clamp(min=1))[flat].reshape(B, P)
        centre_x = self.x_range[0] + (ix.to(points.dtype) + 0.5) * self.cell[0]
        centre_y = self.y_range[0] + (iy.to(points.dtype) + 0.5) * self.cell[1]
        decorated = torch.cat([points, (points[..., 0] - centre_x)[..., None], (points[..., 1] - centre_y)[..., None],
                               (points[..., 2] - z_mean)[..., None]], dim=-1)  # (B, P, F + 3)
        decorated = torch.where(valid[..., None], decorated, torch.zeros((), dtype=points.dtype, device=points.device))
        features = self.point_net(decorated).reshape(B * P, -1)  # (B·P, C-1), >= 0 after the ReLU
        features = features * weight[:, None]
        pooled = torch.zeros(B * X * Y + 1, features.shape[1], dtype=features.dtype, device=points.device)
        pooled = pooled.scatter_reduce(0, flat[:, None].expand_as(features), features, reduce="amax", include_self=True)
        pooled = torch.cat([pooled, torch.log1p(count)[:, None]], dim=1)[:-1]  # drop the dump slot
        bev = pooled.reshape(B, X, Y, -1).permute(0, 3, 1, 2).contiguous()  # (B, C, X, Y)
        return PillarOutput(bev, count[:-1].reshape(B, X, Y) > 0)
