"""The dementia LightningModule on the recipe base: its losses (label smoothing, OT, MultiModN's per-step loss) and
the test loop's metrics per domain and per modality subset."""
from __future__ import annotations

import pytest
import torch

from fusion_core.losses import binary_label_smoothing_bce
from recipes.dementia_speech.config import DementiaConfig
from recipes.dementia_speech.module import DementiaModule
from recipes.runtime.metrics import binary_classification_metrics

SMALL = dict(dim=16, image_size=16, patch_size=8, audio_depth=1, num_heads=2, text_encoder="scratch",
             text_vocab_size=64, dropout=0.0)


def make_batch(size: int = 8, seed: int = 0, domain: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(size, 3, 16, 16, generator=g),
            "text_ids": torch.randint(2, 64, (size, 12), generator=g),
            "text_mask": torch.ones(size, 12, dtype=torch.bool), "label": torch.tensor([0.0, 1.0] * (size // 2)),
            "domain": torch.tensor([0, 0, 1, 1] * (size // 4)) if domain is None else domain}


def logging_into(module: DementiaModule) -> dict[str, float]:
    logged: dict[str, float] = {}
    module.log = lambda name, value, **_: logged.__setitem__(name, float(torch.as_tensor(value).detach()))
    return logged


def test_the_ot_cost_is_part_of_the_training_step():
    torch.manual_seed(0)
    module = DementiaModule(DementiaConfig(**SMALL, ot_weight=0.5)).train()
    logged = logging_into(module)
    source = {k: v for k, v in make_batch(4).items() if k != "domain"}
    shifted = {k: (v + 3.0 if k == "image" else v) for k, v in source.items() if k != "label"}
    with_ot = module.training_step({"source": source, "target": shifted}, 0)
    assert logged["train/ot_loss"] > 0
    assert with_ot.item() == pytest.approx(logged["train/task_loss"] + 0.5 * logged["train/ot_loss"], rel=1e-5)
    without_target = module.training_step({"source": source}, 0)
    assert without_target.item() == pytest.approx(logged["train/task_loss"], rel=1e-5)


def test_sequential_fusion_adds_the_per_step_loss():
    torch.manual_seed(0)
    module = DementiaModule(DementiaConfig(**SMALL, fusion="sequential", step_loss_weight=0.5)).train()
    logged = logging_into(module)
    batch = make_batch(4)
    loss = module.training_step(batch, 0)
    steps = module(batch).steps
    expected = torch.stack([binary_label_smoothing_bce(s[:, 0], batch["label"], 0.1) for s in steps]).mean()
    assert logged["train/step_loss"] == pytest.approx(0.5 * expected.item(), rel=1e-5)
    assert loss.item() == pytest.approx(logged["train/task_loss"] + logged["train/step_loss"], rel=1e-5)


def test_balance_missingness_takes_the_label_as_strata():
    module = DementiaModule(DementiaConfig(**SMALL, balance_missingness=True, modality_dropout=0.5)).train()
    batch = make_batch(8)
    assert torch.equal(module.strata_of(batch), batch["label"].long())
    torch.manual_seed(0)
    present = module.training_present(batch)
    assert set(present) == {"audio", "text"} and not all(bool(p.all()) for p in present.values())
    assert all(bool(p.all()) for p in module.eval().training_present(batch).values())  # never outside training


def _reference(module: DementiaModule, batches, domain: int, present_of=lambda b: None) -> dict[str, float]:
    with torch.no_grad():
        prob = torch.cat([module.probability(b, present_of(b)) for b in batches])
    label, rows = torch.cat([b["label"] for b in batches]).long(), torch.cat([b["domain"] for b in batches]) == domain
    metrics = binary_classification_metrics()
    metrics.update(prob[rows], label[rows])
    return {name: float(value) for name, value in metrics.compute().items()}


def test_the_test_loop_logs_each_domain_and_each_modality_subset():
    torch.manual_seed(0)
    module = DementiaModule(DementiaConfig(**SMALL)).eval()
    logged = logging_into(module)
    # the second batch holds no target row: its domain's metrics must not notice
    batches = [make_batch(8, seed=1), make_batch(4, seed=2, domain=torch.zeros(4, dtype=torch.long))]
    with torch.no_grad():
        for i, batch in enumerate(batches):
            module.test_step(batch, i)
    module.on_test_epoch_end()
    source, target = _reference(module, batches, 0), _reference(module, batches, 1)
    for name, value in source.items():
        assert logged[f"test/{name}"] == pytest.approx(value, abs=1e-6), name
        assert logged[f"test/target_{name}"] == pytest.approx(target[name], abs=1e-6), name
    without_audio = _reference(module, batches, 1, lambda b: {"audio": torch.zeros(len(b["label"]), dtype=torch.bool),
                                                              "text": torch.ones(len(b["label"]), dtype=torch.bool)})
    assert logged["test/target_auroc@without_audio"] == pytest.approx(without_audio["auroc"], abs=1e-6)
    assert {"test/acc@without_text", "test/target_f1@without_text"} <= set(logged)
    assert not any("audio+text" in k for k in logged)  # dropping every branch is no subset
