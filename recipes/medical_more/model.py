"""The MoRE model: X-ray, ECG and report encoders with 128-d projections, the contrastive objective, zero-shot
diagnosis from prompts, and a diagnosis head over a fusion_core operator.

MoRE aligns each image and signal to its report: ``L = InfoNCE(report, xray) + InfoNCE(report, ecg)`` with one
learnable temperature (:class:`fusion_core.losses.contrastive.MultiAnchorInfoNCE`). The diagnosis head fuses the
three projected embeddings as one token per modality with the data contract's ``present`` masks, so it scores
with any modality missing; in training the module drops the ECG with p = 0.3 as in MoRE (and the report at a
configurable rate, since the labels are read from it: ``MoreConfig.modality_dropout``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from fusion_core.encoders.image import ViTEncoder
from fusion_core.encoders.signal1d import SignalPatchEncoder
from fusion_core.encoders.text import TextTransformerEncoder
from fusion_core.encoders.text_minilm import SentenceEncoder
from fusion_core.fusion import create_fusion
from fusion_core.layers import MLP
from fusion_core.losses.contrastive import ContrastiveOutput, MultiAnchorInfoNCE
from recipes.medical_more.config import MODALITIES, MoreConfig

__all__ = ["MoreModel", "MoreEmbeddings", "Diagnosis", "build_more_model"]


class MoreEmbeddings(NamedTuple):
    """``embeddings {modality: (B, P)}`` projections (not normalised); ``xray_tokens``/``ecg_tokens`` encoder states."""

    embeddings: dict[str, Tensor]
    xray_tokens: Tensor
    ecg_tokens: Tensor


class Diagnosis(NamedTuple):
    """What the diagnosis head gives: ``logits (B, F)``, the fusion's ``aux_loss`` and, for ``sequential`` fusion,
    ``steps``: the per-state finding logits ``[(B, F), ...]`` of MultiModN's decoder (else None)."""

    logits: Tensor
    aux_loss: Tensor
    steps: list[Tensor] | None


