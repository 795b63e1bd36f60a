"""Sequential fusion: MultiModN.

Swamy et al., "MultiModN — Multimodal, Multi-Task, Interpretable Modular Networks" (NeurIPS 2023), reference code
``EPFLiGHT/MultiModN`` (``multimodn/multimodn.py``). A trainable initial state is updated by one encoder per
modality in turn; a decoder reads every state, so every step yields a prediction.

Letters: B batch, D state width (= fused width), D_m width of modality m, K decoder outputs.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from fusion_core.batch import FusionOutput, PreparedInputs, masked_mean
from fusion_core.fusion.base import FusionOperator
from fusion_core.fusion.registry import register_fusion

__all__ = ["SequentialFusion", "ModalityStateEncoder"]


class ModalityStateEncoder(nn.Module):
    """``s_i = GRUCell(LayerNorm(Linear(x_i)), s_{i-1})``: one modality's state update.

    A GRU cell because its update gate learns, per state unit, how much this modality overwrites the state, and
    its tanh keeps the state bounded however many modalities are chained. ``x (B, D_m), state (B, D) -> (B, D)``.
    """

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_dim, dim), nn.LayerNorm(dim))
        self.cell = nn.GRUCell(dim, dim)

    def forward(self, state: Tensor, x: Tensor) -> Tensor:
        return self.cell(self.proj(x), state)


@register_fusion("sequential")
class SequentialFusion(FusionOperator):
    """MultiModN sequential fusion with per-sample skipping.

    ``s0`` is a trainable vector; for each modality ``m_i`` in ``order``, ``s_i = e_i(s_{i-1}, masked_mean(x_i))``.
    With ``skip="sample"`` a sample lacking ``m_i`` keeps its state (``s_i = s_{i-1}`` for that sample only), so a
    batch gives the same result as its samples run one by one. ``skip="batch"`` is the reference code's behaviour
    (``train_epoch``/``test`` skip an encoder whenever any value in the batch is NaN): the encoder is skipped for
    the whole batch as soon as one sample lacks the modality, in train and eval mode — under MNAR such a modality
    is then almost never used. A linear decoder reads every state: ``steps = [dec(s0), dec(s1), ..., dec(s_M)]``
    (the caller averages the task loss over all of them, as MultiModN does); ``pooled = s_M``.

    Per-sample skipping alone does not make a model robust to missing-not-at-random data — the state can learn
    absence as a label signal — so train it with :class:`fusion_core.missing.MissingnessBalancer`.

    Args:
        order: modality visiting order (default: sorted names); ``last_order`` records the order of the last call.
        shuffle_order: visit the modalities in a fresh random order at every training forward (eval uses ``order``).
        skip: ``"sample"`` (default) or ``"batch"`` (reference MultiModN).
        num_outputs: decoder outputs ``K`` per state.

    Shapes: ``tokens {m: (B, N_m, D_m)}`` → ``pooled (B, dim)``, ``steps`` list of ``M + 1`` tensors ``(B, K)``,
    ``aux_loss ()`` = 0, ``tokens None``.
    """

    def __init__(
        self,
        modality_dims: dict[str, int],
        dim: int,
        order: list[str] | None = None,
        shuffle_order: bool = False,
        skip: Literal["sample", "batch"] = "sample",
        num_outputs: int = 1,
    ) -> None:
        super().__init__(modality_dims, dim)
        order = self.resolve_order(order)
        if skip not in ("sample", "batch"):
            raise ValueError(f"skip must be 'sample' (per-sample skipping) or 'batch' (reference MultiModN); got {skip!r}")
        if not isinstance(num_outputs, int) or isinstance(num_outputs, bool) or num_outputs <= 0:
            raise ValueError(f"num_outputs must be a positive int (decoder outputs per state); got {num_outputs!r}")
        self.order = list(order)
        self.shuffle_order = bool(shuffle_order)
        self.skip = skip
        self.num_outputs = num_outputs
        self.last_order: list[str] = list(order)
        # Small random rather than zeros: a zero s0 would give the first encoder's recurrent weights no gradient.
        self.initial_state = nn.Parameter(0.1 * torch.randn(dim))
        # A ModuleList indexed like self.modalities, so any modality name (even with dots) works.
        self.encoders = nn.ModuleList(ModalityStateEncoder(self.modality_dims[m], dim) for m in self.modalities)
        self.decoder = nn.Linear(dim, num_outputs)

    def visit_order(self) -> list[str]:
        """The order of this forward: a random permutation in training with ``shuffle_order``, else ``order``."""
        if self.training and self.shuffle_order:
            return [self.order[i] for i in torch.randperm(len(self.order)).tolist()]
        return list(self.order)

    def fuse(self, inputs: PreparedInputs) -> FusionOutput:
        ref = inputs.tokens[self.modalities[0]]
        state = self.initial_state.to(ref.dtype).expand(ref.shape[0], -1)  # (B, D)
        steps = [self.decoder(state)]  # [(B, K)]
        order = self.visit_order()
        self.last_order = order
        for name in order:
            present = inputs.present[name]  # (B,)
            encoder = self.encoders[self.modalities.index(name)]
            if self.skip == "batch":
                if bool(present.all()):
                    state = encoder(state, masked_mean(inputs.tokens[name], inputs.mask[name]))
            else:
                updated = encoder(state, masked_mean(inputs.tokens[name], inputs.mask[name]))  # (B, D)
                state = torch.where(present[:, None], updated, state)
            steps.append(self.decoder(state))
        return FusionOutput(pooled=state, tokens=None, aux_loss=self.zero_loss(state), steps=steps)
