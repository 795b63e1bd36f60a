import pytest
import torch

from fusion_core.batch import masked_mean, prepare_inputs

DIMS = {"a": 3, "b": 2}


def test_prepare_zeroes_absent_and_padding_and_builds_masks():
    a = torch.full((2, 3, 3), float("nan"))
    a[0, :2] = 1.0  # sample 0: two real tokens, one padded NaN
    b = torch.full((2, 1, 2), 1e6)
    out = prepare_inputs(
        DIMS,
        {"a": a, "b": b},
        token_mask={"a": torch.tensor([[True, True, False], [True, True, True]])},
        present={"a": torch.tensor([True, False]), "b": torch.tensor([False, True])},
    )
    assert torch.isfinite(out.tokens["a"]).all()
    assert out.tokens["a"][0, 2].abs().sum() == 0 and out.tokens["a"][1].abs().sum() == 0
    assert out.mask["a"].tolist() == [[True, True, False], [False, False, False]]
    assert out.present["a"].tolist() == [True, False]
    assert out.present["b"].tolist() == [False, True]
    assert out.tokens["b"][0].abs().sum() == 0 and out.tokens["b"][1].eq(1e6).all()


def test_missing_modality_is_absent_for_every_sample():
    out = prepare_inputs(DIMS, {"a": torch.randn(4, 2, 3)})
    assert out.present["b"].tolist() == [False] * 4
    assert out.tokens["b"].shape == (4, 1, 2)


def test_all_padding_counts_as_absent():
    out = prepare_inputs(DIMS, {"a": torch.randn(1, 2, 3)}, token_mask={"a": torch.zeros(1, 2, dtype=torch.bool)})
    assert not out.present["a"].item()


@pytest.mark.parametrize(
    "tokens, token_mask, present, fix",
    [
        ({"c": torch.randn(1, 1, 3)}, None, None, "modality_dims"),
        ({"a": torch.randn(1, 1, 4)}, None, None, "unsqueeze"),
        ({"a": torch.randn(2, 1, 3)}, {"a": torch.ones(2, 2, dtype=torch.bool)}, None, "expected (2, 1)"),
        ({"a": torch.randn(2, 1, 3)}, None, {"a": torch.ones(3, dtype=torch.bool)}, "expected (2,)"),
        ({}, None, None, "at least one modality"),
    ],
)
def test_contract_errors_name_the_fix(tokens, token_mask, present, fix):
    with pytest.raises(ValueError, match=fix.replace("(", r"\(").replace(")", r"\)")):
        prepare_inputs(DIMS, tokens, token_mask, present)


def test_masked_mean_ignores_masked_values_and_handles_empty_rows():
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[5.0], [7.0], [9.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert masked_mean(x, mask).squeeze(-1).tolist() == [2.0, 0.0]
