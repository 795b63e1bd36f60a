"""Feed-forward blocks."""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MLP", "FeedForward"]


class MLP(nn.Sequential):
    """``Linear → act → (dropout) → ... → Linear`` with the given hidden widths."""

    def __init__(
        self,
        in_dim: int,
        hidden_dims: list[int] | tuple[int, ...],
        out_dim: int,
        dropout: float = 0.0,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        if in_dim <= 0 or out_dim <= 0 or any(h <= 0 for h in hidden_dims):
            raise ValueError(f"MLP widths must be positive; got in={in_dim}, hidden={hidden_dims}, out={out_dim}")
        layers: list[nn.Module] = []
        prev = in_dim
        for h in hidden_dims:
            layers += [nn.Linear(prev, h), activation()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            prev = h
        layers.append(nn.Linear(prev, out_dim))
        super().__init__(*layers)


class FeedForward(nn.Module):
    """Transformer FFN: ``Linear(dim, mult·dim) → GELU → Dropout → Linear(mult·dim, dim)``."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = MLP(dim, [dim * mult], dim, dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
