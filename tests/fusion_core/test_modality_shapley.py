import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fusion_core.batch import masked_mean, prepare_inputs
from fusion_core.explain import MAX_MODALITIES, ShapleyOutput, modality_shapley

MODALITIES = ["audio", "text", "image"]


def _features(seed, batch=4):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, generator=g, dtype=torch.float64) for m in MODALITIES}


def _nonlinear(x):
    """A model of presence masks with interactions between every pair of modalities."""

    def fn(present):
        on = {m: present[m].to(torch.float64) * x[m] for m in MODALITIES}
        pairwise = on["audio"] * on["image"] + torch.sin(on["text"] * on["image"])
        return torch.tanh(on["audio"] + 2 * on["text"]) + pairwise

    return fn


def _brute_force(fn, modalities, actual):
    """Average marginal contribution over every ordering of the modalities."""
    off = {m: torch.zeros_like(actual[m]) for m in modalities}
    values = {m: 0.0 for m in modalities}
    orders = list(itertools.permutations(modalities))
    for order in orders:
        current = dict(off)
        before = fn(current)
        for m in order:
            current = {**current, m: actual[m]}
            after = fn(current)
            values[m] = values[m] + (after - before) / len(orders)
            before = after
    return values


def test_efficiency_and_agreement_with_permutation_enumeration():
    x = _features(0)
    fn = _nonlinear(x)
    out = modality_shapley(fn, MODALITIES, batch_size=4)
    assert isinstance(out, ShapleyOutput)
    assert all(v.shape == (4,) for v in out.values.values())
    ones = {m: torch.ones(4, dtype=torch.bool) for m in MODALITIES}
    torch.testing.assert_close(out.full, fn(ones))
    torch.testing.assert_close(out.base, fn({m: ~ones[m] for m in MODALITIES}))
    torch.testing.assert_close(sum(out.values.values()), out.full - out.base)
    expected = _brute_force(fn, MODALITIES, ones)
    for m in MODALITIES:
        torch.testing.assert_close(out.values[m], expected[m])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), absent=st.lists(st.booleans(), min_size=4, max_size=4))
def test_efficiency_holds_for_any_inputs_and_absence(seed, absent):
    x = _features(seed)
    present = {"text": ~torch.tensor(absent)}
    out = modality_shapley(_nonlinear(x), MODALITIES, present)
    torch.testing.assert_close(sum(out.values.values()), out.full - out.base)
    assert (out.values["text"][torch.tensor(absent)] == 0).all()


def test_symmetric_modalities_get_equal_values():
    x = _features(1)
    shared = x["audio"]

    def fn(present):
        a, t, i = (present[m].to(torch.float64) for m in MODALITIES)
        return torch.exp(shared * (a + t)) + a * t * x["image"] * i

    out = modality_shapley(fn, MODALITIES, batch_size=4)
    torch.testing.assert_close(out.values["audio"], out.values["text"])


def test_ignored_modality_gets_zero_and_additive_terms_are_recovered():
    x = _features(2)
    terms = {"audio": 1.5, "text": -0.25}

    def fn(present):
        return 3.0 + sum(terms[m] * x[m] * present[m].to(torch.float64) for m in terms)

    actual = {"audio": torch.tensor([True, False, True, True]), "text": torch.ones(4, dtype=torch.bool)}
    out = modality_shapley(fn, MODALITIES, actual)
    assert (out.values["image"] == 0).all()
    for m, w in terms.items():
        torch.testing.assert_close(out.values[m], w * x[m] * actual[m].to(torch.float64))
    torch.testing.assert_close(out.base, torch.full((4,), 3.0, dtype=torch.float64))


