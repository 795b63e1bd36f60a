"""The MoRE model and module: the contrastive objective, the fused head with gaps, zero-shot, the training losses
(sequential per-step loss, modality dropout, strata), and the metrics the module logs."""
from __future__ import annotations

import pytest
import torch

from fusion_core.losses.contrastive import info_nce
from recipes.medical_more.config import MoreConfig
from recipes.medical_more.module import MoreModule, alignment_score, prompt_ensemble

TINY = dict(image_size=16, ecg_samples=100, report_encoder="scratch", vocab_size=64, text_max_len=8, patch_size=8,
            ecg_patch=25, encoder_dim=16, depth=1, num_heads=2, projection_dim=8, fusion_dim=8,
            fusion_options={"num_layers": 1, "num_heads": 2})


def make_batch(size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 64, (size, 8), generator=generator)
    ids[:, 0] = 1
    return {
        "xray": torch.rand(size, 1, 16, 16, generator=generator),
        "ecg": torch.randn(size, 12, 100, generator=generator),
        "report_ids": ids,
        "report_mask": torch.ones(size, 8, dtype=torch.bool),
        "labels": (torch.rand(size, 4, generator=generator) < 0.5).float(),
    }


def make_module(**changes) -> MoreModule:
    return MoreModule(MoreConfig(**{**TINY, **changes}))


@pytest.fixture
def module() -> MoreModule:
    torch.manual_seed(0)
    return make_module().eval()


@pytest.mark.parametrize("fusion", ["gated_self_attention", "cross_attention", "concat"])
@pytest.mark.parametrize("size", [1, 2])
def test_head_shapes(fusion, size):
    options = {} if fusion == "concat" else {"num_layers": 1, "num_heads": 2}
    module = make_module(fusion=fusion, fusion_options=options).eval()
    probs = module(make_batch(size))
    assert probs.shape == (size, 4) and torch.all((probs >= 0) & (probs <= 1))


def test_loss_is_report_anchored_symmetric_infonce(module):
    batch = make_batch(6)
    embeddings = module.model.encode(batch).embeddings
    out = module.model.contrastive_loss(embeddings)
    temperature = 1.0 / module.model.contrastive.logit_scale.exp()
    expected = info_nce(embeddings["report"], embeddings["xray"], temperature) + info_nce(embeddings["report"], embeddings["ecg"], temperature)
    torch.testing.assert_close(out.loss, expected)
    assert set(out.per_pair) == {"report-xray", "report-ecg"}
    assert isinstance(module.model.contrastive.logit_scale, torch.nn.Parameter)  # learnable temperature


def test_training_treats_same_description_patients_as_positives():
    torch.manual_seed(0)
    batch = make_batch(6)
    batch["group_xray"] = torch.tensor([0, 0, 1, 2, 2, 2])
    batch["group_ecg"] = torch.tensor([0, 0, 0, 1, 1, 2])
    for semantic in (True, False):
        module = make_module(semantic_positives=semantic).eval()
        groups = module.contrastive_groups(batch)
        embeddings = module.model.encode(batch).embeddings
        out = module.model.contrastive_loss(embeddings, groups=groups)
        temperature = 1.0 / module.model.contrastive.logit_scale.exp()
        if semantic:
            assert set(groups) == {"report-xray", "report-ecg"}
            expected = {"report-xray": info_nce(embeddings["report"], embeddings["xray"], temperature, groups=batch["group_xray"]),
                        "report-ecg": info_nce(embeddings["report"], embeddings["ecg"], temperature, groups=batch["group_ecg"])}
            assert out.per_pair["report-xray"].item() != pytest.approx(info_nce(embeddings["report"], embeddings["xray"], temperature).item())
        else:
            assert groups is None
            expected = {p: info_nce(embeddings["report"], embeddings[p.split("-")[1]], temperature) for p in out.per_pair}
        for pair, value in expected.items():
            torch.testing.assert_close(out.per_pair[pair], value)


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_finding_targets_mix_instance_and_finding_level_infonce(weight):
    """Cross-entropy is linear in its target: the module's loss is the soft-target cross-entropy, written out here
    with the targets built by hand (instance group ∪ self, then every row of the same findings)."""
    torch.manual_seed(0)
    batch = make_batch(6)
    batch["group_xray"] = torch.tensor([0, 0, 1, 2, 3, 4])
    batch["group_ecg"] = torch.arange(6)
    batch["group_finding"] = torch.tensor([5, 5, 5, 0, 0, 2])
    module = make_module(finding_target_weight=weight).eval()
    embeddings = module.model.encode(batch).embeddings
    out = module.contrastive_loss(batch, embeddings, {m: torch.ones(6, dtype=torch.bool) for m in ("xray", "ecg", "report")})
    scale = module.model.logit_scale()

    def soft_infonce(a, b, keys):
        logits = scale * torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T
        targets = []
        for group in (keys, batch["group_finding"]):
            same = (group[:, None] == group[None, :]).float()
            targets.append(same / same.sum(1, keepdim=True))
        target = (1 - weight) * targets[0] + weight * targets[1]
        rows = -(target * logits.log_softmax(1)).sum(1).mean()
        columns = -(target.T * logits.T.log_softmax(1)).sum(1).mean()
        return (rows + columns) / 2

    expected = (soft_infonce(embeddings["report"], embeddings["xray"], batch["group_xray"])
                + soft_infonce(embeddings["report"], embeddings["ecg"], batch["group_ecg"]))
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="finding_target_weight"):
        make_module(finding_target_weight=1.5)


