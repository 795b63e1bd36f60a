"""A small vision transformer for one-channel images (chest radiographs, spectrograms).

Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words": non-overlapping patches are embedded by one strided
convolution, a learned class token and learned position embeddings are added, and a pre-norm transformer encoder
mixes the tokens. The class token's final state is the pooled image embedding.

``stem="conv"`` replaces the one-layer patchify with a stack of stride-2 3×3 convolutions that reaches the same
patch grid (Xiao et al., 2021, "Early Convolutions Help Transformers See Better"): on small data sets trained
from scratch, such as the synthetic radiographs of the medical recipe, it learns small local details (a calcified
nodule, wires) far faster than the plain patch embedding, and the encoder stays a ViT over the same tokens.

Letters: ``B`` batch, ``C`` channels, ``H``/``W`` image size, ``P`` patch size, ``N`` patches, ``D`` width.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["EncoderOutput", "ViTEncoder", "vit_tiny", "conv_stem"]


class EncoderOutput(NamedTuple):
    """What the modality encoders return.

    tokens: ``(B, N, D)`` token states (for an image: the class token first, then the patches).
    token_mask: ``(B, N)`` bool, True where a token is real.
    pooled: ``(B, D)`` one vector per sample.
    """

    tokens: Tensor
    token_mask: Tensor
    pooled: Tensor


def check_transformer_sizes(dim: int, depth: int, num_heads: int, mlp_ratio: float, dropout: float) -> None:
    """Raise ``ValueError`` with the fix for transformer sizes that cannot work."""
    if dim <= 0 or depth <= 0 or num_heads <= 0:
        raise ValueError(f"dim, depth and num_heads must be positive; got dim={dim}, depth={depth}, num_heads={num_heads}")
    if dim % num_heads:
        raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}; pick num_heads dividing dim")
    if mlp_ratio <= 0:
        raise ValueError(f"mlp_ratio must be > 0; got {mlp_ratio}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1); got {dropout}")


def transformer_stack(dim: int, depth: int, num_heads: int, mlp_ratio: float, dropout: float) -> nn.TransformerEncoder:
    """``depth`` pre-norm encoder layers (GELU feed-forward) with a final LayerNorm; batch-first."""
    layer = nn.TransformerEncoderLayer(
        dim, num_heads, dim_feedforward=int(dim * mlp_ratio), dropout=dropout, activation="gelu",
        batch_first=True, norm_first=True,
    )
    # the nested-tensor fast path is inference-only and warns with norm_first; the plain path is what trains
    return nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(dim), enable_nested_tensor=False)


def conv_stem(in_channels: int, dim: int, patch_size: int) -> nn.Sequential:
    """``log2(patch_size)`` stride-2 3×3 convolutions (BatchNorm, GELU; widths doubling up to ``dim``) and a final
    1×1 projection: ``(B, C, H, W) → (B, dim, H/P, W/P)``, the grid of a ``patch_size`` patchify.

    BatchNorm as in Xiao et al. (GroupNorm, which normalises each image on its own, and no normalisation both
    learned the synthetic radiographs' details markedly worse here). In training its batch statistics mix the
    images of a batch; in eval mode (validation, scoring) it uses running statistics, so one image, or a zero
    placeholder for an absent one, never changes another sample's output."""
    if patch_size < 2 or patch_size & (patch_size - 1):
        raise ValueError(f"stem='conv' needs a power-of-two patch_size >= 2; got {patch_size}")
    layers: list[nn.Module] = []
    steps = patch_size.bit_length() - 1
    width = max(8, dim // 2 ** (steps - 1))
    channels = in_channels
    for _ in range(steps):
        layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.GELU()]
        channels, width = width, min(dim, width * 2)
    layers.append(nn.Conv2d(channels, dim, 1))
    return nn.Sequential(*layers)


class ViTEncoder(nn.Module):
    """ViT over ``(B, C, H, W)`` images → :class:`EncoderOutput` with ``1 + (H/P)·(W/P)`` tokens of width ``dim``.

    Args:
        image_size: side of the square input (``H = W``); must be a multiple of ``patch_size``.
        patch_size: side of a square patch.
        in_channels: image channels (1 for a radiograph).
        dim, depth, num_heads, mlp_ratio, dropout: transformer sizes.
        stem: ``"patch"`` (one strided convolution, as in ViT) or ``"conv"`` (:func:`conv_stem`; power-of-two
            ``patch_size``).
    """

    def __init__(
        self,
        image_size: int = 64,
        patch_size: int = 8,
        in_channels: int = 1,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        stem: str = "patch",
    ) -> None:
        super().__init__()
        if stem not in ("patch", "conv"):
            raise ValueError(f"stem must be 'patch' or 'conv'; got {stem!r}")
        if patch_size <= 0 or image_size <= 0 or image_size % patch_size:
            raise ValueError(
                f"image_size={image_size} must be a positive multiple of patch_size={patch_size}; "
                "resize the images or pick a patch size that divides it"
            )
        if in_channels <= 0:
            raise ValueError(f"in_channels must be positive; got {in_channels}")
        check_transformer_sizes(dim, depth, num_heads, mlp_ratio, dropout)
        self.image_size, self.patch_size, self.in_channels, self.dim = image_size, patch_size, in_channels, dim
        self.num_patches = (image_size // patch_size) ** 2
        self.stem = stem
        self.patch_embed = (conv_stem(in_channels, dim, patch_size) if stem == "conv"
                            else nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.num_patches, dim) * 0.02)
        self.blocks = transformer_stack(dim, depth, num_heads, mlp_ratio, dropout)

    def forward(self, images: Tensor) -> EncoderOutput:
        expected = (self.in_channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"ViTEncoder expects (B, {', '.join(map(str, expected))}) images; got {tuple(images.shape)}")
        patches = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, N, D)
        cls = self.cls_token.expand(images.shape[0], -1, -1)  # (B, 1, D)
        x = torch.cat([cls, patches], dim=1) + self.pos_embed  # (B, 1 + N, D)
        x = self.blocks(x)
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return EncoderOutput(tokens=x, token_mask=mask, pooled=x[:, 0])


def vit_tiny(image_size: int = 64, patch_size: int = 8, in_channels: int = 1) -> ViTEncoder:
    """A 2-layer, 64-wide ViT that trains in minutes on a CPU."""
    return ViTEncoder(image_size, patch_size, in_channels, dim=64, depth=2, num_heads=4, mlp_ratio=2.0)
