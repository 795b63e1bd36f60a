"""The contract every registered fusion operator keeps (DESIGN.md "The data contract").

Parametrised over ``list_fusions()``, so an operator registered later is covered without editing this file
(except for its seeded regression numbers, which must be added to ``EXPECTED_POOLED``). An operator built for a
fixed number of modalities (``interaction`` keeps exactly two streams) refuses the others with a ``ValueError``;
the suite finds how many it takes and feeds an operator of two ``TWO_DIMS``.
"""
import inspect

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion_core.fusion import create_fusion, list_fusions

FUSIONS = list_fusions()
DIMS = {"text": 4, "audio": 6, "image": 5}  # deliberately unsorted: operators sort the names
DIM = 8
# the two modalities of DIMS an operator of exactly two gets: one with padding, one absent for sample 1
TWO_DIMS = {"image": 5, "audio": 6}


def make_inputs(batch: int, n: int = 3, seed: int = 0, padded: bool = True, dims=DIMS):
    """Random tokens; sample 0 keeps every token, later samples have padding and absent modalities."""
    g = torch.Generator().manual_seed(seed)
    tokens = {m: torch.randn(batch, n, d, generator=g) for m, d in dims.items()}
    token_mask = {m: torch.ones(batch, n, dtype=torch.bool) for m in dims}
    present = {m: torch.ones(batch, dtype=torch.bool) for m in dims}
    if padded and batch > 1:
        token_mask["audio"][1, 1:] = False
        if "text" in dims:
            token_mask["text"][1, 2:] = False
        present["image"][1] = False
    return tokens, token_mask, present


def total(out) -> torch.Tensor:
    steps = sum(s.sum() for s in out.steps) if out.steps else 0.0
    return out.pooled.sum() + out.aux_loss + steps


def assert_finite(out) -> None:
    assert torch.isfinite(out.pooled).all()
    assert torch.isfinite(out.aux_loss).all()
    for s in out.steps or []:
        assert torch.isfinite(s).all()


def assert_same(a, b, atol=1e-5) -> None:
    torch.testing.assert_close(a.pooled, b.pooled, rtol=1e-5, atol=atol)
    torch.testing.assert_close(a.aux_loss, b.aux_loss, rtol=1e-5, atol=atol)
    assert (a.steps is None) == (b.steps is None) and len(a.steps or []) == len(b.steps or [])
    for sa, sb in zip(a.steps or [], b.steps or []):
        torch.testing.assert_close(sa, sb, rtol=1e-5, atol=atol)


def _builds(name: str, num_modalities: int) -> bool:
    try:
        create_fusion(name, modality_dims=dict(zip("abc", [3, 4, 2][:num_modalities])), dim=DIM)
    except ValueError:
        return False
    return True


# (fewest, most) modalities each operator takes, among 1..3
MODALITY_RANGE = {
    name: (min(k for k in (1, 2, 3) if _builds(name, k)), max(k for k in (1, 2, 3) if _builds(name, k)))
    for name in FUSIONS
}


def dims_for(name: str) -> dict[str, int]:
    """``DIMS``, or ``TWO_DIMS`` for an operator that takes at most two modalities."""
    most = MODALITY_RANGE[name][1]
    assert most >= 2, f"{name} takes at most {most} modality; the contract suite needs operators of two or more"
    return DIMS if most >= 3 else TWO_DIMS


def inputs_for(name: str, batch: int, **kw):
    return make_inputs(batch, dims=dims_for(name), **kw)


def build(name: str, dims=None, dim=DIM, seed=0, **options):
    torch.manual_seed(seed)
    return create_fusion(name, modality_dims=dict(dims_for(name) if dims is None else dims), dim=dim, **options)


def accepts(name: str, option: str) -> bool:
    return option in inspect.signature(type(build(name))).parameters


@pytest.mark.parametrize("name", FUSIONS)
def test_create_without_options_and_forward(name):
    fusion = build(name)
    out = fusion(*inputs_for(name, 2))
    assert out.pooled.shape == (2, DIM)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("name", FUSIONS)
