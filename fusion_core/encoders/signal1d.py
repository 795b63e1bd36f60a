"""A transformer over Conv1d patches of a multi-lead signal (a 12-lead ECG).

The leads are stacked as channels; one strided ``Conv1d`` cuts time into non-overlapping patches and embeds all
leads of a patch together, so a token is a time window seen by every lead (as in ECG transformers such as
MoRE's ECG branch). A learned class token pools the sequence. Recordings shorter than the model's length are
padded at the end; a ``lengths`` argument masks the padded patches out of attention.

Letters: ``B`` batch, ``L`` leads, ``T`` samples, ``P`` patch length, ``N = T / P`` patches, ``D`` width.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fusion_core.encoders.image import EncoderOutput, check_transformer_sizes, transformer_stack

__all__ = ["SignalPatchEncoder", "ecg_tiny"]


class SignalPatchEncoder(nn.Module):
    """``(B, L, T)`` signals → :class:`EncoderOutput` with ``1 + T/P`` tokens of width ``dim``.

    Args:
        num_leads: channels ``L`` (12 for a standard ECG).
        num_samples: ``T``, the samples per recording the model is built for; a multiple of ``patch_size``.
        patch_size: samples per patch ``P``.
        dim, depth, num_heads, mlp_ratio, dropout: transformer sizes.
    """

    def __init__(
        self,
        num_leads: int = 12,
        num_samples: int = 1000,
        patch_size: int = 50,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_leads <= 0:
            raise ValueError(f"num_leads must be positive; got {num_leads}")
        if patch_size <= 0 or num_samples <= 0 or num_samples % patch_size:
            raise ValueError(
                f"num_samples={num_samples} must be a positive multiple of patch_size={patch_size}; "
                "resample or crop the signal, or pick a patch size that divides it"
            )
        check_transformer_sizes(dim, depth, num_heads, mlp_ratio, dropout)
        self.num_leads, self.num_samples, self.patch_size, self.dim = num_leads, num_samples, patch_size, dim
        self.num_patches = num_samples // patch_size
        self.patch_embed = nn.Conv1d(num_leads, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.num_patches, dim) * 0.02)
        self.blocks = transformer_stack(dim, depth, num_heads, mlp_ratio, dropout)

    def forward(self, signals: Tensor, lengths: Tensor | None = None) -> EncoderOutput:
        """``signals (B, L, T)``; ``lengths (B,)`` real samples per recording (default: all ``T``)."""
        if signals.dim() != 3 or tuple(signals.shape[1:]) != (self.num_leads, self.num_samples):
            raise ValueError(
                f"SignalPatchEncoder expects (B, {self.num_leads}, {self.num_samples}) signals; got {tuple(signals.shape)}"
            )
        batch = signals.shape[0]
        patches = self.patch_embed(signals).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(batch, -1, -1), patches], dim=1) + self.pos_embed  # (B, 1 + N, D)
        mask = torch.ones(batch, 1 + self.num_patches, dtype=torch.bool, device=signals.device)
        if lengths is not None:
            # a patch is real when it starts before the recording ends; the class token always is
            starts = torch.arange(self.num_patches, device=signals.device) * self.patch_size  # (N,)
            mask[:, 1:] = starts[None, :] < lengths.to(signals.device)[:, None]
        x = self.blocks(x, src_key_padding_mask=~mask)
        x = x.masked_fill(~mask[..., None], 0.0)
        return EncoderOutput(tokens=x, token_mask=mask, pooled=x[:, 0])


def ecg_tiny(num_samples: int = 1000, patch_size: int = 50) -> SignalPatchEncoder:
    """A 2-layer, 64-wide ECG transformer for 12 leads (10 s at 100 Hz by default)."""
    return SignalPatchEncoder(12, num_samples, patch_size, dim=64, depth=2, num_heads=4, mlp_ratio=2.0)
