"""The LightningModule: MoRE contrastive pre-training, then the fused diagnosis head, in one ``fusion train``.

Epochs ``< pretrain_epochs`` minimise the contrastive loss only (with ``semantic_positives``, the default, patients
whose reports describe the same radiograph or ECG, the batch's ``group_xray``/``group_ecg`` keys, count as matches
of each other rather than as negatives: see :func:`fusion_core.losses.contrastive.info_nce`); later epochs train
the diagnosis head with multi-label binary cross-entropy (plus ``contrastive_weight`` × the contrastive loss), with
the ECG dropped at ``ecg_drop`` (MoRE: 0.3) and the report at ``report_drop`` by
:class:`fusion_core.MissingnessBalancer`.

Validation and test log, over the whole split: ``{stage}/contrastive_loss``, retrieval
``{stage}/recall@k_report_to_{xray,ecg}`` (k = 1, 5, 10) and, when batches carry group keys, the ceiling
``{stage}/recall_ceiling@k_report_to_{xray,ecg}`` that identical reports put on it, zero-shot
``{stage}/zero_shot_auroc[_<finding>]`` from the X-ray embedding and the prompts of
:data:`recipes.medical_more.data.PROMPTS`, and the head's ``{stage}/auroc[_<finding>]`` with every modality,
``{stage}/auroc_no_ecg`` and ``{stage}/auroc_no_report`` (X-ray + ECG only: the labels are read from the report,
so this is the figure that says what the images and signals carry).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc

from fusion_core import MissingnessBalancer
from fusion_core.losses.contrastive import retrieval_recall_at_k, retrieval_recall_ceiling
from recipes.medical_more.labels import FINDINGS
from recipes.medical_more.model import MODALITIES, MoreConfig, MoreModel, build_more_model

__all__ = ["MoreModule", "RECALL_KS", "present_of", "auroc_or_none"]

RECALL_KS = (1, 5, 10)


def present_of(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``{modality: (B,) bool}`` from a batch's ``present_<modality>`` entries (all present when missing)."""
    size = batch["xray"].shape[0]
    ones = torch.ones(size, dtype=torch.bool, device=batch["xray"].device)
    return {m: batch.get(f"present_{m}", ones).bool() for m in MODALITIES}


def auroc_or_none(scores: Tensor, labels: Tensor) -> float | None:
    """Binary AUROC, or None when ``labels`` hold a single class (AUROC is undefined)."""
    labels = labels.long()
    if labels.numel() == 0 or labels.min() == labels.max():
        return None
    return float(binary_auroc(scores.float(), labels))


