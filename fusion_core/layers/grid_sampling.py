"""Reading one token map at places given by another: the local neighbourhoods of geometric cross-attention.

DeepInteraction++ (Yang et al., 2024, §3.2) lets each BEV cell attend only to the image features where its
pillar projects, and each image feature only to the BEV cells along its camera ray. Where those places are is
the caller's geometry (a calibration, a camera model); this file only reads a token map at them. Coordinates
follow ``F.grid_sample`` (``align_corners=False``): ``(x, y)`` in ``[-1, 1]``, x along the map's width.

Letters: B batch, D width, H/W map height and width, T tokens that read the map, K samples per token.
"""
from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor

__all__ = ["GridNeighbourhood", "sample_feature_map"]


def sample_feature_map(feature_map: Tensor, grid: Tensor) -> Tensor:
    """``feature_map (B, D, H, W)`` read bilinearly at ``grid (B, T, K, 2)`` → ``(B, T, K, D)``; zeros off the map."""
    if feature_map.dim() != 4 or grid.dim() != 4 or grid.shape[-1] != 2 or grid.shape[0] != feature_map.shape[0]:
        raise ValueError(
            f"need feature_map (B, D, H, W) and grid (B, T, K, 2) with the same B; "
            f"got {tuple(feature_map.shape)} and {tuple(grid.shape)}"
        )
    grid = grid.to(feature_map.dtype)
    sampled = F.grid_sample(feature_map, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # (B, D, T, K) -> (B, T, K, D)
    return sampled.permute(0, 2, 3, 1)


class GridNeighbourhood(NamedTuple):
    """Where each of ``T`` tokens reads ``K`` samples of another stream laid out as an ``(H, W)`` map.

    grid:         ``(B, T, K, 2)`` sample coordinates in ``[-1, 1]`` (``F.grid_sample`` convention).
    valid:        ``(B, T, K)`` bool, False for a sample that falls off the map or must not be read.
    source_shape: ``(H, W)``: the source's ``H·W`` tokens are its map in row-major order.
    """

    grid: Tensor
    valid: Tensor
    source_shape: tuple[int, int]

    def gather(self, source_tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``source_tokens (B, H·W, D)`` → samples ``(B, T, K, D)`` and their validity ``(B, T, K)``."""
        B, N, D = source_tokens.shape
        H, W = self.source_shape
        if N != H * W:
            raise ValueError(f"the source stream has {N} tokens but source_shape {self.source_shape} holds {H * W}")
        if self.valid.shape != self.grid.shape[:-1]:
            raise ValueError(
                f"valid has shape {tuple(self.valid.shape)}; expected {tuple(self.grid.shape[:-1])} "
                "(the grid's shape without its last axis)"
            )
        feature_map = source_tokens.transpose(1, 2).reshape(B, D, H, W)
        return sample_feature_map(feature_map, self.grid), self.valid.bool()

    def check(self, batch: int, num_tokens: int, num_samples: int, name: str) -> None:
        """Raise ``ValueError`` unless ``grid`` is ``(batch, num_tokens, num_samples, 2)``."""
        expected = (batch, num_tokens, num_samples, 2)
        if tuple(self.grid.shape) != expected:
            raise ValueError(
                f"neighbourhoods[{name!r}].grid has shape {tuple(self.grid.shape)}; expected {expected}: "
                f"one ({num_samples} samples × 2) grid per token of {name!r}"
            )