def test_output_shapes(name, batch):
    fusion = build(name)
    out = fusion(*inputs_for(name, batch))
    assert out.pooled.shape == (batch, DIM)
    assert out.aux_loss.shape == ()
    assert out.steps is None or all(s.dim() == 2 and s.shape[0] == batch for s in out.steps)
    if out.tokens is not None:
        assert set(out.tokens) <= set(dims_for(name))
        for m, t in out.tokens.items():
            assert t.shape == (batch, 3, DIM), m
    assert_finite(out)


@pytest.mark.parametrize("name", FUSIONS)
def test_every_parameter_gets_a_gradient(name):
    fusion = build(name).train()
    total(fusion(*inputs_for(name, 2, padded=False))).backward()
    missing = [n for n, p in fusion.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in fusion.parameters() if p.grad is not None)


@pytest.mark.parametrize("fill", [float("nan"), 1e6], ids=["nan", "huge"])
@pytest.mark.parametrize("name", FUSIONS)
def test_padding_and_absent_values_never_reach_the_output(name, fill):
    # Eval mode: information_bottleneck samples its latent in train mode.
    fusion = build(name).eval()
    tokens, token_mask, present = inputs_for(name, 3)
    hidden = {m: ~(token_mask[m] & present[m][:, None]) for m in tokens}
    assert any(h.any() for h in hidden.values())
    with torch.no_grad():
        base = fusion(tokens, token_mask, present)
        filled = {m: tokens[m].masked_fill(hidden[m][..., None], fill) for m in tokens}
        out = fusion(filled, token_mask, present)
    assert_finite(base)
    assert_finite(out)
    assert_same(base, out)


@pytest.mark.parametrize("name", FUSIONS)
def test_sample_with_every_modality_absent_is_finite(name):
    fusion = build(name).eval()
    tokens, token_mask, _ = inputs_for(name, 2)
    present = {m: torch.tensor([False, True]) for m in tokens}
    with torch.no_grad():
        assert_finite(fusion(tokens, token_mask, present))
        nothing = {m: torch.zeros(2, dtype=torch.bool) for m in tokens}
        assert_finite(fusion(tokens, token_mask, nothing))


@pytest.mark.parametrize("name", FUSIONS)
def test_modality_missing_from_tokens_behaves_like_absent(name):
    fusion = build(name).eval()
    tokens, token_mask, present = inputs_for(name, 2)
    without = [{m: v for m, v in d.items() if m != "image"} for d in (tokens, token_mask, present)]
    with torch.no_grad():
        absent = fusion(tokens, token_mask, dict(present, image=torch.zeros(2, dtype=torch.bool)))
        missing = fusion(*without)
        missing_no_present = fusion(without[0], without[1], None)  # the rest default to present
    assert_same(absent, missing)
    assert_same(absent, missing_no_present)


@pytest.mark.parametrize("name", FUSIONS)
def test_any_nonempty_modality_name_works(name):
    # FusionOperator accepts any non-empty string; nn.ModuleDict keys could not hold a '.'.
    fusion = build(name, dims={"ecg.lead1": 3, "x-ray": 4})
    out = fusion({"ecg.lead1": torch.randn(2, 2, 3), "x-ray": torch.randn(2, 1, 4)})
    assert out.pooled.shape == (2, DIM)


@st.composite
def random_batches(draw, name):
    num = draw(st.integers(*MODALITY_RANGE[name]))
    dims = dict(zip(["a", "b", "c"][:num], [3, 4, 2]))
    batch = draw(st.integers(1, 4))
    tokens, token_mask, present = {}, {}, {}
    omitted = draw(st.lists(st.booleans(), min_size=num, max_size=num))
    if all(omitted):
        omitted[draw(st.integers(0, num - 1))] = False  # tokens must name at least one modality
    for m, skip in zip(dims, omitted):
        if skip:
            continue
        n = draw(st.integers(1, 5))
        seed = draw(st.integers(0, 2**16))
        tokens[m] = torch.randn(batch, n, dims[m], generator=torch.Generator().manual_seed(seed)) * 3
        rows = st.lists(st.booleans(), min_size=n, max_size=n)
        token_mask[m] = torch.tensor(draw(st.lists(rows, min_size=batch, max_size=batch)))
        present[m] = torch.tensor(draw(st.lists(st.booleans(), min_size=batch, max_size=batch)))
    return dims, tokens, token_mask, present


