"""Where the driving detector's two maps meet: BEV cells in the image and image rays across the BEV grid.

Everything here follows from the config's BEV extent and camera input size and a frame's calibration
(``projection (B, 3, 4)``, velodyne → pixel); nothing is learned. The detector's streams read each other at these
places and the detection head anchors its queries at the cell centres.

Letters: B batch, X/Y BEV cells, N = X·Y, h/w image feature cells (stride 8), K samples per token.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from recipes.driving_interaction.config import DrivingConfig

__all__ = ["BevGeometry"]


class BevGeometry(nn.Module):
    """Where BEV cells land in the image and where image rays cross the BEV grid, from the calibration.

    ``cell_to_image(projection)`` → grid-sample coordinates ``(B, N, K_h, 2)`` in the image feature map and a
    validity mask ``(B, N, K_h)`` for ``pillar_heights`` samples up each BEV cell. ``ray_to_bev(projection)`` →
    coordinates ``(B, h·w, K_d, 2)`` in the BEV map and validity ``(B, h·w, K_d)`` for ``ray_depths`` samples along
    the ray of every image feature cell. Coordinates follow ``F.grid_sample`` (x = width axis, in [-1, 1]).
    """

    def __init__(self, config: DrivingConfig) -> None:
        super().__init__()
        self.config = config
        X, Y = config.grid_size
        dx, dy = config.cell
        xs = config.x_range[0] + (torch.arange(X) + 0.5) * dx
        ys = config.y_range[0] + (torch.arange(Y) + 0.5) * dy
        gx, gy = torch.meshgrid(xs, ys, indexing="ij")
        self.register_buffer("cell_xy", torch.stack([gx, gy], -1).reshape(-1, 2), persistent=False)  # (N, 2)
        H, W = config.image_size
        h, w = H // 8, W // 8
        v, u = torch.meshgrid((torch.arange(h) + 0.5) * 8, (torch.arange(w) + 0.5) * 8, indexing="ij")
        self.register_buffer("feature_uv", torch.stack([u, v], -1).reshape(-1, 2), persistent=False)  # (h·w, 2)
        self.register_buffer("heights", torch.tensor(config.pillar_heights, dtype=torch.float32), persistent=False)
        self.register_buffer("depths", torch.tensor(config.ray_depths, dtype=torch.float32), persistent=False)

    def cell_to_image(self, projection: Tensor) -> tuple[Tensor, Tensor]:
        N, K = self.cell_xy.shape[0], self.heights.shape[0]
        xyz = torch.cat([self.cell_xy[:, None, :].expand(N, K, 2), self.heights[None, :, None].expand(N, K, 1)], -1)
        homo = torch.cat([xyz, torch.ones(N, K, 1, device=xyz.device)], -1).reshape(-1, 4)  # (N·K, 4)
        pixel = torch.einsum("bij,nj->bni", projection, homo)  # (B, N·K, 3)
        depth = pixel[..., 2]
        uv = pixel[..., :2] / depth.clamp(min=1e-3)[..., None]
        H, W = self.config.image_size
        valid = (depth > 0.5) & (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)
        grid = torch.stack([uv[..., 0] / W * 2 - 1, uv[..., 1] / H * 2 - 1], -1)
        grid = torch.where(valid[..., None], grid, torch.zeros((), device=grid.device))
        B = projection.shape[0]
        return grid.reshape(B, N, K, 2), valid.reshape(B, N, K)

    def ray_to_bev(self, projection: Tensor) -> tuple[Tensor, Tensor]:
        # invert pixel = A·X + m for X at camera depth d:  X = A⁻¹ (d·(u, v, 1) - m)
        A, m = projection[:, :, :3], projection[:, :, 3]  # (B, 3, 3), (B, 3)
        A_inv = torch.linalg.inv(A)
        M = self.feature_uv.shape[0]
        uv1 = torch.cat([self.feature_uv, torch.ones(M, 1, device=A.device)], -1)  # (M, 3)
        scaled = self.depths[None, :, None] * uv1[:, None, :]  # (M, K, 3)
        xyz = torch.einsum("bij,bmkj->bmki", A_inv, scaled[None] - m[:, None, None, :])  # (B, M, K, 3)
        cfg = self.config
        fx = (xyz[..., 0] - cfg.x_range[0]) / (cfg.x_range[1] - cfg.x_range[0])
        fy = (xyz[..., 1] - cfg.y_range[0]) / (cfg.y_range[1] - cfg.y_range[0])
        valid = (fx >= 0) & (fx < 1) & (fy >= 0) & (fy < 1)
        # the BEV map is (B, D, X, Y): grid_sample's width axis is y, its height axis x
        grid = torch.stack([fy * 2 - 1, fx * 2 - 1], -1)
        grid = torch.where(valid[..., None], grid, torch.zeros((), device=grid.device))
        return grid, valid
