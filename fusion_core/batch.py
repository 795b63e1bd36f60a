"""The data contract every fusion operator speaks (see DESIGN.md).

- ``tokens: dict[str, Tensor]``      ``(B, N_m, D_m)`` per modality ``m`` (a pooled vector is ``N_m = 1``)
- ``token_mask: dict[str, Tensor]``  ``(B, N_m)`` bool, True where a token is real (padding is False)
- ``present: dict[str, Tensor]``     ``(B,)`` bool, False where the sample has no such modality at all

Operators return a :class:`FusionOutput`. An absent modality or a padded token must never reach the
output through its values, so :func:`prepare_inputs` replaces them with zeros (``torch.where``, not a
multiplication: ``NaN * 0`` is NaN) before an operator sees them.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["FusionOutput", "PreparedInputs", "prepare_inputs", "masked_mean"]


class FusionOutput(NamedTuple):
    """What every fusion operator returns.

    pooled:   ``(B, dim)`` fused representation.
    tokens:   per-modality updated tokens ``{m: (B, N_m, dim)}`` for operators that keep token sets, else None.
    aux_loss: scalar tensor added to the task loss by the caller (0 when the operator has none).
    steps:    per-state predictions ``[(B, num_outputs), ...]`` for sequential fusion, else None.
    """

    pooled: Tensor
    tokens: dict[str, Tensor] | None
    aux_loss: Tensor
    steps: list[Tensor] | None


class PreparedInputs(NamedTuple):
    """Validated inputs: padded/absent values zeroed, ``mask = token_mask & present``."""

    tokens: dict[str, Tensor]  # (B, N_m, D_m), finite wherever mask is False
    mask: dict[str, Tensor]  # (B, N_m) bool, real token of a present modality
    present: dict[str, Tensor]  # (B,) bool, present and with at least one real token


def prepare_inputs(
    modality_dims: dict[str, int],
    tokens: dict[str, Tensor],
    token_mask: dict[str, Tensor] | None = None,
    present: dict[str, Tensor] | None = None,
) -> PreparedInputs:
    """Check the contract and build effective masks.

    A modality named in ``modality_dims`` but missing from ``tokens`` is absent for every sample.
    ``token_mask`` and ``present`` default to all True. A modality whose tokens are all padding counts as
    absent for that sample. Raises ``ValueError`` naming the modality and the fix on shape mismatches.
    """
    token_mask = token_mask or {}
    present = present or {}
    unknown = sorted(set(tokens) - set(modality_dims))
    if unknown:
        raise ValueError(
            f"tokens has modalities {unknown} that this operator was not built for; "
            f"known modalities are {sorted(modality_dims)} (pass them in modality_dims)"
        )
    if not tokens:
        raise ValueError("tokens is empty: pass at least one modality to infer the batch size")
    ref = next(iter(tokens.values()))
    if ref.dim() != 3:
        raise ValueError(f"tokens must be (B, N, D) tensors; got shape {tuple(ref.shape)}")
    batch, device, dtype = ref.shape[0], ref.device, ref.dtype
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()

    out_tokens, out_mask, out_present = {}, {}, {}
    for name in sorted(modality_dims):
        dim = modality_dims[name]
        if name not in tokens:
            out_tokens[name] = torch.zeros(batch, 1, dim, device=device, dtype=dtype)
            out_mask[name] = torch.zeros(batch, 1, dtype=torch.bool, device=device)
            out_present[name] = torch.zeros(batch, dtype=torch.bool, device=device)
            continue
        x = tokens[name]
        if x.dim() != 3 or x.shape[0] != batch or x.shape[-1] != dim:
            raise ValueError(
                f"tokens[{name!r}] has shape {tuple(x.shape)}; expected ({batch}, N, {dim}) — "
                f"a (B, N, D) tensor with D = modality_dims[{name!r}] (use x.unsqueeze(1) for a pooled vector)"
            )
        n = x.shape[1]
        m = token_mask.get(name)
        if m is None:
            m = torch.ones(batch, n, dtype=torch.bool, device=device)
        elif m.shape != (batch, n):
            raise ValueError(f"token_mask[{name!r}] has shape {tuple(m.shape)}; expected ({batch}, {n})")
        p = present.get(name)
        if p is None:
            p = torch.ones(batch, dtype=torch.bool, device=device)
        elif p.shape != (batch,):
            raise ValueError(f"present[{name!r}] has shape {tuple(p.shape)}; expected ({batch},)")
        mask = m.bool() & p.bool()[:, None]
        out_mask[name] = mask
        out_present[name] = mask.any(dim=1)
        out_tokens[name] = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=device))
    return PreparedInputs(out_tokens, out_mask, out_present)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x (B, N, D)`` over tokens where ``mask (B, N)`` is True; zeros where none is."""
    weights = mask.to(x.dtype)[..., None]  # (B, N, 1)
    total = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim=1)
    return total / weights.sum(dim=1).clamp_min(1.0)