def test_prompt_ensemble_averages_each_sides_normalised_prompts():
    torch.manual_seed(0)
    prompts = torch.randn(2 * 2 * 3, 5)  # 2 findings × (present, absent) × 3 prompts
    ensemble = prompt_ensemble(prompts, num_findings=2)
    assert ensemble.shape == (4, 5)
    normalised = torch.nn.functional.normalize(prompts, dim=-1)
    for side in range(4):
        torch.testing.assert_close(ensemble[side], normalised[3 * side:3 * side + 3].mean(0))
    with pytest.raises(ValueError, match="as many present as absent"):
        prompt_ensemble(torch.randn(10, 5), num_findings=2)


def test_zero_shot_with_an_ensemble_follows_the_nearer_side(module):
    # present prompts scattered around e0, absent ones around e1: the ensemble's pair softmax picks the nearer side
    present = torch.tensor([[1.0, 0.2], [1.0, -0.2]])
    absent = torch.tensor([[0.2, 1.0], [-0.2, 1.0]])
    ensemble = prompt_ensemble(torch.cat([present, absent]), num_findings=1)
    probs = module.model.zero_shot(torch.tensor([[1.0, 0.1], [0.1, 1.0]]), ensemble)
    assert probs[0, 0] > 0.5 > probs[1, 0]


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    module = make_module().train()
    batch = make_batch(4)
    out = module.model.encode(batch)
    present = {m: torch.ones(4, dtype=torch.bool) for m in ("xray", "ecg", "report")}
    logits, aux, _ = module.model.diagnose(out.embeddings, present)
    loss = module.model.contrastive_loss(out.embeddings).loss + torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"]) + aux
    loss.backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None]
    assert not missing


def test_absent_modalities_never_change_the_head(module):
    batch = make_batch(3)
    present = {"xray": torch.tensor([True, False, True]), "ecg": torch.tensor([False, True, False]),
               "report": torch.tensor([True, True, False])}
    clean = module(batch, present)
    poisoned = dict(batch)
    poisoned["xray"] = batch["xray"].clone()
    poisoned["xray"][1] = float("nan")
    poisoned["ecg"] = batch["ecg"].clone()
    poisoned["ecg"][[0, 2]] = 1e6
    poisoned["report_ids"] = batch["report_ids"].clone()
    poisoned["report_ids"][2, 1:] = 63
    out = module(poisoned, present)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, clean)


def test_zero_shot_prefers_the_nearer_prompt(module):
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    prompts = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 2)  # finding 0 and 1: present = e0, absent = e1
    probs = module.model.zero_shot(query, prompts)
    assert probs.shape == (2, 2)
    assert probs[0, 0] > 0.5 > probs[1, 0]


@pytest.mark.parametrize("kwargs, text", [
    (dict(lr=0.0), "lr"),
    (dict(pretrain_epochs=-1), "pretrain_epochs"),
    (dict(report_encoder="bert"), "report_encoder"),
    (dict(findings=()), "findings"),
    (dict(modality_dropout={"audio": 0.1}), "modality_dropout names"),
    (dict(fusion="nope"), "unknown fusion"),
    (dict(fusion="sequential", fusion_options={"num_outputs": 2}), "num_outputs"),
])
def test_ill_args(kwargs, text):
    with pytest.raises(ValueError, match=text):
        make_module(**kwargs)


def test_the_config_round_trips_through_hparams():
    module = make_module(fusion="concat", fusion_options={})
    saved = module.hparams["config"]
    assert saved["modality_dropout"] == {"ecg": 0.3, "report": 0.5} and saved["findings"] == list(module.findings)
    rebuilt = MoreModule(saved)  # what Run.load_module does with hparams.yaml
    assert rebuilt.config == module.config and rebuilt.config.findings == tuple(module.findings)


