"""The recommendation metrics and what RecModule logs: AUC, GAUC, logloss and search recall, by hand, per modality
subset, and the module's one config (saved as a plain mapping, rebuilt from it)."""
import math

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import binary_auroc

from recipes.longseq_rec.config import RecConfig
from recipes.longseq_rec.metrics import SearchRecall, search_recall
from recipes.longseq_rec.module import MODALITIES, RecModule
from recipes.runtime.metrics import GroupAUROC

# user 1: 3 impressions, AUC 1; user 2: 4 impressions, pairs 0.3>0.1, 0.3<0.6, 0.4>0.1, 0.4<0.6 → AUC ½;
# user 3: only positives → skipped; user 4: one tie → AUC ½ over 2 impressions.
USERS = torch.tensor([1, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4])
SCORES = torch.tensor([0.9, 0.2, 0.5, 0.3, 0.6, 0.4, 0.1, 0.7, 0.2, 0.5, 0.5])
LABELS = torch.tensor([1, 0, 0, 1, 0, 1, 0, 1, 1, 1, 0])
HAND_GAUC = (3 * 1.0 + 4 * 0.5 + 2 * 0.5) / (3 + 4 + 2)


def test_gauc_is_dins_impression_weighted_user_auc_across_batches():
    metric = GroupAUROC()
    order = torch.tensor([10, 3, 0, 7, 5, 1, 8, 2, 4, 9, 6])  # users split across updates, shuffled
    for chunk in order.split(4):
        metric.update(SCORES[chunk], LABELS[chunk], USERS[chunk])
    assert float(metric.compute()) == pytest.approx(HAND_GAUC, abs=1e-6)


def test_search_recall_over_positives():
    retrieved = torch.tensor([[0, 3, -1], [1, 2, 4], [0, 1, 2]])
    relevant = torch.zeros(3, 6, dtype=torch.bool)
    relevant[0, [0, 5]] = True  # 1 of 2 found
    relevant[1, [1, 2, 4]] = True  # 3 of 3 found
    relevant[2, 0] = True  # negative: not counted
    recall, count = search_recall(retrieved, relevant, torch.tensor([1.0, 1.0, 0.0]))
    assert recall.tolist() == [0.5, 1.0] and int(count) == 2
    many = torch.zeros(2, 6, dtype=torch.bool)
    many[:, [1, 2, 3, 4, 5]] = True  # more relevant behaviours than slots: the share of the 3 slots they fill
    recall, _ = search_recall(torch.tensor([[1, 2, 3], [0, 1, -1]]), many, torch.ones(2))
    assert torch.allclose(recall, torch.tensor([1.0, 1 / 3]))


def test_search_recall_metric_averages_over_positives_of_every_update_and_is_nan_without_any():
    metric = SearchRecall()
    relevant = torch.zeros(2, 4, dtype=torch.bool)
    relevant[0, [0, 1]] = True
    relevant[1, 2] = True
    metric.update(torch.tensor([[0, -1], [2, 3]]), relevant, torch.tensor([1.0, 1.0]))  # recalls ½ and 1
    metric.update(torch.tensor([[3, 2]]), relevant[:1], torch.tensor([1.0]))  # recall 0
    assert float(metric.compute()) == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    metric.reset()
    metric.update(torch.tensor([[0, 1]]), torch.zeros(1, 4, dtype=torch.bool), torch.tensor([1.0]))  # real logs
    assert math.isnan(float(metric.compute()))


