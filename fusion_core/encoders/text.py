"""Text from scratch: hashed words and a small transformer over them — no vocabulary file and no download.

A word's id is a stable hash of the lower-cased word (CRC32, the same in every process and on every machine), so
any text can be encoded and the model trains from scratch. This is the one hashing scheme of the suite:

- words are the runs of ``[a-z0-9]`` in the lower-cased text (punctuation and markup separate words);
- id ``0`` is padding, id ``1`` the class token that opens every row, a word's id is ``2 + crc32(word) mod (V − 2)``;
- a row holds the class token and then at most ``max_len − 1`` words, padded with ``0`` to ``max_len``.

The pretrained alternative (all-MiniLM-L6-v2) is :mod:`fusion_core.encoders.text_minilm`.

Letters: ``B`` batch, ``N`` tokens, ``D`` width.
"""
from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from fusion_core.batch import masked_mean
from fusion_core.encoders.image import EncoderOutput, check_transformer_sizes, transformer_stack

__all__ = ["TokenBatch", "HashTokenizer", "TextTransformerEncoder"]

_WORD = re.compile(r"[a-z0-9]+")


class TokenBatch(NamedTuple):
    """Token ids of a batch of texts: ``ids (B, N)`` long, ``mask (B, N)`` bool (True on real tokens, right padding)."""

    ids: Tensor
    mask: Tensor


class HashTokenizer:
    """Words → ids in ``[2, vocab_size)`` by CRC32 of the lower-cased word; 0 is padding, 1 the class token.

    ``__call__(texts) -> TokenBatch`` of shape ``(B, max_len)``; :meth:`tokens` names what each real position of a
    row holds (for attributions). :attr:`SCHEME` names this id scheme: put it in the key of anything cached from the
    ids, so a change of the scheme can never serve stale ids.
    """

    PAD, CLS = 0, 1
    CLS_TOKEN = "[CLS]"
    SCHEME = "crc32-alnum-cls1-pad0"

    def __init__(self, vocab_size: int = 4096, max_len: int = 64) -> None:
        if vocab_size < 3:
            raise ValueError(f"vocab_size must be >= 3 (ids 0 and 1 are reserved); got {vocab_size}")
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 (the class token and one word); got {max_len}")
        self.vocab_size, self.max_len = vocab_size, max_len

    @staticmethod
    def words(text: str | None) -> list[str]:
        return _WORD.findall((text or "").lower())

    def word_id(self, word: str) -> int:
        return 2 + zlib.crc32(word.encode()) % (self.vocab_size - 2)

    def tokens(self, text: str | None) -> list[str]:
        """What the real positions of ``text``'s row hold: ``[CLS]`` then the words kept."""
        return [self.CLS_TOKEN, *self.words(text)[: self.max_len - 1]]

    def __call__(self, texts: Sequence[str | None]) -> TokenBatch:
        ids = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = [self.CLS] + [self.word_id(w) for w in self.words(text)][: self.max_len - 1]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return TokenBatch(ids, ids != self.PAD)


class TextTransformerEncoder(nn.Module):
    """From-scratch text transformer: ``ids (B, N)`` + ``mask (B, N)`` → :class:`EncoderOutput` of width ``dim``.

    The pooled vector is the mean of the real tokens' final states (padding never enters attention or the mean).
    """

    def __init__(
        self,
        vocab_size: int = 4096,
        max_len: int = 64,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if vocab_size < 3 or max_len < 2:
            raise ValueError(f"need vocab_size >= 3 and max_len >= 2; got {vocab_size}, {max_len}")
        check_transformer_sizes(dim, depth, num_heads, mlp_ratio, dropout)
        self.vocab_size, self.max_len, self.dim = vocab_size, max_len, dim
        self.token_embed = nn.Embedding(vocab_size, dim, padding_idx=HashTokenizer.PAD)
        self.pos_embed = nn.Parameter(torch.randn(1, max_len, dim) * 0.02)
        self.blocks = transformer_stack(dim, depth, num_heads, mlp_ratio, dropout)

    def tokenizer(self) -> HashTokenizer:
        return HashTokenizer(self.vocab_size, self.max_len)

    def forward(self, ids: Tensor, mask: Tensor) -> EncoderOutput:
        if ids.dim() != 2 or ids.shape != mask.shape or ids.shape[1] > self.max_len:
            raise ValueError(f"expected ids and mask of the same shape (B, N <= {self.max_len}); got "
                             f"{tuple(ids.shape)} and {tuple(mask.shape)}")
        mask = mask.bool().clone()
        mask[:, 0] = True  # an empty row would give attention nothing to attend to; its class slot stays real
        ids = torch.where(mask, ids, torch.zeros_like(ids))
        x = self.token_embed(ids) + self.pos_embed[:, : ids.shape[1]]  # (B, N, D)
        x = self.blocks(x, src_key_padding_mask=~mask)
        x = x.masked_fill(~mask[..., None], 0.0)
        return EncoderOutput(tokens=x, token_mask=mask, pooled=masked_mean(x, mask))
