"""The LightningModule: MoRE contrastive pre-training, then the fused diagnosis head, in one ``fusion train``.

Epochs ``< pretrain_epochs`` minimise the contrastive loss only (with ``semantic_positives``, the default, patients
whose reports describe the same radiograph or ECG, the batch's ``group_xray``/``group_ecg`` keys, count as matches
of each other rather than as negatives: see :func:`fusion_core.losses.contrastive.info_nce`); later epochs train
the diagnosis head with multi-label binary cross-entropy (plus ``contrastive_weight`` × the contrastive loss, and
MultiModN's per-step loss with ``sequential`` fusion and ``step_loss_weight`` > 0), with modalities dropped by the
config's ``modality_dropout`` (MoRE: the ECG at 0.3; here the report at 0.5 too) and, with ``balance_missingness``,
balanced across the finding strata (:meth:`MoreModule.strata_of`).

Validation and test log, over the whole split (:mod:`recipes.medical_more.metrics`): ``{stage}/contrastive_loss``,
retrieval ``{stage}/recall@k_report_to_{xray,ecg}`` (k = 1, 5, 10) and its ceiling
``{stage}/recall_ceiling@k_report_to_{xray,ecg}``, zero-shot ``{stage}/zero_shot_auroc[_<finding>]`` from the X-ray
embedding and the prompts of :data:`recipes.medical_more.data.PROMPTS`, and the head's
``{stage}/auroc[_<finding>]``. The test loop adds the head's AUROC with modalities removed,
``test/auroc[_<finding>]@without_<m>[+<m>]``: ``auroc@without_report`` (X-ray + ECG only: the labels are read from
the report) is the figure that says what the images and signals carry.

Model selection: every pre-training epoch's validation also logs ``val/alignment_score``, zero-shot mean AUROC plus
recall@10 report→X-ray as a share of its ceiling (:func:`alignment_score`: the two things pre-training is for). Zero-shot
peaks early while retrieval keeps rising, so with ``select_pretraining`` the module keeps the weights of the epoch
with the best score and the diagnosis head starts from them (:meth:`MoreModule.restore_selected_pretraining`, called
when the first fine-tuning epoch starts); the kept weights travel in checkpoints, so a resumed run selects the same.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection

from recipes.medical_more.config import MODALITIES, MoreConfig
from recipes.medical_more.metrics import FindingAUROC, ReportAlignment
from recipes.medical_more.model import Diagnosis, MoreModel, build_more_model
from recipes.runtime.module import RecipeModule

__all__ = ["MoreModule", "prompt_ensemble", "alignment_score"]


class MoreModule(RecipeModule):
    """MoRE pre-training and fine-tuned diagnosis, built from one :class:`MoreConfig` (see its fields)."""

    config_class = MoreConfig
    progress_metrics = ("auroc", "recall@5_report_to_xray")
    config: MoreConfig

    def __init__(self, config: MoreConfig = MoreConfig()) -> None:  # a mapping of its fields too (hparams.yaml)
        super().__init__(config, modalities=MODALITIES)
        self.findings = list(self.config.findings)
        self.model: MoreModel = build_more_model(self.config)
        self._prompts: dict[str, Tensor] | None = None  # the data module's prompt inputs, read once
        self._prompt_embeddings: Tensor | None = None  # their projections, once per evaluation epoch
        self._batch_embeddings: tuple[Mapping[str, Tensor], dict[str, Tensor]] | None = None
        # (score, epoch, weights) of the best pre-training epoch on validation, with select_pretraining
        self._selected: tuple[float, int, dict[str, Tensor]] | None = None

    # ------------------------------------------------------------------------------------------ batches
    @property
    def pretraining(self) -> bool:
        return self.current_epoch < self.config.pretrain_epochs

    def present_of(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{modality: (B,) bool}`` from a batch's ``present_<modality>`` entries (all present when missing)."""
        ones = torch.ones(batch["xray"].shape[0], dtype=torch.bool, device=batch["xray"].device)
        return {m: batch.get(f"present_{m}", ones).bool() for m in MODALITIES}

    def strata_of(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The finding combination of each row, ``Σ_f label_f · 2^f`` (Long (B,)): ``balance_missingness`` gives
        every combination (the normal chest is one) the same missing rate per modality."""
        labels = batch["labels"].long()  # (B, F) 0/1
        return (labels << torch.arange(labels.shape[1], device=labels.device)).sum(dim=1)

    def groups_of(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{"xray": (B,), "ecg": (B,)}``: the batch's semantic-positive keys (``group_<modality>``), where it has them."""
        return {m: batch[f"group_{m}"] for m in ("xray", "ecg") if f"group_{m}" in batch}

    def contrastive_groups(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor] | None:
        """The keys the contrastive loss takes per pair (``{"report-xray": …}``), or None without
        ``semantic_positives`` or keys."""
        if not self.config.semantic_positives:
            return None
        return {f"report-{m}": keys for m, keys in self.groups_of(batch).items()} or None

    def contrastive_loss(self, batch: Mapping[str, Tensor], embeddings: Mapping[str, Tensor],
                         present: dict[str, Tensor]):
        """The MoRE loss with finding-aware soft targets: ``(1 − w) · InfoNCE(instance targets) + w · InfoNCE(finding
        targets)``, ``w = finding_target_weight``. Instance targets: the row's own pair (and, with
        ``semantic_positives``, the rows whose reports describe the same radiograph / ECG); finding targets: every row
        whose report names the same findings (``group_finding``). Cross-entropy is linear in its target, so the sum is
        the cross-entropy against the mixed, soft target — without it the many near-identical normal reports of a
        batch are pushed apart as negatives although nothing in their images tells them apart."""
        weight = float(self.config.finding_target_weight)
        instance = self.model.contrastive_loss(embeddings, present, self.contrastive_groups(batch))
        if weight == 0.0 or "group_finding" not in batch:
            return instance
        keys = batch["group_finding"]
        finding = self.model.contrastive_loss(embeddings, present, {"report-xray": keys, "report-ecg": keys})
        return instance._replace(loss=(1.0 - weight) * instance.loss + weight * finding.loss,
                                 per_pair={k: (1.0 - weight) * v + weight * finding.per_pair[k] for k, v in instance.per_pair.items()})

    # ------------------------------------------------------------------------------------------ steps
    def forward(self, batch: Mapping[str, Tensor], present: dict[str, Tensor] | None = None) -> Tensor:
        """``(B, F)`` finding probabilities of the diagnosis head."""
        present = self.present_of(batch) if present is None else present
        return torch.sigmoid(self.model.diagnose(self.model.encode(batch).embeddings, present).logits)

    def augment(self, batch: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
        """The batch with each radiograph shifted by up to ``xray_shift`` of its side in x and y (drawn per image from
        the torch generator; border-padded), or the batch itself with ``xray_shift`` 0. Left stays left: no flips."""
        shift = float(self.config.xray_shift)
        if shift == 0.0:
            return batch
        xray = batch["xray"]
        size = xray.shape[0]
        offsets = (torch.rand(size, 2, device=xray.device) * 2.0 - 1.0) * (2.0 * shift)  # grid units: the side is 2
        theta = torch.zeros(size, 2, 3, device=xray.device, dtype=xray.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, :, 2] = offsets.to(xray.dtype)
        grid = F.affine_grid(theta, list(xray.shape), align_corners=False)
        return {**batch, "xray": F.grid_sample(xray, grid, mode="bilinear", padding_mode="border", align_corners=False)}

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        batch = self.augment(batch)
        present = self.present_of(batch)
        embeddings = self.model.encode(batch).embeddings
        size = batch["xray"].shape[0]
        contrastive = self.contrastive_loss(batch, embeddings, present)
        self.log("train/contrastive_loss", contrastive.loss, prog_bar=True, batch_size=size)
        self.log("train/temperature", 1.0 / contrastive.logit_scale, batch_size=size)
        if self.pretraining:
            # DDP's reducer needs every trainable parameter in every step's graph: the idle head joins with weight 0
            # (on detached embeddings) and on_after_backward drops its zero gradients, so the optimiser leaves it
            # untouched, as if it were not in the graph at all
            idle = self.model.diagnose({m: e.detach() for m, e in embeddings.items()}, present)
            return contrastive.loss + 0.0 * _total(idle)
        out = self.model.diagnose(embeddings, self.training_present(batch, present))
        labels = batch["labels"]
        bce = F.binary_cross_entropy_with_logits(out.logits, labels)
        self.log("train/bce", bce, prog_bar=True, batch_size=size)
        loss = bce + out.aux_loss + self.config.contrastive_weight * contrastive.loss
        steps = self.step_loss(out.steps, lambda step: F.binary_cross_entropy_with_logits(step, labels))
        if steps is not None:
            self.log("train/step_loss", steps, batch_size=size)
            return loss + steps
        # without the per-step loss, MultiModN's step decoder is not in the graph: keep it there for DDP (weight 0)
        return loss + 0.0 * _total(out) if out.steps else loss

    def on_after_backward(self) -> None:
        if self.pretraining:
            for parameter in self.model.head_parameters():
                parameter.grad = None

    # ---------------------------------------------------------------------------------------- metrics
    def build_metrics(self) -> MetricCollection:
        return MetricCollection({
            # a bound method, not a lambda: the metric then pickles and deep-copies with the module
            "alignment": ReportAlignment(self.model.temperature, semantic_positives=self.config.semantic_positives),
            "zero_shot_auroc": FindingAUROC(self.findings, "zero_shot_auroc"),
            "auroc": FindingAUROC(self.findings, "auroc"),
        }, compute_groups=False)

    def build_subset_metrics(self) -> MetricCollection:
        # retrieval, the contrastive loss and zero-shot read the embeddings, which removing a modality does not change
        return MetricCollection({"auroc": FindingAUROC(self.findings, "auroc")}, compute_groups=False)

    def evaluate(self, batch: Mapping[str, Any], stage: str) -> None:
        # the embeddings do not depend on which modalities count as present: encode the batch once for all subsets
        self._batch_embeddings = (batch, self.model.encode(batch).embeddings)
        try:
            super().evaluate(batch, stage)
        finally:
            self._batch_embeddings = None

    def update_metrics(self, metrics: MetricCollection, batch: Mapping[str, Any], present: dict[str, Tensor]) -> None:
        if self._batch_embeddings is not None and self._batch_embeddings[0] is batch:
            embeddings = self._batch_embeddings[1]
        else:
            embeddings = self.model.encode(batch).embeddings
        labels = batch["labels"]
        metrics["auroc"].update(torch.sigmoid(self.model.diagnose(embeddings, present).logits), labels)
        if "alignment" in metrics:
            metrics["alignment"].update(embeddings, present, self.groups_of(batch))
        prompts = self.prompt_embeddings() if "zero_shot_auroc" in metrics else None
        if prompts is not None:
            keep = present["xray"]
            metrics["zero_shot_auroc"].update(self.model.zero_shot(embeddings["xray"][keep], prompts), labels[keep])

    def prompt_embeddings(self) -> Tensor | None:
        """``(2F, P)`` zero-shot prompt ensembles, rows ``2f`` (present) and ``2f + 1`` (absent): the mean of the
        normalised projections of each side's prompts (the data module's ``prompt_inputs()``, ``F · 2 · K`` rows;
        None without one). Computed once per evaluation epoch, since the weights do not change within it."""
        if self._prompt_embeddings is not None:
            return self._prompt_embeddings
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if self._prompts is None and datamodule is not None and hasattr(datamodule, "prompt_inputs"):
            self._prompts = datamodule.prompt_inputs()
        if self._prompts is None:
            return None
        projected = self.model.encode_report({k: v.to(self.device) for k, v in self._prompts.items()})
        self._prompt_embeddings = prompt_ensemble(projected, len(self.findings))
        return self._prompt_embeddings

    def on_validation_epoch_start(self) -> None:
        self._prompt_embeddings = None

    def on_validation_epoch_end(self) -> None:
        logged = self.log_stage("val")
        score = alignment_score(logged, "val")
        if score is None or not self.pretraining or self.trainer.sanity_checking:
            return
        self.log("val/alignment_score", score)
        if self.config.select_pretraining and (self._selected is None or score > self._selected[0]):
            weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            self._selected = (score, int(self.current_epoch), weights)

    @property
    def selected_pretraining(self) -> tuple[float, int] | None:
        """``(validation alignment_score, epoch)`` of the pre-training epoch kept by ``select_pretraining`` so far."""
        return None if self._selected is None else self._selected[:2]

    def restore_selected_pretraining(self) -> tuple[float, int] | None:
        """Load the kept pre-training weights (once; later calls do nothing) and return ``(score, epoch)``, or None
        when nothing was kept."""
        if self._selected is None:
            return None
        score, epoch, weights = self._selected
        self.model.load_state_dict(weights)
        self._selected = None
        return score, epoch

    def on_train_epoch_start(self) -> None:
        if self.current_epoch == self.config.pretrain_epochs and self._selected is not None:
            self.restore_selected_pretraining()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._selected is not None:
            checkpoint["more_selected_pretraining"] = {"score": self._selected[0], "epoch": self._selected[1],
                                                       "weights": self._selected[2]}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        kept = checkpoint.get("more_selected_pretraining")
        self._selected = None if kept is None else (float(kept["score"]), int(kept["epoch"]), kept["weights"])

    def on_test_epoch_start(self) -> None:
        self._prompt_embeddings = None


def prompt_ensemble(prompts: Tensor, num_findings: int) -> Tensor:
    """``(F · 2 · K, P)`` prompt projections (per finding: K present, then K absent) → ``(2F, P)``: each side's
    normalised projections averaged (CLIP's prompt ensembling)."""
    if prompts.shape[0] % (2 * num_findings):
        raise ValueError(f"{prompts.shape[0]} prompts do not split into {num_findings} findings × 2 sides of equal size; "
                         "give every finding as many present as absent prompts, the same number for each finding")
    per_side = prompts.shape[0] // (2 * num_findings)
    sides = F.normalize(prompts, dim=-1).reshape(2 * num_findings, per_side, -1)  # (2F, K, P)
    return sides.mean(dim=1)


def alignment_score(metrics: Mapping[str, float], stage: str = "val") -> float | None:
    """Zero-shot mean AUROC + recall@10 report→X-ray / its ceiling, from a stage's logged metrics (``{stage}/…``);
    None when any of the three is missing (no prompts, or too few rows) or the ceiling is 0."""
    names = [f"{stage}/zero_shot_auroc", f"{stage}/recall@10_report_to_xray", f"{stage}/recall_ceiling@10_report_to_xray"]
    values = [metrics.get(name) for name in names]
    if any(v is None or not math.isfinite(float(v)) for v in values) or float(values[2]) <= 0:
        return None
    return float(values[0]) + float(values[1]) / float(values[2])


def _total(out: Diagnosis) -> Tensor:
    """The sum of everything the head computed (for a weight-0 term that keeps all of it in the graph)."""
    total = out.logits.sum() + out.aux_loss
    return total + sum(step.sum() for step in out.steps) if out.steps else total
