import pytest
import torch

from fusion_core.missing import MissingnessBalancer

N = 20_000
RATES_A = [0.10, 0.40, 0.25]  # missing rate of "a" in strata 0, 1, 2


def _mnar_set(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    strata = torch.randint(0, 3, (N,), generator=gen)
    rate_a = torch.tensor(RATES_A)[strata]
    present = {
        "a": torch.rand(N, generator=gen) >= rate_a,
        "b": torch.ones(N, dtype=torch.bool),  # never missing: nothing to balance
        "c": torch.rand(N, generator=gen) >= 0.2,  # missing at random
    }
    return present, strata


def _missing_rates(present: torch.Tensor, strata: torch.Tensor) -> list[float]:
    return [1.0 - present[strata == c].double().mean().item() for c in range(int(strata.max()) + 1)]


def test_fitted_balancing_equalises_missing_rates_across_strata():
    present, strata = _mnar_set()
    balancer = MissingnessBalancer().fit(present, strata)
    out = balancer(present, strata, generator=torch.Generator().manual_seed(1))
    rates = _missing_rates(out["a"], strata)
    assert max(rates) - min(rates) < 0.02
    assert all(abs(r - 0.40) < 0.02 for r in rates)
    assert torch.equal(out["b"], present["b"])
    rates_c = _missing_rates(out["c"], strata)
    assert max(rates_c) - min(rates_c) < 0.03 and abs(sum(rates_c) / 3 - 0.2) < 0.03  # already label-free


def test_only_true_to_false_and_inputs_untouched():
    present, strata = _mnar_set(1)
    before = {m: p.clone() for m, p in present.items()}
    out = MissingnessBalancer(dropout=0.3)(present, strata)
    for m in present:
        assert torch.equal(present[m], before[m])
        assert not (out[m] & ~present[m]).any()
        assert out[m] is not present[m]
    assert (out["a"] != present["a"]).any()


def test_identity_in_eval_mode():
    present, strata = _mnar_set(2)
    balancer = MissingnessBalancer(dropout=0.5).fit(present, strata).eval()
    out = balancer(present, strata)
    assert all(torch.equal(out[m], present[m]) for m in present)
    assert balancer.train()(present, strata)["b"].logical_not().any()


def test_label_independent_dropout_rate():
    present = {"a": torch.ones(N, dtype=torch.bool), "b": torch.ones(N, dtype=torch.bool)}
    gen = torch.Generator().manual_seed(3)
    out = MissingnessBalancer(dropout=0.3, balance=False)(present, None, generator=gen)
    assert abs(1.0 - out["a"].double().mean().item() - 0.3) < 0.02
    out = MissingnessBalancer(dropout={"a": 0.2}, balance=False)(present, generator=gen)
    assert abs(1.0 - out["a"].double().mean().item() - 0.2) < 0.02
    assert out["b"].all()
    # Balancing then dropout: every stratum reaches 1 - (1 - r_max)(1 - d).
    present, strata = _mnar_set(4)
    out = MissingnessBalancer(dropout=0.5).fit(present, strata)(present, strata, generator=gen)
    assert all(abs(r - (1 - 0.6 * 0.5)) < 0.02 for r in _missing_rates(out["a"], strata))


def test_unfitted_mode_balances_each_batch():
    present, strata = _mnar_set(5)
    balancer = MissingnessBalancer()
    gen = torch.Generator().manual_seed(6)
    parts = [
        balancer({m: p[i : i + 500] for m, p in present.items()}, strata[i : i + 500], generator=gen)["a"]
        for i in range(0, N, 500)
    ]
    rates = _missing_rates(torch.cat(parts), strata)
    assert max(rates) - min(rates) < 0.02
    assert all(r >= 0.38 for r in rates)  # the batch maximum is about 0.40 or a little above


def test_a_stratum_always_missing_removes_the_modality_everywhere():
    present = {"a": torch.tensor([False, False, True, True, True])}
    strata = torch.tensor([1, 1, 0, 0, 0])
    out = MissingnessBalancer().fit(present, strata)(present, strata)
    assert not out["a"].any()


def test_a_model_holding_a_fitted_balancer_saves_as_safetensors(tmp_path):
    from safetensors.torch import load_model, save_model

    present, strata = _mnar_set(7)
    model = torch.nn.ModuleDict({"head": torch.nn.Linear(2, 1), "balancer": MissingnessBalancer().fit(present, strata)})
    assert set(model.state_dict()) == {"head.weight", "head.bias"}  # the balancer has no state to save
    save_model(model, str(tmp_path / "m.safetensors"))
    restored = torch.nn.ModuleDict({"head": torch.nn.Linear(2, 1), "balancer": MissingnessBalancer()})
    load_model(restored, str(tmp_path / "m.safetensors"))
    torch.testing.assert_close(restored["head"].weight, model["head"].weight)


@pytest.mark.parametrize(
    "kwargs, fix",
    [
        ({"dropout": 1.0}, "probability in \\[0, 1\\)"),
        ({"dropout": -0.1}, "probability in \\[0, 1\\)"),
        ({"dropout": {"a": 2.0}}, "probability in \\[0, 1\\)"),
        ({"dropout": {1: 0.1}}, "modality names"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, fix):
    with pytest.raises(ValueError, match=fix):
        MissingnessBalancer(**kwargs)


def test_bad_call_arguments_raise():
    present = {"a": torch.tensor([True, False, True])}
    strata = torch.tensor([0, 1, 1])
    balancer = MissingnessBalancer()
    with pytest.raises(ValueError, match="bool"):
        balancer({"a": torch.tensor([1, 0, 1])}, strata)
    with pytest.raises(ValueError, match="strata is required"):
        balancer(present, None)
    with pytest.raises(ValueError, match="labels.long"):
        balancer(present, strata.float())
    with pytest.raises(ValueError, match="one label stratum per sample"):
        balancer(present, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="non-negative"):
        balancer(present, torch.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match="not in present"):
        MissingnessBalancer(dropout={"z": 0.1})(present, strata)
    fitted = MissingnessBalancer().fit(present, strata)
    with pytest.raises(ValueError, match="never saw"):
        fitted(present, torch.tensor([0, 2, 1]))
    with pytest.raises(ValueError, match="refit"):
        fitted({"b": torch.tensor([True, True, False])}, strata)
