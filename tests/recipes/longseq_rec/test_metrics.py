import math

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader
from torchmetrics.functional.classification import binary_auroc

from recipes.longseq_rec.metrics import GroupAUROC, binary_auc, group_auc, search_recall
from recipes.longseq_rec.module import RecModule


def test_binary_auc_counts_ties_half():
    scores = torch.tensor([0.9, 0.5, 0.5, 0.1])
    labels = torch.tensor([1, 1, 0, 0])
    # pairs (pos, neg): (0.9, 0.5) 1, (0.9, 0.1) 1, (0.5, 0.5) ½, (0.5, 0.1) 1  → 3.5 / 4
    assert float(binary_auc(scores, labels)) == pytest.approx(3.5 / 4)
    assert math.isnan(float(binary_auc(scores, torch.ones(4))))


def test_binary_auc_matches_torchmetrics():
    g = torch.Generator().manual_seed(0)
    scores, labels = torch.rand(200, generator=g), torch.randint(0, 2, (200,), generator=g)
    assert float(binary_auc(scores, labels)) == pytest.approx(float(binary_auroc(scores, labels)), abs=1e-6)


# user 1: 3 impressions, AUC 1; user 2: 4 impressions, pairs 0.3>0.1, 0.3<0.6, 0.4>0.1, 0.4<0.6 → AUC ½;
# user 3: only positives → skipped; user 4: one tie → AUC ½ over 2 impressions.
USERS = torch.tensor([1, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4])
SCORES = torch.tensor([0.9, 0.2, 0.5, 0.3, 0.6, 0.4, 0.1, 0.7, 0.2, 0.5, 0.5])
LABELS = torch.tensor([1, 0, 0, 1, 0, 1, 0, 1, 1, 1, 0])
HAND_GAUC = (3 * 1.0 + 4 * 0.5 + 2 * 0.5) / (3 + 4 + 2)


def test_group_auc_by_hand():
    assert float(group_auc(SCORES, LABELS, USERS)) == pytest.approx(HAND_GAUC)


def test_streaming_metric_matches_hand_computation_across_batches():
    metric = GroupAUROC()
    order = torch.tensor([10, 3, 0, 7, 5, 1, 8, 2, 4, 9, 6])  # users split across updates, shuffled
    for chunk in order.split(4):
        metric.update(SCORES[chunk], LABELS[chunk], USERS[chunk])
    assert float(metric.compute()) == pytest.approx(HAND_GAUC, abs=1e-6)
    metric.reset()
    metric.update(torch.tensor([0.1, 0.2]), torch.tensor([1, 1]), torch.tensor([5, 6]))
    assert math.isnan(float(metric.compute()))  # every user has a single class


def test_group_auc_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="1-D of one length"):
        GroupAUROC().update(torch.rand(3), torch.ones(3), torch.ones(2))


def test_search_recall_over_positives():
    retrieved = torch.tensor([[0, 3, -1], [1, 2, 4], [0, 1, 2]])
    relevant = torch.zeros(3, 6, dtype=torch.bool)
    relevant[0, [0, 5]] = True  # 1 of 2 found
    relevant[1, [1, 2, 4]] = True  # 3 of 3 found
    relevant[2, 0] = True  # negative: not counted
    recall, count = search_recall(retrieved, relevant, torch.tensor([1.0, 1.0, 0.0]))
    assert recall.tolist() == [0.5, 1.0] and int(count) == 2


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


def test_module_logs_metrics_that_match_a_hand_computation(tmp_path):
    torch.manual_seed(0)
    module = RecModule(
        num_users=8, num_items=20, num_cates=4, num_time_buckets=5, profile_cardinalities=[3], model="dare",
        attention_dim=8, representation_dim=16, profile_dim=4, top_k=3, mlp_hidden=[8],
    )
    batches = tiny_batches()
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )
    (metrics,) = trainer.test(module, dataloaders=DataLoader(batches, batch_size=None), verbose=False)
    module.eval()
    with torch.no_grad():
        outs = [module(b) for b in batches]
    logits = torch.cat([o.logit for o in outs])
    labels = torch.cat([b["label"] for b in batches])
    users = torch.cat([b["user"] for b in batches])
    probs = torch.sigmoid(logits)
    logloss = -(labels * probs.log() + (1 - labels) * (1 - probs).log()).mean()
    assert metrics["test/logloss"] == pytest.approx(float(logloss), abs=1e-5)
    assert metrics["test/auc"] == pytest.approx(float(binary_auroc(probs, labels.long())), abs=1e-5)
    assert metrics["test/gauc"] == pytest.approx(float(group_auc(probs, labels, users)), abs=1e-5)
    recalls = torch.cat([search_recall(o.retrieved, b["relevant"], b["label"])[0] for o, b in zip(outs, batches)])
    assert metrics["test/search_recall"] == pytest.approx(float(recalls.mean()), abs=1e-5)
    assert module.hparams.profile_cardinalities == [3] and module.hparams.model == "dare"


def test_module_rejects_unknown_model():
    with pytest.raises(ValueError, match="choose one of"):
        RecModule(num_users=2, num_items=5, num_cates=3, num_time_buckets=3, model="sim")
