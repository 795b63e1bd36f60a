"""The LightningModule: label-smoothed BCE on the source domain, optional Sinkhorn OT towards the target domain,
classification and calibration metrics per domain."""
from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch import Tensor

from fusion_core.losses import SinkhornLoss, binary_label_smoothing_bce
from recipes.dementia_speech.metrics import classification_metrics
from recipes.dementia_speech.model import DementiaModel, DementiaModelConfig, DementiaOutput

__all__ = ["DementiaModule"]


class DementiaModule(pl.LightningModule):
    """Dementia vs control from a recording's spectrogram image and its transcript.

    ``label_smoothing`` smooths the 0/1 targets (``t(1−s) + s/2``). With ``ot_weight > 0`` each training step
    also takes an unlabelled target-domain batch and adds ``ot_weight · <P, C>``, the Sinkhorn transport cost
    between the source and target pooled features — DeepJDOT's joint cost (features + cross-entropy of the
    source labels under the target predictions) when ``ot_joint``, features only otherwise.

    ``text_encoder="minilm_lora"`` runs MiniLM with LoRA adapters (rank ``lora_rank``, scale ``lora_alpha``) inside
    the model; only the adapters and the layers after MiniLM train.

    Logs ``val/{acc,f1,auroc,ece,...}`` and, at test time, ``test/<metric>`` on the source test speakers and
    ``test/target_<metric>`` on the target test speakers.
    """

    def __init__(
        self,
        *,
        text_dim: int = 384,
        image_size: int = 64,
        modalities: Sequence[str] = ("audio", "text"),
        fusion: str = "gated_self_attention",
        dim: int = 64,
        patch_size: int = 8,
        audio_depth: int = 2,
        num_heads: int = 4,
        fusion_layers: int = 1,
        context_heads: int = 1,
        text_encoder: str = "minilm",
        text_vocab_size: int = 4096,
        dropout: float = 0.1,
        lora_rank: int = 8,
        lora_alpha: int = 16,
        label_smoothing: float = 0.1,
        ot_weight: float = 0.0,
        ot_joint: bool = True,
        ot_epsilon: float = 0.1,
        ot_label_weight: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
        if ot_weight < 0:
            raise ValueError(f"ot_weight must be >= 0 (0 switches OT off); got {ot_weight}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0; got {lr}")
        modalities = [str(m) for m in modalities]
        self.save_hyperparameters()
        self.config = DementiaModelConfig(
            modalities=tuple(modalities), fusion=fusion, dim=dim, image_size=image_size, patch_size=patch_size,
            audio_depth=audio_depth, num_heads=num_heads, fusion_layers=fusion_layers, context_heads=context_heads,
            text_encoder=text_encoder, text_dim=text_dim if text_encoder != "scratch" else 0,
            text_vocab_size=text_vocab_size, dropout=dropout, lora_rank=lora_rank, lora_alpha=lora_alpha,
        )
        self.model = DementiaModel(self.config)
        self.transport = SinkhornLoss(epsilon=ot_epsilon, joint=ot_joint, label_weight=ot_label_weight,
                                      normalize_cost="mean")
        self._outputs: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {"val": [], "test": []}

    def forward(self, batch: dict[str, Tensor], present: dict[str, Tensor] | None = None) -> DementiaOutput:
        return self.model(batch, present)

    def probability(self, batch: dict[str, Tensor], present: dict[str, Tensor] | None = None) -> Tensor:
        return torch.sigmoid(self(batch, present).logit)

    def training_step(self, batch: dict[str, dict[str, Tensor]], batch_idx: int) -> Tensor:
        source = batch["source"] if "source" in batch else batch
        out = self(source)
        label = source["label"]
        loss = binary_label_smoothing_bce(out.logit, label, self.hparams.label_smoothing)
        self.log("train/task_loss", loss, prog_bar=True, batch_size=label.shape[0])
        target = batch.get("target") if "source" in batch else None
        if self.hparams.ot_weight > 0 and target is not None:
            target_out = self(target)
            smoothed = label * (1 - self.hparams.label_smoothing) + 0.5 * self.hparams.label_smoothing
            source_probs = torch.stack([1 - smoothed, smoothed], dim=-1)  # (N, 2)
            target_logits = torch.stack([torch.zeros_like(target_out.logit), target_out.logit], dim=-1)  # (M, 2)
            transport = self.transport(out.features, target_out.features, source_probs, target_logits).loss
            self.log("train/ot_loss", transport, batch_size=label.shape[0])
            loss = loss + self.hparams.ot_weight * transport
        self.log("train/loss", loss, batch_size=label.shape[0])
        return loss

    def _collect(self, batch: dict[str, Tensor], stage: str) -> None:
        prob = self.probability(batch)
        self._outputs[stage].append((prob.detach().cpu(), batch["label"].detach().cpu(), batch["domain"].detach().cpu()))

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._collect(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._collect(batch, "test")

    def _log_epoch(self, stage: str) -> None:
        outputs = self._outputs[stage]
        self._outputs[stage] = []
        if not outputs:
            return
        prob, label, domain = (torch.cat(parts) for parts in zip(*outputs))
        for value, prefix in ((0, ""), (1, "target_")):
            chosen = domain == value
            if chosen.sum() == 0:
                continue
            for name, metric in classification_metrics(prob[chosen], label[chosen]).items():
                self.log(f"{stage}/{prefix}{name}", metric, prog_bar=stage == "val" and name in ("acc", "f1") and not prefix)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # frozen weights (the MiniLM base under LoRA adapters) stay out of the optimizer and its weight decay
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(trainable, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