def tiny_batches(n_batches: int = 2, batch: int = 6, length: int = 8):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n_batches):
        mask = torch.rand(batch, length, generator=g) > 0.2
        out.append({
            "user": torch.tensor([1, 1, 2, 2, 3, 3])[:batch] + 3 * i,
            "profile": torch.randint(1, 3, (batch, 1), generator=g),
            "target_item": torch.randint(1, 20, (batch,), generator=g),
            "target_cate": torch.randint(1, 4, (batch,), generator=g),
            "hist_item": torch.where(mask, torch.randint(1, 20, (batch, length), generator=g), 0),
            "hist_cate": torch.where(mask, torch.randint(1, 4, (batch, length), generator=g), 0),
            "hist_time": torch.where(mask, torch.randint(1, 5, (batch, length), generator=g), 0),
            "hist_mask": mask,
            "label": torch.tensor([1.0, 0.0] * (batch // 2)),
            "relevant": mask & (torch.rand(batch, length, generator=g) > 0.7),
        })
    return out


def tiny_config(**overrides) -> RecConfig:
    sizes = dict(num_users=8, num_items=20, num_cates=4, num_time_buckets=5, profile_cardinalities=(3,), model="dare",
                 attention_dim=8, representation_dim=16, profile_dim=4, top_k=3, mlp_hidden=(8,))
    return RecConfig(**{**sizes, **overrides})


def expected_metrics(module: RecModule, batches, present=None) -> dict[str, float]:
    with torch.no_grad():
        outs = [module(b, None if present is None else present(b)) for b in batches]
    logits = torch.cat([o.logit for o in outs])
    labels = torch.cat([b["label"] for b in batches])
    users = torch.cat([b["user"] for b in batches])
    probs = torch.sigmoid(logits)
    recalls = torch.cat([search_recall(o.retrieved, b["relevant"], b["label"])[0] for o, b in zip(outs, batches)])
    gauc = GroupAUROC()
    gauc.update(probs, labels.long(), users)
    return {
        "logloss": float(-(labels * probs.log() + (1 - labels) * (1 - probs).log()).mean()),
        "auc": float(binary_auroc(probs, labels.long())),
        "gauc": float(gauc.compute()),
        "search_recall": float(recalls.mean()),
    }


def test_module_logs_metrics_and_the_subset_table_that_match_a_hand_computation(tmp_path):
    torch.manual_seed(0)
    module = RecModule(tiny_config())
    batches = tiny_batches()
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )
    (metrics,) = trainer.test(module, dataloaders=DataLoader(batches, batch_size=None), verbose=False)
    module.eval()
    assert module.modalities == MODALITIES == ("history", "profile")
    for suffix, present in (("", None),
                            ("@without_history", lambda b: {"history": torch.zeros(len(b["user"]), dtype=torch.bool)}),
                            ("@without_profile", lambda b: {"profile": torch.zeros(len(b["user"]), dtype=torch.bool)})):
        for name, value in expected_metrics(module, batches, present).items():
            assert metrics[f"test/{name}{suffix}"] == pytest.approx(value, abs=1e-5), f"{name}{suffix}"
    # without the history nothing is retrieved: the search finds none of the planted behaviours
    assert metrics["test/search_recall@without_history"] == 0.0 < metrics["test/search_recall"]


def test_present_of_marks_an_empty_history_and_an_unknown_user():
    module = RecModule(tiny_config())
    batch = tiny_batches(1)[0]
    batch["hist_mask"][1] = False
    batch["user"][2] = 0
    present = module.present_of(batch)
    assert present["history"].tolist() == [True, False, True, True, True, True]
    assert present["profile"].tolist() == [True, True, False, True, True, True]
    assert torch.equal(module.strata_of(batch), batch["label"].long())


def test_training_drops_modalities_from_the_config_and_leaves_evaluation_alone():
    torch.manual_seed(0)
    module = RecModule(tiny_config(modality_dropout={"history": 0.9}, balance_missingness=True))
    batch = tiny_batches(1, batch=6)[0]
    batch = {k: v.repeat(20, *([1] * (v.dim() - 1))) for k, v in batch.items()}  # 120 rows
    module.train()
    present = module.training_present(batch)
    assert int((~present["history"]).sum()) > 60 and bool(present["profile"].all())
    module.eval()
    assert bool(module.training_present(batch)["history"].all())


def test_config_is_saved_as_a_plain_mapping_and_rebuilds_the_module():
    module = RecModule(tiny_config(model="twin"))
    saved = module.hparams["config"]
    assert saved["profile_cardinalities"] == [3] and saved["model"] == "twin" and saved["mlp_hidden"] == [8]
    again = RecModule(config=saved)
    assert again.config == module.config and again.recommender.representation_table is None  # twin: one table
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in module.state_dict().items()}


def test_module_rejects_unknown_model_and_unknown_modality():
    with pytest.raises(ValueError, match="choose one of"):
        RecModule(tiny_config(model="sim"))
    with pytest.raises(ValueError, match="its modalities are"):
        RecModule(tiny_config(modality_dropout={"target": 0.5}))