@pytest.mark.parametrize("name", FUSIONS)
def test_random_masks_never_give_nan_or_inf(name):
    @settings(max_examples=25, deadline=None)
    @given(data=random_batches(name))
    def check(data):
        dims, tokens, token_mask, present = data
        fusion = build(name, dims=dims).train()
        out = fusion(tokens, token_mask, present)
        assert out.pooled.shape == (next(iter(tokens.values())).shape[0], DIM)
        assert_finite(out)
        total(out).backward()
        assert all(torch.isfinite(p.grad).all() for p in fusion.parameters() if p.grad is not None)

    check()


@pytest.mark.parametrize("name", FUSIONS)
def test_bad_arguments_raise_value_error_naming_the_fix(name):
    with pytest.raises(ValueError, match="non-empty dict"):
        build(name, dims={})
    for bad_dim in (0, -4):
        with pytest.raises(ValueError, match="dim must be a positive int"):
            build(name, dim=bad_dim)
    if accepts(name, "num_heads"):
        with pytest.raises(ValueError, match="num_heads"):
            build(name, num_heads=3)
    low, high = MODALITY_RANGE[name]
    for count in (c for c in (1, 2, 3) if not low <= c <= high):  # a refused count of modalities says so
        with pytest.raises(ValueError, match="modalit"):
            build(name, dims=dict(zip("abc", [3, 4, 2][:count])))
    fusion = build(name)
    tokens, token_mask, present = inputs_for(name, 2)
    with pytest.raises(ValueError, match="pass them in modality_dims"):
        fusion(dict(tokens, video=torch.randn(2, 3, 4)))
    with pytest.raises(ValueError, match=r"expected \(2, N, 6\)"):
        fusion(dict(tokens, audio=torch.randn(2, 3, 7)))


def test_unknown_fusion_name_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        create_fusion("no_such_fusion", modality_dims=DIMS, dim=DIM)


# pooled[:, :4] for build(name) (seed 0) on inputs_for(name, 2, seed=1) in eval mode. Recompute and paste
# only after a deliberate change to an operator's maths.
EXPECTED_POOLED = {
    "concat": [[-0.256053, 0.424320, -0.113588, -0.086268], [-0.434780, 0.046999, -0.373447, 0.059426]],
    "cross_attention": [[0.118068, 0.008388, 0.101766, 0.376141], [0.403960, -0.105572, -0.061704, 0.534147]],
    "gated_self_attention": [[0.102610, 0.091467, 0.789022, 0.629927], [-0.926477, -0.344676, 0.904166, 0.572709]],
    "information_bottleneck": [[-0.164667, 0.459513, 0.127900, 0.511773], [-0.032073, 0.300782, 0.109592, 0.243000]],
    "interaction": [[0.616189, 0.170180, -0.233594, 0.014461], [-0.224964, -0.213598, 0.599214, 0.582530]],
    "sequential": [[-0.239887, 0.314486, 0.250658, 0.142146], [-0.563560, 0.026423, 0.360593, -0.024161]],
}


@pytest.mark.parametrize("name", FUSIONS)
def test_seeded_numeric_regression(name):
    fusion = build(name).eval()
    with torch.no_grad():
        pooled = fusion(*inputs_for(name, 2, seed=1)).pooled[:, :4]
    if name not in EXPECTED_POOLED:
        pytest.fail(f"no regression numbers for {name!r}; add EXPECTED_POOLED[{name!r}] = {pooled.tolist()}")
    torch.testing.assert_close(pooled, torch.tensor(EXPECTED_POOLED[name]), rtol=0, atol=1e-4)