class MoreModule(pl.LightningModule):
    """MoRE pre-training and fine-tuned diagnosis; ``findings`` names the label columns (default :data:`FINDINGS`).

    ``image_size``, ``ecg_samples``, ``report_encoder``, ``vocab_size`` and ``text_max_len`` come from the data
    module (linked by the recipe); with ``report_encoder="minilm_lora"`` the MiniLM encoder runs in the training loop
    with LoRA adapters (``lora_rank``, ``lora_alpha``) and only they train on the report side. ``fusion`` is any
    registered fusion_core operator (``fusion_options`` its keyword arguments).
    """

    def __init__(
        self,
        *,
        image_size: int = 64,
        ecg_samples: int = 1000,
        report_encoder: str = "minilm",
        vocab_size: int = 4096,
        text_max_len: int = 64,
        lora_rank: int = 8,
        lora_alpha: int = 16,
        patch_size: int = 8,
        xray_stem: str = "conv",
        ecg_patch: int = 50,
        encoder_dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        projection_dim: int = 128,
        report_dim: int = 384,
        temperature: float = 0.07,
        fusion: str = "gated_self_attention",
        fusion_dim: int = 64,
        fusion_options: dict | None = None,
        findings: Sequence[str] = FINDINGS,
        pretrain_epochs: int = 3,
        contrastive_weight: float = 0.0,
        ecg_drop: float = 0.3,
        report_drop: float = 0.5,
        semantic_positives: bool = True,
        dropout: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__()
        if pretrain_epochs < 0 or contrastive_weight < 0:
            raise ValueError(f"pretrain_epochs and contrastive_weight must be >= 0; got {pretrain_epochs}, {contrastive_weight}")
        if lr <= 0 or weight_decay < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0; got lr={lr}, weight_decay={weight_decay}")
        findings = [str(f) for f in findings]
        fusion_options = dict(fusion_options or {})
        self.save_hyperparameters()
        self.findings = findings
        self.config = MoreConfig(
            image_size=image_size, patch_size=patch_size, xray_stem=xray_stem, ecg_samples=ecg_samples, ecg_patch=ecg_patch,
            encoder_dim=encoder_dim, depth=depth, num_heads=num_heads, projection_dim=projection_dim,
            report_encoder=report_encoder, report_dim=report_dim, vocab_size=vocab_size, text_max_len=text_max_len,
            lora_rank=lora_rank, lora_alpha=lora_alpha,
            temperature=temperature, fusion=fusion, fusion_dim=fusion_dim, fusion_options=fusion_options,
            num_findings=len(findings), dropout=dropout,
        )
        self.model: MoreModel = build_more_model(self.config)
        # Kept outside the module tree: with balance=False it has no state to save, and its extra state (a dict)
        # is something safetensors' save_model cannot write.
        object.__setattr__(self, "modality_dropout", MissingnessBalancer(dropout={"ecg": ecg_drop, "report": report_drop}, balance=False))
        self._outputs: list[dict[str, Tensor]] = []
        self._prompts: dict[str, Tensor] | None = None

    # ------------------------------------------------------------------------------------------ steps
    @property
    def pretraining(self) -> bool:
        return self.current_epoch < self.hparams.pretrain_epochs

    def forward(self, batch: Mapping[str, Tensor], present: dict[str, Tensor] | None = None) -> Tensor:
        """``(B, F)`` finding probabilities of the diagnosis head."""
        present = present_of(batch) if present is None else present
        logits, _ = self.model.diagnose(self.model.encode(batch).embeddings, present)
        return torch.sigmoid(logits)

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        present = present_of(batch)
        embeddings = self.model.encode(batch).embeddings
        size = batch["xray"].shape[0]
        contrastive = self.model.contrastive_loss(embeddings, present, self._groups(batch))
        self.log("train/contrastive_loss", contrastive.loss, prog_bar=True, batch_size=size)
        self.log("train/temperature", 1.0 / contrastive.logit_scale, batch_size=size)
        if self.pretraining:
            return contrastive.loss
        dropped = self.modality_dropout(present)
        logits, aux = self.model.diagnose(embeddings, dropped)
        bce = F.binary_cross_entropy_with_logits(logits, batch["labels"])
        self.log("train/bce", bce, prog_bar=True, batch_size=size)
        return bce + aux + self.hparams.contrastive_weight * contrastive.loss

    def _groups(self, source: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
        """``{"report-xray": (B,), "report-ecg": (B,)}``: the semantic-positive keys of a batch (or of collected
        outputs), when ``semantic_positives`` is on and ``source`` has ``group_<modality>`` entries."""
        if not self.hparams.semantic_positives:
            return None
        groups = {f"report-{m}": source[f"group_{m}"] for m in ("xray", "ecg") if f"group_{m}" in source}
        return groups or None

    def _collect(self, batch: Mapping[str, Tensor]) -> None:
        present = present_of(batch)
        embeddings = self.model.encode(batch).embeddings
        without = lambda name: {**present, name: torch.zeros_like(present[name])}  # noqa: E731
        probs = {
            "all": torch.sigmoid(self.model.diagnose(embeddings, present)[0]),
            "no_ecg": torch.sigmoid(self.model.diagnose(embeddings, without("ecg"))[0]),
            "no_report": torch.sigmoid(self.model.diagnose(embeddings, without("report"))[0]),
        }
        self._outputs.append({
            **{f"emb_{m}": e.detach() for m, e in embeddings.items()},
            **{f"present_{m}": p for m, p in present.items()},
            **{f"prob_{k}": v.detach() for k, v in probs.items()},
            "labels": batch["labels"],
            **{key: batch[key] for key in ("group_xray", "group_ecg") if key in batch},
        })

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._collect(batch)

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._collect(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    # --------------------------------------------------------------------------------------- metrics
    def prompt_embeddings(self) -> Tensor | None:
        """``(2F, P)`` projected prompts, from the data module's ``prompt_inputs()`` (None without one)."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self._prompts is None and datamodule is not None and hasattr(datamodule, "prompt_inputs"):
            self._prompts = datamodule.prompt_inputs()
        if self._prompts is None:
            return None
        inputs = {k: v.to(self.device) for k, v in self._prompts.items()}
        return self.model.encode_report(inputs)

    @torch.no_grad()
    def epoch_metrics(self, outputs: dict[str, Tensor], prompts: Tensor | None) -> dict[str, float]:
        """The split's metrics from concatenated step outputs (see the module docstring for the names)."""
        metrics: dict[str, float] = {}
        embeddings = {m: outputs[f"emb_{m}"] for m in MODALITIES}
        present = {m: outputs[f"present_{m}"] for m in MODALITIES}
        metrics["contrastive_loss"] = float(self.model.contrastive_loss(embeddings, present, self._groups(outputs)).loss)
        for other in ("xray", "ecg"):
            both = present["report"] & present[other]
            if int(both.sum()) >= 2:
                recall = retrieval_recall_at_k(embeddings["report"][both], embeddings[other][both], RECALL_KS)
                for k, value in recall.items():
                    metrics[f"recall@{k}_report_to_{other}"] = value
                if f"group_{other}" in outputs:  # the best any model can do when identical reports tie
                    ceiling = retrieval_recall_ceiling(outputs[f"group_{other}"][both].tolist(), RECALL_KS)
                    for k, value in ceiling.items():
                        metrics[f"recall_ceiling@{k}_report_to_{other}"] = value
        labels = outputs["labels"]
        groups = {"auroc": "prob_all", "auroc_no_ecg": "prob_no_ecg", "auroc_no_report": "prob_no_report"}
        if prompts is not None:
            zero_shot = self.model.zero_shot(embeddings["xray"], prompts)
            outputs = {**outputs, "zero_shot": zero_shot}
            groups["zero_shot_auroc"] = "zero_shot"
        for name, key in groups.items():
            values = []
            for f, finding in enumerate(self.findings):
                keep = present["xray"] if name == "zero_shot_auroc" else torch.ones_like(present["xray"])
                value = auroc_or_none(outputs[key][keep, f], labels[keep, f])
                if value is not None:
                    metrics[f"{name}_{finding}"] = value
                    values.append(value)
            if values:
                metrics[name] = sum(values) / len(values)
        return metrics

    def _log_epoch(self, stage: str) -> None:
        if not self._outputs:
            return
        outputs = {k: torch.cat([o[k] for o in self._outputs]) for k in self._outputs[0]}
        self._outputs.clear()
        for name, value in self.epoch_metrics(outputs, self.prompt_embeddings()).items():
            self.log(f"{stage}/{name}", value, prog_bar=name in ("auroc", "recall@5_report_to_xray"))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
