"""The medical metrics: per-finding AUROC and the report alignment (contrastive loss, retrieval recall and its ceiling)
against brute force and scikit-learn, the same from two halves merged as from the whole split (what DDP's state
reduction does), and the names the module logs, with the robustness table's subsets reduced to the head's AUROC."""
from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score

from fusion_core.losses.contrastive import MultiAnchorInfoNCE
from recipes.medical_more.config import MoreConfig
from recipes.medical_more.metrics import FindingAUROC, ReportAlignment
from recipes.medical_more.module import MoreModule
from tests.recipes.medical_more.test_medical_model import TINY, make_batch

FINDINGS = ("cardiomegaly", "effusion", "opacity", "normal")
MODALITIES = ("report", "xray", "ecg")


def split_data(size: int = 12, seed: int = 3) -> dict:
    generator = torch.Generator().manual_seed(seed)
    present = {m: torch.ones(size, dtype=torch.bool) for m in MODALITIES}
    present["ecg"][[0, 5]] = False
    return {
        "embeddings": {m: torch.randn(size, 8, generator=generator) for m in MODALITIES},
        "present": present,
        "groups": {"xray": torch.tensor([0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]), "ecg": torch.arange(size) % 5},
        "labels": torch.tensor([[i % 2, (i // 2) % 2, (i // 3) % 2, 1 - i % 2] for i in range(size)]),
        "probs": torch.rand(size, 4, generator=generator),
    }


def rows(data: dict, index: slice) -> tuple:
    return ({m: e[index] for m, e in data["embeddings"].items()}, {m: p[index] for m, p in data["present"].items()},
            {m: g[index] for m, g in data["groups"].items()})


def brute_recall(query: torch.Tensor, gallery: torch.Tensor, k: int) -> float:
    hits = 0
    for i in range(len(query)):
        sims = [float(torch.nn.functional.cosine_similarity(query[i], gallery[j], dim=0)) for j in range(len(gallery))]
        hits += 1 + sum(s > sims[i] for s in sims) <= k
    return hits / len(query)


def test_finding_auroc_matches_sklearn_and_leaves_out_undefined_findings():
    data = split_data()
    labels = data["labels"].clone()
    labels[:, 2] = 1  # opacity: one class only, no AUROC
    metric = FindingAUROC(FINDINGS, "auroc")
    metric.update(data["probs"][:5], labels[:5])
    metric.update(data["probs"][5:], labels[5:])
    values = {k: float(v) for k, v in metric.compute().items()}
    expected = {f: roc_auc_score(labels[:, i].numpy(), data["probs"][:, i].numpy()) for i, f in enumerate(FINDINGS) if i != 2}
    assert set(values) == {"auroc", *(f"auroc_{f}" for f in expected)}
    for finding, value in expected.items():
        assert values[f"auroc_{finding}"] == pytest.approx(value, abs=1e-6)
    assert values["auroc"] == pytest.approx(sum(expected.values()) / 3, abs=1e-6)
    with pytest.raises(ValueError, match="one column per finding"):
        metric.update(data["probs"][:, :2], labels[:, :2])


def test_report_alignment_matches_brute_force_and_the_model_loss():
    data = split_data()
    contrastive = MultiAnchorInfoNCE([("report", "xray"), ("report", "ecg")], temperature=0.1)
    metric = ReportAlignment(lambda: 1.0 / contrastive.logit_scale.exp())
    metric.update(*rows(data, slice(0, 7)))
    metric.update(*rows(data, slice(7, None)))
    values = {k: float(v) for k, v in metric.compute().items()}
    embeddings, present = data["embeddings"], data["present"]
    keep = present["ecg"]
    for k in (1, 5, 10):
        assert values[f"recall@{k}_report_to_xray"] == pytest.approx(brute_recall(embeddings["report"], embeddings["xray"], k))
        assert values[f"recall@{k}_report_to_ecg"] == pytest.approx(brute_recall(embeddings["report"][keep], embeddings["ecg"][keep], k))
    # the xray keys: one group of 4 and eight singletons; a group of s gives each of its queries k/s at most
    assert values["recall_ceiling@1_report_to_xray"] == pytest.approx((4 * 0.25 + 8) / 12)
    assert values["recall_ceiling@5_report_to_xray"] == 1.0
    groups = {f"report-{m}": g for m, g in data["groups"].items()}
    expected = contrastive(embeddings, present, groups).loss
    assert values["contrastive_loss"] == pytest.approx(float(expected.detach()), rel=1e-5)


def test_without_keys_there_is_no_ceiling_and_no_semantic_positives():
    data = split_data()
    contrastive = MultiAnchorInfoNCE([("report", "xray"), ("report", "ecg")])
    metric = ReportAlignment(lambda: 1.0 / contrastive.logit_scale.exp())
    embeddings, present, _ = rows(data, slice(None))
    metric.update(embeddings, present, {"xray": data["groups"]["xray"]})
    values = metric.compute()
    assert "recall_ceiling@1_report_to_xray" in values and "recall_ceiling@1_report_to_ecg" not in values
    expected = contrastive(embeddings, present, {"report-xray": data["groups"]["xray"]}).loss
    assert float(values["contrastive_loss"]) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_two_halves_merged_give_the_metrics_of_the_whole_split():
    """What torchmetrics does across DDP processes: each holds some rows, the states are concatenated."""
    data = split_data()
    contrastive = MultiAnchorInfoNCE([("report", "xray"), ("report", "ecg")])
    whole, first, second = (ReportAlignment(lambda: 1.0 / contrastive.logit_scale.exp()) for _ in range(3))
    whole.update(*rows(data, slice(None)))
    first.update(*rows(data, slice(0, 12, 2)))  # a DistributedSampler interleaves the rows
    second.update(*rows(data, slice(1, 12, 2)))
    first.merge_state(second)
    merged, expected = first.compute(), whole.compute()
    assert set(merged) == set(expected)
    for name, value in expected.items():
        assert float(merged[name]) == pytest.approx(float(value), rel=1e-5), name


def test_the_module_logs_the_documented_names_and_subsets_only_the_head_auroc():
    torch.manual_seed(0)
    module = MoreModule(MoreConfig(**TINY)).eval()
    module._prompts = {"report_ids": make_batch(8, seed=9)["report_ids"], "report_mask": torch.ones(8, 8, dtype=torch.bool)}
    batches = [make_batch(6, seed=s) for s in (1, 2)]
    for batch in batches:
        batch["group_xray"], batch["group_ecg"] = torch.arange(6), torch.arange(6) % 3
        batch["labels"] = torch.tensor([[i % 2, (i // 2) % 2, (i // 3) % 2, 1 - i % 2] for i in range(6)], dtype=torch.float)
        with torch.no_grad():
            module.evaluate(batch, "test")
    names = set()
    for metric in module.metrics_of("test").values():
        names |= set(metric.compute())
    per_finding = {f"{m}_{f}" for m in ("auroc", "zero_shot_auroc") for f in FINDINGS}
    retrieval = {f"recall{c}@{k}_report_to_{m}" for c in ("", "_ceiling") for k in (1, 5, 10) for m in ("xray", "ecg")}
    assert names == {"contrastive_loss", "auroc", "zero_shot_auroc", *per_finding, *retrieval}
    assert len(module.subsets()) == 6
    for dropped in module.subsets():
        assert list(module.metrics_of("test", dropped)) == ["auroc"]
    # the report dropped: the subset's AUROC is the head's on X-ray and ECG alone
    with torch.no_grad():
        probs = torch.cat([module(b, {**module.present_of(b), "report": torch.zeros(6, dtype=torch.bool)}) for b in batches])
    labels = torch.cat([b["labels"] for b in batches])
    without_report = module.metrics_of("test", ("report",))["auroc"].compute()
    assert float(without_report["auroc_cardiomegaly"]) == pytest.approx(roc_auc_score(labels[:, 0].numpy(), probs[:, 0].numpy()), abs=1e-6)


def test_a_copied_module_computes_its_loss_at_its_own_temperature():
    """The alignment metric reads the model's temperature through a bound method: a deep copy (or a pickled module,
    as ddp_spawn sends it) reads the copy's, not the original's."""
    import copy
    import pickle

    module = MoreModule(MoreConfig(**TINY))
    module.metrics_of("val")
    for clone in (copy.deepcopy(module), pickle.loads(pickle.dumps(module))):
        with torch.no_grad():
            clone.model.contrastive.logit_scale.fill_(1.0)
        temperature = clone.metrics_of("val")["alignment"].temperature()
        assert float(temperature) == pytest.approx(float(torch.exp(torch.tensor(-1.0))))
        assert float(module.metrics_of("val")["alignment"].temperature()) == pytest.approx(0.07, rel=1e-4)
