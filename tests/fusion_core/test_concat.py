import pytest
import torch

from fusion_core.batch import masked_mean
from fusion_core.fusion import create_fusion
from fusion_core.fusion.concat import ConcatFusion

DIMS = {"text": 4, "audio": 6}  # unsorted on purpose: concatenation follows sorted names (audio, text)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = {m: torch.randn(2, 3, d, generator=g) for m, d in DIMS.items()}
    token_mask = {
        "audio": torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool),
        "text": torch.ones(2, 3, dtype=torch.bool),
    }
    present = {"audio": torch.tensor([True, True]), "text": torch.tensor([True, False])}
    return tokens, token_mask, present


def test_pooled_is_projection_of_sorted_masked_means_with_learned_imputation():
    torch.manual_seed(0)
    fusion = create_fusion("concat", modality_dims=DIMS, dim=8).eval()
    assert isinstance(fusion, ConcatFusion)
    tokens, token_mask, present = inputs()
    out = fusion(tokens, token_mask, present)

    audio = masked_mean(tokens["audio"], token_mask["audio"])
    text = masked_mean(tokens["text"], token_mask["text"])
    text[1] = fusion.missing_embeddings[1]  # sample 1 has no text: the learned text vector stands in
    expected = fusion.project(torch.cat([audio, text], dim=-1))
    torch.testing.assert_close(out.pooled, expected)
    assert out.tokens is None and out.steps is None and out.aux_loss.item() == 0.0


def test_learned_imputation_tells_absent_from_all_zero_tokens():
    torch.manual_seed(0)
    learned = ConcatFusion(DIMS, dim=8, impute="learned").eval()
    torch.manual_seed(0)
    zeros = ConcatFusion(DIMS, dim=8, impute="zeros").eval()
    zeros.project.load_state_dict(learned.project.state_dict())
    tokens, token_mask, present = inputs()
    zero_text = dict(tokens, text=torch.zeros(2, 3, 4))
    all_present = dict(present, text=torch.ones(2, dtype=torch.bool))
    with torch.no_grad():
        # "zeros": absent text is indistinguishable from present text whose tokens are all zero.
        absent, zero_tokens = zeros(tokens, token_mask, present), zeros(zero_text, token_mask, all_present)
        torch.testing.assert_close(absent.pooled[1], zero_tokens.pooled[1])
        absent, zero_tokens = learned(tokens, token_mask, present), learned(zero_text, token_mask, all_present)
        assert not torch.allclose(absent.pooled[1], zero_tokens.pooled[1])
    assert zeros.missing_embeddings is None


def test_imputation_vector_learns_only_from_samples_missing_the_modality():
    torch.manual_seed(0)
    fusion = ConcatFusion(DIMS, dim=8)
    tokens, token_mask, present = inputs()
    fusion(tokens, token_mask, present).pooled[0].sum().backward()  # sample 0 has every modality
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in fusion.missing_embeddings)
    fusion.zero_grad()
    fusion(tokens, token_mask, present).pooled[1].sum().backward()  # sample 1 misses text only
    assert torch.equal(fusion.missing_embeddings[0].grad, torch.zeros(6))
    assert fusion.missing_embeddings[1].grad.abs().sum() > 0


@pytest.mark.parametrize(
    "options,match",
    [({"impute": "mean"}, "impute must be one of"), ({"dropout": 1.0}, "dropout"), ({"hidden_dim": 0}, "hidden_dim")],
)
def test_bad_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        ConcatFusion(DIMS, dim=8, **options)