def test_strata_code_the_finding_combination(module):
    labels = torch.tensor([[0, 0, 0, 1], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]], dtype=torch.float)
    strata = module.strata_of({"labels": labels})
    assert strata.dtype == torch.long and strata.tolist() == [8, 1, 3, 4, 1]


def test_training_drops_modalities_by_the_config():
    torch.manual_seed(0)
    module = make_module(modality_dropout={"ecg": 0.9, "report": 0.0}).train()
    present = {m: torch.ones(400, dtype=torch.bool) for m in ("xray", "ecg", "report")}
    kept = module.training_present({"labels": torch.zeros(400, 4)}, present)
    assert kept["xray"].all() and kept["report"].all()
    assert 0.03 < kept["ecg"].float().mean() < 0.2
    assert all(module.eval().training_present({}, present)[m].all() for m in present)  # never in evaluation


def _train_steps(module: MoreModule, batch: dict, steps: int = 2) -> list[float]:
    optimizer = module.configure_optimizers()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = module.training_step(batch, 0)
        loss.backward()
        module.on_after_backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_pretraining_leaves_the_diagnosis_head_alone():
    torch.manual_seed(0)
    module = make_module(pretrain_epochs=1).train()
    head = {id(p): p.detach().clone() for p in module.model.head_parameters()}
    before = {n: p.detach().clone() for n, p in module.named_parameters() if id(p) not in head}
    _train_steps(module, make_batch(4))
    assert all(torch.equal(p.detach(), head[id(p)]) for p in module.model.head_parameters())
    assert any(not torch.equal(p.detach(), before[n]) for n, p in module.named_parameters() if n in before)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_sequential_fusion_adds_the_per_step_loss():
    batch = make_batch(4)
    losses = {}
    for weight in (0.0, 0.5):
        torch.manual_seed(0)
        module = make_module(fusion="sequential", fusion_options={}, step_loss_weight=weight, pretrain_epochs=0,
                             modality_dropout=0.0).train()
        out = module.model.diagnose(module.model.encode(batch).embeddings, module.present_of(batch))
        assert len(out.steps) == 4 and all(step.shape == (4, 4) for step in out.steps)  # s0 and one state per modality
        torch.manual_seed(1)
        losses[weight] = float(module.training_step(batch, 0).detach())
        expected = torch.stack([torch.nn.functional.binary_cross_entropy_with_logits(s, batch["labels"]) for s in out.steps]).mean()
    assert losses[0.5] == pytest.approx(losses[0.0] + 0.5 * float(expected), rel=1e-5)


def test_alignment_score_adds_zero_shot_and_recall_as_a_share_of_its_ceiling():
    metrics = {"val/zero_shot_auroc": 0.8, "val/recall@10_report_to_xray": 0.3, "val/recall_ceiling@10_report_to_xray": 0.6}
    assert alignment_score(metrics) == pytest.approx(1.3)
    assert alignment_score({k.replace("val/", "test/"): v for k, v in metrics.items()}, "test") == pytest.approx(1.3)
    assert alignment_score({**metrics, "val/recall_ceiling@10_report_to_xray": 0.0}) is None
    assert alignment_score({k: v for k, v in metrics.items() if "zero_shot" not in k}) is None


def test_select_pretraining_fine_tunes_from_the_best_validated_pretraining_epoch(toy_cohort, monkeypatch):
    """Three pre-training epochs, then one of the head: the head's first step starts from the weights of the
    pre-training epoch with the best validation alignment_score, and the choice survives a checkpoint. The scores
    are scripted (the middle epoch best), so neither the first nor the last epoch passes by chance."""
    import lightning.pytorch as L

    import recipes.medical_more.module as more_module
    from recipes.medical_more.data import MoreDataModule

    scripted = iter([0.5, 0.9, 0.7])
    monkeypatch.setattr(more_module, "alignment_score", lambda metrics, stage="val": next(scripted))

    class Record(L.Callback):
        def __init__(self) -> None:
            self.scores, self.weights, self.at_finetuning = {}, {}, None
            self.restored_from_checkpoint = None

        def on_validation_end(self, trainer, module) -> None:
            if "val/alignment_score" in trainer.callback_metrics and module.pretraining:
                self.scores[trainer.current_epoch] = float(trainer.callback_metrics["val/alignment_score"])
                self.weights[trainer.current_epoch] = {k: v.clone() for k, v in module.model.state_dict().items()}
                checkpoint: dict = {}
                module.on_save_checkpoint(checkpoint)
                fresh = make_module(ecg_samples=500, text_max_len=16, pretrain_epochs=3, select_pretraining=True)
                fresh.on_load_checkpoint(checkpoint)
                self.restored_from_checkpoint = fresh.selected_pretraining

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            if trainer.current_epoch == 3 and batch_idx == 0:
                self.at_finetuning = {k: v.clone() for k, v in module.model.state_dict().items()}

    datamodule = MoreDataModule(image_size=16, sampling_rate=50, report_encoder="scratch", vocab_size=64, text_max_len=16,
                                batch_size=16, data_dir=str(toy_cohort))
    torch.manual_seed(0)
    module = make_module(ecg_samples=500, text_max_len=16, pretrain_epochs=3, select_pretraining=True, lr=3e-3)
    record = Record()
    L.Trainer(accelerator="cpu", max_epochs=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, num_sanity_val_steps=0, callbacks=[record]).fit(module, datamodule=datamodule)
    assert record.scores == pytest.approx({0: 0.5, 1: 0.9, 2: 0.7})
    best = 1
    assert record.restored_from_checkpoint == (pytest.approx(0.9), best)
    assert not all(torch.equal(v, record.weights[2][k]) for k, v in record.weights[best].items())  # epoch 2 moved on
    for name, value in record.at_finetuning.items():
        assert torch.equal(value, record.weights[best][name]), name
    assert module.restore_selected_pretraining() is None  # restored once, when fine-tuning began


