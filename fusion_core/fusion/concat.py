"""Concatenation baseline: pool each modality, impute the absent ones, concatenate, project.

This is the parallel "late/early concat" baseline every multimodal paper compares against (e.g. the
concatenation baselines of TorchMultimodal's ``ConcatFusionModule``), made safe for missing modalities.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fusion_core.batch import FusionOutput, PreparedInputs, masked_mean
from fusion_core.fusion.base import FusionOperator
from fusion_core.fusion.registry import register_fusion
from fusion_core.layers.mlp import MLP

__all__ = ["ConcatFusion"]

_IMPUTE_CHOICES = ("zeros", "learned")


@register_fusion("concat")
class ConcatFusion(FusionOperator):
    """Masked mean per modality → impute absent → concat (sorted order) → ``Linear → GELU → Linear``.

    Input: ``tokens {m: (B, N_m, D_m)}`` plus masks (see ``fusion_core.batch``). Output ``pooled (B, dim)``;
    no token sets, no auxiliary loss.

    Args:
        modality_dims: ``{m: D_m}`` feature width per modality.
        dim: output width.
        impute: what an absent modality contributes in place of its pooled vector: ``"learned"`` (default) —
            a trained vector per modality, so "absent" is distinguishable from "present with mean 0";
            ``"zeros"`` — zeros.
        hidden_dim: width of the projection's hidden layer (default ``dim``).
        dropout: dropout after the hidden activation.
    """

    def __init__(
        self,
        modality_dims: dict[str, int],
        dim: int,
        impute: str = "learned",
        hidden_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(modality_dims, dim)
        if impute not in _IMPUTE_CHOICES:
            raise ValueError(f"impute must be one of {_IMPUTE_CHOICES}; got {impute!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        hidden_dim = dim if hidden_dim is None else hidden_dim
        if hidden_dim <= 0:
            raise ValueError(f"hidden_dim must be a positive int; got {hidden_dim}")
        self.impute = impute
        # A list in sorted modality order rather than a dict: modality names may contain '.', which
        # nn.ParameterDict keys cannot.
        self.missing_embeddings = (
            nn.ParameterList([nn.Parameter(torch.randn(d) * 0.02) for d in self.modality_dims.values()])
            if impute == "learned"
            else None
        )
        self.project = MLP(sum(self.modality_dims.values()), [hidden_dim], dim, dropout=dropout)

    def fuse(self, inputs: PreparedInputs) -> FusionOutput:
        pooled_parts: list[Tensor] = []
        for i, name in enumerate(self.modalities):
            pooled = masked_mean(inputs.tokens[name], inputs.mask[name])  # (B, D_m); zeros when absent
            if self.missing_embeddings is not None:
                pooled = torch.where(inputs.present[name][:, None], pooled, self.missing_embeddings[i])
            pooled_parts.append(pooled)
        fused = self.project(torch.cat(pooled_parts, dim=-1))  # (B, dim)
        return FusionOutput(pooled=fused, tokens=None, aux_loss=self.zero_loss(fused), steps=None)
