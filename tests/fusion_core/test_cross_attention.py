import pytest
import torch

from fusion_core.batch import masked_mean
from fusion_core.fusion import create_fusion
from fusion_core.fusion.cross_attention import CrossAttentionFusion

DIMS = {"audio": 6, "image": 5, "text": 4}


def build(num_layers=2, seed=0, dims=DIMS):
    torch.manual_seed(seed)
    return create_fusion("cross_attention", modality_dims=dims, dim=8, num_layers=num_layers).eval()


def inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = {m: torch.randn(batch, 3, d, generator=g) for m, d in DIMS.items()}
    token_mask = {m: torch.ones(batch, 3, dtype=torch.bool) for m in DIMS}
    token_mask["audio"][:, 2] = False
    return tokens, token_mask, {m: torch.ones(batch, dtype=torch.bool) for m in DIMS}


def test_tokens_attend_across_modalities_but_ignore_own_padding():
    fusion = build()
    tokens, token_mask, present = inputs()
    with torch.no_grad():
        base = fusion(tokens, token_mask, present).tokens["audio"][:, :2]
        other = fusion(dict(tokens, image=tokens["image"] + 1.0), token_mask, present).tokens["audio"][:, :2]
        padded = dict(tokens, audio=tokens["audio"].clone())
        padded["audio"][:, 2] = 1e3
        same = fusion(padded, token_mask, present).tokens["audio"][:, :2]
        out = fusion(tokens, token_mask, present)
    assert (base - other).abs().max() > 1e-3
    torch.testing.assert_close(same, base)
    assert torch.equal(out.tokens["audio"][:, 2], torch.zeros(2, 8))  # padded output positions are zero


def test_own_tokens_are_keys_only_when_every_other_modality_is_absent():
    # One layer isolates the key sets: audio token 0 can depend on audio token 1 only through self-attention.
    fusion = build(num_layers=1)
    tokens, token_mask, present = inputs()
    alone = dict(present, image=torch.tensor([True, False]), text=torch.tensor([True, False]))
    moved = dict(tokens, audio=tokens["audio"].clone())
    moved["audio"][:, 1] += 1.0
    with torch.no_grad():
        before = fusion(tokens, token_mask, alone).tokens["audio"][:, 0]
        after = fusion(moved, token_mask, alone).tokens["audio"][:, 0]
    torch.testing.assert_close(after[0], before[0])  # others present: no intra-modal attention
    assert (after[1] - before[1]).abs().max() > 1e-3  # others absent: falls back to its own tokens


def test_recorded_attention_shows_the_fallback_and_sums_to_one():
    fusion = build()
    tokens, token_mask, present = inputs()
    alone = dict(present, image=torch.tensor([True, False]), text=torch.tensor([True, False]))
    fusion(tokens, token_mask, alone)
    assert fusion.last_attention == {}  # nothing recorded unless asked
    fusion.record_attention = True
    fusion(tokens, token_mask, alone)
    layers = fusion.last_attention["audio"]
    assert len(layers) == 2 and list(layers[0]) == ["image", "text", "audio"]
    for per_source in layers:
        assert per_source["image"].shape == (2, 4, 3, 3)
        assert per_source["audio"].shape == (2, 4, 3, 3)
        total = sum(w.sum(-1) for w in per_source.values())  # (B, H, N_audio)
        torch.testing.assert_close(total, torch.ones_like(total))
        assert per_source["audio"][0].abs().max() == 0  # sample 0 sees image and text
        torch.testing.assert_close(per_source["audio"][1].sum(-1), torch.ones(4, 3))  # sample 1 only itself
        assert per_source["audio"][1, :, :, 2].abs().max() == 0  # its padded token is never a key
    assert not layers[0]["image"].requires_grad


def test_pooled_averages_present_modalities_and_samples_are_independent():
    fusion = build()
    tokens, token_mask, present = inputs(batch=3)
    present["text"][1] = False
    for p in present.values():
        p[2] = False  # sample 2 has nothing at all
    with torch.no_grad():
        out = fusion(tokens, token_mask, present)
        single = fusion(*({m: t[1:2] for m, t in d.items()} for d in (tokens, token_mask, present)))
    per_modality = [masked_mean(out.tokens[m][1:2], token_mask[m][1:2]) for m in ("audio", "image")]
    torch.testing.assert_close(out.pooled[1:2], fusion.head((per_modality[0] + per_modality[1]) / 2))
    torch.testing.assert_close(out.pooled[1:2], single.pooled, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.pooled[2], fusion.head.bias)
    assert torch.equal(out.tokens["text"][1], torch.zeros(3, 8))


def test_single_modality_is_self_attention():
    fusion = build(dims={"audio": 6})
    out = fusion({"audio": torch.randn(2, 3, 6)})
    assert out.pooled.shape == (2, 8) and torch.isfinite(out.pooled).all()


@pytest.mark.parametrize(
    "options,match",
    [
        ({"num_layers": 0}, "num_layers"),
        ({"num_heads": 3}, "divisible"),
        ({"ffn_mult": 0}, "ffn_mult"),
        ({"dropout": -0.1}, "dropout"),
    ],
)
def test_bad_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        CrossAttentionFusion(DIMS, dim=8, **options)