def test_actually_absent_modality_gets_exactly_zero_in_a_masked_model():
    """A real model behind the data contract: absent inputs hold NaN, which must not leak into any value."""
    torch.manual_seed(0)
    dims = {"ecg": 3, "xray": 5}
    heads = torch.nn.ModuleDict({m: torch.nn.Linear(d, 2) for m, d in dims.items()})
    tokens = {"ecg": torch.randn(3, 4, 3), "xray": torch.randn(3, 2, 5)}
    actual = {"ecg": torch.tensor([True, False, True]), "xray": torch.ones(3, dtype=torch.bool)}
    tokens["ecg"][1] = float("nan")

    def fn(present):
        prepared = prepare_inputs(dims, tokens, present=present)
        pooled = {m: masked_mean(prepared.tokens[m], prepared.mask[m]) for m in dims}  # (B, d_m)
        return torch.tanh(heads["ecg"](pooled["ecg"]) * heads["xray"](pooled["xray"])) + heads["xray"](pooled["xray"])

    out = modality_shapley(fn, ["ecg", "xray"], actual)
    assert out.values["ecg"].shape == (3, 2) and not out.values["ecg"].requires_grad
    assert all(torch.isfinite(v).all() for v in out.values.values())
    assert (out.values["ecg"][1] == 0).all() and (out.values["ecg"][[0, 2]] != 0).all()
    torch.testing.assert_close(out.full, fn(actual))
    torch.testing.assert_close(out.values["ecg"] + out.values["xray"], out.full - out.base)


def test_matches_shap_exact_explainer():
    shap = pytest.importorskip("shap")
    x = _features(3, batch=2)
    fn = _nonlinear(x)
    out = modality_shapley(fn, MODALITIES, batch_size=2)
    masker = shap.maskers.Independent(np.zeros((1, len(MODALITIES))), max_samples=1)
    for b in range(2):

        def coalition_model(z, b=b):  # z: (n, M) 0/1 rows, one coalition each
            present = {m: torch.tensor(z[:, i] > 0.5) for i, m in enumerate(MODALITIES)}
            sample = {m: x[m][b].expand(z.shape[0]) for m in MODALITIES}
            return _nonlinear(sample)(present).numpy()

        explanation = shap.explainers.Exact(coalition_model, masker)(np.ones((1, len(MODALITIES))))
        np.testing.assert_allclose(
            [out.values[m][b].item() for m in MODALITIES], explanation.values[0], atol=1e-10
        )
        assert explanation.base_values[0] == pytest.approx(out.base[b].item())


def test_fixed_modalities_pass_through_every_coalition():
    seen = []

    def fn(present):
        seen.append(present["context"].clone())
        return present["a"].double() * 4.0

    context = torch.tensor([True, False])
    out = modality_shapley(fn, ["a", "b", "c", "d"], {"context": context})
    assert len(seen) == 2**4 and all(torch.equal(s, context) for s in seen)
    torch.testing.assert_close(out.values["a"], torch.full((2,), 4.0, dtype=torch.float64))
    assert (out.values["b"] == 0).all() and out.base.dtype == torch.float64


def test_argument_errors():
    fn = lambda present: present["a"].float()
    with pytest.raises(ValueError, match=f"limit of {MAX_MODALITIES} modalities"):
        modality_shapley(fn, [f"m{i}" for i in range(MAX_MODALITIES + 1)], batch_size=2)
    with pytest.raises(ValueError, match="modalities is empty"):
        modality_shapley(fn, [], batch_size=2)
    with pytest.raises(ValueError, match="repeat a name"):
        modality_shapley(fn, ["a", "a"], batch_size=2)
    with pytest.raises(ValueError, match="pass batch_size"):
        modality_shapley(fn, ["a"])
    with pytest.raises(ValueError, match="disagree on the batch size"):
        modality_shapley(fn, ["a"], {"a": torch.ones(3, dtype=torch.bool)}, batch_size=2)
    with pytest.raises(ValueError, match=r"fn must return a \(2,\) or \(2, K\) tensor"):
        modality_shapley(lambda present: torch.zeros(3), ["a"], batch_size=2)
