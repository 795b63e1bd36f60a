"""Encoders of the medical recipe: ViT and ECG patch transformer (the text encoders: ``test_text*.py``)."""
from __future__ import annotations

import pytest
import torch

from fusion_core.encoders.image import ViTEncoder
from fusion_core.encoders.signal1d import SignalPatchEncoder

TINY = dict(dim=16, depth=1, num_heads=2, mlp_ratio=2.0)


@pytest.mark.parametrize("batch", [1, 2])
def test_vit_shapes(batch):
    encoder = ViTEncoder(image_size=16, patch_size=4, in_channels=1, **TINY)
    out = encoder(torch.randn(batch, 1, 16, 16))
    assert out.tokens.shape == (batch, 1 + 16, 16)
    assert out.pooled.shape == (batch, 16)
    assert out.token_mask.all()


@pytest.mark.parametrize("batch", [1, 2])
def test_signal_shapes_and_length_mask(batch):
    encoder = SignalPatchEncoder(num_leads=12, num_samples=40, patch_size=10, **TINY)
    lengths = torch.tensor([40, 15][:batch])
    out = encoder(torch.randn(batch, 12, 40), lengths)
    assert out.tokens.shape == (batch, 5, 16)
    if batch == 2:
        # 15 samples cover patches starting at 0 and 10: class token + 2 patches are real
        assert out.token_mask[1].tolist() == [True, True, True, False, False]
        assert torch.all(out.tokens[1, 3:] == 0)


def test_signal_padding_values_do_not_leak():
    torch.manual_seed(0)
    encoder = SignalPatchEncoder(num_leads=12, num_samples=40, patch_size=10, **TINY).eval()
    signal = torch.randn(1, 12, 40)
    noisy = signal.clone()
    noisy[..., 20:] = 1e4  # beyond the recording's 20 real samples
    lengths = torch.tensor([20])
    a, b = encoder(signal, lengths), encoder(noisy, lengths)
    torch.testing.assert_close(a.pooled, b.pooled)


def test_conv_stem_keeps_the_patch_grid_and_one_image_never_changes_another_in_eval():
    torch.manual_seed(0)
    encoder = ViTEncoder(image_size=32, patch_size=8, in_channels=1, stem="conv", **TINY)
    out = encoder(torch.randn(3, 1, 32, 32))
    assert out.tokens.shape == (3, 1 + 16, 16) and out.pooled.shape == (3, 16)
    strides = [m.stride[0] for m in encoder.patch_embed if isinstance(m, torch.nn.Conv2d)]
    assert strides == [2, 2, 2, 1]  # log2(8) stride-2 convolutions, then the 1x1 projection
    encoder.eval()  # BatchNorm on running statistics: rows are independent
    images = torch.randn(2, 1, 32, 32)
    other = images.clone()
    other[1] = 0.0  # a zero placeholder for an absent image
    torch.testing.assert_close(encoder(images).pooled[0], encoder(other).pooled[0])


@pytest.mark.parametrize("make", [
    lambda: (ViTEncoder(16, 4, 1, **TINY), (torch.randn(2, 1, 16, 16),)),
    lambda: (ViTEncoder(16, 4, 1, stem="conv", **TINY), (torch.randn(2, 1, 16, 16),)),
    lambda: (SignalPatchEncoder(12, 40, 10, **TINY), (torch.randn(2, 12, 40),)),
])
def test_every_parameter_gets_a_gradient(make):
    torch.manual_seed(0)
    encoder, inputs = make()
    out = encoder(*inputs)
    (out.tokens.pow(2).mean() + out.pooled.sum()).backward()
    missing = [n for n, p in encoder.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_seeded_regression():
    torch.manual_seed(1234)
    encoder = ViTEncoder(16, 8, 1, **TINY).eval()
    torch.manual_seed(0)
    value = encoder(torch.rand(1, 1, 16, 16)).pooled
    torch.manual_seed(1234)
    again = ViTEncoder(16, 8, 1, **TINY).eval()
    torch.manual_seed(0)
    torch.testing.assert_close(value, again(torch.rand(1, 1, 16, 16)).pooled)
    assert value.shape == (1, 16) and torch.isfinite(value).all()
    # LayerNorm output: zero mean, unit variance per sample
    assert abs(float(value.mean())) < 1e-4


@pytest.mark.parametrize("kwargs, text", [
    (dict(image_size=30, patch_size=8), "multiple of patch_size"),
    (dict(dim=30, num_heads=4), "not divisible"),
    (dict(dropout=1.0), "dropout"),
    (dict(stem="resnet"), "stem must be"),
    (dict(image_size=24, patch_size=6, stem="conv"), "power-of-two"),
])
def test_vit_ill_args(kwargs, text):
    with pytest.raises(ValueError, match=text):
        ViTEncoder(**kwargs)


def test_wrong_input_shapes_are_explained():
    with pytest.raises(ValueError, match=r"expects \(B, 12, 40\)"):
        SignalPatchEncoder(12, 40, 10, **TINY)(torch.randn(1, 8, 40))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        SignalPatchEncoder(12, 45, 10)
