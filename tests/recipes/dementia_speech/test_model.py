"""The dementia model assembled from fusion_core parts: shapes, gradients, masking, argument checks."""
from __future__ import annotations

import pytest
import torch

from recipes.dementia_speech.config import DementiaConfig
from recipes.dementia_speech.model import DementiaModel

SMALL = dict(dim=16, image_size=16, patch_size=8, audio_depth=1, num_heads=2, text_dim=12, dropout=0.0)


def make_batch(size: int, text_encoder: str = "minilm", tokens: int = 5) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    batch = {"image": torch.randn(size, 3, 16, 16), "text_mask": torch.ones(size, tokens, dtype=torch.bool)}
    batch["text_mask"][:, -2:] = False
    if text_encoder == "minilm":
        batch["text"] = torch.randn(size, tokens, 12)
    else:
        batch["text_ids"] = torch.randint(1, 100, (size, tokens))
    return batch


@pytest.mark.parametrize("fusion", ["gated_self_attention", "cross_attention", "sequential"])
@pytest.mark.parametrize("modalities", [("audio", "text"), ("audio",), ("text",)])
@pytest.mark.parametrize("size", [1, 2])
def test_output_shapes(fusion, modalities, size):
    model = DementiaModel(DementiaConfig(modalities=modalities, fusion=fusion, **SMALL)).eval()
    out = model(make_batch(size))
    assert out.logit.shape == (size,)
    assert out.features.shape == (size, 16 * (len(modalities) + 1))
    assert set(out.attention) == set(modalities)
    if "audio" in modalities:
        assert out.attention["audio"].shape == (size, 1, 1 + 4)
    if fusion == "sequential":  # MultiModN: a prediction from the initial state and after each branch
        assert len(out.steps) == len(modalities) + 1 and all(step.shape == (size, 1) for step in out.steps)
    else:
        assert out.steps is None


@pytest.mark.parametrize("fusion", ["gated_self_attention", "sequential"])
@pytest.mark.parametrize("text_encoder", ["minilm", "scratch"])
def test_every_parameter_gets_a_gradient(text_encoder, fusion):
    model = DementiaModel(DementiaConfig(text_encoder=text_encoder, text_vocab_size=128, fusion=fusion, **SMALL))
    out = model(make_batch(2, text_encoder))
    (out.logit.sum() + sum(step.sum() for step in out.steps or [])).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)
               and not n.startswith("text_encoder.weight")]  # embedding rows of unseen ids stay zero
    assert not missing


@pytest.mark.parametrize("fusion", ["gated_self_attention", "cross_attention", "sequential"])
def test_padding_and_absent_text_never_reach_the_output(fusion):
    model = DementiaModel(DementiaConfig(fusion=fusion, **SMALL)).eval()
    batch = make_batch(2)
    reference = model(batch).logit
    poisoned = dict(batch, text=batch["text"].clone())
    poisoned["text"][:, -2:] = float("nan")
    assert torch.allclose(model(poisoned).logit, reference, atol=1e-6)

    present = {"text": torch.tensor([False, True])}
    absent = model(batch, present).logit
    huge = dict(batch, text=batch["text"].clone())
    huge["text"][0] = 1e9
    changed = model(huge, present).logit
    assert torch.isfinite(changed).all() and torch.allclose(changed[0], absent[0], atol=1e-6)


def test_seeded_numeric_regression_is_reproducible():
    torch.manual_seed(0)
    first = DementiaModel(DementiaConfig(**SMALL)).eval()(make_batch(2)).logit
    torch.manual_seed(0)
    second = DementiaModel(DementiaConfig(**SMALL)).eval()(make_batch(2)).logit
    assert torch.equal(first, second)


@pytest.mark.parametrize("overrides,match", [
    ({"modalities": ("audio", "video")}, "modalities"),
    ({"modalities": ()}, "modalities"),
    ({"fusion": "concat"}, "fusion"),
    ({"text_encoder": "bert"}, "text_encoder"),
    ({"text_dim": 0}, "text_dim"),
])
def test_bad_config_raises(overrides, match):
    with pytest.raises(ValueError, match=match):
        DementiaConfig(**{**SMALL, **overrides})


def test_bad_module_arguments_raise():
    from recipes.dementia_speech.module import DementiaModule

    for fields, match in (({"label_smoothing": 1.0}, "label_smoothing"), ({"ot_weight": -1.0}, "ot_weight"),
                          ({"lr": 0.0}, "lr"), ({"modality_dropout": {"video": 0.2}}, "video")):
        with pytest.raises(ValueError, match=match):
            DementiaModule({**SMALL, **fields})


def test_the_module_takes_its_config_whole_and_rebuilds_from_saved_hyperparameters():
    from recipes.dementia_speech.module import DementiaModule

    config = DementiaConfig(fusion="cross_attention", modalities=("audio",), **SMALL)
    module = DementiaModule(config)
    assert module.config is config and module.modalities == ("audio",) and module.model.modalities == ("audio",)
    saved = module.hparams["config"]
    assert saved["modalities"] == ["audio"] and saved["fusion"] == "cross_attention"
    rebuilt = DementiaModule(saved)
    assert rebuilt.config == config
    rebuilt.load_state_dict(module.state_dict(), strict=True)
