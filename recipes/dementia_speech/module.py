"""The LightningModule: label-smoothed BCE on the source domain, optional Sinkhorn OT towards the target domain,
classification and calibration metrics per domain."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torchmetrics import MetricCollection

from fusion_core.losses import SinkhornLoss, binary_label_smoothing_bce
from recipes.dementia_speech.config import DementiaConfig
from recipes.dementia_speech.metrics import domain_metrics
from recipes.dementia_speech.model import DementiaModel, DementiaOutput
from recipes.runtime.module import RecipeModule

__all__ = ["DementiaModule"]


class DementiaModule(RecipeModule):
    """Dementia vs control from a recording's spectrogram image and its transcript (:class:`DementiaConfig`).

    ``label_smoothing`` smooths the 0/1 targets (``t(1−s) + s/2``). With ``ot_weight > 0`` each training step
    also takes an unlabelled target-domain batch and adds ``ot_weight · <P, C>``, the Sinkhorn transport cost
    between the source and target pooled features — DeepJDOT's joint cost (features + cross-entropy of the
    source labels under the target predictions) when ``ot_joint``, features only otherwise. With ``sequential``
    fusion, ``step_loss_weight`` adds the label-smoothed BCE of every fusion state (MultiModN).

    ``text_encoder="minilm_lora"`` runs MiniLM with LoRA adapters (rank ``lora_rank``, scale ``lora_alpha``) inside
    the model; only the adapters and the layers after MiniLM train.

    Logs ``val/{acc,f1,auroc,ece,...}`` and, at test time, ``test/<metric>`` on the source test speakers and
    ``test/target_<metric>`` on the target test speakers (and the same without each branch, ``@without_audio``...).
    """

    config_class = DementiaConfig
    progress_metrics = ("acc", "f1")

    def __init__(self, config: DementiaConfig = DementiaConfig()) -> None:
        config = self.coerce_config(config)
        super().__init__(config, modalities=config.modalities)
        self.model = DementiaModel(self.config)
        self.transport = SinkhornLoss(epsilon=self.config.ot_epsilon, joint=self.config.ot_joint,
                                      label_weight=self.config.ot_label_weight, normalize_cost="mean")

    def forward(self, batch: Mapping[str, Tensor], present: dict[str, Tensor] | None = None) -> DementiaOutput:
        return self.model(batch, present)

    def probability(self, batch: Mapping[str, Tensor], present: dict[str, Tensor] | None = None) -> Tensor:
        return torch.sigmoid(self(batch, present).logit)

    def logit(self, batch: Mapping[str, Tensor], present: dict[str, Tensor] | None = None) -> Tensor:
        """``(B,)`` logits, what temperature scaling (:mod:`recipes.runtime.calibration`) divides."""
        return self(batch, present if present is not None else self.present_of(batch)).logit

    # --- the recipe base's hooks ----------------------------------------------------------------------------
    def present_of(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Both branches, except the audio of rows whose ``audio_present`` is False (scored from the transcript
        alone); a transcript without words still has its class token."""
        rows, device = batch["text_mask"].shape[0], batch["text_mask"].device
        present = {m: torch.ones(rows, dtype=torch.bool, device=device) for m in self.modalities}
        if "audio" in present and "audio_present" in batch:
            present["audio"] = batch["audio_present"].bool()
        return present

    def on_fit_start(self) -> None:
        """Standardise the acoustic markers with the training split's statistics, once (a resumed run keeps its own)."""
        encoder = getattr(self.model, "marker_encoder", None)
        datamodule = getattr(self.trainer, "datamodule", None)
        if encoder is None or bool(encoder.fitted) or datamodule is None:
            return
        encoder.fit(datamodule.training_markers())

    def strata_of(self, batch: Mapping[str, Tensor]) -> Tensor:
        return batch["label"].long()

    def build_metrics(self) -> MetricCollection:
        return domain_metrics()

    def update_metrics(self, metrics: MetricCollection, batch: Mapping[str, Tensor],
                       present: dict[str, Tensor]) -> None:
        metrics.update(self.probability(batch, present), batch["label"].long(), batch["domain"])

    # --- training --------------------------------------------------------------------------------------------
    def training_step(self, batch: Mapping[str, Mapping[str, Tensor]], batch_idx: int) -> Tensor:
        cfg = self.config
        source = batch["source"] if "source" in batch else batch
        label = source["label"]
        out = self(source, self.training_present(source))
        loss = binary_label_smoothing_bce(out.logit, label, cfg.label_smoothing)
        self.log("train/task_loss", loss, prog_bar=True, batch_size=label.shape[0])
        steps = self.step_loss(out.steps,
                               lambda step: binary_label_smoothing_bce(step[:, 0], label, cfg.label_smoothing))
        if steps is not None:
            self.log("train/step_loss", steps, batch_size=label.shape[0])
            loss = loss + steps
        target = batch.get("target") if "source" in batch else None
        if cfg.ot_weight > 0 and target is not None:
            target_out = self(target)
            smoothed = label * (1 - cfg.label_smoothing) + 0.5 * cfg.label_smoothing
            source_probs = torch.stack([1 - smoothed, smoothed], dim=-1)  # (N, 2)
            target_logits = torch.stack([torch.zeros_like(target_out.logit), target_out.logit], dim=-1)  # (M, 2)
            transport = self.transport(out.features, target_out.features, source_probs, target_logits).loss
            self.log("train/ot_loss", transport, batch_size=label.shape[0])
            loss = loss + cfg.ot_weight * transport
        self.log("train/loss", loss, batch_size=label.shape[0])
        return loss
