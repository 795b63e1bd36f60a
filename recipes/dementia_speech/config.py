"""The dementia recipe's one config and the names every file of the vertical shares.

Imports nothing else of the vertical (and no torch), so the data module, the model, the module, the predictor and
the report can all import it without a circle.
"""
from __future__ import annotations

from dataclasses import dataclass

from recipes.runtime.config import RecipeConfig

__all__ = ["DementiaConfig", "MODALITIES", "FUSIONS", "TEXT_ENCODERS", "ACOUSTIC_ENCODERS"]

MODALITIES = ("audio", "text")
#: the fusion operators of fusion_core the model can be built with: the two variants the paper compares, and
#: MultiModN's sequential fusion (per-step predictions, ``step_loss_weight``)
FUSIONS = ("gated_self_attention", "cross_attention", "sequential")
#: frozen cached MiniLM embeddings, MiniLM with LoRA adapters tuned in the loop, hashed word ids (from scratch)
TEXT_ENCODERS = ("minilm", "minilm_lora", "scratch")
#: the acoustic branch: the paper's log-Mel/Δ/ΔΔ spectrogram transformer, the acoustic markers (eGeMAPS functionals and
#: pause statistics, :mod:`recipes.dementia_speech.acoustic`) through an MLP, or both token sets side by side
ACOUSTIC_ENCODERS = ("vit", "features", "both")


@dataclass(kw_only=True)
class DementiaConfig(RecipeConfig):
    """Every hyperparameter of the dementia model and its training, declared once (YAML ``model: {config: {...}}``).

    ``modalities``        the branches the model has: both, or one for the unimodal baselines
    ``fusion``            a fusion_core operator of :data:`FUSIONS`
    ``dim``, ``num_heads``  token width and attention heads (spectrogram transformer and fusion)
    ``patch_size``, ``audio_depth``  the spectrogram transformer's patches and layers
    ``fusion_layers``     layers of the attention fusions; ``context_heads``: heads of each branch's context attention
    ``image_size``, ``text_encoder``, ``text_dim``, ``text_vocab_size``  what the data module hands over; linked from
                          the data section (``data.image_size`` ...), so the model and its inputs always agree.
                          ``text_dim`` is MiniLM's width (384) for the MiniLM encoders, 0 for ``scratch``
    ``lora_rank``, ``lora_alpha``  the LoRA adapters of ``text_encoder="minilm_lora"``
    ``acoustic``          the acoustic branch's encoder, one of :data:`ACOUSTIC_ENCODERS`; ``acoustic_features``: how many
                          acoustic markers it reads (linked from the data section)
    ``label_smoothing``   smooths the 0/1 targets to ``t(1−s) + s/2``
    ``ot_weight``         weight of the Sinkhorn transport cost towards the unlabelled target domain (0: off);
                          ``ot_joint`` DeepJDOT's joint cost (features + label cross-entropy, weighted by
                          ``ot_label_weight``) or features only; ``ot_epsilon`` the entropic regularisation
    """

    modalities: tuple[str, ...] = MODALITIES
    fusion: str = "gated_self_attention"
    dim: int = 64
    image_size: int = 64
    patch_size: int = 8
    audio_depth: int = 2
    num_heads: int = 4
    fusion_layers: int = 1
    context_heads: int = 1
    acoustic: str = "vit"
    acoustic_features: int = 0
    text_encoder: str = "minilm"
    text_dim: int = 384
    text_vocab_size: int = 4096
    dropout: float = 0.1
    lora_rank: int = 8
    lora_alpha: int = 16
    label_smoothing: float = 0.1
    ot_weight: float = 0.0
    ot_joint: bool = True
    ot_epsilon: float = 0.1
    ot_label_weight: float = 1.0
    lr: float = 1e-3
    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        self.modalities = tuple(str(m) for m in self.modalities)  # a config rebuilt from hparams.yaml holds a list
        if not self.modalities or any(m not in MODALITIES for m in self.modalities) or \
                len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities={list(self.modalities)}; pick one or both of {list(MODALITIES)}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion={self.fusion!r}; choose one of {list(FUSIONS)}")
        if self.acoustic not in ACOUSTIC_ENCODERS:
            raise ValueError(f"acoustic={self.acoustic!r}; choose one of {list(ACOUSTIC_ENCODERS)}")
        if self.acoustic != "vit" and "audio" in self.modalities and self.acoustic_features <= 0:
            raise ValueError(f"acoustic={self.acoustic!r} reads acoustic markers: acoustic_features must be their count "
                             "(> 0; linked from --data.acoustic)")
        if self.text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder={self.text_encoder!r}; choose one of {list(TEXT_ENCODERS)}")
        if self.text_encoder != "scratch" and self.text_dim <= 0:
            raise ValueError(f"text_dim must be the MiniLM width (384) with text_encoder={self.text_encoder!r}")
        if self.lora_rank <= 0 or self.lora_alpha <= 0:
            raise ValueError(f"lora_rank and lora_alpha must be positive; got {self.lora_rank}, {self.lora_alpha}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1); got {self.label_smoothing}")
        if self.ot_weight < 0:
            raise ValueError(f"ot_weight must be >= 0 (0 switches OT off); got {self.ot_weight}")
