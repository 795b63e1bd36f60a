"""The base recipe module: one config, the missing-modality machinery by config, the modality-subset evaluation."""
from __future__ import annotations

import pytest
import torch

from recipes.runtime.config import RecipeConfig
from recipes.runtime.datamodule import TensorRows
from tests.recipes.runtime.toy_recipe import ToyClassifier, ToyConfig


def _batch(n: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return {"x": x, "label": (x.sum(-1) > 0).float(), "present_a": torch.ones(n, dtype=torch.bool),
            "present_b": torch.ones(n, dtype=torch.bool)}


def test_config_is_taken_whole_or_from_a_mapping():
    module = ToyClassifier(ToyConfig(hidden=4))
    again = ToyClassifier(config=dict(module.hparams["config"]))  # how Run.load_module rebuilds it
    assert again.config == module.config and again.config.hidden == 4
    with pytest.raises(ValueError, match=r"has no field\(s\) \['hiden'\]"):
        ToyClassifier(config={"hiden": 3})
    with pytest.raises(TypeError, match="takes a ToyConfig"):
        ToyClassifier(config=RecipeConfig())


@pytest.mark.parametrize("bad, message", [
    (dict(lr=0.0), "lr must be > 0"),
    (dict(modality_dropout=1.0), "modality_dropout must be a probability"),
    (dict(step_loss_weight=-1.0), "step_loss_weight must be >= 0"),
])
def test_config_rejects_bad_values_with_the_fix(bad, message):
    with pytest.raises(ValueError, match=message):
        ToyConfig(**bad)


def test_modality_dropout_names_only_known_modalities():
    with pytest.raises(ValueError, match=r"modality_dropout names \['c'\]"):
        ToyClassifier(ToyConfig(modality_dropout={"c": 0.5}))


def test_training_present_drops_only_in_training_and_only_by_config():
    batch = _batch(2000)
    plain = ToyClassifier(ToyConfig()).train()
    assert plain.balancer is None and plain.training_present(batch)["b"].all()
    module = ToyClassifier(ToyConfig(modality_dropout={"b": 0.5})).train()
    torch.manual_seed(0)
    kept = module.training_present(batch)
    assert kept["a"].all()
    assert 0.4 < kept["b"].float().mean() < 0.6
    assert module.eval().training_present(batch)["b"].all()  # evaluation never drops
    assert "balancer" not in dict(module.named_modules())  # nothing of it in the saved weights


def test_balance_missingness_equalises_missing_rates_across_labels():
    batch = _batch(4000)
    label = batch["label"].bool()
    batch["present_b"] = torch.where(label, torch.rand(4000) > 0.6, torch.rand(4000) > 0.1)  # MNAR: b missing for positives
    module = ToyClassifier(ToyConfig(balance_missingness=True)).train()
    torch.manual_seed(0)
    kept = module.training_present(batch)["b"]
    rate_pos, rate_neg = 1 - kept[label].float().mean(), 1 - kept[~label].float().mean()
    assert abs(float(rate_pos - rate_neg)) < 0.05  # label-free missingness after balancing


def test_step_loss_averages_every_step_when_weighted():
    module = ToyClassifier(ToyConfig(fusion="sequential", step_loss_weight=0.5))
    batch = _batch(16)
    out = module.fused(batch["x"], module.present_of(batch))
    assert out.steps is not None and len(out.steps) == 3  # initial state, then a, then b
    loss = lambda step: torch.nn.functional.binary_cross_entropy_with_logits(step[:, 0], batch["label"])  # noqa: E731
    expected = 0.5 * torch.stack([loss(s) for s in out.steps]).mean()
    assert torch.allclose(module.step_loss(out.steps, loss), expected)
    assert ToyClassifier(ToyConfig(fusion="sequential")).step_loss(out.steps, loss) is None  # weight 0: off
    total = module.training_step(batch, 0)
    total.backward()
    assert module.fusion.decoder.weight.grad is not None  # the per-step decoder learns from the step loss


def test_test_loop_evaluates_every_proper_modality_subset():
    module = ToyClassifier(ToyConfig()).eval()
    assert module.subsets() == [("a",), ("b",)]
    batch = _batch(32)
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, value)  # no trainer needed
    with torch.no_grad():
        module.test_step(batch, 0)
    values = module.log_stage("test")
    assert set(values) == {f"test/{m}{s}" for m in ("acc", "auroc", "loss") for s in ("", "@without_a", "@without_b")}
    with torch.no_grad():
        without_b = module(batch["x"], {"a": batch["present_a"], "b": torch.zeros(32, dtype=torch.bool)})
    expected = float(((without_b > 0).float() == batch["label"]).float().mean())
    assert values["test/acc@without_b"] == pytest.approx(expected)
    assert ToyClassifier(ToyConfig(subset_table=False)).subsets() == []


def test_tensor_rows_select_rows_and_check_shapes():
    rows = TensorRows({"x": torch.arange(10)[:, None], "y": torch.arange(10)}, rows=[7, 2])
    assert len(rows) == 2 and rows[0]["y"] == 7 and rows[1]["x"].tolist() == [2]
    with pytest.raises(ValueError, match="same number of rows"):
        TensorRows({"x": torch.zeros(3), "y": torch.zeros(4)})
    with pytest.raises(ValueError, match="rows must index"):
        TensorRows({"x": torch.zeros(3)}, rows=[3])


def test_iterating_an_evaluation_loader_leaves_the_global_random_state_alone():
    from tests.recipes.runtime.toy_recipe import ToyData

    data = ToyData()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    for loader in (data.val_dataloader(), data.test_dataloader(), data.train_dataloader()):
        list(loader)
    assert torch.equal(torch.rand(3), expected)
