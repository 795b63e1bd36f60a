import pytest
import torch

from fusion_core.batch import masked_mean
from fusion_core.fusion import create_fusion
from fusion_core.fusion.gated_self_attention import GatedSelfAttentionFusion

DIMS = {"audio": 6, "text": 4}


def build(seed=0, **options):
    torch.manual_seed(seed)
    return create_fusion("gated_self_attention", modality_dims=DIMS, dim=8, **options).eval()


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = {m: torch.randn(2, 3, d, generator=g) for m, d in DIMS.items()}
    token_mask = {
        "audio": torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool),
        "text": torch.ones(2, 3, dtype=torch.bool),
    }
    present = {"audio": torch.tensor([True, True]), "text": torch.tensor([True, False])}
    return tokens, token_mask, present


def test_gates_lie_in_open_interval_and_start_near_half():
    fusion = build()
    fusion.record_attention = True
    with torch.no_grad():
        fusion(*inputs())
    assert list(fusion.last_gates) == ["audio", "text"] and len(fusion.last_gates["audio"]) == 2
    for gates in fusion.last_gates.values():
        for g in gates:
            assert g.shape[-1] == 8
            assert ((g > 0) & (g < 1)).all()
            assert (g - 0.5).abs().max() < 0.15


def test_closed_gate_leaves_only_the_ffn_path():
    fusion = build()
    for layer in fusion.layers:
        torch.nn.init.constant_(layer.gate.linear.bias, -60.0)  # σ(-60) ≈ 1e-26
    tokens, token_mask, present = inputs()
    with torch.no_grad():
        out = fusion(tokens, token_mask, present)
        embedded = [proj(tokens[m]) + emb for m, proj, emb in zip(DIMS, fusion.input_projs, fusion.modality_embedding)]
        x = torch.cat(embedded, dim=1)  # (B, 6, 8)
        for layer in fusion.layers:
            x = x + layer.ffn(layer.ffn_norm(x))
        x = fusion.final_norm(x)
    mask = torch.cat([token_mask["audio"], token_mask["text"] & present["text"][:, None]], dim=1)
    expected = torch.where(mask[..., None], x, torch.zeros(()))
    got = torch.cat([out.tokens["audio"], out.tokens["text"]], dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.pooled, fusion.head(masked_mean(expected, mask)), rtol=1e-5, atol=1e-5)


def test_attention_is_joint_over_present_modalities_and_skips_padding():
    fusion = build()
    tokens, token_mask, present = inputs()
    with torch.no_grad():
        base = fusion(tokens, token_mask, present)
        moved_text = fusion(dict(tokens, text=tokens["text"] + 1.0), token_mask, present)
        padded = dict(tokens, audio=tokens["audio"].clone())
        padded["audio"][1, 2] = 1e4
        moved_pad = fusion(padded, token_mask, present)
    assert (moved_text.tokens["audio"][0] - base.tokens["audio"][0]).abs().max() > 1e-3  # text is present in sample 0
    torch.testing.assert_close(moved_text.tokens["audio"][1], base.tokens["audio"][1])  # and absent in sample 1
    torch.testing.assert_close(moved_pad.tokens["audio"][1, :2], base.tokens["audio"][1, :2])
    assert torch.equal(base.tokens["audio"][1, 2], torch.zeros(8))


def test_recorded_attention_rows_cover_exactly_the_valid_tokens():
    fusion = build()
    fusion.record_attention = True
    with torch.no_grad():
        fusion(*inputs())
    for per_source in fusion.last_attention["audio"]:
        weights = torch.cat([per_source["audio"], per_source["text"]], dim=-1)  # (B, H, 3, 6)
        assert weights.shape == (2, 4, 3, 6)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 3))
        assert weights[1, :, :, 2:].abs().max() == 0  # sample 1: padded audio token and absent text


def test_samples_are_independent():
    fusion = build()
    tokens, token_mask, present = inputs()
    with torch.no_grad():
        both = fusion(tokens, token_mask, present).pooled
        one = fusion(*({m: t[1:] for m, t in d.items()} for d in (tokens, token_mask, present))).pooled
    torch.testing.assert_close(both[1:], one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "options,match", [({"num_layers": 0}, "num_layers"), ({"num_heads": 5}, "divisible"), ({"dropout": 1.0}, "dropout")]
)
def test_bad_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        GatedSelfAttentionFusion(DIMS, dim=8, **options)
