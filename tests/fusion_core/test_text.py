"""The hashed-word text path: one id scheme (0 pad, 1 class token, ``2 + crc32 mod (V - 2)``), the same in every
process, and the from-scratch transformer over it (shapes, gradients, padding invariance, masked-mean pooling)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fusion_core.encoders.text import HashTokenizer, TextTransformerEncoder, TokenBatch

TINY = dict(dim=16, depth=1, num_heads=2, mlp_ratio=2.0)
REPO = Path(__file__).resolve().parents[2]


def test_word_ids_follow_the_one_scheme():
    tokenizer = HashTokenizer(vocab_size=4096, max_len=8)
    # pinned: cached ids and trained embedding tables depend on these numbers (change HashTokenizer.SCHEME with them)
    assert [tokenizer.word_id(w) for w in ("heart", "no", "pause", "uh")] == [772, 3843, 2463, 1658]
    assert HashTokenizer.words("No pleural-effusion, [pause] &UH.") == ["no", "pleural", "effusion", "pause", "uh"]


@pytest.mark.parametrize("vocab_size", [3, 64, 4096])
def test_ids_stay_in_range_and_the_layout_is_class_token_words_padding(vocab_size):
    texts = [" ".join(f"w{i}x{j}" for j in range(i)) for i in range(12)] + ["", None]
    ids, mask = HashTokenizer(vocab_size, max_len=8)(texts)
    assert ids.shape == mask.shape == (14, 8) and ids.dtype == torch.long and mask.dtype == torch.bool
    assert (ids[:, 0] == HashTokenizer.CLS).all() and mask[:, 0].all()
    words = ids[:, 1:][mask[:, 1:]]
    assert ((words >= 2) & (words < vocab_size)).all()
    assert torch.equal(mask, ids != HashTokenizer.PAD)
    lengths = mask.sum(1)
    assert lengths.tolist() == [min(1 + i, 8) for i in range(12)] + [1, 1]  # class token + words, cut at max_len
    # right padding: every real token comes before every pad
    assert torch.equal(mask, torch.arange(8)[None, :] < lengths[:, None])


def test_tokens_name_every_real_position():
    tokenizer = HashTokenizer(64, max_len=4)
    batch = tokenizer(["the heart is enlarged today"])
    assert isinstance(batch, TokenBatch)
    assert tokenizer.tokens("the heart is enlarged today") == ["[CLS]", "the", "heart", "is"]
    assert batch.ids[0, 1:].tolist() == [tokenizer.word_id(w) for w in ("the", "heart", "is")]
    assert tokenizer.tokens(None) == ["[CLS]"]


def test_ids_are_the_same_in_another_process():
    code = ("from fusion_core.encoders.text import HashTokenizer; "
            "print(HashTokenizer(512, 6)(['Cardiomegaly with effusion.'])[0].tolist())")
    env = {**os.environ, "PYTHONHASHSEED": "123"}  # Python's own str hash changes with this; CRC32 must not
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=REPO)
    assert out.stdout.strip() == str(HashTokenizer(512, 6)(["Cardiomegaly with effusion."])[0].tolist())


@pytest.mark.parametrize("kwargs, text", [(dict(vocab_size=2), "vocab_size"), (dict(max_len=1), "max_len")])
def test_tokenizer_ill_args(kwargs, text):
    with pytest.raises(ValueError, match=text):
        HashTokenizer(**kwargs)


@pytest.mark.parametrize("batch", [1, 2])
def test_transformer_shapes_and_pooling_is_the_mean_of_real_tokens(batch):
    torch.manual_seed(0)
    ids, mask = HashTokenizer(64, 8)(["no pleural effusion", "heart"][:batch])
    out = TextTransformerEncoder(vocab_size=64, max_len=8, **TINY).eval()(ids, mask)
    assert out.tokens.shape == (batch, 8, 16) and out.pooled.shape == (batch, 16)
    for row in range(batch):
        real = out.tokens[row, : int(mask[row].sum())]
        torch.testing.assert_close(out.pooled[row], real.sum(0) / real.shape[0])
        assert (out.tokens[row, int(mask[row].sum()):] == 0).all()


def test_transformer_ignores_padding_values_and_keeps_an_empty_row_real():
    torch.manual_seed(0)
    ids, mask = HashTokenizer(64, 8)(["No pleural effusion.", ""])
    encoder = TextTransformerEncoder(vocab_size=64, max_len=8, **TINY).eval()
    garbage = torch.where(mask, ids, torch.full_like(ids, 63))
    torch.testing.assert_close(encoder(ids, mask).pooled, encoder(garbage, mask).pooled)
    nothing = encoder(ids, torch.zeros_like(mask))  # even with no real token, the class slot gives a finite vector
    assert nothing.token_mask[:, 0].all() and torch.isfinite(nothing.pooled).all()


def test_every_transformer_parameter_gets_a_gradient():
    torch.manual_seed(0)
    encoder = TextTransformerEncoder(64, 8, **TINY)
    out = encoder(*HashTokenizer(64, 8)(["heart enlarged", "clear lungs no effusion"]))
    (out.tokens.pow(2).mean() + out.pooled.sum()).backward()
    missing = [n for n, p in encoder.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_transformer_rejects_ids_longer_than_its_positions():
    with pytest.raises(ValueError, match=r"N <= 8"):
        TextTransformerEncoder(64, 8, **TINY)(torch.ones(1, 9, dtype=torch.long), torch.ones(1, 9, dtype=torch.bool))