def test_xray_shift_moves_each_radiograph_within_its_bound_and_only_when_set():
    image = torch.zeros(64, 1, 16, 16)
    image[:, :, 8, 4] = 1.0  # a dot in the image's left half
    batch = {"xray": image}
    assert make_module().augment(batch) is batch
    torch.manual_seed(0)
    shifted = make_module(xray_shift=0.125).augment(batch)["xray"][:, 0]  # up to 2 of 16 pixels
    rows, cols = torch.div(shifted.flatten(1).argmax(1), 16, rounding_mode="floor"), shifted.flatten(1).argmax(1) % 16
    assert (rows - 8).abs().max() <= 2 and (cols - 4).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5  # drawn per image
    assert torch.allclose(shifted.sum((1, 2)), torch.ones(64))  # moved, not lost at the border
    with pytest.raises(ValueError, match="xray_shift"):
        MoreConfig(xray_shift=0.5)


def test_one_temperature_per_finding_is_fitted_on_validation_and_divides_the_logits_at_scoring(tmp_path):
    """A hand-made over-confident head: labels drawn from sigmoid(logit / T_f) with T = (3, 1, 0.5, 2) per finding;
    the fit recovers each T, the predictor reads them back and divides each finding's logits by its own."""
    from recipes.medical_more.predictor import CALIBRATION_DIR, MorePredictor, calibrate_findings

    torch.manual_seed(0)
    module = make_module().eval()
    with torch.no_grad():
        module.model.classifier.weight.mul_(40.0)  # logits spread over several units
    batch = make_batch(3000, seed=1)
    batch["present_report"] = torch.zeros(3000, dtype=torch.bool)  # the same logits with and without the report
    present = module.present_of(batch)
    with torch.no_grad():
        logits = module.model.diagnose(module.model.encode(batch).embeddings, present).logits
    true = torch.tensor([3.0, 1.0, 0.5, 2.0])
    batch["labels"] = torch.bernoulli(torch.sigmoid(logits / true), generator=torch.Generator().manual_seed(2))
    batches = [{k: v[i:i + 500] for k, v in batch.items()} for i in range(0, 3000, 500)]
    fitted = calibrate_findings(tmp_path, module, batches)
    temperatures = torch.tensor([fitted[f].temperature for f in module.findings])
    assert torch.allclose(temperatures, true, rtol=0.15), temperatures
    assert all(fitted[f].ece_after < fitted[f].ece_before for f in ("cardiomegaly", "normal"))  # the over-confident ones
    assert (tmp_path / CALIBRATION_DIR / "effusion" / "calibration.json").is_file()

    predictor = MorePredictor(module, {}, tmp_path)
    assert torch.equal(predictor.temperatures, temperatures.float())
    sample = {k: v[:8] for k, v in batch.items()}
    expected = torch.sigmoid(logits[:8] / temperatures)
    assert torch.allclose(predictor.probabilities(sample, module.present_of(sample)), expected, atol=1e-5)
    uncalibrated = MorePredictor(module, {}, tmp_path / "elsewhere")  # a run without the files scores unscaled
    assert torch.allclose(uncalibrated.probabilities(sample, module.present_of(sample)), torch.sigmoid(logits[:8]), atol=1e-6)


def test_a_small_validation_split_keeps_every_temperature_at_one(tmp_path):
    from recipes.medical_more.predictor import calibrate_findings

    torch.manual_seed(0)
    fitted = calibrate_findings(tmp_path, make_module().eval(), [make_batch(60)])  # 60 patients < 100
    assert {f: (c.temperature, c.fitted) for f, c in fitted.items()} == {f: (1.0, False) for f in fitted}
