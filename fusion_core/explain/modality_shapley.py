"""Exact Shapley values over modalities, per sample.

The players are modalities; a coalition ``S`` is evaluated by running the model with only the modalities in
``S`` marked present (the data contract's ``present`` masks), so "removing" a modality is what the model
already does for a missing one — no baseline input has to be invented. The value of modality ``i`` is
(Shapley, 1953; Lundberg & Lee, 2017, "A Unified Approach to Interpreting Model Predictions", Eq. 8)

    φ_i = Σ_{S ⊆ N∖{i}} |S|! (M - |S| - 1)! / M! · (f(S ∪ {i}) - f(S)),

computed exactly from all ``2^M`` coalitions. The values add up to ``f(all) - f(none)`` (efficiency).
A modality a sample actually lacks stays absent in every coalition, so its value is exactly 0 for that sample.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["MAX_MODALITIES", "ShapleyOutput", "modality_shapley"]

MAX_MODALITIES = 6  # 2^6 = 64 model calls; beyond that use a sampling estimator

PresenceFn = Callable[[dict[str, Tensor]], Tensor]


class ShapleyOutput(NamedTuple):
    """Per-sample modality attributions.

    values: ``{modality: (B,) or (B, K)}`` Shapley values, in the units of ``fn``'s output.
    base:   ``(B,) or (B, K)`` ``f(none)``: the output with every explained modality absent.
    full:   ``(B,) or (B, K)`` ``f(all)``: the output with every modality the sample actually has.
    """

    values: dict[str, Tensor]
    base: Tensor
    full: Tensor


def modality_shapley(
    fn: PresenceFn,
    modalities: list[str],
    present: dict[str, Tensor] | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> ShapleyOutput:
    """Exact per-sample Shapley values of each modality for ``fn``.

    Args:
        fn: ``fn(present) -> (B,) or (B, K)`` where ``present`` is ``{modality: Bool(B,)}``; typically a closure
            running a model on fixed inputs with the given masks (in eval mode: ``fn`` must be deterministic).
        modalities: the players, 1 to :data:`MAX_MODALITIES` distinct names.
        present: the samples' actual ``{modality: Bool(B,)}``. A listed modality missing from it is present for
            every sample; entries for modalities not in ``modalities`` are passed to ``fn`` unchanged in every
            coalition (they are held fixed, not explained).
        batch_size: ``B``; needed when ``present`` is None or has no entry to read it from.
        device: where to build the masks when ``present`` gives none (default CPU).

    Returns:
        :class:`ShapleyOutput`; ``sum(values.values()) == full - base`` up to float round-off.
    """
    modalities = list(modalities)
    if not modalities:
        raise ValueError("modalities is empty: pass at least one modality name to attribute")
    if len(modalities) > MAX_MODALITIES:
        raise ValueError(
            f"exact Shapley values need 2^M model calls; M = {len(modalities)} exceeds the limit of "
            f"{MAX_MODALITIES} modalities (group modalities or explain a subset)"
        )
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities {modalities} repeat a name; list each modality once")
    present = dict(present or {})
    for name, mask in present.items():
        if mask.dim() != 1:
            raise ValueError(f"present[{name!r}] has shape {tuple(mask.shape)}; expected (B,)")
    sizes = {mask.shape[0] for mask in present.values()}
    if batch_size is not None:
        sizes.add(batch_size)
    if len(sizes) != 1:
        raise ValueError(
            "cannot tell the batch size: pass batch_size when present is None"
            if not sizes
            else f"present masks and batch_size disagree on the batch size: {sorted(sizes)}"
        )
    batch = sizes.pop()
    if device is None:
        device = next(iter(present.values())).device if present else torch.device("cpu")
    actual = {
        m: present[m].to(device=device, dtype=torch.bool)
        if m in present
        else torch.ones(batch, dtype=torch.bool, device=device)
        for m in modalities
    }
    held_fixed = {m: mask for m, mask in present.items() if m not in actual}
    off = torch.zeros(batch, dtype=torch.bool, device=device)

    num = len(modalities)
    outputs: list[Tensor] = []  # outputs[s] = f(coalition whose bit i is set for modalities[i] in it)
    with torch.no_grad():
        for coalition in range(2**num):
            masks = {m: actual[m] if coalition >> i & 1 else off for i, m in enumerate(modalities)}
            out = fn({**held_fixed, **masks})
            if not isinstance(out, Tensor) or out.dim() not in (1, 2) or out.shape[0] != batch:
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"fn must return a ({batch},) or ({batch}, K) tensor; got {shape}")
            outputs.append(out)
        table = torch.stack(outputs).double()  # (2^M, B) or (2^M, B, K)
        dtype = outputs[0].dtype if outputs[0].dtype.is_floating_point else torch.get_default_dtype()

        weights = [
            math.factorial(size) * math.factorial(num - size - 1) / math.factorial(num) for size in range(num)
        ]
        values: dict[str, Tensor] = {}
        for i, m in enumerate(modalities):
            phi = torch.zeros_like(table[0])
            for coalition in range(2**num):
                if coalition >> i & 1:
                    continue
                size = bin(coalition).count("1")
                phi += weights[size] * (table[coalition | 1 << i] - table[coalition])
            values[m] = phi.to(dtype)
    return ShapleyOutput(values, outputs[0].to(dtype), outputs[-1].to(dtype))
