"""The LightningModule that trains DIN / TWIN / DARE on click logs with binary cross-entropy."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAUROC

from recipes.longseq_rec.metrics import GroupAUROC, search_recall
from recipes.longseq_rec.model import MODEL_NAMES, RecModelConfig, RecOutput, build_model

__all__ = ["RecModule"]


class RecModule(pl.LightningModule):
    """Click-through prediction over long behaviour histories.

    The ``num_*`` sizes and ``profile_cardinalities`` come from the data module (linked by the recipe);
    they are vocabulary sizes including id 0. ``model`` picks ``din`` | ``twin`` | ``dare``; ``attention_dim``
    is DARE's attention-table width, ``representation_dim`` the representation-table width (and the single
    table's width for DIN and TWIN). Logs ``train/loss``, ``val/{auc,gauc,logloss}``,
    ``test/{auc,gauc,logloss}`` and, when batches carry planted ``relevant`` behaviours (lifelong synthetic data),
    ``val/search_recall`` and ``test/search_recall``: the share of the relevant behaviours of a positive that the
    model attended to (the stage-1 top-k for TWIN and DARE, the recent window for DIN), averaged over positives.
    """

    def __init__(
        self,
        *,
        num_users: int,
        num_items: int,
        num_cates: int,
        num_time_buckets: int,
        profile_cardinalities: Sequence[int] = (),
        model: str = "dare",
        attention_dim: int = 16,
        representation_dim: int = 64,
        profile_dim: int = 8,
        user_dim: int = 0,
        top_k: int = 32,
        din_window: int = 50,
        mlp_hidden: Sequence[int] = (200, 80),
        dropout: float = 0.0,
        temperature: float | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        if model not in MODEL_NAMES:
            raise ValueError(f"model = {model!r}; choose one of {list(MODEL_NAMES)}")
        if lr <= 0 or weight_decay < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0; got lr={lr}, weight_decay={weight_decay}")
        # plain lists keep hparams.yaml readable by yaml.safe_load
        profile_cardinalities = [int(c) for c in profile_cardinalities]
        mlp_hidden = [int(h) for h in mlp_hidden]
        self.save_hyperparameters()
        self.config = RecModelConfig(
            num_items=num_items,
            num_cates=num_cates,
            num_time_buckets=num_time_buckets,
            profile_cardinalities=tuple(profile_cardinalities),
            num_users=num_users,
            user_dim=user_dim,
            attention_dim=attention_dim,
            representation_dim=representation_dim,
            profile_dim=profile_dim,
            top_k=top_k,
            din_window=din_window,
            mlp_hidden=tuple(mlp_hidden),
            dropout=dropout,
            temperature=temperature,
        )
        self.recommender = build_model(model, self.config)
        self.val_auc, self.test_auc = BinaryAUROC(), BinaryAUROC()
        self.val_gauc, self.test_gauc = GroupAUROC(), GroupAUROC()
        self.val_logloss, self.test_logloss = MeanMetric(), MeanMetric()
        self.val_search_recall, self.test_search_recall = MeanMetric(), MeanMetric()

    def forward(self, batch: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None) -> RecOutput:
        return self.recommender(batch, present)

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        out = self(batch)
        loss = F.binary_cross_entropy_with_logits(out.logit, batch["label"].float())
        self.log("train/loss", loss, prog_bar=True, batch_size=out.logit.shape[0])
        return loss

    def _evaluate(self, batch: Mapping[str, Tensor], stage: str) -> None:
        out = self(batch)
        label = batch["label"].float()
        size = label.shape[0]
        prob = torch.sigmoid(out.logit)
        auc, gauc, logloss = (getattr(self, f"{stage}_{name}") for name in ("auc", "gauc", "logloss"))
        auc.update(prob, label.long())
        gauc.update(prob, label.long(), batch["user"])
        logloss.update(F.binary_cross_entropy_with_logits(out.logit, label, reduction="none"))
        self.log(f"{stage}/auc", auc, on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=size)
        self.log(f"{stage}/gauc", gauc, on_step=False, on_epoch=True, batch_size=size)
        self.log(f"{stage}/logloss", logloss, on_step=False, on_epoch=True, batch_size=size)
        recall, count = search_recall(out.retrieved, batch["relevant"], label) if "relevant" in batch else (None, 0)
        if int(count):  # only synthetic data with planted behaviours has any
            recall_metric = getattr(self, f"{stage}_search_recall")
            recall_metric.update(recall)
            self.log(f"{stage}/search_recall", recall_metric, on_step=False, on_epoch=True, batch_size=int(count))

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Mapping[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return torch.sigmoid(self(batch).logit)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
