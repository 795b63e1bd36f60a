"""Base class shared by the fusion operators."""
from __future__ import annotations

import abc

import torch
from torch import Tensor, nn

from fusion_core.batch import FusionOutput, PreparedInputs, prepare_inputs

__all__ = ["FusionOperator"]


class FusionOperator(nn.Module, abc.ABC):
    """Common constructor checks and input preparation.

    Subclasses implement :meth:`fuse` on :class:`PreparedInputs`; :meth:`forward` keeps the public
    signature ``fusion(tokens, token_mask, present) -> FusionOutput``. Modalities are always visited in
    sorted name order (as TorchMultimodal does) unless an operator takes an explicit ``order``.
    """

    def __init__(self, modality_dims: dict[str, int], dim: int) -> None:
        super().__init__()
        if not isinstance(modality_dims, dict) or not modality_dims:
            raise ValueError("modality_dims must be a non-empty dict like {'image': 512, 'text': 768}")
        for name, d in modality_dims.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"modality names must be non-empty strings; got {name!r}")
            if not isinstance(d, int) or isinstance(d, bool) or d <= 0:
                raise ValueError(f"modality_dims[{name!r}] must be a positive int feature size; got {d!r}")
        if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
            raise ValueError(f"dim must be a positive int (the fused width); got {dim!r}")
        self.modality_dims = dict(sorted(modality_dims.items()))
        self.modalities = list(self.modality_dims)
        self.dim = dim

    def forward(
        self,
        tokens: dict[str, Tensor],
        token_mask: dict[str, Tensor] | None = None,
        present: dict[str, Tensor] | None = None,
    ) -> FusionOutput:
        return self.fuse(prepare_inputs(self.modality_dims, tokens, token_mask, present))

    @abc.abstractmethod
    def fuse(self, inputs: PreparedInputs) -> FusionOutput:
        """Fuse validated inputs (absent values already zeroed)."""

    def resolve_order(self, order: list[str] | tuple[str, ...] | None, what: str = "") -> list[str]:
        """``order`` checked to be a permutation of the modality names; None means sorted names."""
        if order is None:
            return list(self.modalities)
        if (
            not isinstance(order, (list, tuple))
            or not all(isinstance(m, str) for m in order)
            or sorted(order) != self.modalities
        ):
            raise ValueError(f"order must be a permutation of the modality names {self.modalities}{what}; got {order!r}")
        return list(order)

    @staticmethod
    def zero_loss(like: Tensor) -> Tensor:
        return torch.zeros((), dtype=like.dtype, device=like.device)
