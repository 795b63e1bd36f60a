"""The MoRE recipe's one config: every hyperparameter of the model and its training, declared once.

YAML: ``model: {config: {encoder_dim: 64, fusion: gated_self_attention, ...}}``; override with
``--model.config.encoder_dim 32``. ``image_size``, ``ecg_samples``, ``report_encoder``, ``vocab_size``,
``text_max_len`` and ``findings`` come from the data module, linked by the recipe
(``("data.image_size", "model.config.image_size")`` ...). Imports only :mod:`recipes.medical_more.labels` of the
vertical (which imports nothing of it), so the model, the module and the data module all read it without an import
circle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fusion_core.encoders.text_minilm import MINILM_DIM
from recipes.medical_more.labels import FINDINGS
from recipes.runtime.config import RecipeConfig

__all__ = ["MODALITIES", "REPORT_ENCODERS", "MoreConfig"]

MODALITIES: tuple[str, ...] = ("xray", "ecg", "report")
REPORT_ENCODERS: tuple[str, ...] = ("minilm", "minilm_lora", "scratch")


def _more_dropout() -> dict[str, float]:
    # MoRE drops the ECG with p = 0.3; the report more often, since the labels are read from it
    return {"ecg": 0.3, "report": 0.5}


@dataclass(kw_only=True)
class MoreConfig(RecipeConfig):
    """MoRE: encoders, projections, the contrastive objective, the fused diagnosis head and their training.

    Inputs (linked from the data): ``image_size`` radiograph side, ``ecg_samples`` ECG length, ``report_encoder``
    ``minilm`` (precomputed ``report_dim``-d sentence embeddings of the frozen all-MiniLM-L6-v2), ``minilm_lora``
    (MiniLM run on its token ids in the training loop, LoRA adapters of rank ``lora_rank`` and scale ``lora_alpha``
    on its query/value projections: only the adapters train) or ``scratch`` (a transformer over ``vocab_size``
    hashed words, ``text_max_len`` tokens); ``findings`` the label columns, in order.

    Encoders: a ViT over ``patch_size`` patches with the ``xray_stem`` patch embedding (``conv``: a small
    convolutional stem; ``patch``: ViT's one strided convolution), a transformer over Conv1d ECG patches of
    ``ecg_patch`` samples, both ``encoder_dim`` wide, ``depth`` layers, ``num_heads`` heads, ``dropout``; every
    modality projected to ``projection_dim``.

    Augmentation: in training steps each radiograph is shifted by up to ``xray_shift`` of its side in each direction
    (bilinear, border-padded; 0 = off), so the encoder cannot memorise each patient's one image.

    Objective: InfoNCE(report, X-ray) + InfoNCE(report, ECG) at a learnable temperature starting at
    ``temperature``; with ``semantic_positives``, patients whose reports describe the same radiograph / ECG are
    matches of each other; ``finding_target_weight`` ``w`` mixes in finding-aware soft targets (``(1 − w)`` on the
    instance's matches, ``w`` spread over every patient whose report names the same findings). Epochs ``< pretrain_epochs`` train it alone
    (with ``select_pretraining``, the diagnosis head then starts from the pre-training epoch with the best validation
    ``alignment_score``, not from the last one: see :class:`recipes.medical_more.module.MoreModule`); later epochs train the diagnosis head, a
    ``fusion`` operator of fusion_core (``fusion_options`` its keyword arguments, ``fusion_dim`` wide) over the
    projections, with binary cross-entropy plus ``contrastive_weight`` × the contrastive loss, and with
    ``modality_dropout`` (default: ECG 0.3 as in MoRE, report 0.5).
    """

    image_size: int = 64
    ecg_samples: int = 1000
    report_encoder: str = "minilm"
    report_dim: int = MINILM_DIM
    vocab_size: int = 4096
    text_max_len: int = 64
    findings: tuple[str, ...] = FINDINGS
    lora_rank: int = 8
    lora_alpha: int = 16
    patch_size: int = 8
    xray_stem: str = "conv"
    ecg_patch: int = 50
    encoder_dim: int = 64
    depth: int = 2
    num_heads: int = 4
    dropout: float = 0.0
    projection_dim: int = 128
    temperature: float = 0.07
    semantic_positives: bool = True
    finding_target_weight: float = 0.0
    select_pretraining: bool = False
    xray_shift: float = 0.0
    fusion: str = "gated_self_attention"
    fusion_dim: int = 64
    fusion_options: dict[str, Any] = field(default_factory=dict)
    pretrain_epochs: int = 3
    contrastive_weight: float = 0.0
    weight_decay: float = 0.01
    modality_dropout: float | dict[str, float] = field(default_factory=_more_dropout)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.findings = tuple(str(f) for f in self.findings)  # YAML and hparams.yaml give lists
        self.fusion_options = dict(self.fusion_options or {})
        if self.report_encoder not in REPORT_ENCODERS:
            raise ValueError(f"report_encoder must be one of {REPORT_ENCODERS}; got {self.report_encoder!r}")
        if not self.findings or len(set(self.findings)) != len(self.findings):
            raise ValueError(f"findings must name distinct label columns, at least one; got {list(self.findings)}")
        if self.pretrain_epochs < 0 or self.contrastive_weight < 0:
            raise ValueError(f"pretrain_epochs and contrastive_weight must be >= 0; got {self.pretrain_epochs}, "
                             f"{self.contrastive_weight}")
        if self.projection_dim <= 0 or self.fusion_dim <= 0:
            raise ValueError(f"projection_dim and fusion_dim must be positive; got {self.projection_dim}, {self.fusion_dim}")
        if not 0.0 <= self.finding_target_weight <= 1.0:
            raise ValueError(f"finding_target_weight must be in [0, 1]; got {self.finding_target_weight}")
        if not 0.0 <= self.xray_shift < 0.5:
            raise ValueError(f"xray_shift must be in [0, 0.5) (a share of the image side); got {self.xray_shift}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0; got {self.temperature}")

    @property
    def num_findings(self) -> int:
        return len(self.findings)