class MoreModel(nn.Module):
    """Encoders → projections → (contrastive loss | zero-shot | fused diagnosis head).

    Batches are the dicts of :class:`recipes.medical_more.data.MoreDataModule`: ``xray (B, 1, S, S)`` in [0, 1],
    ``ecg (B, 12, T)`` mV, and ``report_embedding (B, report_dim)`` or ``report_ids``/``report_mask (B, N)`` (hashed
    words for a :class:`TextTransformerEncoder`, MiniLM token ids for a LoRA :class:`SentenceEncoder`).
    """

    def __init__(self, xray_encoder: ViTEncoder, ecg_encoder: SignalPatchEncoder,
                 report_encoder: TextTransformerEncoder | SentenceEncoder | None,
                 report_dim: int, projection_dim: int, fusion: nn.Module, fusion_dim: int, num_findings: int,
                 temperature: float = 0.07) -> None:
        super().__init__()
        self.xray_encoder, self.ecg_encoder, self.report_encoder = xray_encoder, ecg_encoder, report_encoder
        if report_encoder is None:
            in_report = report_dim
        else:
            in_report = report_encoder.out_dim if isinstance(report_encoder, SentenceEncoder) else report_encoder.dim
        self.projections = nn.ModuleDict({
            "xray": nn.Linear(xray_encoder.dim, projection_dim),
            "ecg": nn.Linear(ecg_encoder.dim, projection_dim),
            # a frozen sentence encoder gets a small MLP so the report side can still adapt
            "report": nn.Linear(in_report, projection_dim) if report_encoder is not None
            else MLP(in_report, [projection_dim], projection_dim),
        })
        self.contrastive = MultiAnchorInfoNCE([("report", "xray"), ("report", "ecg")], temperature=temperature)
        self.fusion = fusion
        self.classifier = nn.Linear(fusion_dim, num_findings)

    def encode_report(self, batch: Mapping[str, Tensor]) -> Tensor:
        """``(B, P)`` report projections from precomputed embeddings or token ids."""
        if self.report_encoder is None:
            return self.projections["report"](batch["report_embedding"])
        if isinstance(self.report_encoder, SentenceEncoder):  # mean of the LoRA-tuned MiniLM's token states
            return self.projections["report"](self.report_encoder.pool(batch["report_ids"], batch["report_mask"]))
        return self.projections["report"](self.report_encoder(batch["report_ids"], batch["report_mask"]).pooled)

    def encode(self, batch: Mapping[str, Tensor]) -> MoreEmbeddings:
        xray = self.xray_encoder((batch["xray"] - 0.5) / 0.25)  # radiograph intensities to roughly unit scale
        ecg = self.ecg_encoder(batch["ecg"])
        embeddings = {
            "xray": self.projections["xray"](xray.pooled),
            "ecg": self.projections["ecg"](ecg.pooled),
            "report": self.encode_report(batch),
        }
        return MoreEmbeddings(embeddings, xray.tokens, ecg.tokens)

    def contrastive_loss(self, embeddings: dict[str, Tensor], present: dict[str, Tensor] | None = None,
                         groups: Tensor | Mapping[str, Tensor] | None = None) -> ContrastiveOutput:
        """InfoNCE(report, X-ray) + InfoNCE(report, ECG); ``groups``: ``(B,)`` keys, or per pair
        (``{"report-xray": …, "report-ecg": …}``), of rows that are positives of each other."""
        return self.contrastive(embeddings, present, groups)

    def head_parameters(self) -> list[nn.Parameter]:
        """The diagnosis head's parameters (fusion and classifier): what contrastive pre-training does not train."""
        return [*self.fusion.parameters(), *self.classifier.parameters()]

    def logit_scale(self) -> Tensor:
        """The learned ``1 / T`` of the contrastive loss, clamped as the loss clamps it."""
        return self.contrastive.logit_scale.exp().clamp(max=self.contrastive.max_logit_scale)

    def temperature(self) -> Tensor:
        """The contrastive loss's current ``T = 1 / logit_scale``."""
        return 1.0 / self.logit_scale()

    def diagnose(self, embeddings: dict[str, Tensor], present: dict[str, Tensor]) -> Diagnosis:
        """The fused head on the projections; absent modalities never reach the output."""
        tokens = {m: F.normalize(e, dim=-1)[:, None, :] for m, e in embeddings.items()}  # (B, 1, P) each
        out = self.fusion(tokens, None, present)
        return Diagnosis(self.classifier(out.pooled), out.aux_loss, out.steps)

    def zero_shot(self, query: Tensor, prompts: Tensor) -> Tensor:
        """``(B, F)`` probabilities: for finding ``f``, softmax of the query's similarity to prompt ``2f`` (present)
        against ``2f + 1`` (absent), at the learned temperature. ``query (B, P)``, ``prompts (2F, P)``."""
        sim = F.normalize(query, dim=-1) @ F.normalize(prompts, dim=-1).T  # (B, 2F)
        logits = self.logit_scale() * sim
        pairs = logits.reshape(query.shape[0], -1, 2)  # (B, F, 2)
        return pairs.softmax(-1)[..., 0]


def build_more_model(config: MoreConfig) -> MoreModel:
    """The model for ``config``: ViT and ECG transformer of width ``encoder_dim``, the chosen report encoder, and the
    diagnosis head over ``config.fusion`` (``sequential`` decodes the findings from every state: ``num_outputs`` is
    the number of findings)."""
    sizes = dict(dim=config.encoder_dim, depth=config.depth, num_heads=config.num_heads, dropout=config.dropout)
    xray = ViTEncoder(config.image_size, config.patch_size, 1, **sizes, stem=config.xray_stem)
    ecg = SignalPatchEncoder(12, config.ecg_samples, config.ecg_patch, **sizes)
    report: TextTransformerEncoder | SentenceEncoder | None = None
    if config.report_encoder == "scratch":
        report = TextTransformerEncoder(config.vocab_size, config.text_max_len, **sizes)
    elif config.report_encoder == "minilm_lora":
        # loaded now, so the adapters are in the module tree for the optimiser and the saved weights
        report = SentenceEncoder(mode="lora", lora_rank=config.lora_rank, lora_alpha=config.lora_alpha,
                                 max_length=config.text_max_len, out_dim=config.report_dim).load()
        report.transformer.train()  # sentence-transformers loads it in eval mode; the module tree starts in train mode
    options = dict(config.fusion_options)
    if config.fusion == "sequential":
        if options.setdefault("num_outputs", config.num_findings) != config.num_findings:
            raise ValueError(f"sequential fusion decodes the {config.num_findings} findings from every state; drop "
                             f"num_outputs={options['num_outputs']} from fusion_options")
    fusion = create_fusion(config.fusion, modality_dims={m: config.projection_dim for m in MODALITIES}, dim=config.fusion_dim,
                           **options)
    return MoreModel(xray, ecg, report, config.report_dim, config.projection_dim, fusion, config.fusion_dim,
                     config.num_findings, config.temperature)
