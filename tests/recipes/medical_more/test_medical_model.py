"""The MoRE model and module: the contrastive objective, retrieval metrics, zero-shot, the fused head with gaps."""
from __future__ import annotations

import pytest
import torch

from fusion_core.losses.contrastive import info_nce
from recipes.medical_more.module import MoreModule

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


@pytest.fixture
def module() -> MoreModule:
    torch.manual_seed(0)
    return MoreModule(**TINY).eval()


@pytest.mark.parametrize("fusion", ["gated_self_attention", "cross_attention", "concat"])
@pytest.mark.parametrize("size", [1, 2])
def test_head_shapes(fusion, size):
    options = {} if fusion == "concat" else {"num_layers": 1, "num_heads": 2}
    module = MoreModule(**{**TINY, "fusion": fusion, "fusion_options": options}).eval()
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
        module = MoreModule(**TINY, semantic_positives=semantic).eval()
        groups = module._groups(batch)
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


def test_retrieval_ceiling_is_logged_from_the_group_keys(module):
    size = 8
    outputs = {f"emb_{m}": torch.randn(size, 8) for m in ("xray", "ecg", "report")}
    outputs.update({f"present_{m}": torch.ones(size, dtype=torch.bool) for m in ("xray", "ecg", "report")})
    outputs.update({f"prob_{k}": torch.rand(size, 4) for k in ("all", "no_ecg", "no_report")})
    outputs["labels"] = torch.tensor([[i % 2, (i // 2) % 2, (i // 3) % 2, 1 - i % 2] for i in range(size)], dtype=torch.float)
    outputs["group_xray"] = torch.tensor([0, 0, 0, 0, 1, 2, 3, 4])  # one group of 4, four singletons
    metrics = module.epoch_metrics(outputs, prompts=None)
    assert metrics["recall_ceiling@1_report_to_xray"] == pytest.approx((4 * 0.25 + 4) / 8)
    assert metrics["recall_ceiling@5_report_to_xray"] == 1.0
    assert "recall_ceiling@1_report_to_ecg" not in metrics  # no keys, no ceiling


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    module = MoreModule(**TINY).train()
    batch = make_batch(4)
    out = module.model.encode(batch)
    present = {m: torch.ones(4, dtype=torch.bool) for m in ("xray", "ecg", "report")}
    logits, aux = module.model.diagnose(out.embeddings, present)
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


def test_retrieval_metrics_match_brute_force(module):
    torch.manual_seed(3)
    size = 12
    outputs = {f"emb_{m}": torch.randn(size, 8) for m in ("xray", "ecg", "report")}
    outputs.update({f"present_{m}": torch.ones(size, dtype=torch.bool) for m in ("xray", "ecg", "report")})
    outputs["present_ecg"][[0, 5]] = False
    outputs.update({f"prob_{k}": torch.rand(size, 4) for k in ("all", "no_ecg", "no_report")})
    outputs["labels"] = torch.tensor([[i % 2, (i // 2) % 2, (i // 3) % 2, 1 - i % 2] for i in range(size)], dtype=torch.float)
    metrics = module.epoch_metrics(outputs, prompts=None)

    def brute(query, gallery, k):
        hits = 0
        for i in range(len(query)):
            sims = [float(torch.nn.functional.cosine_similarity(query[i], gallery[j], dim=0)) for j in range(len(gallery))]
            rank = 1 + sum(s > sims[i] for s in sims)
            hits += rank <= k
        return hits / len(query)

    keep = outputs["present_ecg"]
    for k in (1, 5, 10):
        assert metrics[f"recall@{k}_report_to_xray"] == pytest.approx(brute(outputs["emb_report"], outputs["emb_xray"], k))
        assert metrics[f"recall@{k}_report_to_ecg"] == pytest.approx(brute(outputs["emb_report"][keep], outputs["emb_ecg"][keep], k))
    from sklearn.metrics import roc_auc_score

    expected = roc_auc_score(outputs["labels"][:, 0].numpy(), outputs["prob_all"][:, 0].numpy())
    assert metrics["auroc_cardiomegaly"] == pytest.approx(expected, abs=1e-6)


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
    (dict(fusion="nope"), "unknown fusion"),
])
def test_ill_args(kwargs, text):
    with pytest.raises(ValueError, match=text):
        MoreModule(**{**TINY, **kwargs})
