"""Dual-stream representational interaction (DeepInteraction++).

Yang et al. (2024, "DeepInteraction++: Multi-Modality Interaction for Autonomous Driving", §3.2
"Representational interaction"): two modality-specific streams are kept from input to output — nothing is
merged early — and each encoder layer updates both in parallel, each stream by cross-attention to the other
stream's previous state. A stream may attend to every token of the other (global), or, as the paper's
camera-LiDAR encoder does, only to the samples of the other stream's map at places its geometry gives
(:class:`~fusion_core.layers.grid_sampling.GridNeighbourhood`, e.g. where a BEV pillar projects into the image
or the BEV cells along a camera ray), each sample tagged with a learned embedding of its index (its height
or depth).

Letters: B batch, N_m tokens of stream m, K samples per token of a local neighbourhood, D width.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fusion_core.batch import FusionOutput, PreparedInputs, masked_mean, prepare_inputs
from fusion_core.fusion.base import FusionOperator
from fusion_core.fusion.cross_attention import check_transformer_options
from fusion_core.fusion.registry import register_fusion
from fusion_core.layers.cross_attention_block import CrossAttentionBlock
from fusion_core.layers.grid_sampling import GridNeighbourhood

__all__ = ["InteractionFusion", "InteractionLayer"]


class InteractionLayer(nn.Module):
    """One layer of representational interaction between two streams of width ``dim``.

    ``forward(states [(B, N_0, dim), (B, N_1, dim)], masks [(B, N_0), (B, N_1)], neighbourhoods [nb_0, nb_1])``:
    stream ``i`` is a :class:`CrossAttentionBlock` (attention to stream ``1 - i``, then a feed-forward) whose keys
    are every real token of the other stream when ``nb_i`` is None, else the ``K`` samples ``nb_i`` reads from the
    other stream's map (plus ``sample_embeddings[i]``). Both streams update from the same previous states.
    A position whose mask is False (padding, or a stream absent for the sample) keeps its state exactly, and an
    absent stream's keys are masked, so it feeds nothing to the other stream.
    """

    def __init__(
        self, dim: int, num_heads: int, ffn_mult: int, dropout: float, samples_per_token: tuple[int | None, int | None]
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([CrossAttentionBlock(dim, num_heads, ffn_mult, dropout=dropout) for _ in range(2)])
        # keyed by stream index: a stream with global attention has no sample embedding
        self.sample_embeddings = nn.ParameterDict(
            {str(i): nn.Parameter(torch.randn(k, dim) * 0.02) for i, k in enumerate(samples_per_token) if k}
        )  # each (K_i, dim)

    def forward(
        self, states: list[Tensor], masks: list[Tensor], neighbourhoods: list[GridNeighbourhood | None]
    ) -> list[Tensor]:
        present = [mask.any(dim=1) for mask in masks]  # each (B,)
        updated = []
        for i, x in enumerate(states):
            j = 1 - i
            if not present[i].any():  # absent for every sample: nothing to update
                updated.append(x)
                continue
            neighbourhood = neighbourhoods[i]
            if neighbourhood is None:
                out = self.blocks[i](x, states[j], masks[j]).out
            else:
                B, N, D = x.shape
                embedding = self.sample_embeddings[str(i)]  # (K, D)
                K = embedding.shape[0]
                if present[j].any():
                    samples, valid = neighbourhood.gather(states[j])  # (B, N, K, D), (B, N, K)
                    valid = valid & present[j][:, None, None]
                else:  # the other stream is missing from the inputs altogether: no key anywhere
                    samples = x.new_zeros(B, N, K, D)
                    valid = torch.zeros(B, N, K, dtype=torch.bool, device=x.device)
                # every token is its own query over its own K keys: (B, N, ·) → (B·N, ·)
                out = self.blocks[i](
                    x.reshape(B * N, 1, D), (samples + embedding).reshape(B * N, K, D), valid.reshape(B * N, K)
                ).out.reshape(B, N, D)
            updated.append(torch.where(masks[i][..., None], out, x))
        return updated


@register_fusion("interaction")
class InteractionFusion(FusionOperator):
    """DeepInteraction++ representational interaction between exactly two kept streams.

    Input ``tokens {m: (B, N_m, D_m)}`` for the two modalities of ``modality_dims``, with the contract's
    masks. Each stream is projected to ``dim`` (``project_inputs``; off, the streams must already have width
    ``dim`` and pass through as they are, so the operator can sit inside a backbone), then ``num_layers``
    :class:`InteractionLayer` s update both streams from each other. ``samples_per_token {m: K}`` makes stream
    ``m`` attend locally: ``forward(..., neighbourhoods={m: GridNeighbourhood})`` says where each of its tokens
    reads ``K`` samples of the other stream; the other stream's tokens must then form that neighbourhood's
    ``source_shape`` map (row-major).

    Per sample, a stream that is absent is left unchanged and feeds nothing to the other; a present stream whose
    partner is absent gets only its feed-forward updates.

    Output: ``tokens {m: (B, N_m, dim)}``, the final streams (padded positions and absent streams are zero);
    ``pooled (B, dim)`` = mean over the sample's present streams of each one's masked token mean (zeros for a
    sample with neither); ``aux_loss`` 0.
    """

    def __init__(
        self,
        modality_dims: dict[str, int],
        dim: int,
        num_layers: int = 2,
        num_heads: int = 4,
        ffn_mult: int = 4,
        dropout: float = 0.0,
        project_inputs: bool = True,
        samples_per_token: dict[str, int] | None = None,
    ) -> None:
        super().__init__(modality_dims, dim)
        if len(self.modalities) != 2:
            raise ValueError(
                f"interaction fusion keeps exactly two streams; modality_dims has {len(self.modalities)} modalities "
                f"{self.modalities} (use 'cross_attention' for another number)"
            )
        check_transformer_options(dim, num_layers, num_heads, ffn_mult, dropout)
        samples_per_token = dict(samples_per_token or {})
        unknown = sorted(set(samples_per_token) - set(self.modalities))
        if unknown:
            raise ValueError(f"samples_per_token names {unknown}; it may only name the streams {self.modalities}")
        for m, k in samples_per_token.items():
            if not isinstance(k, int) or isinstance(k, bool) or k < 1:
                raise ValueError(f"samples_per_token[{m!r}] must be an int >= 1 (samples read per token); got {k!r}")
        if not project_inputs and any(d != dim for d in self.modality_dims.values()):
            raise ValueError(
                f"project_inputs=False needs every stream at the fused width dim={dim}; got {self.modality_dims} "
                "(set project_inputs=True to project them)"
            )
        self.samples_per_token = samples_per_token
        self.input_projs = nn.ModuleList(
            [nn.Linear(d, dim) if project_inputs else nn.Identity() for d in self.modality_dims.values()]
        )
        per_stream = (samples_per_token.get(self.modalities[0]), samples_per_token.get(self.modalities[1]))
        self.layers = nn.ModuleList(
            [InteractionLayer(dim, num_heads, ffn_mult, dropout, per_stream) for _ in range(num_layers)]
        )

    def forward(
        self,
        tokens: dict[str, Tensor],
        token_mask: dict[str, Tensor] | None = None,
        present: dict[str, Tensor] | None = None,
        neighbourhoods: dict[str, GridNeighbourhood] | None = None,
    ) -> FusionOutput:
        return self.fuse(prepare_inputs(self.modality_dims, tokens, token_mask, present), neighbourhoods)

    def fuse(self, inputs: PreparedInputs, neighbourhoods: dict[str, GridNeighbourhood] | None = None) -> FusionOutput:
        neighbourhoods = dict(neighbourhoods or {})
        local = self._check_neighbourhoods(inputs, neighbourhoods)
        masks = [inputs.mask[m] for m in self.modalities]
        states = []
        for m, proj, mask in zip(self.modalities, self.input_projs, masks):
            x = proj(inputs.tokens[m])  # (B, N_m, dim)
            states.append(torch.where(mask[..., None], x, x.new_zeros(())))  # non-real positions: zero, never updated
        for layer in self.layers:
            states = layer(states, masks, local)
        out_tokens = dict(zip(self.modalities, states))
        per_stream = torch.stack([masked_mean(x, mask) for x, mask in zip(states, masks)], dim=1)  # (B, 2, dim)
        present = torch.stack([inputs.present[m] for m in self.modalities], dim=1)  # (B, 2)
        pooled = masked_mean(per_stream, present)
        return FusionOutput(pooled=pooled, tokens=out_tokens, aux_loss=self.zero_loss(pooled), steps=None)

    def _check_neighbourhoods(
        self, inputs: PreparedInputs, neighbourhoods: dict[str, GridNeighbourhood]
    ) -> list[GridNeighbourhood | None]:
        extra = sorted(set(neighbourhoods) - set(self.samples_per_token))
        if extra:
            raise ValueError(
                f"neighbourhoods given for {extra}, which attend globally; "
                "name them in samples_per_token to attend locally"
            )
        local: list[GridNeighbourhood | None] = []
        for m in self.modalities:
            if m not in self.samples_per_token:
                local.append(None)
                continue
            if m not in neighbourhoods:
                raise ValueError(
                    f"stream {m!r} attends locally (samples_per_token); "
                    f"pass neighbourhoods={{{m!r}: GridNeighbourhood(...)}}"
                )
            neighbourhood = neighbourhoods[m]
            if inputs.present[m].any():  # a stream missing from the inputs reads nothing, whatever its grid
                batch, num_tokens = inputs.mask[m].shape
                neighbourhood.check(batch, num_tokens, self.samples_per_token[m], m)
            local.append(neighbourhood)
        return local
