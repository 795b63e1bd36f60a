"""A learned sigmoid gate over concatenated features."""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SigmoidGate"]


class SigmoidGate(nn.Module):
    """``g = sigmoid(W [x_1; ...; x_k] + b)``, elementwise in ``(0, 1)``.

    ``forward(*features)`` concatenates ``(..., D_i)`` tensors on the last axis (their widths must sum to
    ``in_dim``) and returns ``(..., out_dim)``. ``weight_std`` and ``bias_init`` set the starting gate: the
    defaults (small weights, bias 0) open every channel to about 0.5, see :class:`GatedSelfAttentionFusion`.
    """

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, weight_std: float = 0.02) -> None:
        super().__init__()
        if in_dim <= 0 or out_dim <= 0:
            raise ValueError(f"SigmoidGate widths must be positive; got in_dim={in_dim}, out_dim={out_dim}")
        if weight_std < 0:
            raise ValueError(f"weight_std must be >= 0; got {weight_std}")
        self.linear = nn.Linear(in_dim, out_dim)
        nn.init.normal_(self.linear.weight, std=weight_std)
        nn.init.constant_(self.linear.bias, bias_init)

    def forward(self, *features: Tensor) -> Tensor:
        return torch.sigmoid(self.linear(torch.cat(features, dim=-1)))
